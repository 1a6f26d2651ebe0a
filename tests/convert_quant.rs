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

#[test]
fn q4_k_m_mix_decodes_and_runs_close_to_the_floats() {
    let tmp = tempfile::tempdir().unwrap();
    let hf = tmp.path().join("hf");
    write_synthetic(&config(), &hf, Dtype::F32, u64::MAX, 5, &Silent).unwrap();
    let gguf = tmp.path().join("m.Q4_K_M.gguf");
    let req = ConvertRequest {
        to: Format::Gguf,
        out: gguf.clone(),
        dtype: FloatType::F32,
        quant: Some(QuantMix::Q4KM),
        force: false,
    };
    convert(&hf, &req).unwrap();

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
