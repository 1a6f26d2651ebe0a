//! `depthprune sweep MODEL --strategies … --remove 0..K --calib FILE --eval FILE --out DIR`:
//! every strategy at every number of layers removed, pruned virtually and measured against the
//! dense model; writes `sweep.csv`, `sweep.json`, the plots, and with `--report` the report.

use super::output::{print, print_json, Bar};
use anyhow::Result;
use depthprune::api::score::describe_calibration;
use depthprune::api::sweep::{sweep, SweepRequest};
use depthprune::api::ModelSource;
use depthprune::sweep::Sweep;
use std::fmt::Write;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    depthprune sweep model.gguf --strategies angular,bi,ppl,last --remove 0..13 \\\n      \
        --calib calib.txt --eval eval.txt --out study/ --report\n  \
    depthprune sweep ./Qwen3-4B --strategies angular,bi:block,greedy --remove 4,8,12 \\\n      \
        --calib wiki.txt --eval wiki.txt --calib-offset 200000 --heal lstsq --out study/\n\n\
    Strategies: angular, bi, minitron, ppl, greedy, last; `angular` removes one contiguous block and\n\
    the others individual layers, unless `:block` or `:layers` is added (e.g. `bi:block`).\n\
    --remove takes `A..B` (half-open, like layer ranges: `0..13` is 0 to 12) or a list (`2,4,8`);\n\
    0 is the dense model.\n\
    Nothing is written but results: layers are skipped in memory, and the dense model's activations\n\
    are computed once and reused, so each cell restarts at the first layer it removes.\n\
    Each finished cell is saved in --out (cells.jsonl) at once: after Ctrl-C (exit 130) or a kill,\n\
    the same command with --resume measures only the cells missing.\n\n\
    Three slices of text, refused when they overlap in one file: calibration (scores the layers),\n\
    validation (--select-on; picks the best removal at each count) and evaluation (measures it).\n\
    Every perplexity, KL and top-1 figure carries a 95% interval from a seeded bootstrap over the\n\
    evaluation windows; differences (against dense, best against runner-up) are paired.")]
pub struct Args {
    /// An HF folder or a `.gguf` file.
    pub model: PathBuf,
    #[command(flatten)]
    pub req: SweepRequest,
    /// Print the sweep as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> Result<()> {
    stop_on_signals();
    let result = sweep(&ModelSource::new(&args.model), &args.req, &Bar::items())?;
    if args.json {
        return print_json(&result);
    }
    let mut t = table(&result)?;
    writeln!(t, "\nwrote:")?;
    let out = args.req.out.clone().unwrap_or_default();
    for f in ["sweep.csv", "sweep.json", "plots/"] {
        writeln!(t, "  {}", out.join(f).display())?;
    }
    print(&t)
}

/// SIGINT and SIGTERM ask the sweep to stop after the cell it is measuring (the cells finished
/// are saved, and the run exits 130 saying how to resume); a second signal exits at once.
#[cfg(unix)]
fn stop_on_signals() {
    extern "C" fn on_signal(_: libc::c_int) {
        if depthprune::base::cancel::requested() {
            // SAFETY: `_exit` is async-signal-safe.
            unsafe { libc::_exit(130) };
        }
        depthprune::base::cancel::request();
    }
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only touches an atomic and calls `_exit`, both signal-safe.
        unsafe {
            libc::signal(
                sig,
                on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
            );
        }
    }
}

#[cfg(not(unix))]
fn stop_on_signals() {}

/// The sweep as a text table: one row per count, one perplexity column per strategy.
fn table(s: &Sweep) -> Result<String> {
    let mut t = String::new();
    writeln!(t, "model        {} ({} layers)", s.model, s.n_layers)?;
    let dense_ci = s
        .dense_perplexity_ci
        .map(|c| format!(" [{:.3}, {:.3}]", c[0], c[1]))
        .unwrap_or_default();
    writeln!(
        t,
        "evaluation   `{}`, {} windows of {} tokens from token {}; dense perplexity {:.3}{dense_ci}",
        s.eval.file, s.eval.windows, s.eval.ctx, s.eval.offset_tokens, s.dense_perplexity
    )?;
    if let Some(v) = &s.select {
        writeln!(
            t,
            "validation   `{}`, {} windows of {} tokens from token {} (the best choices are made here)",
            v.file, v.windows, v.ctx, v.offset_tokens
        )?;
    }
    writeln!(t, "calibration  {}", describe_calibration(&s.calibration))?;
    let healed = s.heal.is_some();
    writeln!(
        t,
        "\nevaluation perplexity{} by layers removed (KL to dense in brackets):",
        if healed { " unhealed / healed" } else { "" }
    )?;
    write!(t, "{:>3}", "k")?;
    for name in &s.strategies {
        write!(t, "  {name:>26}")?;
    }
    writeln!(t)?;
    for &k in &s.counts {
        write!(t, "{k:>3}")?;
        for name in &s.strategies {
            let cell = s
                .rows
                .iter()
                .find(|r| &r.strategy == name && r.k == k)
                .map(|r| match &r.healed {
                    Some(h) => format!(
                        "{:.1} / {:.1} ({:.2})",
                        r.measured.perplexity, h.perplexity, h.mean_kl
                    ),
                    None => format!("{:.2} ({:.3})", r.measured.perplexity, r.measured.mean_kl),
                })
                .unwrap_or_default();
            write!(t, "  {cell:>26}")?;
        }
        writeln!(t)?;
    }
    writeln!(
        t,
        "\nbest by validation perplexity, measured on the evaluation slice (95% intervals):"
    )?;
    for &k in s.counts.iter().filter(|&&k| k > 0) {
        let (Some(r), Some(b)) = (s.best_at(k), s.best.get(&k.to_string())) else {
            continue;
        };
        writeln!(
            t,
            "  k={k:<3} {:<16} --drop {:<24} ppl {:.2}{} ({:.1}% of parameters kept){}",
            r.strategy,
            r.drop,
            b.perplexity,
            b.perplexity_ci
                .map(|c| format!(" [{:.2}, {:.2}]", c[0], c[1]))
                .unwrap_or_default(),
            100.0 * r.params_kept,
            match &b.runner_up {
                Some(u) if !u.difference.separates() => format!(
                    "; not distinguishable from {} (runner-up {:+.2} [{:.2}, {:.2}])",
                    u.strategy, u.difference.estimate, u.difference.ci[0], u.difference.ci[1]
                ),
                Some(u) if u.difference.estimate < 0.0 => format!(
                    "; runner-up {} {:+.2} [{:.2}, {:.2}] is lower on evaluation",
                    u.strategy, u.difference.estimate, u.difference.ci[0], u.difference.ci[1]
                ),
                Some(u) => format!(
                    "; runner-up {} {:+.2} [{:.2}, {:.2}]",
                    u.strategy, u.difference.estimate, u.difference.ci[0], u.difference.ci[1]
                ),
                None => String::new(),
            }
        )?;
    }
    if !s.task_list.is_empty() {
        writeln!(
            t,
            "\ntasks at each count's best choice: value [95% interval] (share of dense kept):"
        )?;
        t.push_str(&depthprune::report::papers::papers_table(s));
    }
    Ok(t)
}
