//! Each way `eval::loglik` answers a group of requests (one row for one-token continuations, the
//! KV cache for longer ones, a row per request when cut) against the definition: log-softmax of
//! one plain forward of `context + continuation`, on the tiny llama.

use depthprune::eval::loglik::{loglikelihoods, Request};
use depthprune::model::Model;
use depthprune::progress::Silent;
use std::path::PathBuf;

fn model() -> Model {
    Model::open(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden/llama"))
        .unwrap()
}

/// The summed log-probability of `cont` after `ctx` and whether each token is the argmax, from
/// one forward without cache.
fn reference(m: &Model, ctx: &[u32], cont: &[u32]) -> (f64, bool) {
    let all: Vec<u32> = ctx.iter().chain(cont).copied().collect();
    let logits = m.forward(&m.tokens(&[&all]).unwrap(), &[], None).unwrap();
    let rows: Vec<Vec<f32>> = logits.squeeze(0).unwrap().to_vec2().unwrap();
    let (mut ll, mut greedy) = (0.0, true);
    for (k, &t) in cont.iter().enumerate() {
        let row = &rows[ctx.len() - 1 + k];
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let lse = max
            + row
                .iter()
                .map(|&x| (x as f64 - max).exp())
                .sum::<f64>()
                .ln();
        ll += row[t as usize] as f64 - lse;
        let best = (0..row.len()).fold(0, |b, i| if row[i] > row[b] { i } else { b });
        greedy &= best == t as usize;
    }
    (ll, greedy)
}

#[test]
fn every_path_gives_the_plain_forwards_numbers() {
    let m = model();
    let ctx: Vec<u32> = (20..40).collect();
    let req = |ctx: &[u32], cont: &[u32]| Request {
        context: ctx.to_vec(),
        continuation: cont.to_vec(),
    };
    let mut requests = Vec::new();
    // One-token continuations sharing a context: one row.
    for t in [50, 51, 52, 53] {
        requests.push(req(&ctx, &[t]));
    }
    // Longer continuations sharing another context: the KV cache.
    let ctx2: Vec<u32> = (60..75).collect();
    for cont in [&[80u32, 81, 82][..], &[90], &[100, 101]] {
        requests.push(req(&ctx2, cont));
    }
    // A lone request.
    requests.push(req(&[7, 8, 9], &[10, 11]));
    // The greedy token itself, so one `greedy` is true.
    let logits = m.forward(&m.tokens(&[&ctx]).unwrap(), &[], None).unwrap();
    let last: Vec<f32> = logits
        .squeeze(0)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap()
        .pop()
        .unwrap();
    let best = (0..last.len()).fold(0, |b, i| if last[i] > last[b] { i } else { b }) as u32;
    requests.push(req(&ctx, &[best]));
    for batch in [1, 3] {
        let (got, stats) = loglikelihoods(&m, &[], &requests, 256, batch, &Silent).unwrap();
        assert_eq!(stats.truncated, 0);
        for (r, a) in requests.iter().zip(&got) {
            let (ll, greedy) = reference(&m, &r.context, &r.continuation);
            assert!((a.ll - ll).abs() < 1e-4, "{r:?}: {} vs {ll}", a.ll);
            assert_eq!(a.greedy, greedy, "{r:?}");
        }
        assert!(got.last().unwrap().greedy);
    }
    // Cut to 8 tokens: every request of ctx2 loses its start, as lm-eval's input does.
    let (got, stats) = loglikelihoods(&m, &[], &requests[4..7], 8, 2, &Silent).unwrap();
    assert_eq!(stats.truncated, 3);
    for (r, a) in requests[4..7].iter().zip(&got) {
        let all: Vec<u32> = r.context.iter().chain(&r.continuation).copied().collect();
        let keep = &all[all.len() - 9..];
        let (ctx, cont) = keep.split_at(keep.len() - r.continuation.len());
        let (ll, _) = reference(&m, ctx, cont);
        assert!((a.ll - ll).abs() < 1e-4, "{r:?}: {} vs {ll}", a.ll);
    }
}
