//! The sweep's cached dense log-probabilities give the same perplexity, KL and top-1 agreement
//! as recomputing the dense head for every comparison.

use depthprune::eval::{score_hidden, ReferenceLogProbs};
use depthprune::model::Model;
use std::path::PathBuf;

#[test]
fn cached_reference_matches_recomputed_reference() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden/llama");
    let model = Model::open(&dir).unwrap();
    let windows: Vec<Vec<u32>> = (0..3u32)
        .map(|w| (0..12u32).map(|i| (i * 7 + w * 13) % 100).collect())
        .collect();
    let refs: Vec<&[u32]> = windows.iter().map(Vec::as_slice).collect();
    let tokens = model.tokens(&refs).unwrap();
    let noop = &mut |_: depthprune::model::LayerTap<'_>| Ok(());
    let dense = model.forward_hidden(&tokens, &[], None, noop).unwrap();
    let pruned = model.forward_hidden(&tokens, &[1, 2], None, noop).unwrap();
    let cached = ReferenceLogProbs::new(&model, &dense, &windows).unwrap();
    let a = cached.compare(&model, &pruned).unwrap();
    let b = score_hidden(&model, &pruned, Some(&dense), &windows).unwrap();
    assert_eq!(a.n, b.n);
    assert_eq!(a.agree, b.agree);
    assert!(
        a.kl > 0.01,
        "pruning two of four layers must move the distribution"
    );
    for (x, y) in [(a.nll, b.nll), (a.ref_nll, b.ref_nll), (a.kl, b.kl)] {
        assert!((x - y).abs() <= 1e-6 * y.abs().max(1.0), "{x} vs {y}");
    }
    let same = cached.compare(&model, &dense).unwrap();
    assert!(same.kl.abs() < 1e-4 && same.agree == same.n);
    assert!(cached
        .compare(&model, &pruned.narrow(0, 0, 2).unwrap())
        .is_err());
}
