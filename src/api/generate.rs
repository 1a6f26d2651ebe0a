//! Text from a prompt with the KV cache, optionally with layers skipped as if pruned; greedy
//! unless a temperature is given. The text streams to a callback as it is decoded.

use super::ModelSource;
use crate::error::{Error, Result};
use crate::hub::Need;
use crate::model::{generate as run, GenerateOpts, Sampler, Sampling};
use crate::progress::Progress;
use crate::tokenizer::{Message, TextStream};
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// The most new tokens one call may ask for: 2^20, far past any model's context, and a bound
/// on what a mistyped count can cost.
pub const MAX_NEW_TOKENS: usize = 1 << 20;

/// What to generate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
#[serde(default)]
pub struct GenerateRequest {
    /// The prompt text.
    #[cfg_attr(feature = "cli", arg(long))]
    pub prompt: String,
    /// Wrap the prompt as a user message in the model's chat template.
    #[cfg_attr(feature = "cli", arg(long))]
    pub chat: bool,
    /// Stop after this many new tokens.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 128, value_name = "N"))]
    pub max_new_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 0.0, value_name = "T"))]
    pub temperature: f32,
    /// Nucleus sampling: keep the most likely tokens up to this total probability.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 1.0, value_name = "P"))]
    pub top_p: f32,
    /// Keep only the K most likely tokens (0 keeps all).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 0, value_name = "K"))]
    pub top_k: usize,
    /// Seed for sampling.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 0, value_name = "S"))]
    pub seed: u64,
    /// Skip these layers (0-based SPEC) as if they were pruned.
    #[cfg_attr(feature = "cli", arg(long, value_name = "SPEC"))]
    pub skip: Option<String>,
    /// Keep going past end-of-sequence tokens (for timing).
    #[cfg_attr(feature = "cli", arg(long))]
    pub ignore_eos: bool,
    /// Keep only one layer's weights resident, read from the mapped file at every step
    /// (slower, for models larger than memory).
    #[cfg_attr(feature = "cli", arg(long))]
    pub offload: bool,
    /// How the call runs: precision, threads, symlink policy (the CLI's global flags).
    #[serde(flatten)]
    #[cfg_attr(feature = "cli", arg(skip))]
    pub run: crate::api::RunOptions,
}

impl Default for GenerateRequest {
    fn default() -> Self {
        GenerateRequest {
            prompt: String::new(),
            chat: false,
            max_new_tokens: 128,
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            seed: 0,
            skip: None,
            ignore_eos: false,
            offload: false,
            run: crate::api::RunOptions::default(),
        }
    }
}

/// What was generated, and how fast.
#[derive(Debug, Clone, Serialize)]
pub struct Generated {
    pub text: String,
    /// New token ids (an end-of-sequence id included when generation stopped on it).
    pub tokens: Vec<u32>,
    pub prompt_tokens: usize,
    pub stopped_at_eos: bool,
    pub skip: Vec<usize>,
    pub seconds: f64,
    /// Seconds until the first new token (the prompt's forward).
    pub prefill_seconds: f64,
    /// New tokens per second after the first.
    pub tokens_per_s: f64,
}

/// Generates from `model`, passing each piece of decoded text to `on_text` as it comes.
pub fn generate(
    model: &ModelSource,
    req: &GenerateRequest,
    on_text: &mut (dyn FnMut(&str) -> Result<()> + Send),
    progress: &dyn Progress,
) -> Result<Generated> {
    req.run.install(progress, || {
        if req.max_new_tokens > MAX_NEW_TOKENS {
            return Err(Error::Invalid(format!(
            "`max_new_tokens` {}: at most {MAX_NEW_TOKENS} (the KV cache grows with every token)",
            req.max_new_tokens
        )));
        }
        let mut sampler = Sampler::new(Sampling {
            temperature: req.temperature,
            top_p: req.top_p,
            top_k: req.top_k,
            seed: req.seed,
        })?;
        let path = model.resolve(Need::Snapshot, progress)?.path;
        let (m, skip, tok) =
            super::eval::open_skipping(&path, req.skip.as_deref(), false, req.offload, progress)?;
        let prompt = if req.chat {
            let text = tok.render_chat(&[Message {
                role: "user".into(),
                content: req.prompt.clone(),
            }])?;
            tok.encode(&text, false)?
        } else {
            tok.encode(&req.prompt, true)?
        };
        let eos: Vec<u32> = if req.ignore_eos {
            Vec::new()
        } else {
            tok.eos_ids().to_vec()
        };
        let mut stream = TextStream::new(&tok);
        let mut text = String::new();
        let started = Instant::now();
        let mut first: Option<f64> = None;
        let opts = GenerateOpts {
            max_new: req.max_new_tokens,
            skip: &skip,
            eos: &eos,
            use_cache: true,
        };
        let out = run(&m, &prompt, &opts, &mut sampler, &mut |id| {
            first.get_or_insert_with(|| started.elapsed().as_secs_f64());
            let piece = stream.push(id)?;
            text.push_str(&piece);
            on_text(&piece)?;
            Ok(true)
        })?;
        let seconds = started.elapsed().as_secs_f64();
        let prefill = first.unwrap_or(seconds);
        let decoded = out.tokens.len().saturating_sub(1);
        Ok(Generated {
            text,
            prompt_tokens: prompt.len(),
            stopped_at_eos: out.stopped_at_eos,
            tokens: out.tokens,
            skip,
            seconds,
            prefill_seconds: prefill,
            tokens_per_s: decoded as f64 / (seconds - prefill).max(1e-9),
        })
    })
}
