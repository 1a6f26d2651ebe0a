//! Calibration resamples as reweightings of one scoring pass (issue 26): for every criterion whose
//! resample is a reweighting of the scored windows, the reweighted scores equal the scores of a
//! new pass over the drawn windows, on the tiny golden llama model.

mod common;

use common::golden::dir;
use depthprune::model::Model;
use depthprune::progress::Silent;
use depthprune::score::{resample_draws, score, LayerScores, Metric, ScoreOptions, TokenSel};

/// Six windows of 12 tokens, spread over the fixture's vocabulary.
fn windows(vocab: usize) -> Vec<Vec<u32>> {
    let mut x = 12345u64;
    (0..6)
        .map(|_| {
            (0..12)
                .map(|_| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((x >> 33) % vocab as u64) as u32
                })
                .collect()
        })
        .collect()
}

fn close(what: &str, a: &[f64], b: &[f64]) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (x, y) in a.iter().zip(b) {
        assert!(
            (x - y).abs() <= 1e-9 * y.abs().max(1.0),
            "{what}: reweighted {a:?}\n rescored {b:?}"
        );
    }
}

fn same_scores(what: &str, a: &LayerScores, b: &LayerScores) {
    close(what, &a.importance, &b.importance);
    match (&a.angular, &b.angular) {
        (Some(x), Some(y)) => {
            assert_eq!(x.len(), y.len(), "{what}: block sizes");
            for (n, (r, s)) in x.iter().zip(y).enumerate() {
                close(&format!("{what} angular n={}", n + 1), r, s);
            }
        }
        (None, None) => {}
        _ => panic!("{what}: one side has angular distances"),
    }
    match (a.baseline_ppl, b.baseline_ppl) {
        (Some(x), Some(y)) => close(&format!("{what} baseline"), &[x], &[y]),
        (None, None) => {}
        _ => panic!("{what}: one side has a baseline perplexity"),
    }
}

#[test]
fn reweighted_resamples_equal_rescored_ones() {
    let model = Model::open(&dir("llama")).unwrap();
    let w = windows(model.config().arch.vocab_size);
    let draws = resample_draws(w.len(), 4, 7);
    // Some resample repeats a window and some leaves one out, so the weights are not all 1.
    assert!(draws.iter().any(|d| (0..w.len()).any(|i| !d.contains(&i))));
    let cases = [
        (Metric::Bi, TokenSel::Last, 1),
        (Metric::Bi, TokenSel::Last, 4),
        (Metric::Minitron, TokenSel::Last, 2),
        (Metric::Angular, TokenSel::Last, 3),
        (Metric::Angular, TokenSel::All, 2),
        (Metric::Ppl, TokenSel::Last, 2),
    ];
    for (metric, tokens, batch) in cases {
        assert!(metric.reweights_resamples());
        let opts = ScoreOptions {
            metric,
            tokens,
            max_block: model.n_layers(),
            batch,
            greedy_steps: None,
        };
        let out = score(&model, &w, &opts, &Silent).unwrap();
        for (i, d) in draws.iter().enumerate() {
            let what = format!(
                "{} {} batch {batch}, resample {i}",
                metric.name(),
                tokens.name()
            );
            let re = out.reweighted(d).expect("a reweighted criterion").unwrap();
            let drawn: Vec<Vec<u32>> = d.iter().map(|&j| w[j].clone()).collect();
            let again = score(&model, &drawn, &opts, &Silent).unwrap().scores;
            same_scores(&what, &re, &again);
            // The resample differs from the full scores, so equality above is not trivial.
            assert_ne!(re.importance, out.scores.importance, "{what}");
        }
    }
}

#[test]
fn greedy_and_healed_resamples_are_scored_again() {
    let model = Model::open(&dir("llama")).unwrap();
    let w = windows(model.config().arch.vocab_size);
    for metric in [Metric::Greedy, Metric::Healed] {
        assert!(!metric.reweights_resamples());
        let opts = ScoreOptions {
            metric,
            tokens: TokenSel::Last,
            max_block: model.n_layers(),
            batch: 2,
            greedy_steps: Some(2),
        };
        let out = score(&model, &w, &opts, &Silent).unwrap();
        assert!(out.reweighted(&[0, 1, 2, 3, 4, 5]).is_none(), "{metric:?}");
    }
}
