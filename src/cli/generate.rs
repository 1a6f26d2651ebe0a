//! `depthprune generate`: text from a prompt, streamed to stdout, with the KV cache.

use super::output::print;
use depthprune::model::{generate, open_folder, GenerateOpts, Model, Sampler, Sampling};
use depthprune::select::{LayerSpec, Removal};
use depthprune::tokenizer::{HfTokenizer, Message, TextStream};
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    depthprune generate ./Qwen3-4B --prompt \"The capital of France is\"\n  \
    depthprune generate ./Qwen3-4B --chat --prompt \"Name three prime numbers.\" --skip 20..28\n  \
    depthprune generate ./Qwen3-4B --prompt \"Once\" --temperature 0.8 --top-p 0.95 --seed 1\n\n\
    Greedy unless --temperature is above 0. The text goes to stdout; timings go to stderr.")]
pub struct Args {
    /// The model: an HF folder (config.json, tokenizer.json, safetensors).
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
    let mut sampler = Sampler::new(Sampling {
        temperature: args.temperature,
        top_p: args.top_p,
        top_k: args.top_k,
        seed: args.seed,
    })?;
    let (cfg, source) = open_folder(&args.model)?;
    let skip = match &args.skip {
        Some(s) => Removal::drop(&LayerSpec::parse(s)?, cfg.n_layers())?.removed(),
        None => Vec::new(),
    };
    let model = Model::from_source(cfg, source, &|i| !skip.contains(&i))?;
    let tok = HfTokenizer::open(&args.model)?;
    let prompt = if args.chat {
        let text = tok.render_chat(&[Message {
            role: "user".into(),
            content: args.prompt.clone(),
        }])?;
        tok.encode(&text, false)?
    } else {
        tok.encode(&args.prompt, true)?
    };
    let eos: Vec<u32> = if args.ignore_eos {
        Vec::new()
    } else {
        tok.eos_ids().to_vec()
    };
    let mut stream = TextStream::new(&tok);
    let started = Instant::now();
    let mut first: Option<f64> = None;
    let opts = GenerateOpts {
        max_new: args.max_new_tokens,
        skip: &skip,
        eos: &eos,
        use_cache: true,
    };
    let out = generate(&model, &prompt, &opts, &mut sampler, &mut |id| {
        first.get_or_insert_with(|| started.elapsed().as_secs_f64());
        print(&stream.push(id)?).map_err(|e| depthprune::Error::Invalid(e.to_string()))?;
        Ok(true)
    })?;
    print("\n")?;
    let total = started.elapsed().as_secs_f64();
    let prefill = first.unwrap_or(total);
    let decoded = out.tokens.len().saturating_sub(1);
    let rate = decoded as f64 / (total - prefill).max(1e-9);
    eprintln!(
        "generated {} tokens in {total:.2} s: prompt {} tokens in {prefill:.2} s, then {rate:.1} tokens/s{}",
        out.tokens.len(),
        prompt.len(),
        if out.stopped_at_eos { " (stopped at EOS)" } else { "" }
    );
    Ok(())
}
