//! Healing MoE checkpoints (issue 17): the map for a removed block folds into every expert's
//! down projection of the layer before it (and the shared expert's, for qwen2_moe), because the
//! block's output is a gate-weighted sum of them. `prune --heal` on each MoE fixture writes a
//! checkpoint that reloads with the logits of the in-memory healed model, and healing lowers the
//! error of the residual stream after the block.

mod common;

use candle_core::Tensor;
use common::golden::{dist, max_diff};
use common::{fixture, golden_text, run_healing, stderr};
use depthprune::arch::ArchConfig;
use depthprune::eval;
use depthprune::heal::{self, HealOptions, Objective, Prior};
use depthprune::model::Model;
use depthprune::progress::Silent;
use depthprune::tokenizer::HfTokenizer;
use std::path::{Path, PathBuf};

const CTX: usize = common::HEAL_CTX;
const SAMPLES: usize = common::HEAL_SAMPLES;
/// Layer 2 removed; layer 1, sparse in every fixture, takes the map.
const DROP: &str = "2..3";
const REMOVED: &[usize] = &[2];

/// The fixture `arch` with the llama fixture's tokenizer (the same 300-token vocabulary), so the
/// CLI can read calibration text.
fn with_tokenizer(arch: &str, dir: &Path) -> PathBuf {
    let out = dir.join(arch);
    let tokenizer = ["tokenizer.json", "tokenizer_config.json"];
    common::with_llama_tokenizer(&fixture().join(arch), &tokenizer, &out);
    out
}

/// The residual stream after `layer` over the calibration windows.
fn stream(model: &Model, skip: &[usize], layer: usize, tokens: &[u32]) -> Vec<f32> {
    common::golden::stream(model, skip, layer, tokens, CTX)
}

#[test]
fn healed_moe_checkpoints_reload_with_the_in_memory_logits() {
    for arch in ["qwen2_moe", "qwen3_moe", "mixtral"] {
        let tmp = tempfile::tempdir().unwrap();
        let dense = with_tokenizer(arch, tmp.path());
        let out = tmp.path().join("healed");
        let args = [
            "prune",
            dense.to_str().unwrap(),
            "--drop",
            DROP,
            "--heal",
            "lstsq",
            "--out",
            out.to_str().unwrap(),
        ];
        let o = run_healing(&args, tmp.path());
        assert!(o.status.success(), "{arch}: {}", stderr(&o));

        let tok = HfTokenizer::open(&dense).unwrap();
        let text = eval::read_text(&golden_text()).unwrap();
        let tokens = eval::tokenize(&tok, &text, Some(SAMPLES)).unwrap();
        let opts = HealOptions::fixed(Objective::Lstsq, 1e-3, Prior::Identity, CTX);
        let h = heal::heal(&dense, REMOVED, &tokens, &opts, &Silent).unwrap();
        let (arch_cfg, _) = ArchConfig::from_file(&dense.join("config.json")).unwrap();
        let mut want = heal::down_proj_names(&arch_cfg, 1);
        want.sort();
        let got: Vec<&String> = h.tensors.keys().collect();
        assert_eq!(
            got,
            want.iter().collect::<Vec<_>>(),
            "{arch}: folded tensors"
        );
        let moe = arch_cfg.moe.as_ref().unwrap();
        let shared = usize::from(moe.shared_expert_intermediate_size > 0);
        assert_eq!(want.len(), moe.num_experts + shared);

        let mem = heal::open_healed(&dense, &h.tensors).unwrap();
        let healed = Model::open(&out).unwrap();
        let t = mem.tokens(&[&tokens[..CTX]]).unwrap();
        let a: Tensor = mem.forward(&t, REMOVED, None).unwrap();
        let b: Tensor = healed.forward(&t, &[], None).unwrap();
        let max: f32 = common::golden::max_err(&a, &b);
        assert!(max < 1e-5, "{arch}: reloaded healed logits differ by {max}");

        let dense_model = Model::open(&dense).unwrap();
        let y = stream(&dense_model, &[], 2, &tokens);
        let e_healed = dist(&stream(&healed, &[], 1, &tokens), &y);
        let e_plain = dist(&stream(&dense_model, REMOVED, 1, &tokens), &y);
        assert!(
            e_healed < e_plain,
            "{arch}: healing did not lower the error: {e_healed} vs {e_plain}"
        );
        eprintln!(
            "{arch}: {} tensors folded; reload max |Δ| {max:.2e}; stream error {e_healed:.3} healed vs {e_plain:.3} plain",
            want.len()
        );
    }
}

/// The reason the fold is exact: with any map `T` folded into every down projection of a sparse
/// layer (routed experts and, for qwen2_moe, the sigmoid-gated shared expert), the layer's MoE
/// output is the dense one times `T`. Leaving one expert out breaks it.
#[test]
fn folding_into_every_expert_multiplies_the_moe_output() {
    for arch in ["qwen2_moe", "qwen3_moe", "mixtral"] {
        let dense = fixture().join(arch);
        let model = Model::open(&dense).unwrap();
        let h = model.config().arch.hidden_size;
        let t: Vec<f64> = (0..h * h)
            .map(|k| f64::from(k % h == k / h) + 0.05 * ((k * 7919 % 13) as f64 - 6.0) / 6.0)
            .collect();
        let names = heal::down_proj_names(&model.config().arch, 1);
        let fold = |names: &[String]| {
            let mut m = std::collections::BTreeMap::new();
            for n in names {
                let w = model.source().tensor(n).unwrap();
                let w: Vec<f32> = w.flatten_all().unwrap().to_vec1().unwrap();
                m.insert(n.clone(), heal::fold_down_proj(&t, &w, h).unwrap());
            }
            heal::open_healed(&dense, &m).unwrap()
        };
        let mlp_at_1 = |m: &Model| {
            let tokens = m.tokens(&[&[5, 17, 42, 99, 123, 250, 7, 3][..]]).unwrap();
            let mut out = None;
            m.forward_hidden(&tokens, &[], None, &mut |tap| {
                if tap.layer == 1 {
                    out = Some(tap.parts.mlp.clone());
                }
                Ok(())
            })
            .unwrap();
            out.unwrap().squeeze(0).unwrap()
        };
        let tm = Tensor::from_vec(
            t.iter().map(|&x| x as f32).collect(),
            (h, h),
            &candle_core::Device::Cpu,
        )
        .unwrap();
        let want = mlp_at_1(&model).matmul(&tm).unwrap();
        let err = |m: &Model| -> f32 { common::golden::max_err(&mlp_at_1(m), &want) };
        let all = err(&fold(&names));
        assert!(
            all < 1e-5,
            "{arch}: folded MoE output differs from M·T by {all}"
        );
        let partial = err(&fold(&names[1..]));
        assert!(
            partial > 1e-3,
            "{arch}: leaving expert 0 out changed nothing"
        );
        eprintln!(
            "{arch}: max |MoE'(x) - MoE(x)·T| = {all:.2e} (one expert left out: {partial:.2e})"
        );
    }
}

/// Healing a MoE GGUF: the fit on the GGUF equals the fit on the HF folder, the healed experts
/// go back into the stacked `ffn_down_exps` (and qwen2moe's `ffn_down_shexp`) and the written
/// file reloads with the in-memory healed logits.
#[test]
fn healed_moe_gguf_restacks_the_experts_and_reloads() {
    use depthprune::checkpoint::atomic::Overwrite;
    use depthprune::checkpoint::gguf::{GgmlType, GgufModel};
    use depthprune::convert::to_gguf::hf_to_gguf;
    use depthprune::heal::gguf::{write_healed_gguf, GgufHealOptions};
    use depthprune::select::Removal;
    for arch in ["qwen2_moe", "qwen3_moe", "mixtral"] {
        let src = fixture().join(arch);
        let tmp = tempfile::tempdir().unwrap();
        let dense = tmp.path().join("dense.gguf");
        hf_to_gguf(&src, &dense, GgmlType::F32, Overwrite::Refuse).unwrap();
        let toks: Vec<u32> = (0..8 * CTX as u32).map(|i| (i * 7919 + 13) % 300).collect();
        let opts = HealOptions::fixed(Objective::Lstsq, 1e-3, Prior::Identity, CTX);
        let h = heal::heal(&dense, REMOVED, &toks, &opts, &Silent).unwrap();
        let from_hf = heal::heal(&src, REMOVED, &toks, &opts, &Silent).unwrap();
        assert_eq!(
            h.tensors.keys().collect::<Vec<_>>(),
            from_hf.tensors.keys().collect::<Vec<_>>()
        );
        for (name, v) in &h.tensors {
            let d = max_diff(v, &from_hf.tensors[name]);
            assert!(
                d < 1e-5,
                "{arch}: `{name}` fitted on GGUF and HF differs by {d}"
            );
        }
        let out = tmp.path().join("healed.gguf");
        let m = GgufModel::open(&dense).unwrap();
        let removal = Removal::from_layers(4, REMOVED.iter().copied()).unwrap();
        let w = GgufHealOptions {
            overwrite: Overwrite::Refuse,
            split_max_bytes: None,
            ty: GgmlType::F32,
            keep_types: false,
            metadata: Vec::new(),
        };
        write_healed_gguf(&m, &removal, &h, &out, &w, &Silent).unwrap();
        let note = GgufModel::open(&out).unwrap();
        let note = note
            .metadata()
            .get_str("depthprune.note")
            .unwrap()
            .to_string();
        assert!(note.contains("`blk.1.ffn_down_exps.weight`"), "{note}");
        assert_eq!(
            note.contains("ffn_down_shexp"),
            arch == "qwen2_moe",
            "{note}"
        );

        let mem = heal::open_healed(&dense, &h.tensors).unwrap();
        let reloaded = Model::open(&out).unwrap();
        let t = mem.tokens(&[&toks[..CTX]]).unwrap();
        let a = mem.forward(&t, REMOVED, None).unwrap();
        let b = reloaded.forward(&t, &[], None).unwrap();
        let d: f32 = common::golden::max_err(&a, &b);
        assert!(d < 1e-5, "{arch}: healed GGUF reloaded differs by {d}");
        eprintln!("{arch}: healed GGUF reloaded vs in memory: max |Δlogit| = {d:.2e}");
    }
}
