//! MoE checkpoints in GGUF (issue 17), on the golden MoE fixtures: `convert --to gguf` stacks
//! each layer's experts into llama.cpp's `ffn_*_exps` tensors (qwen2moe, qwen3moe, and `llama`
//! with experts for Mixtral); the GGUF runs with transformers' logits, skipping and pruning it
//! equal transformers' deleted layers, and `convert --to hf` gives back every tensor byte for
//! byte with the same layer kinds.

mod common;

use candle_core::Tensor;
use common::golden::{self, dir, ids, load as golden, max_err, meta};
use common::{run, stderr, tensor_bytes};
use depthprune::model::Model;
use std::collections::HashMap;
use std::path::Path;

const TOL: f32 = 1e-4;
const ARCHS: &[&str] = &["qwen2_moe", "qwen3_moe", "mixtral"];

fn logits(path: &Path, g: &HashMap<String, Tensor>, skip: &[usize]) -> Tensor {
    golden::logits(&Model::open(path).unwrap(), &ids(&g["tokens"]), skip)
}

fn ok(o: &std::process::Output) {
    assert!(o.status.success(), "{}", stderr(o));
}

fn convert(src: &Path, to: &str, out: &Path) {
    ok(&run(&[
        "convert",
        src.to_str().unwrap(),
        "--to",
        to,
        "--out",
        out.to_str().unwrap(),
    ]));
}

#[test]
fn moe_gguf_runs_prunes_and_converts_back() {
    for arch in ARCHS {
        let g = golden(arch);
        let tmp = tempfile::tempdir().unwrap();
        let gguf = tmp.path().join(format!("{arch}.gguf"));
        convert(&dir(arch), "gguf", &gguf);

        // The stacked tensors are llama.cpp's, with its metadata keys.
        let m = depthprune::checkpoint::gguf::GgufModel::open(&gguf).unwrap();
        let names: Vec<&str> = m.tensors().iter().map(|t| t.name()).collect();
        let e = names.contains(&"blk.1.ffn_down_exps.weight");
        assert!(
            e && names.contains(&"blk.1.ffn_gate_inp.weight"),
            "{names:?}"
        );
        let a = m.architecture().unwrap().to_string();
        assert!(m.metadata().get(&format!("{a}.expert_count")).is_some());
        assert!(m
            .metadata()
            .get(&format!("{a}.expert_used_count"))
            .is_some());
        if *arch == "qwen2_moe" {
            assert!(names.contains(&"blk.1.ffn_gate_inp_shexp.weight"));
            assert!(names.contains(&"blk.0.ffn_down.weight"), "dense layer 0");
        }

        // inspect counts what torch counts, and the parameters a token uses.
        let o = run(&["inspect", gguf.to_str().unwrap(), "--json"]);
        ok(&o);
        let info: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let want: serde_json::Value = serde_json::from_str(&meta(arch, "params")).unwrap();
        assert_eq!(info["params_total"], want["total"], "{arch}");
        assert_eq!(info["active_params"], want["active"], "{arch}");

        let e_dense = max_err(&logits(&gguf, &g, &[]), &g["logits"]);
        let e_skip = max_err(&logits(&gguf, &g, &[1, 2]), &g["skip.logits"]);
        assert!(
            e_dense <= TOL && e_skip <= TOL,
            "{arch}: {e_dense} {e_skip}"
        );

        let pruned = tmp.path().join("pruned.gguf");
        let drop = meta(arch, "prune");
        let o = run(&["prune", gguf.to_str().unwrap(), "--drop", &drop, "--out"]);
        assert!(!o.status.success(), "prune needs --out");
        ok(&run(&[
            "prune",
            gguf.to_str().unwrap(),
            "--drop",
            &drop,
            "--out",
            pruned.to_str().unwrap(),
        ]));
        let e_pruned = max_err(&logits(&pruned, &g, &[]), &g["prune.logits"]);
        assert!(e_pruned <= TOL, "{arch}: pruned GGUF differs by {e_pruned}");

        let back = tmp.path().join("back");
        convert(&gguf, "hf", &back);
        // The fixture folder also holds golden.safetensors; its weights are the model's.
        let mut want = tensor_bytes(&dir(arch));
        want.retain(|k, _| k.starts_with("model.") || k.starts_with("lm_head."));
        let got = tensor_bytes(&back);
        let missing: Vec<&String> = want.keys().filter(|k| !got.contains_key(*k)).collect();
        assert!(
            missing.is_empty(),
            "{arch}: not converted back: {missing:?}"
        );
        for (name, t) in &want {
            assert!(
                got[name] == *t,
                "{arch}: `{name}` changed in the round trip"
            );
        }
        assert_eq!(got.len(), want.len());
        let cfg = |p: &Path| {
            let v = std::fs::read_to_string(p.join("config.json")).unwrap();
            let v: serde_json::Value = serde_json::from_str(&v).unwrap();
            depthprune::arch::ArchConfig::from_value(&v).unwrap()
        };
        let (a0, a1) = (cfg(&dir(arch)), cfg(&back));
        assert_eq!(a1.model_type, a0.model_type);
        for i in 0..a0.num_hidden_layers {
            assert_eq!(
                a1.layer_is_sparse(i),
                a0.layer_is_sparse(i),
                "{arch}: layer {i}"
            );
        }
        let e_back = max_err(&logits(&back, &g, &[]), &g["logits"]);
        assert!(e_back <= TOL, "{arch}: converted back differs by {e_back}");
        eprintln!(
            "{arch}: GGUF logits {e_dense:.2e}, skip {e_skip:.2e}, pruned {e_pruned:.2e}, back to HF {e_back:.2e}"
        );
    }
}
