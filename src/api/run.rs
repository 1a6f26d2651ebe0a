//! How one call runs, as opposed to what it computes: the precision of the matrix products, the
//! number of threads and the symlink policy ([`RunOptions`]). Each request that opens a model
//! carries them (the CLI's `--compute`, `--threads`, `--follow-symlinks`; Python's `compute`,
//! `threads`, `follow_symlinks` keywords) and [`RunOptions::install`] applies them to that call
//! alone: a thread pool of its own, and the precision and symlink policy scoped to the call's
//! thread. Nothing here is process-wide, so two calls in one process can differ (issue 25), but
//! the kernel: a forced one holds for the process while the call runs, as the kernels measured
//! fastest do (`model::kernel`, issue 34).

use crate::error::{Error, Result};
use crate::model::kernel::KernelChoice;
use crate::model::ComputeChoice;
use crate::progress::Progress;
use serde::{Deserialize, Serialize};

/// Threads above this many times the cores are refused rather than capped: a mistyped count
/// (`--threads 100000`) is not a request anyone means (issue 24).
pub const MAX_THREADS_PER_CORE: usize = 4;

/// The options of one call that change how it runs, not what it computes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
#[serde(default)]
pub struct RunOptions {
    /// Precision of the matrix products: auto (the default: 16-bit checkpoints in 16 bits with
    /// f32 accumulation, quantized GGUF quantized, f32 in f32), f32 (weights widened on load, for
    /// fidelity) or bf16 (matrix weights in 16 bits whatever is stored).
    #[cfg_attr(
        feature = "cli",
        arg(
            long,
            global = true,
            value_name = "P",
            default_value = "auto",
            value_enum
        )
    )]
    pub compute: ComputeChoice,
    /// Threads for the commands that run the model (matrix products, attention, scoring);
    /// default: every core, or RAYON_NUM_THREADS. More than the cores is capped to them; more
    /// than 4× the cores is refused.
    #[cfg_attr(feature = "cli", arg(long, global = true, value_name = "N"))]
    pub threads: Option<usize>,
    /// Read files in model folders that are symlinks to places outside the folder (refused by
    /// default; hub-cache snapshots may always point into their own cache folder).
    #[cfg_attr(feature = "cli", arg(long, global = true))]
    pub follow_symlinks: bool,
    /// Kernel of the 16-bit and quantized products: auto (the default: the fastest on this
    /// machine, measured at the first product of each kind), native (AVX512-BF16 dot products,
    /// where the CPU has them), widen (weights widened to f32 by chunks) or tiles (by 64-column
    /// tiles). They differ only in speed and in the order of their sums. The variable
    /// DEPTHPRUNE_KERNEL sets it too. It holds for the whole process while the call runs.
    #[cfg_attr(
        feature = "cli",
        arg(
            long,
            global = true,
            value_name = "K",
            default_value = "auto",
            value_enum
        )
    )]
    pub kernel: KernelChoice,
}

/// The cores this process may run on.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Checks a thread count given as `key` against `cores`: `None` when it is refused (0, or more
/// than [`MAX_THREADS_PER_CORE`]× the cores), with the error; otherwise the count to use, capped
/// to the cores, and the warning when it was capped.
fn check_threads(key: &str, n: usize, cores: usize) -> Result<(usize, Option<String>)> {
    let limit = cores.saturating_mul(MAX_THREADS_PER_CORE);
    if n == 0 {
        return Err(Error::Invalid(format!("`{key}` must be at least 1")));
    }
    if n > limit {
        return Err(Error::Invalid(format!(
            "`{key}` is {n}, more than {MAX_THREADS_PER_CORE}× the {cores} cores; give at most {cores}"
        )));
    }
    if n > cores {
        let note = format!("`{key}` is {n}, more than the {cores} cores; using {cores}");
        return Ok((cores, Some(note)));
    }
    Ok((n, None))
}

impl RunOptions {
    /// The threads this call runs on: `threads`, else `RAYON_NUM_THREADS` when set, each capped
    /// to the cores (with a warning) or refused beyond [`MAX_THREADS_PER_CORE`]× them. `None`
    /// leaves the call on the pool it is already in.
    pub fn resolve_threads(&self, progress: &dyn Progress) -> Result<Option<usize>> {
        let cores = cores();
        let (n, note) = match self.threads {
            Some(n) => check_threads("threads", n, cores)?,
            None => {
                let env = std::env::var("RAYON_NUM_THREADS").ok();
                // rayon ignores a value that is not a positive count, and so do we.
                match env.and_then(|v| v.trim().parse::<usize>().ok()) {
                    Some(n) if n > cores => check_threads("RAYON_NUM_THREADS", n, cores)?,
                    _ => return Ok(None),
                }
            }
        };
        if let Some(note) = note {
            progress.warn(&note);
        }
        Ok(Some(n))
    }

    /// Runs `f` under these options: on a pool of its own when the threads are set (the pool's
    /// threads run candle's products too), with the precision and the symlink policy scoped to
    /// the call.
    pub fn install<R: Send>(
        &self,
        progress: &dyn Progress,
        f: impl FnOnce() -> Result<R> + Send,
    ) -> Result<R> {
        let (compute, follow, kernel) = (self.compute, self.follow_symlinks, self.kernel);
        let scoped = move || {
            crate::model::kernel::with_kernel(kernel, || {
                crate::model::with_compute(compute, || {
                    crate::checkpoint::links::with_follow_symlinks(follow, f)
                })
            })
        };
        match self.resolve_threads(progress)? {
            None => scoped(),
            Some(n) => rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .thread_name(|i| format!("depthprune-{i}"))
                .build()
                .map_err(|e| Error::Invalid(format!("cannot start {n} threads: {e}")))?
                .install(scoped),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::Silent;

    #[test]
    fn threads_are_capped_to_the_cores_and_refused_far_beyond() {
        assert_eq!(check_threads("threads", 2, 4).unwrap(), (2, None));
        let (n, note) = check_threads("threads", 9, 4).unwrap();
        assert_eq!(n, 4);
        assert!(note.unwrap().contains("`threads` is 9"));
        check_threads("threads", 16, 4).unwrap();
        let err = check_threads("threads", 17, 4).unwrap_err().to_string();
        assert!(err.contains("`threads`") && err.contains("17"), "{err}");
        let err = check_threads("RAYON_NUM_THREADS", 0, 4).unwrap_err();
        assert!(err.to_string().contains("`RAYON_NUM_THREADS`"), "{err}");
    }

    #[test]
    fn each_call_runs_on_its_own_threads_and_precision() {
        let run = |threads, compute| {
            let opts = RunOptions {
                compute,
                threads: Some(threads),
                follow_symlinks: threads == 1,
                kernel: KernelChoice::Auto,
            };
            opts.install(&Silent, || {
                Ok((
                    rayon::current_num_threads(),
                    crate::model::compute_choice(),
                    crate::checkpoint::links::follow_symlinks(),
                ))
            })
            .unwrap()
        };
        assert_eq!(run(1, ComputeChoice::Bf16), (1, ComputeChoice::Bf16, true));
        let two = 2.min(cores());
        assert_eq!(
            run(two, ComputeChoice::F32),
            (two, ComputeChoice::F32, two == 1)
        );
        // Outside a call: the safe defaults.
        assert_eq!(crate::model::compute_choice(), ComputeChoice::F32);
        assert!(!crate::checkpoint::links::follow_symlinks());
    }
}
