//! The guard of healing (issue 18): held-out calibration windows on which each candidate map is
//! judged by what it does to the model's output, the mean next-token KL(dense ‖ healed), not by
//! its own block's residual alone. A block keeps a map only when that KL falls below the KL with
//! the block left unhealed, so healing cannot make the validation windows worse.
//!
//! Memory (issue 34): the dense model's side is kept as its final hidden states, `tokens ×
//! hidden` values, and its log-probabilities are recomputed in vocabulary tiles at each
//! comparison ([`Model::score_rows`]). A table of them, `tokens × vocab` values, took 5 GB for
//! 8,192 held-out tokens of a 152K vocabulary.

use crate::error::Result;
use crate::model::{DecoderLayer, Model};
use crate::progress::Progress;
use candle_core::Tensor;

/// Held-out windows forward through a layer at a time in batches of this many (the batch of
/// `eval`): bigger products at no cost in results.
pub(crate) const BATCH: usize = 4;

/// The dense model's final hidden states on the validation windows, and the KL of the
/// healed-so-far model.
pub(super) struct Validator {
    reference: Reference,
    removed: Vec<usize>,
    /// The KL of the model as healed so far (earlier blocks as chosen, this one and later ones
    /// removed unhealed), once known.
    current: Option<f64>,
}

/// A dense model's final hidden states (before the final norm) on whole windows, against
/// which another model's are scored.
pub(crate) struct Reference {
    dense_final: Tensor,
    windows: Vec<Vec<u32>>,
}

impl Reference {
    /// `dense_final`: `(windows, seq, hidden)` on `windows`.
    pub fn new(dense_final: Tensor, windows: Vec<Vec<u32>>) -> Self {
        Reference {
            dense_final,
            windows,
        }
    }

    /// The mean KL(dense ‖ model) over every position but each window's last, for `model`'s
    /// final hidden states `hidden` on the same windows; `dense` computes the reference's
    /// log-probabilities, `model` its own.
    pub fn mean_kl(&self, dense: &Model, model: &Model, hidden: &Tensor) -> Result<f64> {
        let (w, t, h) = self.dense_final.dims3()?;
        let mut picks = Vec::with_capacity(w * (t - 1));
        let mut targets = Vec::with_capacity(w * (t - 1));
        for (b, tokens) in self.windows.iter().enumerate() {
            for p in 0..t - 1 {
                picks.push((b * t + p) as u32);
                targets.push(tokens[p + 1]);
            }
        }
        let index = Tensor::from_vec(picks, targets.len(), hidden.device())?;
        let rows =
            |x: &Tensor| -> Result<Tensor> { Ok(x.reshape((w * t, h))?.index_select(&index, 0)?) };
        let scores = model.score_rows(
            &rows(hidden)?,
            &targets,
            Some((dense, &rows(&self.dense_final)?)),
        )?;
        Ok(scores.iter().map(|s| s.kl).sum::<f64>() / scores.len().max(1) as f64)
    }
}

impl Validator {
    /// `dense_final`: the dense model's hidden states before the final norm on `windows`,
    /// `(windows, seq, hidden)`.
    pub fn new(dense_final: Tensor, windows: Vec<Vec<u32>>, removed: &[usize]) -> Self {
        Validator {
            reference: Reference::new(dense_final, windows),
            removed: removed.to_vec(),
            current: None,
        }
    }

    /// The KL with the block folding into `fold_layer` left unhealed. It equals the KL of the
    /// model as chosen for the previous block, so it is computed only for the first block.
    pub fn current_kl(
        &mut self,
        dense: &Model,
        inputs: &[Tensor],
        fold_layer: usize,
        progress: &dyn Progress,
    ) -> Result<f64> {
        if let Some(kl) = self.current {
            return Ok(kl);
        }
        let layer = dense.fetch_layer(fold_layer)?;
        let kl = self.kl_with(dense, inputs, fold_layer, &layer)?;
        progress.advance(1);
        self.current = Some(kl);
        Ok(kl)
    }

    /// Records the KL of the choice made for the current block.
    pub fn set_current(&mut self, kl: f64) {
        self.current = Some(kl);
    }

    /// The mean KL(dense ‖ model) when `inputs` (the residual stream entering `fold_layer`, one
    /// `(1, seq, hidden)` tensor per validation window) run through `layer` in place of
    /// `fold_layer` and then through every later layer that is not removed.
    pub fn kl_with(
        &self,
        dense: &Model,
        inputs: &[Tensor],
        fold_layer: usize,
        layer: &DecoderLayer,
    ) -> Result<f64> {
        let mut finals = Vec::with_capacity(inputs.len().div_ceil(BATCH));
        for batch in inputs.chunks(BATCH) {
            let xs = Tensor::cat(batch, 0)?;
            let ctx = dense.attn_ctx(0, xs.dim(1)?)?;
            let mut xs = layer.forward(&xs, &ctx, None)?.output;
            for i in (fold_layer + 1..dense.n_layers()).filter(|i| !self.removed.contains(i)) {
                xs = dense.fetch_layer(i)?.forward(&xs, &ctx, None)?.output;
            }
            finals.push(xs);
        }
        let hidden = Tensor::cat(&finals, 0)?;
        self.reference.mean_kl(dense, dense, &hidden)
    }
}
