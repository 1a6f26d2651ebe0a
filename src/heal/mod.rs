//! Healing without training (issue 6): a linear map fitted per removed block and folded into the
//! `down_proj` of the last kept layer before it, in the manner of ReplaceMe.
//!
//! For a removed block `[s, e)` (a maximal run of removed layers), let `M` be the MLP output of
//! layer `s − 1`, `X` its output and `Y` the dense model's output of layer `e − 1`. After pruning,
//! layer `s − 1`'s output feeds layer `e`; healing replaces its MLP output `M` with `M·T`, so the
//! map is fitted to `M·T ≈ Y − X + M` ([`fit`]) and folded as `down_proj ← Tᵀ·down_proj`.
//!
//! Design choices:
//! - **Identity prior.** The default ridge is `α‖T − I‖²`: where the calibration data says
//!   little, the block stays as it was pruned rather than shrinking the MLP output towards zero.
//!   `Prior::Zero` gives the paper's `α‖T‖²`. `α` is relative to the mean diagonal of `MᵀM`.
//! - **Order.** Blocks are healed bottom-up (ascending start), and before each fit the pruned
//!   model is run with every earlier fold applied, so `M` and `X` are what the healed model
//!   really computes there while `Y` always comes from the dense model. A later fold thus also
//!   corrects the drift left by earlier ones. Top-down would fit against inputs that the earlier
//!   folds then change.
//! - **Cost.** One dense pass per window gives every block's target. The pruned model's residual
//!   stream is kept per window at the input of the last fold layer, so each block runs only the
//!   layers between its fold layer and the previous one: about one dense and one pruned forward
//!   per window in all, whatever the number of blocks.
//! - **A block at layer 0** has no MLP before it to fold into; it is refused with a message
//!   (mapping the embedding output would change the tied embedding and `lm_head` too).
//! - Activations are streamed window by window into f64 Gram matrices; no window's activations
//!   outlive its forward.

pub mod fit;
pub mod gguf;

pub use fit::{fold_down_proj, Fit, Gram, Prior, Solver};

use crate::error::{Error, Result};
use crate::model::{open_checkpoint, Model, ModelConfig, WeightSource};
use crate::progress::Progress;
use candle_core::{Device, Tensor};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

/// The method name recorded in `pruning.json`.
pub const METHOD: &str = "lstsq";

/// How to heal.
#[derive(Debug, Clone)]
pub struct HealOptions {
    /// Ridge weight, relative to the mean diagonal of `MᵀM`.
    pub alpha: f64,
    pub prior: Prior,
    /// Calibration window length in tokens.
    pub ctx: usize,
}

/// One healed block.
#[derive(Debug, Clone)]
pub struct HealedBlock {
    /// The removed layers `[start, end)`, numbered as in the dense model.
    pub range: Range<usize>,
    /// The dense-model layer whose `down_proj` took the map (`start − 1`).
    pub fold_layer: usize,
    pub relative_residual: f64,
    pub relative_residual_identity: f64,
    pub solver: Solver,
}

/// The result of healing: the new `down_proj` weights by their dense-model name, as f32.
#[derive(Debug, Clone)]
pub struct Healing {
    pub blocks: Vec<HealedBlock>,
    pub tensors: BTreeMap<String, Vec<f32>>,
    /// Calibration tokens used per block.
    pub samples: usize,
    pub options: HealOptions,
}

impl Healing {
    /// The removed layers (dense-model numbers) of the healed blocks.
    pub fn removed(&self) -> Vec<usize> {
        self.blocks.iter().flat_map(|b| b.range.clone()).collect()
    }

    /// The `healing` entry of `pruning.json`; `renamed` maps a dense-model tensor name to its
    /// name in the pruned checkpoint.
    pub fn provenance(&self, renamed: &dyn Fn(&str) -> String) -> Value {
        json!({
            "method": METHOD,
            "prior": self.options.prior.name(),
            "alpha": self.options.alpha,
            "samples": self.samples,
            "ctx": self.options.ctx,
            "blocks": self.blocks.iter().map(|b| json!({
                "start": b.range.start,
                "end": b.range.end,
                "fold_layer": b.fold_layer,
                "relative_residual": b.relative_residual,
                "relative_residual_unhealed": b.relative_residual_identity,
                "solver": format!("{:?}", b.solver).to_lowercase(),
            })).collect::<Vec<_>>(),
            "tensors": self.tensors.keys().map(|k| renamed(k)).collect::<Vec<_>>(),
        })
    }
}

/// A weight source with some tensors replaced (the healed `down_proj`s).
pub struct Overlay {
    base: Arc<dyn WeightSource>,
    replaced: HashMap<String, Tensor>,
}

impl Overlay {
    /// Wraps `base`, replacing the tensors in `tensors` (f32, with the base tensor's shape).
    pub fn new(base: Arc<dyn WeightSource>, tensors: &BTreeMap<String, Vec<f32>>) -> Result<Self> {
        let mut replaced = HashMap::new();
        for (name, v) in tensors {
            let shape = base.shape(name).ok_or_else(|| {
                Error::Invalid(format!(
                    "cannot replace `{name}`: the model has no such tensor"
                ))
            })?;
            replaced.insert(
                name.clone(),
                Tensor::from_slice(v.as_slice(), shape, &Device::Cpu)?,
            );
        }
        Ok(Overlay { base, replaced })
    }
}

impl WeightSource for Overlay {
    fn tensor(&self, name: &str) -> Result<Tensor> {
        match self.replaced.get(name) {
            Some(t) => Ok(t.clone()),
            None => self.base.tensor(name),
        }
    }

    fn contains(&self, name: &str) -> bool {
        self.base.contains(name)
    }

    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.base.shape(name)
    }

    fn path(&self) -> &Path {
        self.base.path()
    }
}

/// Opens the dense checkpoint `dense` (an HF folder or a `.gguf` file, whose tensors are served
/// under their HF names) with `tensors` replaced. Run it with the removed layers skipped to get
/// the in-memory healed model.
pub fn open_healed(dense: &Path, tensors: &BTreeMap<String, Vec<f32>>) -> Result<Model> {
    let (cfg, source) = open_checkpoint(dense)?;
    healed_model(cfg, source, tensors, &[])
}

/// `source` with `tensors` replaced, as a model with every layer but those in `skip` resident.
fn healed_model(
    cfg: ModelConfig,
    source: Arc<dyn WeightSource>,
    tensors: &BTreeMap<String, Vec<f32>>,
    skip: &[usize],
) -> Result<Model> {
    let overlay: Arc<dyn WeightSource> = Arc::new(Overlay::new(source, tensors)?);
    Model::from_source(cfg, overlay, &|i| !skip.contains(&i))
}

/// The name of layer `i`'s `down_proj` weight.
pub fn down_proj_name(layer: usize) -> String {
    format!("model.layers.{layer}.mlp.down_proj.weight")
}

/// Maximal runs of consecutive layers in `removed` (sorted or not).
pub fn blocks(removed: &[usize]) -> Vec<Range<usize>> {
    let mut v = removed.to_vec();
    v.sort_unstable();
    v.dedup();
    let mut out: Vec<Range<usize>> = Vec::new();
    for l in v {
        match out.last_mut() {
            Some(r) if r.end == l => r.end += 1,
            _ => out.push(l..l + 1),
        }
    }
    out
}

/// Row-major f32 values of the `(1, seq, hidden)` tensor `t`.
fn rows(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_vec1::<f32>()?)
}

/// Fits and folds one map per removed block of `removed` (dense-model layer numbers), on the
/// calibration tokens `calib` cut into windows of `opts.ctx`. `progress` counts windows.
/// `dense_dir` is an HF folder or a `.gguf` file (dequantized to f32); either way the maps and
/// the returned tensors are in HF terms (names and layout).
pub fn heal(
    dense_dir: &Path,
    removed: &[usize],
    calib: &[u32],
    opts: &HealOptions,
    progress: &dyn Progress,
) -> Result<Healing> {
    if opts.ctx < 2 {
        return Err(Error::Invalid(format!(
            "--ctx must be at least 2 tokens, not {}",
            opts.ctx
        )));
    }
    let windows: Vec<&[u32]> = calib
        .chunks(opts.ctx)
        .filter(|w| w.len() == opts.ctx)
        .collect();
    if windows.is_empty() {
        return Err(Error::Invalid(format!(
            "the calibration text has {} tokens, fewer than one window of --ctx {}; hint: use a longer --calib file or a smaller --ctx",
            calib.len(),
            opts.ctx
        )));
    }
    let (cfg, source) = open_checkpoint(dense_dir)?;
    let dense = Model::from_source(cfg.clone(), source.clone(), &|_| true)?;
    dense.check_skip(removed)?;
    let hidden = dense.config().arch.hidden_size;
    let todo = blocks(removed);
    if let Some(b) = todo.iter().find(|b| b.start == 0) {
        return Err(Error::Invalid(format!(
            "cannot heal the removed block {}..{}: it starts at layer 0, so no kept MLP precedes it to take the map; hint: keep layer 0 or prune without --heal",
            b.start, b.end
        )));
    }
    let mut tensors: BTreeMap<String, Vec<f32>> = BTreeMap::new();
    let mut healed = Vec::new();
    progress.start("healing", (windows.len() * (todo.len() + 1)) as u64);
    let ctx = dense.attn_ctx(0, opts.ctx)?;
    // One dense pass per window gives every block's target Y (the dense output of its last
    // layer); only these rows are kept, not the whole residual stream.
    let lasts: Vec<usize> = todo.iter().map(|b| b.end - 1).collect();
    let mut ys: Vec<Vec<Vec<f32>>> = vec![Vec::with_capacity(windows.len()); todo.len()];
    // The pruned, healed model's residual stream per window, entering layer `from`: each block
    // resumes where the previous one stopped (at the input of its fold layer, which the previous
    // fit changed) instead of rerunning from the embedding.
    let mut states: Vec<Tensor> = Vec::with_capacity(windows.len());
    for w in &windows {
        let tokens = dense.tokens(&[*w])?;
        dense.forward_hidden(&tokens, &[], None, &mut |tap| {
            for (k, &l) in lasts.iter().enumerate() {
                if tap.layer == l {
                    ys[k].push(rows(&tap.parts.output)?);
                }
            }
            Ok(())
        })?;
        states.push(dense.embed(&tokens)?);
        progress.advance(1);
    }
    let mut from = 0;
    let mut replaced: BTreeMap<usize, Arc<crate::model::DecoderLayer>> = BTreeMap::new();
    for (k, block) in todo.iter().enumerate() {
        let fold_layer = block.start - 1;
        let mut gram = Gram::new(hidden);
        for (w, state) in states.iter_mut().enumerate() {
            let mut xs = state.clone();
            for i in (from..fold_layer).filter(|i| !removed.contains(i)) {
                let layer = match replaced.get(&i) {
                    Some(l) => l.clone(),
                    None => dense.fetch_layer(i)?,
                };
                xs = layer.forward(&xs, &ctx, None)?.output;
            }
            let parts = dense.fetch_layer(fold_layer)?.forward(&xs, &ctx, None)?;
            *state = xs;
            let (x, m) = (rows(&parts.output)?, rows(&parts.mlp)?);
            let z: Vec<f32> = ys[k][w]
                .iter()
                .zip(&x)
                .zip(&m)
                .map(|((y, x), m)| y - x + m)
                .collect();
            gram.add(&m, &z)?;
            progress.advance(1);
        }
        from = fold_layer;
        let fit = gram.solve(opts.alpha, opts.prior)?;
        let name = down_proj_name(fold_layer);
        // Each fold layer is distinct (blocks are maximal runs), so the dense weight is the one
        // to fold into.
        let w = rows(&source.tensor(&name)?)?;
        tensors.insert(name, fold_down_proj(&fit.t, &w, hidden)?);
        let overlay = Overlay::new(source.clone(), &tensors)?;
        replaced.insert(
            fold_layer,
            Arc::new(crate::model::DecoderLayer::load(
                &overlay, &cfg, fold_layer,
            )?),
        );
        healed.push(HealedBlock {
            range: block.clone(),
            fold_layer,
            relative_residual: fit.relative_residual,
            relative_residual_identity: fit.relative_residual_identity,
            solver: fit.solver,
        });
    }
    progress.finish();
    Ok(Healing {
        blocks: healed,
        tensors,
        samples: windows.len() * opts.ctx,
        options: opts.clone(),
    })
}
