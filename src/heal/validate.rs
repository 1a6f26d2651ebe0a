//! The guard of healing (issue 18): held-out calibration windows on which each candidate map is
//! judged by what it does to the model's output, the mean next-token KL(dense ‖ healed), not by
//! its own block's residual alone. A block keeps a map only when that KL falls below the KL with
//! the block left unhealed, so healing cannot make the validation windows worse.

use crate::error::Result;
use crate::eval::ReferenceLogProbs;
use crate::model::{DecoderLayer, Model};
use crate::progress::Progress;
use candle_core::Tensor;

/// The dense model's next-token distribution on the validation windows, and the KL of the
/// healed-so-far model.
pub(super) struct Validator {
    reference: ReferenceLogProbs,
    removed: Vec<usize>,
    /// The KL of the model as healed so far (earlier blocks as chosen, this one and later ones
    /// removed unhealed), once known.
    current: Option<f64>,
}

impl Validator {
    /// `dense_final`: the dense model's hidden states before the final norm on `windows`,
    /// `(windows, seq, hidden)`.
    pub fn new(
        dense: &Model,
        dense_final: &Tensor,
        windows: &[Vec<u32>],
        removed: &[usize],
    ) -> Result<Self> {
        Ok(Validator {
            reference: ReferenceLogProbs::new(dense, dense_final, windows)?,
            removed: removed.to_vec(),
            current: None,
        })
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
        let mut finals = Vec::with_capacity(inputs.len());
        for xs in inputs {
            let ctx = dense.attn_ctx(0, xs.dim(1)?)?;
            let mut xs = layer.forward(xs, &ctx, None)?.output;
            for i in (fold_layer + 1..dense.n_layers()).filter(|i| !self.removed.contains(i)) {
                xs = dense.fetch_layer(i)?.forward(&xs, &ctx, None)?.output;
            }
            finals.push(xs);
        }
        let hidden = Tensor::cat(&finals, 0)?;
        Ok(self.reference.compare(dense, &hidden)?.mean_kl())
    }
}
