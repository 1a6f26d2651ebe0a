//! Synthetic checkpoints: HF folders of any supported shape with random weights, written tensor by
//! tensor. Tests, benchmarks and demos use them where a real model is too large or unavailable.
//! Values are small (std ≈ 0.02, norms at 1.0), so forward passes stay finite.

use super::atomic::{AtomicOutput, Overwrite};
use super::hf::{shard_names, CONFIG_FILE, INDEX_FILE};
use super::hf_prune::write_json;
use super::safetensors::{encode_header, Dtype, OutTensor};
use crate::arch::ArchConfig;
use crate::error::{Error, IoContext, Result};
use crate::progress::Progress;
use serde_json::{Map, Value};
use std::io::{BufWriter, Write};
use std::path::Path;

/// A tensor's name, shape and whether it is a norm weight (filled with ones).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<u64>,
    pub is_norm: bool,
}

/// The HF tensor names and shapes of a model described by `cfg`, in checkpoint order.
pub fn tensor_specs(cfg: &ArchConfig) -> Vec<TensorSpec> {
    let h = cfg.hidden_size as u64;
    let q = (cfg.num_attention_heads * cfg.head_dim) as u64;
    let kv = (cfg.num_key_value_heads * cfg.head_dim) as u64;
    let mut out: Vec<(String, Vec<u64>)> = Vec::new();
    let mut push = |name: String, shape: Vec<u64>| out_push(&mut out, name, shape);
    push(
        "model.embed_tokens.weight".into(),
        vec![cfg.vocab_size as u64, h],
    );
    for i in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{i}.");
        push(format!("{p}input_layernorm.weight"), vec![h]);
        for (n, rows) in [("q", q), ("k", kv), ("v", kv)] {
            push(format!("{p}self_attn.{n}_proj.weight"), vec![rows, h]);
            if cfg.qkv_bias {
                push(format!("{p}self_attn.{n}_proj.bias"), vec![rows]);
            }
        }
        push(format!("{p}self_attn.o_proj.weight"), vec![h, q]);
        if cfg.o_bias {
            push(format!("{p}self_attn.o_proj.bias"), vec![h]);
        }
        if cfg.qk_norm {
            push(
                format!("{p}self_attn.q_norm.weight"),
                vec![cfg.head_dim as u64],
            );
            push(
                format!("{p}self_attn.k_norm.weight"),
                vec![cfg.head_dim as u64],
            );
        }
        push(format!("{p}post_attention_layernorm.weight"), vec![h]);
        let dense =
            |push: &mut dyn FnMut(String, Vec<u64>), prefix: String, inter: u64, bias: bool| {
                for (n, shape) in [
                    ("gate_proj", vec![inter, h]),
                    ("up_proj", vec![inter, h]),
                    ("down_proj", vec![h, inter]),
                ] {
                    let rows = shape[0];
                    push(format!("{prefix}{n}.weight"), shape);
                    if bias {
                        push(format!("{prefix}{n}.bias"), vec![rows]);
                    }
                }
            };
        match &cfg.moe {
            Some(m) if cfg.layer_is_sparse(i) => {
                let e = m.num_experts as u64;
                if cfg.model_type == "mixtral" {
                    push(format!("{p}block_sparse_moe.gate.weight"), vec![e, h]);
                    let inter = m.moe_intermediate_size as u64;
                    for x in 0..m.num_experts {
                        let ep = format!("{p}block_sparse_moe.experts.{x}.");
                        push(format!("{ep}w1.weight"), vec![inter, h]);
                        push(format!("{ep}w2.weight"), vec![h, inter]);
                        push(format!("{ep}w3.weight"), vec![inter, h]);
                    }
                } else {
                    push(format!("{p}mlp.gate.weight"), vec![e, h]);
                    for x in 0..m.num_experts {
                        dense(
                            &mut push,
                            format!("{p}mlp.experts.{x}."),
                            m.moe_intermediate_size as u64,
                            false,
                        );
                    }
                    if m.shared_expert_intermediate_size > 0 {
                        dense(
                            &mut push,
                            format!("{p}mlp.shared_expert."),
                            m.shared_expert_intermediate_size as u64,
                            false,
                        );
                        push(format!("{p}mlp.shared_expert_gate.weight"), vec![1, h]);
                    }
                }
            }
            _ => dense(
                &mut push,
                format!("{p}mlp."),
                cfg.intermediate_size as u64,
                cfg.mlp_bias,
            ),
        }
    }
    push("model.norm.weight".into(), vec![h]);
    if !cfg.tie_word_embeddings {
        push("lm_head.weight".into(), vec![cfg.vocab_size as u64, h]);
    }
    out.into_iter()
        .map(|(name, shape)| TensorSpec {
            is_norm: name.contains("norm"),
            name,
            shape,
        })
        .collect()
}

fn out_push(out: &mut Vec<(String, Vec<u64>)>, name: String, shape: Vec<u64>) {
    out.push((name, shape));
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next_f32(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        // Uniform in [-1, 1), scaled to std ≈ 0.02.
        ((x >> 40) as f32 / (1u64 << 23) as f32 - 1.0) * 0.0346
    }
}

fn encode(x: f32, dtype: Dtype, out: &mut Vec<u8>) {
    match dtype {
        Dtype::F32 => out.extend_from_slice(&x.to_le_bytes()),
        Dtype::F16 => out.extend_from_slice(&half::f16::from_f32(x).to_le_bytes()),
        _ => out.extend_from_slice(&half::bf16::from_f32(x).to_le_bytes()),
    }
}

/// Writes a random-weight HF folder for `config` (a `config.json` value) into `out`, sharded at
/// `max_shard` bytes. Only F32, F16 and BF16 are written.
pub fn write_synthetic(
    config: &Value,
    out: &Path,
    dtype: Dtype,
    max_shard: u64,
    seed: u64,
    progress: &dyn Progress,
) -> Result<()> {
    let arch =
        ArchConfig::from_value(config).map_err(|m| Error::Invalid(format!("config: {m}")))?;
    if !dtype.is_convertible_float() {
        return Err(Error::Unsupported(format!(
            "synthetic checkpoints are F32, F16 or BF16, not {dtype}"
        )));
    }
    let specs = tensor_specs(&arch);
    let mut shards: Vec<Vec<OutTensor>> = vec![Vec::new()];
    let mut size = 0u64;
    for s in &specs {
        let len = s.shape.iter().product::<u64>() * dtype.size() as u64;
        if size > 0 && size + len > max_shard {
            shards.push(Vec::new());
            size = 0;
        }
        size += len;
        if let Some(last) = shards.last_mut() {
            last.push(OutTensor {
                name: s.name.clone(),
                dtype,
                shape: s.shape.clone(),
                len,
            });
        }
    }
    let n = shards.len();
    let names = shard_names(n);
    let output = AtomicOutput::dir(out, Overwrite::Force)?;
    let mut meta = Map::new();
    meta.insert("format".into(), Value::from("pt"));
    let total: u64 = shards.iter().flatten().map(|t| t.len).sum();
    progress.start_bytes("writing", total);
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut weight_map = Map::new();
    let mut buf = Vec::with_capacity(1 << 20);
    for (k, ts) in shards.iter().enumerate() {
        let path = output.join(&names[k]);
        let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(&path).at(&path)?);
        w.write_all(&encode_header(ts, &meta)).at(&path)?;
        for t in ts {
            let is_norm = t.name.contains("norm");
            let numel = t.shape.iter().product::<u64>();
            let mut left = numel;
            while left > 0 {
                let m = left.min(1 << 18);
                buf.clear();
                for _ in 0..m {
                    let x = if is_norm { 1.0 } else { rng.next_f32() };
                    encode(x, dtype, &mut buf);
                }
                w.write_all(&buf).at(&path)?;
                progress.advance(buf.len() as u64);
                left -= m;
            }
            weight_map.insert(t.name.clone(), Value::from(names[k].clone()));
        }
        w.flush().at(&path)?;
    }
    progress.finish();
    if n > 1 {
        let mut m = Map::new();
        m.insert("total_size".into(), Value::from(total));
        let mut idx = Map::new();
        idx.insert("metadata".into(), Value::Object(m));
        idx.insert("weight_map".into(), Value::Object(weight_map));
        write_json(&output.join(INDEX_FILE), &Value::Object(idx))?;
    }
    write_json(&output.join(CONFIG_FILE), config)?;
    output.commit()?;
    Ok(())
}
