//! Healing without training (issue 6), run as a user runs it on the golden llama fixture: the
//! healed checkpoint reconstructs the dense residual stream better than the plain prune, reloads
//! with the logits of the in-memory healed model, passes `verify --source`, and `heal` on a
//! plain prune writes the same weights as `prune --heal`.

mod common;

use common::golden::{dist, flat_logits, max_diff};
use common::{golden_llama as dense, ok, run_healing, run_in as depthprune, s};

use depthprune::eval;
use depthprune::heal::{self, HealOptions, Objective, Prior};
use depthprune::model::Model;
use depthprune::progress::Silent;
use depthprune::tokenizer::HfTokenizer;
use std::path::Path;
use std::process::Output;

const CTX: usize = common::HEAL_CTX;
const SAMPLES: usize = common::HEAL_SAMPLES;
/// The removed block: layers 2..3 of 4, healed into layer 1's down_proj.
const DROP: &str = "2..3";
const REMOVED: &[usize] = &[2];

/// `prune --heal lstsq` of the dense fixture without the block `drop`, into `out`.
fn prune_healed_without(drop: &str, cwd: &Path, out: &str) -> Output {
    let dense = dense();
    let args = [
        "prune",
        s(&dense),
        "--drop",
        drop,
        "--heal",
        "lstsq",
        "--out",
        out,
    ];
    run_healing(&args, cwd)
}

fn prune_healed(cwd: &Path, out: &str) {
    ok(&prune_healed_without(DROP, cwd, out));
}

/// The plain prune of the same block, into `plain`.
fn prune_plain(cwd: &Path) {
    let o = depthprune(
        &["prune", s(&dense()), "--drop", DROP, "--out", "plain"],
        cwd,
    );
    ok(&o);
}

fn calib_tokens() -> Vec<u32> {
    let tok = HfTokenizer::open(&dense()).unwrap();
    let text = eval::read_text(&common::golden_text()).unwrap();
    eval::tokenize(&tok, &text, Some(SAMPLES)).unwrap()
}

/// The residual stream after `layer` over the calibration windows.
fn stream(model: &Model, skip: &[usize], layer: usize, tokens: &[u32]) -> Vec<f32> {
    common::golden::stream(model, skip, layer, tokens, CTX)
}

#[test]
fn healed_prune_reconstructs_better_and_reloads_with_the_in_memory_logits() {
    let tmp = tempfile::tempdir().unwrap();
    prune_healed(tmp.path(), "healed");
    prune_plain(tmp.path());
    let tokens = calib_tokens();
    assert_eq!(tokens.len(), SAMPLES, "the fixture text is too short");

    // Dense output after the block (layer 2) vs the pruned models' output of layer 1, which
    // after pruning feeds what was layer 3.
    let dense_model = Model::open(&dense()).unwrap();
    let y = stream(&dense_model, &[], 2, &tokens);
    let healed = Model::open(&tmp.path().join("healed")).unwrap();
    let plain = Model::open(&tmp.path().join("plain")).unwrap();
    let e_healed = dist(&stream(&healed, &[], 1, &tokens), &y);
    let e_plain = dist(&stream(&plain, &[], 1, &tokens), &y);
    assert!(
        e_healed < 0.95 * e_plain,
        "healing did not lower the reconstruction error: {e_healed} vs {e_plain}"
    );

    // The same fit in memory, on the dense folder with the block skipped.
    let opts = HealOptions::fixed(Objective::Lstsq, 1e-3, Prior::Identity, CTX);
    let h = heal::heal(&dense(), REMOVED, &tokens, &opts, &Silent).unwrap();
    assert_eq!(h.tensors.len(), 1);
    assert!(h
        .tensors
        .contains_key("model.layers.1.mlp.down_proj.weight"));
    let mem = heal::open_healed(&dense(), &h.tensors).unwrap();
    let window = &tokens[..CTX];
    let max = max_diff(
        &flat_logits(&mem, REMOVED, window),
        &flat_logits(&healed, &[], window),
    );
    assert!(max < 1e-5, "reloaded logits differ by {max}");

    // pruning.json records the healing, the changed tensor under its new name.
    let prov = common::read_json(&tmp.path().join("healed/pruning.json"));
    let healing = &prov["healing"];
    assert_eq!(healing["method"], "lstsq");
    assert_eq!(healing["samples"], SAMPLES);
    assert_eq!(
        healing["tensors"],
        serde_json::json!(["model.layers.1.mlp.down_proj.weight"])
    );
    let block = &healing["blocks"][0];
    assert_eq!(
        (block["start"].as_u64(), block["end"].as_u64()),
        (Some(2), Some(3))
    );
    assert_eq!(block["fold_layer"], 1);
    assert!(
        block["relative_residual"].as_f64().unwrap()
            < block["relative_residual_unhealed"].as_f64().unwrap()
    );
    let card = std::fs::read_to_string(tmp.path().join("healed/README.md")).unwrap();
    assert!(card.contains("Healed without training"), "{card}");
}

#[test]
fn verify_with_source_skips_the_healed_tensors() {
    let tmp = tempfile::tempdir().unwrap();
    prune_healed(tmp.path(), "healed");
    let o = depthprune(&["verify", "healed", "--source", s(&dense())], tmp.path());
    ok(&o);
}

#[test]
fn heal_subcommand_matches_prune_with_heal() {
    let tmp = tempfile::tempdir().unwrap();
    prune_healed(tmp.path(), "one");
    prune_plain(tmp.path());
    let dense = dense();
    let args = [
        "heal",
        "plain",
        "--from",
        s(&dense),
        "--method",
        "lstsq",
        "--out",
        "two",
    ];
    ok(&run_healing(&args, tmp.path()));
    let a = std::fs::read(tmp.path().join("one/model.safetensors")).unwrap();
    let b = std::fs::read(tmp.path().join("two/model.safetensors")).unwrap();
    assert!(a == b, "`heal` and `prune --heal` wrote different weights");
}

#[test]
fn a_block_at_layer_0_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let o = prune_healed_without("0..2", tmp.path(), "x");
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("starts at layer 0"), "{err}");
    assert!(!tmp.path().join("x").exists());
}

#[test]
fn healing_without_calibration_text_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let o = depthprune(
        &[
            "prune",
            s(&dense()),
            "--drop",
            DROP,
            "--heal",
            "lstsq",
            "--out",
            "x",
        ],
        tmp.path(),
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--calib"), "{err}");
}
