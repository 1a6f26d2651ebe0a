//! HF → GGUF → HF conversion keeps every tensor bit for bit (f32), for llama (whose Q/K rows are
//! permuted in GGUF and back) and qwen3 (not permuted), and a model read straight from the
//! written GGUF gives the same logits as the HF folder it came from.

mod common;

use common::golden::{flat_logits, max_diff, tensor_values as values};
use depthprune::checkpoint::atomic::Overwrite;
use depthprune::checkpoint::gguf::{GgmlType, GgufModel};
use depthprune::checkpoint::safetensors::Dtype;
use depthprune::checkpoint::synth::write_synthetic;
use depthprune::convert::to_gguf::hf_to_gguf;
use depthprune::convert::to_hf::gguf_to_hf;
use depthprune::model::{open_checkpoint, HfFolder, Model, WeightSource};
use depthprune::progress::Silent;
use serde_json::json;

fn config(model_type: &str) -> serde_json::Value {
    json!({
        "model_type": model_type,
        "architectures": ["X"],
        "num_hidden_layers": 2,
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 4,
        "vocab_size": 40,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "max_position_embeddings": 128,
        "tie_word_embeddings": model_type == "qwen3",
        "bos_token_id": 1,
        "eos_token_id": 2
    })
}

#[test]
fn hf_gguf_hf_keeps_tensors_and_logits() {
    for model_type in ["llama", "qwen3"] {
        let tmp = tempfile::tempdir().unwrap();
        let hf = tmp.path().join("hf");
        write_synthetic(&config(model_type), &hf, Dtype::F32, u64::MAX, 7, &Silent).unwrap();
        let gguf = tmp.path().join("m.gguf");
        let r = hf_to_gguf(&hf, &gguf, GgmlType::F32, Overwrite::Refuse).unwrap();
        let file = GgufModel::open(&gguf).unwrap();
        assert_eq!(file.tensors().len(), r.tensors);
        let q = file
            .tensors()
            .iter()
            .find(|t| t.name() == "blk.1.attn_q.weight")
            .unwrap();
        assert_eq!(q.dims(), &[16, 16]);

        let back = tmp.path().join("back");
        gguf_to_hf(&gguf, &back, Dtype::F32, Overwrite::Refuse).unwrap();
        let a = HfFolder::open(&hf).unwrap();
        let b = HfFolder::open(&back).unwrap();
        let names: Vec<&str> = a
            .names()
            .into_iter()
            .filter(|n| !(model_type == "qwen3" && *n == "lm_head.weight"))
            .collect();
        assert_eq!(names, b.names(), "{model_type}");
        for n in names {
            assert_eq!(a.shape(n), b.shape(n), "{model_type} {n}");
            assert!(
                values(&a, n) == values(&b, n),
                "{model_type}: tensor `{n}` changed"
            );
        }

        let folder = Model::open(&hf).unwrap();
        let (cfg, src) = open_checkpoint(&gguf).unwrap();
        let direct = Model::from_source(cfg, src, &|_| true).unwrap();
        let ids = [3u32, 9, 27, 1, 5, 30];
        let worst = max_diff(
            &flat_logits(&folder, &[], &ids),
            &flat_logits(&direct, &[], &ids),
        );
        assert!(worst < 1e-5, "{model_type}: logits differ by {worst}");
    }
}

#[test]
fn permuted_rows_differ_in_the_gguf_for_llama_only() {
    // Guards the permutation itself: a llama GGUF must not hold HF's row order.
    for (model_type, permuted) in [("llama", true), ("qwen3", false)] {
        let tmp = tempfile::tempdir().unwrap();
        let hf = tmp.path().join("hf");
        write_synthetic(&config(model_type), &hf, Dtype::F32, u64::MAX, 3, &Silent).unwrap();
        let gguf = tmp.path().join("m.gguf");
        hf_to_gguf(&hf, &gguf, GgmlType::F32, Overwrite::Refuse).unwrap();
        let file = GgufModel::open(&gguf).unwrap();
        let t = file
            .tensors()
            .iter()
            .find(|t| t.name() == "blk.0.attn_k.weight")
            .unwrap();
        let bytes = std::fs::read(&gguf).unwrap();
        let start = t.file_offset() as usize;
        let raw: Vec<f32> = bytes[start..start + t.n_bytes() as usize]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let hf_k = values(
            &HfFolder::open(&hf).unwrap(),
            "model.layers.0.self_attn.k_proj.weight",
        );
        assert_eq!(raw != hf_k, permuted, "{model_type}");
    }
}
