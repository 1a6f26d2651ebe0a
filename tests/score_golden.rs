//! Layer scores on the tiny golden models against transformers (scripts/golden_scores.py):
//! Block Influence, angular distances (last token and all tokens, every block size), one-shot
//! perplexity without each layer and SLEB's greedy order, and the layers `choose` picks from them.

mod common;

use common::floats;
use common::golden::{dir, ids, load};
use depthprune::arch::ParamCounts;
use depthprune::choose::strategy::{choose, Amount, Protect};
use depthprune::model::Model;
use depthprune::progress::Silent;
use depthprune::score::{score, LayerScores, Metric, ScoreOptions, TokenSel};
use serde_json::Value;

const TOL: f64 = 1e-4;
const ARCHS: &[&str] = &["llama", "mistral", "qwen2", "qwen3"];

fn windows(arch: &str) -> Vec<Vec<u32>> {
    ids(&load(arch)["tokens"])
}

fn expected(arch: &str) -> Value {
    let text = std::fs::read_to_string(dir(arch).join("scores_expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn run(
    model: &Model,
    w: &[Vec<u32>],
    metric: Metric,
    tokens: TokenSel,
    batch: usize,
) -> LayerScores {
    let opts = ScoreOptions {
        metric,
        tokens,
        max_block: model.n_layers(),
        batch,
        greedy_steps: Some(3),
    };
    score(model, w, &opts, &Silent).unwrap().scores
}

fn max_err(arch: &str, what: &str, got: &[f64], want: &[f64], tol: f64) -> f64 {
    assert_eq!(got.len(), want.len(), "{arch} {what}: lengths");
    let e = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(
        e <= tol,
        "{arch} {what}: max abs error {e:e} > {tol:e}\n got  {got:?}\n want {want:?}"
    );
    e
}

#[test]
fn bi_and_angular_match_transformers() {
    let mut worst = 0f64;
    for arch in ARCHS {
        let model = Model::open(&dir(arch)).unwrap();
        let w = windows(arch);
        let want = expected(arch);
        for batch in [1, 2] {
            let bi = run(&model, &w, Metric::Bi, TokenSel::Last, batch);
            worst = worst.max(max_err(
                arch,
                "bi",
                &bi.importance,
                &floats(&want["bi"]),
                TOL,
            ));
        }
        for (sel, key) in [
            (TokenSel::Last, "angular_last_token"),
            (TokenSel::All, "angular_all_tokens"),
        ] {
            let s = run(&model, &w, Metric::Angular, sel, 2);
            let d = s.angular.as_ref().unwrap();
            let rows = want[key].as_array().unwrap();
            assert_eq!(d.len(), rows.len(), "{arch} {key}: block sizes");
            for (n, row) in rows.iter().enumerate() {
                worst = worst.max(max_err(
                    arch,
                    &format!("{key} n={}", n + 1),
                    &d[n],
                    &floats(row),
                    TOL,
                ));
            }
            // The same choice as transformers' numbers: the best 2-layer block.
            let mut t = s.clone();
            t.angular = Some(rows.iter().map(floats).collect());
            let counts = ParamCounts::default();
            let ours = choose(&s, Amount::Layers(2), true, Protect::default(), &counts).unwrap();
            let theirs = choose(&t, Amount::Layers(2), true, Protect::default(), &counts).unwrap();
            assert_eq!(
                ours.removal.removed(),
                theirs.removal.removed(),
                "{arch} {key}"
            );
        }
    }
    eprintln!("bi/angular: max abs error vs transformers {worst:e}");
}

#[test]
fn minitron_equals_bi_with_equal_windows() {
    // Per-batch sums averaged over batches differ from the per-token mean by the tokens per
    // batch: with windows of T tokens one per batch, minitron = T × bi.
    let model = Model::open(&dir("llama")).unwrap();
    let w = windows("llama");
    let bi = run(&model, &w, Metric::Bi, TokenSel::Last, 1);
    let mt = run(&model, &w, Metric::Minitron, TokenSel::Last, 1);
    let t = w[0].len() as f64;
    for (a, b) in bi.importance.iter().zip(&mt.importance) {
        assert!((a * t - b).abs() < 1e-9, "{a} * {t} != {b}");
    }
}

#[test]
fn ppl_and_greedy_match_transformers() {
    for arch in ARCHS {
        let model = Model::open(&dir(arch)).unwrap();
        let w = windows(arch);
        let want = expected(arch);
        let ppl = run(&model, &w, Metric::Ppl, TokenSel::Last, 1);
        let base = want["ppl_baseline"].as_f64().unwrap();
        let rel = |a: f64, b: f64| (a - b).abs() / b;
        assert!(
            rel(ppl.baseline_ppl.unwrap(), base) < TOL,
            "{arch} baseline"
        );
        for (l, (a, b)) in ppl
            .importance
            .iter()
            .zip(floats(&want["ppl_without_layer"]))
            .enumerate()
        {
            assert!(rel(*a, b) < TOL, "{arch} ppl without layer {l}: {a} vs {b}");
        }
        let g = run(&model, &w, Metric::Greedy, TokenSel::Last, 1);
        let steps = g.greedy.as_ref().unwrap();
        let want_steps = want["greedy"].as_array().unwrap();
        assert_eq!(steps.len(), want_steps.len(), "{arch} greedy steps");
        for (s, ws) in steps.iter().zip(want_steps) {
            assert_eq!(
                s.layer as u64,
                ws["layer"].as_u64().unwrap(),
                "{arch} greedy order"
            );
            assert!(
                rel(s.ppl, ws["ppl"].as_f64().unwrap()) < TOL,
                "{arch} greedy ppl"
            );
        }
        // The greedy order is also the removal order `choose` follows.
        let order: Vec<usize> = steps.iter().map(|s| s.layer).collect();
        assert_eq!(&g.removal_order()[..3], &order[..]);
    }
}

#[test]
fn offloaded_layers_give_the_same_scores() {
    let d = dir("qwen3");
    let (cfg, source) = depthprune::model::open_folder(&d).unwrap();
    let lazy = Model::from_source(cfg, source, &|_| false).unwrap();
    let full = Model::open(&d).unwrap();
    let w = windows("qwen3");
    assert!(w.len() >= 2, "the layer-major path needs several batches");
    // Batches of one window: the offloaded model runs layer-major (each layer once over every
    // batch), the resident one batch-major; the per-batch arithmetic is the same.
    for metric in [Metric::Bi, Metric::Minitron, Metric::Angular, Metric::Ppl] {
        for tokens in [TokenSel::Last, TokenSel::All] {
            let a = run(&lazy, &w, metric, tokens, 1);
            let b = run(&full, &w, metric, tokens, 1);
            assert_eq!(a.importance, b.importance, "{metric:?} {tokens:?}");
            assert_eq!(a.angular, b.angular, "{metric:?} {tokens:?}");
        }
    }
}
