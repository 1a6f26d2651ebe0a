//! Healing on the dense families of issue 17. Phi-3 folds the map into `down_proj` (its MLP
//! output reaches the residual stream unnormalised) and the fold helps; Gemma 2/3 and OLMo 2
//! normalise the MLP output first, so healing is refused with one line, from the library and
//! from the CLI, before anything is written.

mod common;

use common::golden::dist;
use common::s;
use depthprune::error::Error;
use depthprune::heal::{self, HealOptions, Objective, Prior};
use depthprune::model::Model;
use depthprune::progress::Silent;
use std::path::PathBuf;

const CTX: usize = 16;

fn dir(arch: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/golden/families")
        .join(arch)
}

/// Calibration tokens: the golden text under the llama fixture's tokenizer (the family
/// fixtures share its 300-token vocabulary).
fn tokens() -> Vec<u32> {
    common::golden_tokens(8 * CTX)
}

/// Layer `layer`'s output over `tokens` in windows of `CTX`, skipping `skip`.
fn stream(model: &Model, skip: &[usize], layer: usize, tokens: &[u32]) -> Vec<f32> {
    common::golden::stream(model, skip, layer, tokens, CTX)
}

#[test]
fn phi3_heals_by_folding_into_down_proj() {
    let tokens = tokens();
    let opts = HealOptions::fixed(Objective::Lstsq, 1e-3, Prior::Identity, CTX);
    let h = heal::heal(&dir("phi3"), &[2, 3], &tokens, &opts, &Silent).unwrap();
    let names: Vec<&str> = h.tensors.keys().map(String::as_str).collect();
    assert_eq!(names, ["model.layers.1.mlp.down_proj.weight"]);
    // The healed model reconstructs layer 3's output better than plain skipping does.
    let dense = Model::open(&dir("phi3")).unwrap();
    let y = stream(&dense, &[], 3, &tokens);
    let plain = stream(&dense, &[2, 3], 1, &tokens);
    let healed_model = heal::open_healed(&dir("phi3"), &h.tensors).unwrap();
    let healed = stream(&healed_model, &[2, 3], 1, &tokens);
    let (e_plain, e_healed) = (dist(&plain, &y), dist(&healed, &y));
    assert!(
        e_healed < 0.95 * e_plain,
        "healing did not help: {e_healed} vs {e_plain}"
    );
}

#[test]
fn families_with_a_norm_after_the_mlp_refuse_healing() {
    let tokens = tokens();
    let opts = HealOptions::fixed(Objective::Lstsq, 1e-3, Prior::Identity, CTX);
    for arch in ["gemma2", "gemma3", "olmo2"] {
        let err = heal::heal(&dir(arch), &[2, 3], &tokens, &opts, &Silent).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::Unsupported(_)), "{arch}: {msg}");
        assert!(
            msg.contains("post_feedforward_layernorm") && !msg.contains('\n'),
            "{arch}: {msg}"
        );
    }
}

#[test]
fn prune_heal_on_gemma_is_refused_before_any_output() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("gemma2");
    let tokenizer = ["tokenizer.json", "tokenizer_config.json"];
    common::with_llama_tokenizer(&dir("gemma2"), &tokenizer, &model);
    let out = tmp.path().join("healed");
    let calib = common::golden_text();
    let args = [
        "--drop",
        "2,3",
        "--heal",
        "--calib",
        s(&calib),
        "--ctx",
        "16",
    ];
    let o = common::prune(&model, &args, &out);
    assert!(!o.status.success());
    let err = common::stderr(&o);
    assert!(err.contains("cannot heal this `gemma2` model"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    common::assert_no_output(&out);
}
