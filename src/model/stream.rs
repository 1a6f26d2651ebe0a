//! The residual stream entering every layer on a fixed set of windows, kept once so that every
//! virtual prune restarts at the first layer it changes instead of at the embedding. The sweep
//! keeps the dense model's; greedy scoring refreshes it as layers are removed.
//!
//! Also the forward over many batches at once ([`Model::forward_batches`]): layer-major when
//! layers are loaded on demand (`--offload`), so each layer is read once per pass.

use super::{AttnCtx, DecoderLayer, LayerTap, Model};
use crate::error::{Error, Result};
use crate::progress::Progress;
use candle_core::Tensor;
use std::collections::BTreeMap;

/// The residual stream entering each layer of the dense model, for windows of equal length.
pub struct DenseCache {
    /// `inputs[l]` is `(windows, seq, hidden)` entering layer `l`; `inputs[n]` is the last output.
    inputs: Vec<Tensor>,
    ctx: AttnCtx,
    windows: Vec<Vec<u32>>,
}

/// Bytes a cache holds: `(n_layers + 1) × windows × seq × hidden` f32 values.
pub fn cache_bytes(n_layers: usize, windows: usize, seq: usize, hidden: usize) -> u64 {
    (n_layers as u64 + 1) * windows as u64 * seq as u64 * hidden as u64 * 4
}

impl DenseCache {
    /// Runs the dense model once over `windows` (all of the same length, at least 2 tokens),
    /// keeping every layer's input. `progress` counts layers.
    pub fn build(model: &Model, windows: Vec<Vec<u32>>, progress: &dyn Progress) -> Result<Self> {
        let t = windows.first().map_or(0, Vec::len);
        if t < 2 || windows.iter().any(|w| w.len() != t) {
            return Err(Error::Invalid(
                "evaluation windows must be non-empty, of equal length, and at least 2 tokens long"
                    .into(),
            ));
        }
        let refs: Vec<&[u32]> = windows.iter().map(Vec::as_slice).collect();
        let tokens = model.tokens(&refs)?;
        let ctx = model.attn_ctx(0, t)?;
        let n = model.n_layers();
        progress.start("dense pass", n as u64);
        let mut inputs = Vec::with_capacity(n + 1);
        let mut xs = model.embed(&tokens)?;
        for i in 0..n {
            inputs.push(xs.clone());
            xs = model.run_layer(i, &xs, &ctx)?.output;
            progress.advance(1);
        }
        inputs.push(xs);
        progress.finish();
        Ok(DenseCache {
            inputs,
            ctx,
            windows,
        })
    }

    /// The stream entering layer `layer` (`n_layers` gives the last output).
    pub fn input(&self, layer: usize) -> &Tensor {
        &self.inputs[layer]
    }

    /// The final hidden states when the layers from `start` on, except those in `skip`, run on
    /// the cached input of `start`.
    pub fn run_from(&self, model: &Model, start: usize, skip: &[usize]) -> Result<Tensor> {
        let mut xs = self.inputs[start].clone();
        for i in start..self.inputs.len() - 1 {
            if !skip.contains(&i) {
                xs = model.run_layer(i, &xs, &self.ctx)?.output;
            }
        }
        Ok(xs)
    }

    /// After `removed` (which holds `from`) left the model: the stream entering every layer past
    /// `from` is recomputed without the removed layers, from the cached input of `from`.
    pub fn refresh(&mut self, model: &Model, from: usize, removed: &[usize]) -> Result<()> {
        let n = self.inputs.len() - 1;
        let mut xs = self.inputs[from].clone();
        for i in from + 1..=n {
            self.inputs[i] = xs.clone();
            if i < n && !removed.contains(&i) {
                xs = model.run_layer(i, &xs, &self.ctx)?.output;
            }
        }
        Ok(())
    }

    /// The windows the cache was built on.
    pub fn windows(&self) -> &[Vec<u32>] {
        &self.windows
    }

    /// The dense model's final hidden states (before the final norm).
    pub fn dense_hidden(&self) -> &Tensor {
        &self.inputs[self.inputs.len() - 1]
    }

    /// The final hidden states with the layers in `skip` removed and the layers in `replaced`
    /// swapped for the given ones (healed layers), restarting from the cached input of the first
    /// layer that differs from the dense model.
    pub fn run(
        &self,
        model: &Model,
        skip: &[usize],
        replaced: &BTreeMap<usize, DecoderLayer>,
    ) -> Result<Tensor> {
        let n = self.inputs.len() - 1;
        model.check_skip(skip)?;
        let first = skip
            .iter()
            .chain(replaced.keys())
            .copied()
            .min()
            .unwrap_or(n);
        let mut xs = self.inputs[first].clone();
        for i in first..n {
            if skip.contains(&i) {
                continue;
            }
            xs = match replaced.get(&i) {
                Some(layer) => layer.forward(&xs, &self.ctx, None)?.output,
                None => model.run_layer(i, &xs, &self.ctx)?.output,
            };
        }
        Ok(xs)
    }
}

/// Bytes of residual stream (f32) that one layer-major pass of [`Model::forward_batches`] should
/// keep for its batches; callers cut their batches into passes of about this size, so an
/// offloaded model reads each layer once per pass and the stream never outgrows a layer.
pub const PASS_BYTES: usize = 256 << 20;

/// How many of `batches` (`(windows, seq)` token counts) fit one pass of [`PASS_BYTES`] for a
/// model of width `hidden`, starting from the first: at least one.
pub fn batches_per_pass(sizes: &[(usize, usize)], hidden: usize) -> usize {
    let mut bytes = 0usize;
    let mut n = 0;
    for &(b, t) in sizes {
        bytes = bytes.saturating_add(b.saturating_mul(t).saturating_mul(hidden) * 4);
        if n > 0 && bytes > PASS_BYTES {
            break;
        }
        n += 1;
    }
    n.max(1)
}

impl Model {
    /// Whether every layer outside `skip` is resident (a forward loads none on demand).
    pub fn resident_except(&self, skip: &[usize]) -> bool {
        (0..self.n_layers()).all(|i| skip.contains(&i) || self.layer(i).is_ok())
    }

    /// The final hidden states (before the final norm) of each batch of token ids
    /// `(windows, seq)` in `batches`, skipping the layers in `skip`; `tap` sees every layer that
    /// runs, with the index of its batch. When every layer that runs is resident, batch after
    /// batch goes through all layers. Otherwise layer-major: each layer is loaded once and run
    /// over every batch, the batches' residual streams kept in between, so an offloaded model
    /// reads each layer once per call with one layer resident (callers bound a call by
    /// [`batches_per_pass`]). `progress` counts windows, or layers when offloaded.
    pub fn forward_batches(
        &self,
        batches: &[Tensor],
        skip: &[usize],
        progress: &dyn Progress,
        tap: &mut dyn FnMut(usize, LayerTap<'_>) -> Result<()>,
    ) -> Result<Vec<Tensor>> {
        self.check_skip(skip)?;
        if self.resident_except(skip) {
            let windows = batches
                .iter()
                .map(|b| b.dim(0))
                .sum::<candle_core::Result<usize>>()?;
            progress.start("forward (windows)", windows as u64);
            let mut out = Vec::with_capacity(batches.len());
            for (i, ids) in batches.iter().enumerate() {
                out.push(self.forward_hidden(ids, skip, None, &mut |x| tap(i, x))?);
                progress.advance(ids.dim(0)? as u64);
            }
            progress.finish();
            return Ok(out);
        }
        // One attention context per sequence length.
        let mut ctxs: Vec<(usize, AttnCtx)> = Vec::new();
        for ids in batches {
            let t = ids.dim(1)?;
            if !ctxs.iter().any(|(l, _)| *l == t) {
                ctxs.push((t, self.attn_ctx(0, t)?));
            }
        }
        let mut xs = batches
            .iter()
            .map(|ids| self.embed(ids))
            .collect::<Result<Vec<_>>>()?;
        progress.start("forward (layers, offloaded)", self.n_layers() as u64);
        for l in 0..self.n_layers() {
            if !skip.contains(&l) {
                let layer = self.fetch_layer(l)?;
                for (i, x) in xs.iter_mut().enumerate() {
                    let t = x.dim(1)?;
                    let ctx = (ctxs.iter().find(|(len, _)| *len == t))
                        .map(|(_, c)| c)
                        .ok_or_else(|| Error::Invalid(format!("no context for {t} tokens")))?;
                    let parts = layer.forward(x, ctx, None)?;
                    tap(
                        i,
                        LayerTap {
                            layer: l,
                            input: x,
                            parts: &parts,
                        },
                    )?;
                    *x = parts.output;
                }
            }
            progress.advance(1);
        }
        progress.finish();
        Ok(xs)
    }
}
