//! Which tokens a perplexity run feeds and which it scores, under the two conventions of the
//! pruning literature.
//!
//! - **Chunks** (`--ctx N`): the token stream is cut into `⌊n / N⌋` non-overlapping windows of `N`
//!   tokens (a shorter tail is dropped). Every position of a window except the first is scored,
//!   predicted from the tokens before it in the same window: `N - 1` tokens per window. This is
//!   SparseGPT's and SLEB's evaluation (N = 2048) and LLM-Pruner's and Shortened LLaMA's (N = 128).
//! - **Sliding** (`--ctx N --stride S`): windows start at `0, S, 2S, …` and hold up to `N` tokens;
//!   the last window ends at the end of the stream. Each window scores only the tokens that no
//!   earlier window scored (its last `S`, i.e. `N - overlap`, after the first window's `N - 1`),
//!   so with `S < N` every token except the stream's first is scored exactly once, with at least
//!   `N - S` tokens of context once the first window is past. This is the convention of
//!   transformers' perplexity guide; as there, the first position of a window is never scored
//!   (so with `S = N` each window's first token goes unscored, as under chunks, but the tail is kept).
//!
//! The chunks rule is the one rule by which every command cuts a token stream into windows
//! ([`whole_windows`]): scoring's and healing's calibration windows and the sweep's evaluation
//! and validation windows are all whole windows of `ctx` from the start of their tokens.

use crate::error::{Error, Result};

/// A perplexity convention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Convention {
    /// Non-overlapping windows of `ctx` tokens.
    Chunks { ctx: usize },
    /// Windows of up to `ctx` tokens every `stride` tokens, scoring only new tokens.
    Sliding { ctx: usize, stride: usize },
}

impl Convention {
    /// Checks the numbers: `ctx ≥ 2`, `1 ≤ stride ≤ ctx`.
    pub fn new(ctx: usize, stride: Option<usize>) -> Result<Self> {
        if ctx < 2 {
            return Err(Error::Invalid(format!(
                "`ctx` {ctx} is too small: a window needs at least 2 tokens"
            )));
        }
        match stride {
            None => Ok(Convention::Chunks { ctx }),
            Some(s) if s == 0 || s > ctx => Err(Error::Invalid(format!(
                "`stride` {s} must be between 1 and `ctx` ({ctx})"
            ))),
            Some(stride) => Ok(Convention::Sliding { ctx, stride }),
        }
    }

    pub fn ctx(&self) -> usize {
        match *self {
            Convention::Chunks { ctx } | Convention::Sliding { ctx, .. } => ctx,
        }
    }

    /// A short name for reports: `chunks` or `sliding`.
    pub fn name(&self) -> &'static str {
        match self {
            Convention::Chunks { .. } => "chunks",
            Convention::Sliding { .. } => "sliding",
        }
    }

    /// One sentence saying which tokens are scored.
    pub fn describe(&self) -> String {
        match *self {
            Convention::Chunks { ctx } => format!(
                "non-overlapping windows of {ctx} tokens; every position but each window's first is scored ({} per window); the tail shorter than a window is dropped",
                ctx - 1
            ),
            Convention::Sliding { ctx, stride } => format!(
                "windows of up to {ctx} tokens every {stride} tokens; each scores only tokens no earlier window scored (never a window's first position), with at least {} tokens of context after the first window",
                ctx - stride
            ),
        }
    }
}

/// One window: tokens `start..start + len` are fed; targets at window positions
/// `score_from..len` are scored, each predicted from the positions before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: usize,
    pub len: usize,
    pub score_from: usize,
}

impl Window {
    /// Tokens scored in this window.
    pub fn scored(&self) -> usize {
        self.len - self.score_from
    }
}

/// The whole windows of `ctx` tokens that `tokens` holds, from its start, a shorter tail dropped:
/// the chunks rule, by which calibration, healing, validation and evaluation windows are all cut.
/// A `ctx` of 0 is taken as 1 (callers refuse windows under 2 tokens before cutting).
pub fn whole_windows<T>(tokens: &[T], ctx: usize) -> std::slice::ChunksExact<'_, T> {
    tokens.chunks_exact(ctx.max(1))
}

/// The windows for a stream of `n` tokens. Errors when the stream is shorter than one window.
pub fn plan(n: usize, conv: Convention) -> Result<Vec<Window>> {
    let ctx = conv.ctx();
    if n < ctx {
        return Err(Error::Invalid(format!(
            "the text has {n} tokens, but one window needs {ctx} (`ctx` {ctx})"
        )));
    }
    let mut out = Vec::new();
    match conv {
        Convention::Chunks { ctx } => {
            for i in 0..n / ctx {
                out.push(Window {
                    start: i * ctx,
                    len: ctx,
                    score_from: 1,
                });
            }
        }
        Convention::Sliding { ctx, stride } => {
            let mut prev_end = 0;
            let mut begin = 0;
            loop {
                let end = (begin + ctx).min(n);
                out.push(Window {
                    start: begin,
                    len: end - begin,
                    score_from: (prev_end - begin).max(1),
                });
                prev_end = end;
                if end == n {
                    break;
                }
                begin += stride;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_drop_the_tail() {
        let w = plan(10, Convention::new(4, None).unwrap()).unwrap();
        assert_eq!(w.len(), 2);
        assert_eq!(
            w[1],
            Window {
                start: 4,
                len: 4,
                score_from: 1
            }
        );
        assert_eq!(w.iter().map(Window::scored).sum::<usize>(), 6);
    }

    #[test]
    fn chunks_are_the_whole_windows() {
        let tokens: Vec<u32> = (0..23).collect();
        for ctx in [2, 4, 5, 23] {
            let planned: Vec<&[u32]> = plan(tokens.len(), Convention::new(ctx, None).unwrap())
                .unwrap()
                .iter()
                .map(|w| &tokens[w.start..w.start + w.len])
                .collect();
            let cut: Vec<&[u32]> = whole_windows(&tokens, ctx).collect();
            assert_eq!(planned, cut, "ctx {ctx}");
        }
        assert_eq!(whole_windows(&tokens[..3], 4).count(), 0);
    }

    #[test]
    fn sliding_scores_every_token_once() {
        for (n, ctx, stride) in [(10, 4, 2), (11, 4, 3), (9, 5, 1), (4, 4, 1), (100, 16, 6)] {
            let w = plan(n, Convention::new(ctx, Some(stride)).unwrap()).unwrap();
            let mut seen = vec![0; n];
            for x in &w {
                assert!(x.len <= ctx && x.score_from >= 1);
                for p in x.score_from..x.len {
                    seen[x.start + p] += 1;
                }
            }
            assert_eq!(seen[0], 0);
            assert!(
                seen[1..].iter().all(|&c| c == 1),
                "{n} {ctx} {stride}: {seen:?}"
            );
            assert_eq!(w.last().unwrap().start + w.last().unwrap().len, n);
        }
    }

    #[test]
    fn stride_equal_to_ctx_keeps_the_tail_but_not_window_starts() {
        let w = plan(10, Convention::new(4, Some(4)).unwrap()).unwrap();
        let got: Vec<_> = w.iter().map(|x| (x.start, x.len, x.score_from)).collect();
        assert_eq!(got, vec![(0, 4, 1), (4, 4, 1), (8, 2, 1)]);
    }

    #[test]
    fn sliding_matches_the_transformers_guide() {
        // ctx 4, stride 2 over 7 tokens: windows 0..4, 2..6, 4..7 scoring 3, 2, 1 tokens.
        let w = plan(7, Convention::new(4, Some(2)).unwrap()).unwrap();
        let got: Vec<_> = w.iter().map(|x| (x.start, x.len, x.score_from)).collect();
        assert_eq!(got, vec![(0, 4, 1), (2, 4, 2), (4, 3, 2)]);
    }

    #[test]
    fn short_text_says_how_short() {
        let err = plan(3, Convention::new(8, None).unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("3 tokens") && err.contains("needs 8"), "{err}");
        assert!(Convention::new(4, Some(5)).is_err());
        assert!(Convention::new(1, None).is_err());
    }
}
