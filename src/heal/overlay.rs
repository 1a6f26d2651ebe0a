//! Healed weights in memory: a weight source with the healed tensors swapped in.

use crate::error::{Error, Result};
use crate::model::{open_checkpoint, Model, WeightSource};
use candle_core::{Device, Tensor};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

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

    /// Wraps `base`, serving `replaced` (tensors already built, e.g. recording a graph) in place
    /// of the base's tensors of the same names.
    pub fn with_tensors(base: Arc<dyn WeightSource>, replaced: HashMap<String, Tensor>) -> Self {
        Overlay { base, replaced }
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
pub(super) fn healed_model(
    cfg: crate::model::ModelConfig,
    source: Arc<dyn WeightSource>,
    tensors: &BTreeMap<String, Vec<f32>>,
    skip: &[usize],
) -> Result<Model> {
    let overlay: Arc<dyn WeightSource> = Arc::new(Overlay::new(source, tensors)?);
    Model::from_source(cfg, overlay, &|i| !skip.contains(&i))
}
