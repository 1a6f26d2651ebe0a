//! lm-eval's `generate_until` requests: text generated after a prompt until a stop sequence, an
//! end-of-sequence token or `max_gen_toks`, then cut before the first stop sequence (lm-eval's
//! HF model cuts at each `until` string in turn, which is cutting at the earliest). The prompt is
//! tokenized with the tokenizer's special tokens (unless it starts with BOS text) and cut from
//! the left to `max_len - max_gen_toks` tokens. The prompt runs once with the KV cache; the `n`
//! samples of one prompt (pass@k) then step together as one batch on the repeated cache.
//!
//! One sample per prompt ([`generate_batched`]): prompts run `batch` at a time, longest first (as
//! lm-eval orders them), left-padded to the longest of their batch and stepped together on one
//! cache; a sequence leaves the batch when it stops. Under RoPE a padded sequence computes what
//! it computes alone, up to the rounding of its products; under LongRoPE (Phi-3), whose
//! frequencies depend on the last position, prompts run one at a time.

use crate::error::{Error, Result};
use crate::model::{KvCache, Model, Sampler, Sampling};
use crate::tokenizer::HfTokenizer;

/// How to generate.
#[derive(Debug, Clone)]
pub struct GenOpts<'a> {
    pub until: &'a [String],
    pub max_gen_toks: usize,
    /// The model's context length.
    pub max_len: usize,
    /// Samples per prompt.
    pub n: usize,
    /// Greedy at temperature 0; each sample `s` seeds its sampler with `seed + s`.
    pub sampling: Sampling,
    pub skip: &'a [usize],
}

/// The stop sequences of a task plus the tokenizer's EOS texts, as lm-eval's HF model adds them.
pub fn stop_sequences(until: &[&str], tok: &HfTokenizer) -> Result<Vec<String>> {
    let mut out: Vec<String> = until.iter().map(|s| s.to_string()).collect();
    for &id in tok.eos_ids() {
        let eos = tok.decode_special(&[id])?;
        if !eos.is_empty() && !out.contains(&eos) {
            out.push(eos);
        }
    }
    Ok(out)
}

/// `text` cut before the earliest stop sequence.
pub fn cut(text: &str, until: &[String]) -> String {
    let end = until
        .iter()
        .filter(|u| !u.is_empty())
        .filter_map(|u| text.find(u.as_str()))
        .min()
        .unwrap_or(text.len());
    text[..end].to_string()
}

/// The prompt's tokens, cut from the left to leave room for `max_gen_toks`.
pub fn prompt_tokens(
    tok: &HfTokenizer,
    prompt: &str,
    max_len: usize,
    max_gen_toks: usize,
) -> Result<Vec<u32>> {
    let special = !tok
        .bos_token()
        .is_some_and(|b| !b.is_empty() && prompt.starts_with(b));
    let mut ids = tok.encode(prompt, special)?;
    let room = max_len.saturating_sub(max_gen_toks).max(1);
    if ids.len() > room {
        ids.drain(..ids.len() - room);
    }
    if ids.is_empty() {
        return Err(Error::Invalid("the prompt has no tokens".into()));
    }
    Ok(ids)
}

/// Generates `opts.n` continuations of `prompt` and returns their texts, each cut at the first
/// stop sequence.
pub fn generate_until(
    model: &Model,
    tok: &HfTokenizer,
    prompt: &[u32],
    opts: &GenOpts<'_>,
) -> Result<Vec<String>> {
    let n = opts.n.max(1);
    let mut cache = KvCache::new(model.n_layers());
    let h = model.forward_hidden(
        &model.tokens(&[prompt])?,
        opts.skip,
        Some(&mut cache),
        &mut |_| Ok(()),
    )?;
    let mut logits = last_logits(model, &h)?;
    if n > 1 {
        logits = logits.repeat(n);
        cache = cache.repeat(n)?;
    }
    let vocab = model.vocab_size();
    let mut samplers = (0..n)
        .map(|s| {
            Sampler::new(Sampling {
                seed: opts.sampling.seed.wrapping_add(s as u64),
                ..opts.sampling.clone()
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let mut ids: Vec<Vec<u32>> = vec![Vec::new(); n];
    let mut done = vec![false; n];
    for _ in 0..opts.max_gen_toks {
        let mut next = Vec::with_capacity(n);
        for (s, row) in logits.chunks(vocab).enumerate() {
            let t = samplers[s].pick(row);
            next.push(t);
            if !done[s] {
                done[s] = push(&mut ids[s], t, tok, opts.until)?;
            }
        }
        if done.iter().all(|&d| d) || cache.len() + 1 > opts.max_len {
            break;
        }
        let rows: Vec<[u32; 1]> = next.iter().map(|&t| [t]).collect();
        let rows: Vec<&[u32]> = rows.iter().map(|r| r.as_slice()).collect();
        let h = model.forward_hidden(
            &model.tokens(&rows)?,
            opts.skip,
            Some(&mut cache),
            &mut |_| Ok(()),
        )?;
        logits = last_logits(model, &h)?;
    }
    ids.iter()
        .map(|row| Ok(cut(&tok.decode(row)?, opts.until)))
        .collect()
}

/// Appends `t` to a generation unless it ends it; whether the generation is finished (an EOS
/// token, or a stop sequence just completed). Decoding every step would be quadratic, so stop
/// sequences are looked for in the text of the last few tokens, which holds any that just
/// completed.
fn push(ids: &mut Vec<u32>, t: u32, tok: &HfTokenizer, until: &[String]) -> Result<bool> {
    if tok.eos_ids().contains(&t) {
        return Ok(true);
    }
    ids.push(t);
    let tail_tokens = until.iter().map(|u| u.len()).max().unwrap_or(0) + 2;
    let from = ids.len().saturating_sub(tail_tokens);
    let tail = tok.decode(&ids[from..])?;
    Ok(until
        .iter()
        .any(|u| !u.is_empty() && tail.contains(u.as_str())))
}

/// One continuation of each prompt (`opts.n` is taken as 1), `batch` prompts at a time, each cut
/// at its first stop sequence; the texts in the prompts' order. `finished(i)` is called as prompt
/// `i`'s generation ends.
pub fn generate_batched(
    model: &Model,
    tok: &HfTokenizer,
    prompts: &[Vec<u32>],
    opts: &GenOpts<'_>,
    batch: usize,
    finished: &mut dyn FnMut(usize),
) -> Result<Vec<String>> {
    let batch = if model.left_padding_exact() { batch } else { 1 };
    let mut order: Vec<usize> = (0..prompts.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(prompts[i].len()));
    let mut out = vec![String::new(); prompts.len()];
    let vocab = model.vocab_size();
    for chunk in order.chunks(batch.max(1)) {
        let width = chunk.iter().map(|&i| prompts[i].len()).max().unwrap_or(0);
        if width == 0 {
            return Err(Error::Invalid("the prompt has no tokens".into()));
        }
        // `live[r]`: the prompt in row `r` of the batch, with its padding and tokens so far.
        let mut live: Vec<usize> = chunk.to_vec();
        let mut pads: Vec<usize> = live.iter().map(|&i| width - prompts[i].len()).collect();
        let rows: Vec<Vec<u32>> = (live.iter().zip(&pads))
            .map(|(&i, &p)| [vec![0; p], prompts[i].clone()].concat())
            .collect();
        let refs: Vec<&[u32]> = rows.iter().map(Vec::as_slice).collect();
        let mut cache = KvCache::left_padded(model.n_layers(), pads.clone());
        let h = model.forward_hidden(
            &model.tokens(&refs)?,
            opts.skip,
            Some(&mut cache),
            &mut |_| Ok(()),
        )?;
        let mut logits = last_logits(model, &h)?;
        let mut samplers = (live.iter())
            .map(|_| Sampler::new(opts.sampling.clone()))
            .collect::<Result<Vec<_>>>()?;
        let mut ids: Vec<Vec<u32>> = vec![Vec::new(); live.len()];
        for step in 0..opts.max_gen_toks {
            let mut keep = Vec::with_capacity(live.len());
            let mut next = Vec::with_capacity(live.len());
            for (r, row) in logits.chunks(vocab).enumerate() {
                let t = samplers[r].pick(row);
                if push(&mut ids[r], t, tok, opts.until)? {
                    out[live[r]] = cut(&tok.decode(&ids[r])?, opts.until);
                    finished(live[r]);
                } else {
                    keep.push(r);
                    next.push(t);
                }
            }
            let longest = keep.iter().map(|&r| cache.len() - pads[r]).max();
            let full = longest.is_some_and(|l| l + 1 > opts.max_len);
            if keep.is_empty() || full || step + 1 == opts.max_gen_toks {
                for &r in &keep {
                    out[live[r]] = cut(&tok.decode(&ids[r])?, opts.until);
                    finished(live[r]);
                }
                break;
            }
            if keep.len() < live.len() {
                cache.retain(&keep)?;
                live = keep.iter().map(|&r| live[r]).collect();
                pads = keep.iter().map(|&r| pads[r]).collect();
                ids = keep.iter().map(|&r| std::mem::take(&mut ids[r])).collect();
                samplers = keep.iter().map(|&r| samplers[r].clone()).collect();
            }
            let step_rows: Vec<[u32; 1]> = next.iter().map(|&t| [t]).collect();
            let step_rows: Vec<&[u32]> = step_rows.iter().map(|r| r.as_slice()).collect();
            let h = model.forward_hidden(
                &model.tokens(&step_rows)?,
                opts.skip,
                Some(&mut cache),
                &mut |_| Ok(()),
            )?;
            logits = last_logits(model, &h)?;
        }
    }
    Ok(out)
}

/// The logits of each row's last position, rows one after another.
fn last_logits(model: &Model, h: &candle_core::Tensor) -> Result<Vec<f32>> {
    let t = h.dim(1)?;
    Ok(model
        .logits(&h.narrow(1, t - 1, 1)?)?
        .flatten_all()?
        .to_vec1()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_cut_at_the_earliest_stop_sequence() {
        let until: Vec<String> = ["\ndef", "\nif", ""].map(String::from).to_vec();
        assert_eq!(cut("    return x\nif y\ndef z", &until), "    return x");
        assert_eq!(cut("    return x", &until), "    return x");
        assert_eq!(cut("\ndef", &until), "");
    }
}
