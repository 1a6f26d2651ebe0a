//! The guard of healing (issue 18): with held-out validation windows, every block keeps the
//! candidate map with the lowest next-token KL to the dense model there, and stays unhealed when
//! no candidate beats leaving it so. Run on the golden llama fixture (4 layers).

mod common;

use common::{golden_tokens, heal_golden};
use depthprune::heal::{self, HealOptions, Healing, Objective, Prior};

use common::guarded as validated;

const CTX: usize = common::GUARD_CTX;
const SAMPLES: usize = common::GUARD_SAMPLES;
const HOLDOUT: usize = common::GUARD_HOLDOUT;

/// Every block's record is consistent with the rule: a map is kept only when its validation KL
/// is the lowest of all candidates and below the unhealed KL.
fn check_rule(h: &Healing) {
    for b in &h.blocks {
        let v = b.validation.as_ref().expect("validation was run");
        assert_eq!(v.candidates.len(), h.options.objectives.len());
        let best = v
            .candidates
            .iter()
            .min_by(|a, b| a.validation_kl.total_cmp(&b.validation_kl))
            .unwrap();
        let name = heal::down_proj_name(b.fold_layer);
        if best.validation_kl < v.unhealed_kl {
            assert_eq!(b.objective, Some(best.objective), "{b:?}");
            assert_eq!(b.alpha, best.alpha);
            assert!(h.tensors.contains_key(&name));
        } else {
            assert_eq!(b.objective, None, "{b:?}");
            assert!(!h.tensors.contains_key(&name));
        }
        for c in &v.candidates {
            assert!(c.validation_kl.is_finite() && c.validation_kl >= 0.0);
            assert!(h.options.alphas.contains(&c.alpha));
        }
    }
}

#[test]
fn validated_healing_keeps_a_map_only_where_it_lowers_the_held_out_kl() {
    let t = golden_tokens(SAMPLES);
    let h = heal_golden(&t, &validated()).unwrap();
    assert_eq!(h.validation_samples, SAMPLES / HOLDOUT);
    assert_eq!(h.samples, SAMPLES - SAMPLES / HOLDOUT);
    check_rule(&h);
    // On natural text the fixture's block 2..3 is worth healing.
    assert!(h.blocks[0].healed(), "{:?}", h.blocks[0]);
}

#[test]
fn the_guard_refuses_a_map_that_validation_says_is_worse() {
    // The fit windows hold one token repeated, the validation windows real text: a map fitted
    // with a zero prior and almost no ridge on such rows has never seen the directions real text
    // uses, so it zeroes most of the MLP output there.
    let real = golden_tokens(SAMPLES);
    let mut t = Vec::with_capacity(SAMPLES);
    for (i, w) in real.chunks(CTX).enumerate() {
        if (i + 1).is_multiple_of(HOLDOUT) {
            t.extend_from_slice(w);
        } else {
            t.extend(std::iter::repeat_n(5u32, CTX));
        }
    }
    let opts = HealOptions {
        alphas: vec![1e-9],
        prior: Prior::Zero,
        ..validated()
    };
    let h = heal_golden(&t, &opts).unwrap();
    check_rule(&h);
    let b = &h.blocks[0];
    let v = b.validation.as_ref().unwrap();
    assert!(!b.healed(), "the guard kept a harmful map: {b:?}");
    assert!(h.tensors.is_empty());
    for c in &v.candidates {
        assert!(
            c.validation_kl > v.unhealed_kl,
            "{c:?} vs {}",
            v.unhealed_kl
        );
    }
    // Without the guard the same fit is folded in, whatever it does.
    let unguarded = HealOptions::fixed(Objective::Lstsq, 1e-9, Prior::Zero, CTX);
    let h = heal_golden(&t, &unguarded).unwrap();
    assert!(h.blocks[0].healed());
}

#[test]
fn too_few_windows_for_the_hold_out_is_a_clear_error() {
    let t = golden_tokens(SAMPLES);
    let opts = HealOptions {
        holdout: 8,
        ..HealOptions::validated(CTX)
    };
    let e = heal_golden(&t[..4 * CTX], &opts).unwrap_err().to_string();
    assert!(e.contains("4 windows of 16 tokens"), "{e}");
    assert!(e.contains("held out for validation"), "{e}");
}

#[test]
fn prune_heal_records_the_validation_in_pruning_json_and_the_card() {
    let tmp = tempfile::tempdir().unwrap();
    let flags = common::guarded_flags(&["--heal"]);
    let (stdout, prov) = common::prune_golden_ok(tmp.path(), &flags, "healed");
    assert!(stdout.contains("block 2..3:"), "{stdout}");
    assert!(stdout.contains("validation KL"), "{stdout}");
    let h = &prov["healing"];
    assert_eq!(h["holdout"], 4);
    assert_eq!(h["validation_samples"], 64);
    assert_eq!(h["samples"], 192);
    assert_eq!(
        h["objectives"],
        serde_json::json!(["lstsq", "weighted", "scale"])
    );
    let b = &h["blocks"][0];
    let v = &b["validation"];
    assert!(v["kl_unhealed"].as_f64().unwrap() > 0.0, "{b}");
    assert_eq!(v["candidates"].as_array().unwrap().len(), 3, "{b}");
    let card = std::fs::read_to_string(tmp.path().join("healed/README.md")).unwrap();
    assert!(card.contains("held-out tokens by next-token KL"), "{card}");

    // --holdout 0 with the default grid of ridge weights is refused before any work.
    common::prune_golden_refused(
        tmp.path(),
        &["--heal", "lstsq", "--holdout", "0"],
        "exactly one --alpha",
    );
}

#[test]
fn the_cosine_objective_is_refined_from_least_squares_and_validated_like_the_others() {
    let t = golden_tokens(SAMPLES);
    let opts = HealOptions {
        objectives: vec![Objective::Lstsq, Objective::Cosine],
        ..validated()
    };
    let h = heal_golden(&t, &opts).unwrap();
    check_rule(&h);
    let v = h.blocks[0].validation.as_ref().unwrap();
    let cands: Vec<_> = v.candidates.iter().map(|c| c.objective).collect();
    assert_eq!(cands, vec![Objective::Lstsq, Objective::Cosine]);
    // The cosine map starts from the least-squares map of the same ridge weight, and refining
    // moves it.
    let (ls, cos) = (&v.candidates[0], &v.candidates[1]);
    assert_eq!(ls.alpha, cos.alpha);
    assert_ne!(cos.train_residual, ls.train_residual, "{ls:?} {cos:?}");
    assert_ne!(cos.validation_kl, ls.validation_kl);
}
