//! `convert --to gguf --quant`: every tensor gets the type llama.cpp's mix gives it, each
//! decodes back to the HF tensor within its type's quantization error, the file shrinks as
//! those types say, and the model read from it gives nearly the HF folder's logits.

mod common;

use common::golden::{flat_logits, tensor_values as values};
use common::{one_error_line, run, s, stderr};
use depthprune::api::convert::{convert, ConvertRequest, Format};
use depthprune::api::prune::FloatType;
use depthprune::checkpoint::atomic::Overwrite;
use depthprune::checkpoint::gguf::{GgmlType, GgufModel};
use depthprune::checkpoint::safetensors::Dtype;
use depthprune::checkpoint::synth::write_synthetic;
use depthprune::convert::quantize::QuantMix;
use depthprune::convert::to_hf::gguf_to_hf;
use depthprune::model::{open_checkpoint, HfFolder, Model};
use depthprune::progress::Silent;
use serde_json::json;

/// A qwen3 (no Q/K permutation, tied head) whose rows k-quant blocks of 256 divide, 8 layers so
/// that llama.cpp's "more bits" layers (0, 3, 6, 7) differ from the rest.
fn config() -> serde_json::Value {
    json!({
        "model_type": "qwen3", "architectures": ["Qwen3ForCausalLM"],
        "num_hidden_layers": 8, "hidden_size": 256, "intermediate_size": 512,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64,
        "vocab_size": 300, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
        "max_position_embeddings": 128, "tie_word_embeddings": true,
        "bos_token_id": 1, "eos_token_id": 2
    })
}

fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    let (mut e, mut n) = (0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        e += ((x - y) as f64).powi(2);
        n += (*x as f64).powi(2);
    }
    (e / n).sqrt()
}

/// The synthetic model of [`config`] as an f32 HF folder and its `convert --quant q4_k_m` GGUF,
/// both under `dir`.
fn q4_k_m_model(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let hf = dir.join("hf");
    write_synthetic(&config(), &hf, Dtype::F32, u64::MAX, 5, &Silent).unwrap();
    let gguf = dir.join("m.Q4_K_M.gguf");
    let req = ConvertRequest {
        to: Format::Gguf,
        out: gguf.clone(),
        dtype: FloatType::F32,
        quant: Some(QuantMix::Q4KM),
        force: false,
    };
    convert(&hf, &req, &depthprune::progress::Silent).unwrap();
    (hf, gguf)
}

#[test]
fn q4_k_m_mix_decodes_and_runs_close_to_the_floats() {
    let tmp = tempfile::tempdir().unwrap();
    let (hf, gguf) = q4_k_m_model(tmp.path());

    let file = GgufModel::open(&gguf).unwrap();
    let ty = |n: &str| {
        let t = file.tensors().iter().find(|t| t.name() == n).unwrap();
        t.ggml_type()
    };
    assert_eq!(
        ty("token_embd.weight"),
        GgmlType::Q6_K,
        "a tied embedding is the head"
    );
    assert_eq!(ty("blk.0.attn_v.weight"), GgmlType::Q6_K);
    assert_eq!(ty("blk.1.attn_v.weight"), GgmlType::Q4_K);
    assert_eq!(ty("blk.3.ffn_down.weight"), GgmlType::Q6_K);
    assert_eq!(ty("blk.4.ffn_down.weight"), GgmlType::Q4_K);
    assert_eq!(ty("blk.4.attn_q.weight"), GgmlType::Q4_K);
    assert_eq!(ty("blk.4.ffn_gate.weight"), GgmlType::Q4_K);
    assert_eq!(ty("blk.4.attn_norm.weight"), GgmlType::F32);
    // About 4.5–6.6 bits per weight instead of 32.
    let f32_bytes: u64 = (file.tensors().iter())
        .map(|t| t.dims().iter().product::<u64>() * 4)
        .sum();
    let ratio = std::fs::metadata(&gguf).unwrap().len() as f64 / f32_bytes as f64;
    assert!((0.12..0.25).contains(&ratio), "file is {ratio:.3} of f32");

    // Every tensor decodes to the HF tensor within its type's error.
    let back = tmp.path().join("back");
    gguf_to_hf(&gguf, &back, Dtype::F32, Overwrite::Refuse).unwrap();
    let (a, b) = (HfFolder::open(&hf).unwrap(), HfFolder::open(&back).unwrap());
    for n in b.names() {
        let e = rel_err(&values(&a, n), &values(&b, n));
        let bound = if n.contains("norm") { 0.0 } else { 0.12 };
        assert!(e <= bound, "`{n}`: relative error {e}");
        assert!(n.contains("norm") || e > 0.0, "`{n}` was not quantized");
    }

    // The model read from the file (quantized kernels) gives nearly the floats' logits.
    let folder = Model::open(&hf).unwrap();
    let (cfg, src) = open_checkpoint(&gguf).unwrap();
    let quant = Model::from_source(cfg, src, &|_| true).unwrap();
    let ids = [3u32, 9, 27, 1, 5, 30, 200, 299];
    let e = rel_err(
        &flat_logits(&folder, &[], &ids),
        &flat_logits(&quant, &[], &ids),
    );
    assert!(e < 0.2, "logits differ by {e} (relative)");
}

#[test]
fn quant_is_refused_for_hf_output() {
    let tmp = tempfile::tempdir().unwrap();
    let hf = tmp.path().join("hf");
    write_synthetic(&config(), &hf, Dtype::F32, u64::MAX, 5, &Silent).unwrap();
    let gguf = tmp.path().join("m.gguf");
    let o = run(&[
        "convert",
        s(&hf),
        "--to",
        "gguf",
        "--quant",
        "q8_0",
        "--out",
        s(&gguf),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = tmp.path().join("again");
    let o = run(&[
        "convert",
        s(&gguf),
        "--to",
        "hf",
        "--quant",
        "q8_0",
        "--out",
        s(&out),
    ]);
    assert!(!o.status.success());
    let err = stderr(&o);
    let line = one_error_line(&err);
    assert!(
        line.contains("--quant") && line.contains("GGUF output"),
        "{line}"
    );
    assert!(!out.exists());
}

/// Issue 23: a healed Q4_K_M stays Q4_K_M. Low-rank distillation changes tensors stored as Q4_K
/// and as Q6_K; written with `keep_types`, each goes back in its own k-quant, every other tensor
/// is byte-identical, and the reloaded file gives the logits of the in-memory heal with each
/// changed tensor rounded through its type.
#[test]
fn healed_q4_k_m_keeps_its_k_quants_and_reloads_as_the_rounded_heal() {
    use depthprune::heal::gguf::{write_healed_gguf, GgufHealOptions};
    use depthprune::heal::{self, HealOptions, KdOptions};
    use depthprune::model::gguf::GgufWeights;
    use depthprune::quant::{dequantize, quantize, QuantFormat};
    use depthprune::select::Removal;
    use std::collections::BTreeMap;

    const CTX: usize = 32;
    let tmp = tempfile::tempdir().unwrap();
    let (_, gguf) = q4_k_m_model(tmp.path());

    let removed = [5usize];
    let toks = common::pseudo_tokens(8 * CTX, 300);
    let validated = HealOptions {
        holdout: 4,
        ..HealOptions::validated(CTX)
    };
    let start = heal::heal(&gguf, &removed, &toks, &validated, &Silent).unwrap();
    let kd = KdOptions {
        steps: 8,
        lr: 1e-3,
        eval_every: 4,
        patience: 0,
        rank: 4,
        lowrank_lr: 1e-3,
        time_limit: None,
    };
    let h = heal::distil(&gguf, &toks, &start, &kd, &Silent).unwrap();
    let d = h.distillation.clone().unwrap();
    assert!(d.kept(), "distillation beat nothing: {d:?}");

    let file = GgufModel::open(&gguf).unwrap();
    let weights = GgufWeights::new(&file).unwrap();
    let removal = Removal::from_layers(8, removed).unwrap();
    let out = tmp.path().join("healed.gguf");
    let opts = GgufHealOptions {
        overwrite: Overwrite::Refuse,
        split_max_bytes: None,
        ty: GgmlType::F32,
        keep_types: true,
        metadata: Vec::new(),
    };
    write_healed_gguf(&file, &removal, &h, &out, &opts, &Silent).unwrap();
    let healed = GgufModel::open(&out).unwrap();
    assert!(
        std::fs::metadata(&out).unwrap().len() < std::fs::metadata(&gguf).unwrap().len(),
        "one layer fewer, every type kept: the file shrinks"
    );
    // Each healed tensor, rounded through its source type as the writer must have done it.
    let mut types = std::collections::BTreeSet::new();
    let rounded: BTreeMap<String, Vec<f32>> = (h.tensors.iter())
        .map(|(name, v)| {
            let ty = weights.info(name).unwrap().ggml_type();
            types.insert(ty.name());
            let format = QuantFormat::from_type_id(ty.id()).unwrap();
            let (mut bytes, mut back) = (Vec::new(), Vec::new());
            quantize(format, v, &mut bytes).unwrap();
            dequantize(ty.id(), &bytes, v.len(), &mut back).unwrap();
            (name.clone(), back)
        })
        .collect();
    assert!(
        types.contains("Q4_K") && types.contains("Q6_K"),
        "the heal changed tensors of types {types:?}"
    );
    let mut compared = 0;
    for src in file.tensors() {
        if src.name().starts_with("blk.5.") {
            continue; // the removed layer
        }
        let name = removal.renamed_gguf(src.name());
        if let Some(t) = healed.tensors().iter().find(|t| t.name() == name) {
            assert_eq!(t.ggml_type(), src.ggml_type(), "`{name}` changed type");
            compared += 1;
        }
    }
    assert_eq!(compared, healed.tensors().len());
    let note = healed
        .metadata()
        .get_str("depthprune.note")
        .unwrap()
        .to_string();
    assert!(
        note.contains("(requantized to Q4_K)") && note.contains("(requantized to Q6_K)"),
        "{note}"
    );
    let window = &toks[..CTX];
    let on_disk = flat_logits(&Model::open(&out).unwrap(), &[], window);
    let requant = heal::open_healed(&gguf, &rounded).unwrap();
    let exact = heal::open_healed(&gguf, &h.tensors).unwrap();
    let d_round = common::golden::max_diff(&flat_logits(&requant, &removed, window), &on_disk);
    let d_exact = common::golden::max_diff(&flat_logits(&exact, &removed, window), &on_disk);
    eprintln!("Q4_K_M requantized heal: max |Δlogit| vs rounded {d_round:e}, vs f32 {d_exact:e}");
    assert!(
        d_round < 1e-4,
        "reloaded logits differ from the rounded heal by {d_round}"
    );
    assert!(
        d_exact > 0.0 && d_exact < 2.0,
        "requantizing moved the logits by {d_exact}"
    );
}
