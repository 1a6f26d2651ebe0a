//! Distillation that survives an interruption (issue 33): at every validation the best state so
//! far (the maps, the low-rank factors, the step and the held-out KL) is saved beside the output,
//! and a run asked to resume continues from it, with the settings it was trained with checked
//! first. The optimiser's moments are not saved: a resumed run restarts Adam from the best maps,
//! so it continues the distillation but is not bit-identical to an uninterrupted one.

use super::{Factors, Maps, SiteMap};
use crate::error::{Error, IoContext, Result};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Where a distillation saves its best state, and whether a run continues from what is there.
/// The state is `PATH.json` (the step, the held-out KL, the settings) naming a safetensors file
/// `PATH.STEP` (the maps and factors); the file of a new state is written before the JSON that
/// names it, and the old one removed after, so a kill at any point leaves a whole state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KdCheckpoint {
    pub path: PathBuf,
    pub resume: bool,
}

/// The state saved at a validation.
pub(crate) struct Saved {
    /// The last step trained.
    pub step: usize,
    pub best_step: usize,
    pub best_kl: f64,
    pub start_kl: f64,
    pub maps: Maps<Tensor>,
    pub factors: Option<Factors>,
}

#[derive(Serialize, Deserialize)]
struct Meta {
    /// The file name of the tensors, beside the JSON.
    tensors: String,
    settings: Value,
    step: usize,
    best_step: usize,
    best_kl: f64,
    start_kl: f64,
    layers: Vec<usize>,
    factors: Option<Vec<String>>,
}

/// `path` with `suffix` appended to its name.
fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

fn meta_path(path: &Path) -> PathBuf {
    suffixed(path, ".json")
}

/// The saved state's JSON, when there is one.
fn read_meta(mp: &Path) -> Result<Option<Meta>> {
    if !mp.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(mp).at(mp)?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| Error::corrupt(mp, format!("not a distillation checkpoint: {e}")))
}

/// Writes `path` with `write` through a temporary sibling and a rename.
fn replace(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let mut tmp = path.as_os_str().to_os_string();
    tmp.push(".part");
    let tmp = PathBuf::from(tmp);
    write(&tmp)?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .at(&tmp)?;
    std::fs::rename(&tmp, path).at(path)
}

impl KdCheckpoint {
    /// Saves `s`, trained under `settings`.
    pub(crate) fn save(&self, settings: &Value, s: &Saved) -> Result<()> {
        let mut tensors: HashMap<String, Tensor> = HashMap::new();
        for (l, m) in &s.maps {
            tensors.insert(format!("u.{l}"), m.u.clone());
            if let Some(g) = &m.gain {
                tensors.insert(format!("gain.{l}"), g.clone());
            }
        }
        for (name, (a, b)) in s.factors.iter().flatten() {
            tensors.insert(format!("a.{name}"), a.clone());
            tensors.insert(format!("b.{name}"), b.clone());
        }
        let mp = meta_path(&self.path);
        let before = read_meta(&mp).ok().flatten().map(|m| m.tensors);
        let file = suffixed(&self.path, &format!(".{}", s.step));
        replace(&file, |tmp| {
            candle_core::safetensors::save(&tensors, tmp)
                .map_err(|e| Error::io(tmp, std::io::Error::other(e.to_string())))
        })?;
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let meta = Meta {
            tensors: name.clone(),
            settings: settings.clone(),
            step: s.step,
            best_step: s.best_step,
            best_kl: s.best_kl,
            start_kl: s.start_kl,
            layers: s.maps.keys().copied().collect(),
            factors: s.factors.as_ref().map(|f| f.keys().cloned().collect()),
        };
        let text =
            serde_json::to_string_pretty(&meta).map_err(|e| Error::Invalid(e.to_string()))?;
        replace(&mp, |tmp| std::fs::write(tmp, &text).at(tmp))?;
        if let Some(old) = before.filter(|o| *o != name) {
            let _ = std::fs::remove_file(file.with_file_name(old));
        }
        Ok(())
    }

    /// The state to continue from: `None` when not resuming or nothing was saved; refused when
    /// it was trained under other `settings`, naming the first that differs.
    pub(crate) fn load(&self, settings: &Value) -> Result<Option<Saved>> {
        let mp = meta_path(&self.path);
        if !self.resume {
            return Ok(None);
        }
        let Some(meta) = read_meta(&mp)? else {
            return Ok(None);
        };
        if let (Some(a), Some(b)) = (meta.settings.as_object(), settings.as_object()) {
            if let Some(k) = a.keys().chain(b.keys()).find(|k| a.get(*k) != b.get(*k)) {
                return Err(Error::Invalid(format!(
                    "cannot resume the distillation saved in `{}`: `{k}` was {} there, now {}; resume with the same settings, or remove it to start over",
                    self.path.display(),
                    a.get(k).unwrap_or(&Value::Null),
                    b.get(k).unwrap_or(&Value::Null)
                )));
            }
        }
        let file = mp.with_file_name(&meta.tensors);
        if meta.tensors.contains(['/', '\\']) || !file.is_file() {
            return Err(Error::corrupt(
                &mp,
                format!("names `{}`, which is not beside it", meta.tensors),
            ));
        }
        let mut t = candle_core::safetensors::load(&file, &Device::Cpu)?;
        let mut take = |name: String| {
            t.remove(&name)
                .ok_or_else(|| Error::corrupt(&file, format!("no tensor `{name}`")))
        };
        let mut maps = Maps::new();
        for &l in &meta.layers {
            let u = take(format!("u.{l}"))?;
            let gain = take(format!("gain.{l}")).ok();
            maps.insert(l, SiteMap { u, gain });
        }
        let factors = match &meta.factors {
            Some(names) => Some(
                names
                    .iter()
                    .map(|n| {
                        Ok((
                            n.clone(),
                            (take(format!("a.{n}"))?, take(format!("b.{n}"))?),
                        ))
                    })
                    .collect::<Result<Factors>>()?,
            ),
            None => None,
        };
        Ok(Some(Saved {
            step: meta.step,
            best_step: meta.best_step,
            best_kl: meta.best_kl,
            start_kl: meta.start_kl,
            maps,
            factors,
        }))
    }

    /// Removes the saved state (the output it was for is written).
    pub fn remove(&self) {
        let mp = meta_path(&self.path);
        if let Ok(Some(meta)) = read_meta(&mp) {
            let _ = std::fs::remove_file(mp.with_file_name(meta.tensors));
        }
        let _ = std::fs::remove_file(mp);
    }
}
