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
    #[command(flatten)]
    pub req: GenerateRequest,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut show =
        |piece: &str| print(piece).map_err(|e| depthprune::Error::Invalid(e.to_string()));
    let out = generate(
        &ModelSource::new(&args.model),
        &args.req,
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
