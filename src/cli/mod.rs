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
    /// How the commands that open a model run (`--compute`, `--threads`, `--follow-symlinks`),
    /// handed to each command's request rather than set for the process.
    #[command(flatten)]
    pub run: depthprune::api::RunOptions,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Show a checkpoint's architecture, parameters by component, dtypes and size on disk.
    Inspect(inspect::Args),
    /// Show what a prune would produce, without writing anything (works from config.json alone).
    Plan(plan::Args),
    /// Remove layers and write a new checkpoint (streamed, byte-for-byte, atomic), healed with --heal
    ///
    /// The layers are named (--drop, --keep) or a number of them is chosen by a strategy
    /// (--remove, --target-params, --ratio; heal-aware with --heal). With --heal the checkpoint
    /// is healed as `heal` does, in the same run.
    Prune(prune::Args),
    /// Write a random-weight checkpoint of a given shape (for tests and benchmarks).
    Synth(synth::Args),
    /// Re-hash a pruned checkpoint and check every tensor (against its source, if given).
    Verify(verify::Args),
    /// Perplexity on a text file and divergence from a reference, or lm-eval benchmarks by name
    /// (--tasks mmlu=PATH,humaneval=PATH,...); optionally with layers skipped.
    Eval(eval::Args),
    /// Layer importance on calibration text (angular, bi, minitron, ppl, greedy, healed, last).
    Score(score::Args),
    /// Generate text from a prompt with the KV cache (optionally with layers skipped).
    Generate(generate::Args),
    /// Convert a GGUF file into an HF folder, or an HF folder into a GGUF file (float or quantized)
    ///
    /// `--to hf` writes config.json, safetensors and tokenizer.json; `--to gguf` writes F32, F16
    /// or BF16 tensors, or with --quant llama.cpp's q4_k_m, q4_0 or q8_0 mixes.
    Convert(convert::Args),
    /// Heal a pruned checkpoint: maps fitted on calibration text and folded into its weights
    ///
    /// The default (`auto`) fits a linear map per removed block in closed form and folds it into
    /// the down_proj of the layer before the block; for post-norm families (Gemma 2/3, OLMo 2) a
    /// rotation and a per-channel scale, folded into down_proj and the post-MLP norm. Held-out
    /// windows choose among the objectives and keep a map only where it lowers the KL to the
    /// dense model. `kd` then distils the maps on the dense model's next-token distribution,
    /// with low-rank weight updates merged in (--rank). A GGUF model's healed tensors are
    /// requantized to their source types. See docs/healing.md.
    Heal(heal::Args),
    /// The study: every strategy at every number of layers removed, measured against the dense model.
    Sweep(sweep::Args),
    /// Write report.md for a sweep: tables, plots, checkpoints and generations side by side.
    Report(report::Args),
    /// The machine report: CPU, features, peak rates per core, the kernels chosen, threads and
    /// memory (paste it into bug reports; `--line` for benchmark logs).
    Doctor(doctor::Args),
}

mod convert;
mod doctor;
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

/// Refuses a `DEPTHPRUNE_KERNEL` that names no kernel (the library would read it as auto).
fn check_kernel_env() -> anyhow::Result<()> {
    use depthprune::model::kernel::{KernelChoice, KERNEL_ENV};
    match std::env::var(KERNEL_ENV) {
        Ok(v) if KernelChoice::parse(&v).is_none() => anyhow::bail!(
            "{KERNEL_ENV} is `{v}`, which names no kernel; hint: give auto, native, widen or tiles"
        ),
        _ => Ok(()),
    }
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
    if let Err(e) = check_kernel_env() {
        return output::report_error(&e);
    }
    depthprune::model::reuse_freed_memory();
    let run = cli.run;
    // Commands without a request of their own read folders under the call's symlink policy.
    let follow = run.follow_symlinks;
    use depthprune::checkpoint::links::with_follow_symlinks as scoped;
    let result = match cli.command {
        Command::Inspect(a) => scoped(follow, || inspect::run(a)),
        Command::Plan(a) => scoped(follow, || plan::run(a)),
        Command::Synth(a) => scoped(follow, || synth::run(a)),
        Command::Verify(a) => scoped(follow, || verify::run(a)),
        Command::Convert(a) => scoped(follow, || convert::run(a)),
        Command::Prune(mut a) => {
            a.req.run = run;
            prune::run(a)
        }
        Command::Eval(mut a) => {
            a.req.run = run;
            eval::run(a)
        }
        Command::Generate(mut a) => {
            a.req.run = run;
            generate::run(a)
        }
        Command::Score(mut a) => {
            a.req.run = run;
            score::run(a)
        }
        Command::Heal(mut a) => {
            a.heal.run = run;
            heal::run(a)
        }
        Command::Sweep(mut a) => {
            a.req.run = run;
            sweep::run(a)
        }
        Command::Report(mut a) => {
            a.req.run = run;
            report::run(a)
        }
        Command::Doctor(mut a) => {
            a.req.run = run;
            doctor::run(a)
        }
    };
    match result {
        Ok(()) => 0,
        Err(e) => output::report_error(&e),
    }
}
