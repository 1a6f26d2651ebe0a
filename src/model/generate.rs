//! Text generation: greedy or sampled (temperature, then top-k, then top-p, as transformers
//! orders them), with or without the KV cache. Stops at an end-of-sequence id or a token limit.

use super::{KvCache, Model};
use crate::error::{Error, Result};
use candle_core::D;

/// How the next token is chosen. A temperature of 0 means greedy.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampling {
    pub temperature: f32,
    /// Keep the smallest set of tokens whose probability adds up to `top_p` (1 keeps all).
    pub top_p: f32,
    /// Keep the `top_k` most likely tokens (0 keeps all).
    pub top_k: usize,
    pub seed: u64,
}

impl Sampling {
    /// Always the most likely token (the first, on ties, as `torch.argmax`).
    pub fn greedy() -> Self {
        Sampling {
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            seed: 0,
        }
    }

    /// Checks the ranges: temperature ≥ 0, top-p in (0, 1].
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(Error::Invalid(format!(
                "`temperature` {} must be a finite number ≥ 0",
                self.temperature
            )));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::Invalid(format!(
                "`top_p` {} must be in (0, 1]",
                self.top_p
            )));
        }
        Ok(())
    }
}

/// Picks tokens from logits with a seeded generator (splitmix64), so runs repeat exactly.
#[derive(Debug, Clone)]
pub struct Sampler {
    cfg: Sampling,
    state: u64,
}

impl Sampler {
    pub fn new(cfg: Sampling) -> Result<Self> {
        cfg.validate()?;
        let state = cfg.seed;
        Ok(Sampler { cfg, state })
    }

    fn next_f64(&mut self) -> f64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    /// The next token id given one position's logits.
    pub fn pick(&mut self, logits: &[f32]) -> u32 {
        if self.cfg.temperature == 0.0 {
            return argmax(logits);
        }
        let t = self.cfg.temperature as f64;
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
        if self.cfg.top_k > 0 {
            order.truncate(self.cfg.top_k);
        }
        let max = logits[order[0]] as f64 / t;
        let mut probs: Vec<f64> = order
            .iter()
            .map(|&i| (logits[i] as f64 / t - max).exp())
            .collect();
        let total: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
        if self.cfg.top_p < 1.0 {
            let mut acc = 0.0;
            let mut keep = probs.len();
            for (n, p) in probs.iter().enumerate() {
                acc += p;
                if acc >= self.cfg.top_p as f64 {
                    keep = n + 1;
                    break;
                }
            }
            probs.truncate(keep);
            order.truncate(keep);
        }
        let total: f64 = probs.iter().sum();
        let mut r = self.next_f64() * total;
        for (p, &i) in probs.iter().zip(&order) {
            r -= p;
            if r < 0.0 {
                return i as u32;
            }
        }
        order[order.len() - 1] as u32
    }
}

/// The index of the largest logit, the first on ties.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// What a generation produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// The new tokens, including the end-of-sequence token if one stopped it.
    pub tokens: Vec<u32>,
    /// Whether an end-of-sequence token stopped it (rather than the limit or the callback).
    pub stopped_at_eos: bool,
}

/// What to generate: how many tokens, which layers to skip, where to stop.
#[derive(Debug, Clone, Copy)]
pub struct GenerateOpts<'a> {
    /// Stop after this many new tokens.
    pub max_new: usize,
    /// Layers to skip (checkpoint indices).
    pub skip: &'a [usize],
    /// Ids that end generation (the id itself is returned, not passed to `on_token`).
    pub eos: &'a [u32],
    /// Run only the new token each step (the KV cache); without, rerun the whole sequence.
    pub use_cache: bool,
}

/// Generates tokens after `prompt`. `on_token` sees each new token and returns `false` to stop.
pub fn generate(
    model: &Model,
    prompt: &[u32],
    opts: &GenerateOpts<'_>,
    sampler: &mut Sampler,
    on_token: &mut dyn FnMut(u32) -> Result<bool>,
) -> Result<Generation> {
    if prompt.is_empty() {
        return Err(Error::Invalid("the prompt has no tokens".into()));
    }
    let mut cache = opts.use_cache.then(|| KvCache::new(model.n_layers()));
    // With the cache, each step feeds only the tokens not yet cached; without, the whole sequence.
    let mut input = prompt.to_vec();
    let mut tokens = Vec::new();
    // LongRoPE switches to its long frequencies once the sequence passes the original context;
    // as transformers does for Phi-3, the cache is then dropped and the whole sequence rerun,
    // so no cached key keeps the short frequencies.
    let switch = match &model.config().rope_scaling {
        super::RopeScaling::LongRope(l) => Some(l.original_max_position_embeddings),
        _ => None,
    };
    while tokens.len() < opts.max_new {
        if let (Some(c), Some(orig)) = (cache.as_mut(), switch) {
            if c.len() <= orig && c.len() + input.len() > orig {
                *c = KvCache::new(model.n_layers());
                input = prompt.iter().chain(&tokens).copied().collect();
            }
        }
        let ids = model.tokens(&[&input])?;
        let hidden = model.forward_hidden(&ids, opts.skip, cache.as_mut(), &mut |_| Ok(()))?;
        let t = hidden.dim(1)?;
        let logits = model.logits(&hidden.narrow(1, t - 1, 1)?)?;
        let row: Vec<f32> = logits.flatten_all()?.to_vec1()?;
        debug_assert_eq!(logits.dim(D::Minus1)?, row.len());
        let next = sampler.pick(&row);
        tokens.push(next);
        if cache.is_some() {
            input.clear();
        }
        input.push(next);
        if opts.eos.contains(&next) {
            return Ok(Generation {
                tokens,
                stopped_at_eos: true,
            });
        }
        if !on_token(next)? {
            break;
        }
    }
    Ok(Generation {
        tokens,
        stopped_at_eos: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_first_max() {
        assert_eq!(argmax(&[0.1, 3.0, 3.0, -1.0]), 1);
        let mut s = Sampler::new(Sampling::greedy()).unwrap();
        assert_eq!(s.pick(&[0.0, 0.5, 0.2]), 1);
    }

    #[test]
    fn top_k_one_is_greedy_and_seed_repeats() {
        let logits = [0.3, 2.0, 1.9, -4.0];
        let cfg = Sampling {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 1,
            seed: 7,
        };
        let mut s = Sampler::new(cfg.clone()).unwrap();
        assert!((0..20).all(|_| s.pick(&logits) == 1));
        let many = |seed| {
            let mut s = Sampler::new(Sampling {
                top_k: 0,
                seed,
                ..cfg.clone()
            })
            .unwrap();
            (0..50).map(|_| s.pick(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(many(3), many(3));
        assert_ne!(many(3), many(4));
    }

    #[test]
    fn top_p_drops_the_tail() {
        let logits = [10.0, 9.5, -20.0, -20.0];
        let mut s = Sampler::new(Sampling {
            temperature: 1.0,
            top_p: 0.9,
            top_k: 0,
            seed: 1,
        })
        .unwrap();
        assert!((0..200).all(|_| s.pick(&logits) < 2));
    }

    #[test]
    fn rejects_bad_ranges() {
        assert!(Sampler::new(Sampling {
            top_p: 0.0,
            ..Sampling::greedy()
        })
        .is_err());
        assert!(Sampler::new(Sampling {
            temperature: -1.0,
            ..Sampling::greedy()
        })
        .is_err());
    }
}
