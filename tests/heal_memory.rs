//! What a heal holds does not grow with the vocabulary times the calibration tokens (issue 34):
//! a counting global allocator records the peak heap of a validated heal at two token counts,
//! on a model whose vocabulary (4,096) is 128 times its width (32), as a real model's is.
//! Between the two, the peak may grow by the two residual streams a heal keeps (`tokens ×
//! hidden` values each) and their transient copies, never by `tokens × vocab` (a table of the
//! dense model's log-probabilities on the held-out windows once took 5 GB).
//!
//! One test function, so no other test thread allocates while a peak is measured.

mod common;
mod counting_alloc;

use depthprune::checkpoint::safetensors::Dtype;
use depthprune::heal::{self, Gram, HealOptions};
use depthprune::progress::Silent;

#[global_allocator]
static A: counting_alloc::Counting = counting_alloc::Counting;

const HIDDEN: usize = 32;
const VOCAB: usize = 4096;
const CTX: usize = 16;

#[test]
fn a_heals_peak_heap_grows_with_the_streams_not_with_the_vocabulary() {
    // The statistics themselves: two hidden × hidden matrices, whatever the rows.
    let mut g = Gram::new(HIDDEN);
    let before = g.bytes();
    let rows = vec![0.5f32; 64 * HIDDEN];
    g.add(&rows, &rows).unwrap();
    assert_eq!(g.rows(), 64);
    assert_eq!(g.bytes(), before);
    assert_eq!(before, 2 * HIDDEN * HIDDEN * 8);

    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::tiny_config("llama");
    cfg["num_hidden_layers"] = 4.into();
    cfg["vocab_size"] = VOCAB.into();
    common::make_checkpoint(dir.path(), &cfg, Dtype::F32, u64::MAX);
    let opts = HealOptions {
        holdout: 4,
        ..HealOptions::validated(CTX)
    };
    let heal_on = |n: usize| {
        let tokens = common::pseudo_tokens(n, VOCAB as u32);
        let (h, peak) =
            counting_alloc::peak_of(|| heal::heal(dir.path(), &[2], &tokens, &opts, &Silent));
        let h = h.unwrap();
        assert_eq!(h.samples + h.validation_samples, n);
        peak
    };
    let (small, large) = (1024, 8192);
    // Once first, so lazily built state (thread pools, caches) is not counted as growth.
    heal_on(small);
    let (p_small, p_large) = (heal_on(small), heal_on(large));
    let more = large - small;
    let streams = 2 * more * HIDDEN * 4;
    let table = more / 4 * VOCAB * 4;
    let growth = p_large.saturating_sub(p_small);
    assert!(
        growth <= 4 * streams,
        "the peak grew by {growth} bytes for {more} more tokens: more than 4 × the streams' \
         {streams} (a held-out log-probability table would be {table})"
    );
}
