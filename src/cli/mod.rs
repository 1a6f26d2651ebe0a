//! The command line: argument definitions and dispatch. Each subcommand lives in its own file and
//! turns its arguments into calls on the library; nothing here computes anything itself.

mod common;
mod gguf;
mod output;

use clap::{CommandFactory, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "depthprune",
    version,
    about = "Depth pruning for decoder-only language models: score, remove and heal whole transformer layers",
    long_about = "Depth pruning for decoder-only language models.\n\n\
        Layer numbers are 0-based everywhere and ranges are half-open: `3..29` removes layers 3 to 28.\n\
        MODEL is a Hugging Face folder (config.json + safetensors), a config.json (for `plan`), or a GGUF file.",
    after_help = "Examples:\n  \
        depthprune inspect ./Qwen3-4B\n  \
        depthprune plan ./Qwen3-4B/config.json --drop 3..29\n  \
        depthprune prune ./Qwen3-4B --drop 3..29 --out ./Qwen3-4B-10L\n  \
        depthprune prune model.gguf --drop last:8 --out pruned.gguf\n\n\
        Layer SPEC grammar: N | A..B | A.. | ..B | first:K | last:K, joined with commas (e.g. `3..6,9,last:2`)."
)]
pub struct Cli {
    /// Read files in model folders that are symlinks to places outside the folder (refused by
    /// default; hub-cache snapshots may always point into their own cache folder).
    #[arg(long, global = true)]
    pub follow_symlinks: bool,
    /// Threads for the commands that run the model (matrix products, attention, scoring);
    /// default: every core (or RAYON_NUM_THREADS).
    #[arg(long, global = true, value_name = "N")]
    pub threads: Option<std::num::NonZeroUsize>,
    /// Precision of the matrix products: f32 (weights widened on load, the default, for
    /// fidelity) or bf16 (matrix weights kept in 16 bits, bf16/f16 as stored, with f32
    /// accumulation: half the memory, native bf16 dot products where the CPU has them).
    #[arg(long, global = true, value_name = "P", default_value = "f32")]
    pub compute: ComputeArg,
    #[command(subcommand)]
    pub command: Command,
}

/// `--compute`.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum ComputeArg {
    F32,
    Bf16,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Show a checkpoint's architecture, parameters by component, dtypes and size on disk.
    Inspect(inspect::Args),
    /// Show what a prune would produce, without writing anything (works from config.json alone).
    Plan(plan::Args),
    /// Remove layers and write a new checkpoint (streamed, byte-for-byte, atomic).
    Prune(prune::Args),
    /// Write a random-weight checkpoint of a given shape (for tests and benchmarks).
    Synth(synth::Args),
    /// Re-hash a pruned checkpoint and check every tensor (against its source, if given).
    Verify(verify::Args),
    /// Perplexity on a text file and divergence from a reference, or zero-shot multiple-choice
    /// accuracy on a task file (--tasks); optionally with layers skipped.
    Eval(eval::Args),
    /// Layer importance on calibration text (angular, bi, minitron, ppl, greedy, last).
    Score(score::Args),
    /// Generate text from a prompt with the KV cache (optionally with layers skipped).
    Generate(generate::Args),
    /// Convert a GGUF file into an HF folder (config, safetensors, tokenizer).
    Convert(convert::Args),
    /// Heal a pruned checkpoint without training (a least-squares map folded into down_proj).
    Heal(heal::Args),
    /// The study: every strategy at every number of layers removed, measured against the dense model.
    Sweep(sweep::Args),
    /// Write report.md for a sweep: tables, plots, checkpoints and generations side by side.
    Report(report::Args),
}

mod convert;
mod eval;
mod generate;
mod heal;
mod inspect;
mod plan;
mod prune;
mod report;
mod score;
mod sweep;
mod synth;
mod verify;

/// The command line, with every flag that takes a value taking a negative number as that value
/// (`--ctx -1` is a bad `--ctx`, refused by the flag's own parser and named, not an unknown
/// flag `-1`).
fn command() -> clap::Command {
    fn negative(a: clap::Arg) -> clap::Arg {
        if a.get_action().takes_values() && !a.is_positional() {
            a.allow_negative_numbers(true)
        } else {
            a
        }
    }
    Cli::command()
        .mut_args(negative)
        .mut_subcommands(|s| s.mut_args(negative))
}

/// Runs the CLI and returns the process exit code.
pub fn run() -> i32 {
    let parsed = command()
        .try_get_matches()
        .and_then(|m| <Cli as clap::FromArgMatches>::from_arg_matches(&m));
    let cli = match parsed {
        Ok(cli) => cli,
        Err(e) => {
            // A flag's value that names nothing valid (an unknown metric, say) is a bad
            // request, exit 1, as when commands read those values themselves; a command line
            // that does not parse is a usage error, exit 2.
            let code = match e.kind() {
                clap::error::ErrorKind::ValueValidation | clap::error::ErrorKind::InvalidValue => 1,
                _ => e.exit_code(),
            };
            let _ = e.print();
            return code;
        }
    };
    output::set_flags(&Cli::command());
    depthprune::checkpoint::links::set_follow_symlinks(cli.follow_symlinks);
    depthprune::model::reuse_freed_memory();
    depthprune::model::set_default_compute(match cli.compute {
        ComputeArg::F32 => depthprune::model::Compute::F32,
        ComputeArg::Bf16 => depthprune::model::Compute::Bf16,
    });
    if let Some(n) = cli.threads {
        if let Err(e) = depthprune::model::set_threads(n.get()) {
            return output::report_error(&e.into());
        }
    }
    let result = match cli.command {
        Command::Inspect(a) => inspect::run(a),
        Command::Plan(a) => plan::run(a),
        Command::Prune(a) => prune::run(a),
        Command::Synth(a) => synth::run(a),
        Command::Verify(a) => verify::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Generate(a) => generate::run(a),
        Command::Convert(a) => convert::run(a),
        Command::Score(a) => score::run(a),
        Command::Heal(a) => heal::run(a),
        Command::Sweep(a) => sweep::run(a),
        Command::Report(a) => report::run(a),
    };
    match result {
        Ok(()) => 0,
        Err(e) => output::report_error(&e),
    }
}
