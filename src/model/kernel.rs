//! Which kernel multiplies each kind of product, chosen by measurement on the machine that runs
//! it (issue 34). A product of f32 activations by a weight kept narrower than f32 (bf16, f16 or
//! ggml blocks) has several exact kernels that differ only in speed and in the order of their
//! sums ([`Kernel`]); which is fastest depends on the CPU (on one, a bf16 dot product retires half
//! the work of an f32 FMA; on another, twice), so no constant is right everywhere.
//!
//! The first product of each kind (weight type × few or many rows) times every candidate on
//! its own operands: each runs once to warm up (thread pool, packing buffers, page faults), then
//! all run in turn until about [`PROBE_BUDGET`] is spent, and the fastest (best of its runs) is
//! kept for the process. The choice and every candidate's GFLOP/s are recorded ([`report`]) for
//! the JSON outputs and `pruning.json`.
//!
//! A kernel can be forced ([`with_kernel`], the `kernel` run option, or the environment variable
//! `DEPTHPRUNE_KERNEL`): it then serves every kind it is a candidate for. Forcing is
//! process-wide, as the choices are: it changes how the machine multiplies, not what is computed.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// The time the candidates of one kind may take to be measured, warm-up included (at least one
/// warm-up and one timed run each are always made).
pub const PROBE_BUDGET: Duration = Duration::from_millis(20);
/// Timed runs per candidate at most.
const MAX_RUNS: usize = 5;
/// The environment variable that forces a kernel when the call does not.
pub const KERNEL_ENV: &str = "DEPTHPRUNE_KERNEL";

/// A way to multiply f32 activations by a weight stored narrower than f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kernel {
    /// Native 16-bit dot products (AVX512-BF16 `vdpbf16ps`) on weight panels packed as bf16
    /// pairs; activations rounded to bf16, sums in f32.
    Native,
    /// The weight widened to f32 a few MiB of output columns at a time (on every thread), each
    /// chunk multiplied by the f32 GEMM on the whole pool.
    Widen,
    /// Each task widens one panel of 64 output columns into an f32 tile of its own (it stays in
    /// cache) and multiplies it on its thread.
    Tiles,
}

impl Kernel {
    const ALL: [Kernel; 3] = [Kernel::Native, Kernel::Widen, Kernel::Tiles];

    /// The name as the option takes it.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Native => "native",
            Kernel::Widen => "widen",
            Kernel::Tiles => "tiles",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The kernel a caller asks for (`--kernel`): measured per kind, or one forced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum KernelChoice {
    /// The fastest on this machine, measured at the first product of each kind.
    #[default]
    Auto,
    /// Native 16-bit dot products where the CPU has them (AVX512-BF16).
    Native,
    /// Widen the weight to f32 by chunks, f32 GEMM on the whole pool.
    Widen,
    /// Widen one 64-column panel per task into a cached f32 tile.
    Tiles,
}

impl KernelChoice {
    /// The forced kernel, or `None` for auto.
    pub fn kernel(self) -> Option<Kernel> {
        match self {
            KernelChoice::Auto => None,
            KernelChoice::Native => Some(Kernel::Native),
            KernelChoice::Widen => Some(Kernel::Widen),
            KernelChoice::Tiles => Some(Kernel::Tiles),
        }
    }

    /// Reads a choice by name (`auto`, `native`, `widen`, `tiles`).
    pub fn parse(s: &str) -> Option<KernelChoice> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "auto" | "" => KernelChoice::Auto,
            "native" => KernelChoice::Native,
            "widen" => KernelChoice::Widen,
            "tiles" => KernelChoice::Tiles,
            _ => return None,
        })
    }

    fn code(self) -> u8 {
        self.kernel().map_or(1, |k| 2 + k as u8)
    }

    fn from_code(c: u8) -> KernelChoice {
        match c {
            2 => KernelChoice::Native,
            3 => KernelChoice::Widen,
            4 => KernelChoice::Tiles,
            _ => KernelChoice::Auto,
        }
    }
}

/// The forced choice; 0 until [`KERNEL_ENV`] was read.
static FORCED: AtomicU8 = AtomicU8::new(0);

/// The kernel choice in force: the one [`with_kernel`] set, else [`KERNEL_ENV`] (a value that
/// names no kernel reads as auto; the command line refuses it before this is read).
pub fn kernel_choice() -> KernelChoice {
    match FORCED.load(Ordering::Relaxed) {
        0 => {
            let env = std::env::var(KERNEL_ENV).ok();
            let c = env.as_deref().and_then(KernelChoice::parse);
            let c = c.unwrap_or_default();
            let _ = FORCED.compare_exchange(0, c.code(), Ordering::Relaxed, Ordering::Relaxed);
            KernelChoice::from_code(FORCED.load(Ordering::Relaxed))
        }
        c => KernelChoice::from_code(c),
    }
}

/// Runs `f` with `choice` forcing the kernels (auto leaves the choice in force, the
/// environment's included, as it is), then restores the choice before.
pub fn with_kernel<R>(choice: KernelChoice, f: impl FnOnce() -> R) -> R {
    if choice == KernelChoice::Auto {
        return f();
    }
    let before = kernel_choice();
    FORCED.store(choice.code(), Ordering::Relaxed);
    struct Restore(KernelChoice);
    impl Drop for Restore {
        fn drop(&mut self) {
            FORCED.store(self.0.code(), Ordering::Relaxed);
        }
    }
    let _restore = Restore(before);
    f()
}

/// Products multiplied by each kernel in this process, in [`Kernel`] order.
static USED: [AtomicU64; 3] = [const { AtomicU64::new(0) }; 3];

/// How many products `kernel` has multiplied in this process (tests check that a forced kernel
/// is the one that ran).
pub fn products_by(kernel: Kernel) -> u64 {
    USED[kernel.index()].load(Ordering::Relaxed)
}

/// A kind of product: one choice serves all products of a kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Kind {
    /// The weight's stored type (`bf16`, `f16`, `q4_k`, …).
    pub weight: &'static str,
    /// Whether the product has many rows (windows being scored) rather than a few (generation).
    pub many_rows: bool,
}

/// The kernel chosen for one kind of product, as the JSON outputs record it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KernelRecord {
    /// The weight's stored type: `bf16`, `f16`, or a ggml block type (`q4_k`, …).
    pub weight: String,
    /// The products this choice serves: `few` rows (generation) or `many` (scoring windows).
    pub rows: String,
    /// The product the candidates were timed on: `[rows, in, out]`.
    pub shape: [usize; 3],
    /// The kernel kept for the process.
    pub kernel: Kernel,
    /// `measured`, `forced` (`--kernel`, `DEPTHPRUNE_KERNEL`), or `only candidate`.
    pub by: String,
    /// Each candidate's rate on `shape`, best of its timed runs, in GFLOP/s (2 per multiply-add).
    pub gflops: BTreeMap<Kernel, f64>,
}

/// The choices made so far in this process.
static CHOSEN: Mutex<Vec<(Kind, KernelRecord)>> = Mutex::new(Vec::new());
/// Held while a kind is measured, so two measurements never share the cores.
static PROBING: Mutex<()> = Mutex::new(());

/// The choices made so far in this process, in the order they were made.
pub fn report() -> Vec<KernelRecord> {
    let chosen = CHOSEN.lock().unwrap_or_else(|e| e.into_inner());
    chosen.iter().map(|(_, r)| r.clone()).collect()
}

/// The kernel measured fastest for `kind`, if it was.
fn lookup(kind: Kind) -> Option<Kernel> {
    let chosen = CHOSEN.lock().unwrap_or_else(|e| e.into_inner());
    (chosen.iter())
        .find(|(k, r)| *k == kind && r.by != FORCED_BY)
        .map(|(_, r)| r.kernel)
}

/// How a record says its kernel was forced.
const FORCED_BY: &str = "forced";

/// Records that `kernel` was forced for `kind`, unless the kind has a record already (a
/// measurement later replaces it).
fn note_forced(kind: Kind, shape: [usize; 3], kernel: Kernel) {
    let mut chosen = CHOSEN.lock().unwrap_or_else(|e| e.into_inner());
    match chosen.iter_mut().find(|(k, _)| *k == kind) {
        Some((_, r)) if r.by == FORCED_BY => r.kernel = kernel,
        Some(_) => {}
        None => chosen.push((
            kind,
            record(kind, shape, kernel, FORCED_BY, BTreeMap::new()),
        )),
    }
}

fn record(
    kind: Kind,
    shape: [usize; 3],
    kernel: Kernel,
    by: &str,
    gflops: BTreeMap<Kernel, f64>,
) -> KernelRecord {
    KernelRecord {
        weight: kind.weight.to_string(),
        rows: if kind.many_rows { "many" } else { "few" }.to_string(),
        shape,
        kernel,
        by: by.to_string(),
        gflops,
    }
}

/// The kernel for a product of `kind` and `shape` (`[rows, in, out]`) among `candidates` (the
/// kernels this machine has for it, in order of preference when the measurement is busy
/// elsewhere: `candidates[0]` then serves). `run` multiplies this product with one kernel and
/// says how long that took. The count of products of the kernel returned goes up by one.
pub(crate) fn choose(
    kind: Kind,
    shape: [usize; 3],
    candidates: &[Kernel],
    run: impl FnMut(Kernel) -> Duration,
) -> Kernel {
    let k = decide(kind, shape, candidates, kernel_choice().kernel(), run);
    USED[k.index()].fetch_add(1, Ordering::Relaxed);
    k
}

/// [`choose`] with the forced kernel given, and nothing counted.
fn decide(
    kind: Kind,
    shape: [usize; 3],
    candidates: &[Kernel],
    forced: Option<Kernel>,
    run: impl FnMut(Kernel) -> Duration,
) -> Kernel {
    assert!(!candidates.is_empty(), "a product needs a kernel");
    if let Some(k) = forced.filter(|k| candidates.contains(k)) {
        note_forced(kind, shape, k);
        return k;
    }
    if let Some(k) = lookup(kind) {
        return k;
    }
    // A product inside another's measurement (a pool thread that stole it) must not wait for
    // it, nor time itself beside it.
    let Ok(_probing) = PROBING.try_lock() else {
        return candidates[0];
    };
    if let Some(k) = lookup(kind) {
        return k;
    }
    let flops = 2.0 * shape.iter().map(|&d| d as f64).product::<f64>();
    let (kernel, by, gflops) = if candidates.len() == 1 {
        (candidates[0], "only candidate", BTreeMap::new())
    } else {
        let best = probe(candidates, PROBE_BUDGET, run);
        let rates: BTreeMap<Kernel, f64> = (candidates.iter().zip(&best))
            .map(|(&k, t)| (k, flops / t.as_secs_f64().max(1e-9) / 1e9))
            .collect();
        let fastest = (candidates.iter().zip(&best))
            .min_by_key(|(_, t)| **t)
            .map_or(candidates[0], |(&k, _)| k);
        (fastest, "measured", rates)
    };
    let record = record(kind, shape, kernel, by, gflops);
    let mut chosen = CHOSEN.lock().unwrap_or_else(|e| e.into_inner());
    chosen.retain(|(k, _)| *k != kind);
    chosen.push((kind, record));
    kernel
}

/// The best time of each candidate: one warm-up run each (not counted), then rounds of one run
/// each until the runs (warm-ups included) took `budget`, at least one round and at most
/// [`MAX_RUNS`].
fn probe(
    candidates: &[Kernel],
    budget: Duration,
    mut run: impl FnMut(Kernel) -> Duration,
) -> Vec<Duration> {
    let mut spent: Duration = candidates.iter().map(|&k| run(k)).sum();
    let mut best = vec![Duration::MAX; candidates.len()];
    for _ in 0..MAX_RUNS {
        for (b, &k) in best.iter_mut().zip(candidates) {
            let t = run(k);
            spent += t;
            *b = (*b).min(t);
        }
        if spent >= budget {
            break;
        }
    }
    best
}

/// Every kernel, for tests that run each one.
pub fn all_kernels() -> [Kernel; 3] {
    Kernel::ALL
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(weight: &'static str) -> Kind {
        Kind {
            weight,
            many_rows: true,
        }
    }

    /// A fake product whose kernels take the given times, the first run of each `warm` longer.
    fn fake(times: [u64; 3], warm: u64) -> impl FnMut(Kernel) -> Duration {
        let mut seen = [false; 3];
        move |k| {
            let i = k.index();
            let extra = if seen[i] { 0 } else { warm };
            seen[i] = true;
            Duration::from_micros(times[i] + extra)
        }
    }

    #[test]
    fn the_faster_candidate_is_kept_whatever_its_warm_up_cost() {
        let both = [Kernel::Native, Kernel::Widen];
        // Native is slower to warm up by far, and faster once warm.
        let k = decide(
            kind("test-a"),
            [4, 8, 16],
            &both,
            None,
            fake([100, 300, 0], 50_000),
        );
        assert_eq!(k, Kernel::Native);
        // The same candidates with the times swapped pick the other one.
        let k = decide(
            kind("test-b"),
            [4, 8, 16],
            &both,
            None,
            fake([300, 100, 0], 0),
        );
        assert_eq!(k, Kernel::Widen);
        let record = report().into_iter().find(|r| r.weight == "test-b").unwrap();
        assert_eq!(
            (record.kernel, record.by.as_str()),
            (Kernel::Widen, "measured")
        );
        // 2 × 4 × 8 × 16 flops in 100 µs and 300 µs.
        let want = 2.0 * 512.0 / 100e-6 / 1e9;
        assert!(
            (record.gflops[&Kernel::Widen] - want).abs() < 1e-9,
            "{record:?}"
        );
        assert!((record.gflops[&Kernel::Native] - want / 3.0).abs() < 1e-9);
        // Kept for the process: a second product of the kind is not timed.
        let k = decide(kind("test-b"), [4, 8, 16], &both, None, |_| {
            panic!("timed twice")
        });
        assert_eq!(k, Kernel::Widen);
    }

    #[test]
    fn a_forced_kernel_serves_where_it_is_a_candidate() {
        let both = [Kernel::Widen, Kernel::Tiles];
        let k = decide(
            kind("test-c"),
            [1, 1, 1],
            &both,
            Some(Kernel::Tiles),
            |_| panic!("a forced kernel is not measured"),
        );
        assert_eq!(k, Kernel::Tiles);
        let r = report().into_iter().find(|r| r.weight == "test-c").unwrap();
        assert_eq!((r.kernel, r.by.as_str()), (Kernel::Tiles, "forced"));
        // Unforced, the kind is measured and the record replaced.
        let k = decide(kind("test-c"), [1, 1, 1], &both, None, fake([0, 9, 5], 0));
        assert_eq!(k, Kernel::Tiles);
        let r = report()
            .into_iter()
            .filter(|r| r.weight == "test-c")
            .collect::<Vec<_>>();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].by, "measured");
        // Not a candidate (no native kernel for this weight): measured as without forcing.
        let k = decide(
            kind("test-d"),
            [1, 1, 1],
            &both,
            Some(Kernel::Native),
            fake([9, 5, 1], 0),
        );
        assert_eq!(k, Kernel::Tiles);
    }

    #[test]
    fn probing_is_bounded_and_warms_up_first() {
        let mut calls = Vec::new();
        let best = probe(&[Kernel::Widen, Kernel::Tiles], PROBE_BUDGET, |k| {
            calls.push(k);
            // A slow product: each run takes the whole budget.
            Duration::from_millis(if calls.len() <= 2 { 30 } else { 25 })
        });
        // Two warm-ups and one timed round, whatever the budget.
        assert_eq!(calls.len(), 4);
        assert_eq!(best, vec![Duration::from_millis(25); 2]);
        let mut n = 0;
        probe(&[Kernel::Widen], PROBE_BUDGET, |_| {
            n += 1;
            Duration::from_micros(1)
        });
        assert_eq!(n, 1 + MAX_RUNS);
    }

    #[test]
    fn choices_parse_by_name() {
        for c in [
            KernelChoice::Auto,
            KernelChoice::Native,
            KernelChoice::Widen,
            KernelChoice::Tiles,
        ] {
            let name = c.kernel().map_or("auto", Kernel::name);
            assert_eq!(KernelChoice::parse(name), Some(c));
            assert_eq!(KernelChoice::from_code(c.code()), c);
        }
        assert_eq!(KernelChoice::parse("fast"), None);
    }
}
