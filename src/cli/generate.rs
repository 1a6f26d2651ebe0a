//! `depthprune generate`: text from a prompt, streamed to stdout, with the KV cache.

use super::output::{print, Bar};
use depthprune::api::generate::{generate, GenerateRequest};
use depthprune::api::ModelSource;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    depthprune generate ./Qwen3-4B --prompt \"The capital of France is\"\n  \
    depthprune generate ./Qwen3-4B --chat --prompt \"Name three prime numbers.\" --skip 20..28\n  \
    depthprune generate ./Qwen3-4B --prompt \"Once\" --temperature 0.8 --top-p 0.95 --seed 1\n\n\
    Greedy unless --temperature is above 0. The text goes to stdout; timings go to stderr.")]
pub struct Args {
    /// The model: an HF folder (config.json, tokenizer.json, safetensors) or a `.gguf` file.
    pub model: PathBuf,
    /// The prompt text.
    #[arg(long)]
    pub prompt: String,
    /// Wrap the prompt as a user message in the model's chat template.
    #[arg(long)]
    pub chat: bool,
    /// Stop after this many new tokens.
    #[arg(long, default_value_t = 128, value_name = "N")]
    pub max_new_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0, value_name = "T")]
    pub temperature: f32,
    /// Nucleus sampling: keep the most likely tokens up to this total probability.
    #[arg(long, default_value_t = 1.0, value_name = "P")]
    pub top_p: f32,
    /// Keep only the K most likely tokens (0 keeps all).
    #[arg(long, default_value_t = 0, value_name = "K")]
    pub top_k: usize,
    /// Seed for sampling.
    #[arg(long, default_value_t = 0, value_name = "S")]
    pub seed: u64,
    /// Skip these layers (0-based SPEC) as if they were pruned.
    #[arg(long, value_name = "SPEC")]
    pub skip: Option<String>,
    /// Keep going past end-of-sequence tokens (for timing).
    #[arg(long)]
    pub ignore_eos: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let req = GenerateRequest {
        prompt: args.prompt,
        chat: args.chat,
        max_new_tokens: args.max_new_tokens,
        temperature: args.temperature,
        top_p: args.top_p,
        top_k: args.top_k,
        seed: args.seed,
        skip: args.skip,
        ignore_eos: args.ignore_eos,
    };
    let mut show =
        |piece: &str| print(piece).map_err(|e| depthprune::Error::Invalid(e.to_string()));
    let out = generate(
        &ModelSource::new(&args.model),
        &req,
        &mut show,
        &Bar::items(),
    )?;
    print("\n")?;
    eprintln!(
        "generated {} tokens in {:.2} s: prompt {} tokens in {:.2} s, then {:.1} tokens/s{}",
        out.tokens.len(),
        out.seconds,
        out.prompt_tokens,
        out.prefill_seconds,
        out.tokens_per_s,
        if out.stopped_at_eos {
            " (stopped at EOS)"
        } else {
            ""
        }
    );
    Ok(())
}
