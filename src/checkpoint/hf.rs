//! Hugging Face checkpoint folders: `config.json` plus one `model.safetensors`, or shards listed in
//! `model.safetensors.index.json`. Opening a folder validates every shard header, the index
//! against the shards, and the config against the tensors, before anything is written.

use super::safetensors::{Dtype, SafetensorsFile, TensorInfo};
use crate::arch::naming::{component_of, hf_layer, layers_mismatch, Component};
use crate::arch::{ArchConfig, ParamCounts};
use crate::error::{Error, Result};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

pub use crate::base::hf_files::{CONFIG_FILE, INDEX_FILE, SIDE_FILES, SINGLE_FILE};

/// The file names of `n` shards: [`SINGLE_FILE`] alone, else transformers' numbered names.
pub fn shard_names(n: usize) -> Vec<String> {
    if n == 1 {
        return vec![SINGLE_FILE.to_string()];
    }
    (1..=n)
        .map(|i| format!("model-{i:05}-of-{n:05}.safetensors"))
        .collect()
}

/// An opened, validated HF checkpoint folder.
#[derive(Debug)]
pub struct HfCheckpoint {
    pub dir: PathBuf,
    /// `config.json` as written, keys in their original order.
    pub config: Value,
    pub arch: ArchConfig,
    /// Shards in file-name order (the index's order when sharded).
    pub shards: Vec<SafetensorsFile>,
    /// The parsed index, when the checkpoint is sharded.
    pub index: Option<Value>,
}

/// Where a config-only plan can come from: a folder or a `config.json` path.
pub fn config_path_of(model: &Path) -> PathBuf {
    if model.is_dir() {
        model.join(CONFIG_FILE)
    } else {
        model.to_path_buf()
    }
}

/// Reads a config (folder or file) without looking at weights.
pub fn read_config(model: &Path) -> Result<(ArchConfig, Value, PathBuf)> {
    if model.is_dir() {
        super::links::check_folder(model)?;
    }
    let path = config_path_of(model);
    if !path.exists() {
        return Err(Error::Invalid(format!(
            "`{}`: no such file; MODEL must be an HF folder with `config.json`, a `config.json`, or a `.gguf` file",
            path.display()
        )));
    }
    let (arch, raw) = ArchConfig::from_file(&path)?;
    Ok((arch, raw, path))
}

/// Whether a folder holds safetensors weights (single or sharded).
pub fn has_weights(dir: &Path) -> bool {
    dir.join(SINGLE_FILE).is_file() || dir.join(INDEX_FILE).is_file()
}

impl HfCheckpoint {
    /// Opens and validates a folder.
    pub fn open(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::Invalid(format!(
                "`{}` is not a folder",
                dir.display()
            )));
        }
        super::links::check_folder(dir)?;
        let (arch, config, config_path) = read_config(dir)?;
        let (shards, index) = open_weights(dir)?;
        let ckpt = HfCheckpoint {
            dir: dir.to_path_buf(),
            config,
            arch,
            shards,
            index,
        };
        ckpt.check_config_against_tensors(&config_path)?;
        Ok(ckpt)
    }

    /// A checkpoint whose shard headers were read elsewhere (over HTTP, say) while `dir` holds
    /// `config.json` and, when sharded, the index; `shards` are in the index's file order. It is
    /// validated like [`HfCheckpoint::open`], but its shards' data cannot be read from `dir`.
    pub fn from_headers(dir: &Path, shards: Vec<SafetensorsFile>) -> Result<Self> {
        let (arch, config, config_path) = read_config(dir)?;
        let index = read_index(dir)?;
        if let Some(index) = &index {
            if index.files.len() != shards.len() {
                return Err(Error::Invalid(format!(
                    "`{}` names {} shards but {} headers were given",
                    index.path.display(),
                    index.files.len(),
                    shards.len()
                )));
            }
            check_index(index, &shards)?;
        }
        let ckpt = HfCheckpoint {
            dir: dir.to_path_buf(),
            config,
            arch,
            shards,
            index: index.map(|i| i.value),
        };
        ckpt.check_config_against_tensors(&config_path)?;
        Ok(ckpt)
    }

    /// Every tensor with the index of its shard, in file order.
    pub fn tensors(&self) -> impl Iterator<Item = (usize, &TensorInfo)> {
        self.shards
            .iter()
            .enumerate()
            .flat_map(|(i, s)| s.tensors.iter().map(move |t| (i, t)))
    }

    /// Finds a tensor by name.
    pub fn tensor(&self, name: &str) -> Option<(&SafetensorsFile, &TensorInfo)> {
        self.shards
            .iter()
            .find_map(|s| s.tensor(name).map(|t| (s, t)))
    }

    /// Exact parameter counts from the tensors.
    pub fn param_counts(&self) -> ParamCounts {
        let mut counts =
            ParamCounts::from_tensors(self.tensors().map(|(_, t)| (t.name.as_str(), t.numel())));
        counts
            .layers
            .resize(self.arch.num_hidden_layers, Default::default());
        counts
    }

    /// Tensor counts by dtype.
    pub fn dtypes(&self) -> BTreeMap<Dtype, usize> {
        let mut m = BTreeMap::new();
        for (_, t) in self.tensors() {
            *m.entry(t.dtype).or_default() += 1;
        }
        m
    }

    /// Bytes of the weight files on disk.
    pub fn weight_bytes(&self) -> u64 {
        self.shards.iter().map(|s| s.file_len).sum()
    }

    /// The config must describe the tensors: every layer `0..num_hidden_layers` present and no
    /// other, and the embedding shaped `[vocab_size, hidden_size]`.
    fn check_config_against_tensors(&self, config_path: &Path) -> Result<()> {
        check_layer_tensors(
            config_path,
            self.arch.num_hidden_layers,
            self.tensors().map(|(_, t)| t.name.as_str()),
        )?;
        let layer0: Vec<&str> = self
            .tensors()
            .filter_map(|(_, t)| hf_layer(&t.name).filter(|l| l.layer == 0))
            .map(|l| l.rest)
            .collect();
        let needed = crate::arch::families::required_layer_tensors(&self.arch);
        if let Some(lack) = needed.iter().find(|r| !layer0.contains(r)) {
            return Err(Error::config(
                config_path,
                format!(
                    "layer 0 has no `model.layers.0.{lack}` tensor, which every `{}` layer needs; the config contradicts the weights",
                    self.arch.model_type
                ),
            ));
        }
        let shapes = self
            .tensors()
            .map(|(_, t)| (t.name.as_str(), t.shape.clone()));
        super::moe_check::check_moe_tensors(config_path, &self.arch, shapes)?;
        for (_, t) in self.tensors() {
            if component_of(&t.name).1 == Component::Embeddings && t.shape.len() == 2 {
                let want = [self.arch.vocab_size as u64, self.arch.hidden_size as u64];
                if t.shape[1] != want[1] || t.shape[0] != want[0] {
                    return Err(Error::config(
                        config_path,
                        format!(
                            "`{}` has shape {:?} but the config says vocab_size {} and hidden_size {}",
                            t.name, t.shape, want[0], want[1]
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The layers `num_hidden_layers` declares must be the layers the tensors hold (issue 13): every
/// layer `0..n` present, no other, and each with the same tensor names ([`layers_mismatch`]).
/// Errors name `config_path`, which contradicts the weights.
pub fn check_layer_tensors<'a>(
    config_path: &Path,
    n: usize,
    names: impl Iterator<Item = &'a str>,
) -> Result<()> {
    let mut by_layer: BTreeMap<usize, Vec<&str>> = BTreeMap::new();
    let mut prefix = "model.layers.";
    for l in names.filter_map(hf_layer) {
        prefix = l.prefix;
        by_layer.entry(l.layer).or_default().push(l.rest);
    }
    let found = by_layer.len();
    let max = by_layer.keys().next_back().map_or(0, |m| m + 1);
    if found != n || max != n {
        return Err(Error::config(
            config_path,
            format!(
                "`num_hidden_layers` is {n} but the tensors hold {found} layers (numbers up to {}); the config contradicts the weights",
                max.saturating_sub(1)
            ),
        ));
    }
    if let Some(msg) = layers_mismatch(&by_layer, prefix, "mlp") {
        return Err(Error::config(config_path, msg));
    }
    Ok(())
}

/// A parsed `model.safetensors.index.json`: which shard holds each tensor.
#[derive(Debug, Clone)]
pub struct Index {
    pub path: PathBuf,
    /// The index as written.
    pub value: Value,
    /// Shard file names, sorted, each once.
    pub files: Vec<String>,
    /// Tensor name → shard file name.
    pub by_name: HashMap<String, String>,
}

/// Reads a folder's index, if it has one. Shard names must be plain file names in the folder.
pub fn read_index(dir: &Path) -> Result<Option<Index>> {
    let path = dir.join(INDEX_FILE);
    if !path.is_file() {
        return Ok(None);
    }
    let text = super::limits::read_text_capped(&path, super::limits::MAX_JSON_BYTES)?;
    parse_index(&path, &text).map(Some)
}

/// Parses an index file's text (`path` names it in errors).
pub fn parse_index(path: &Path, text: &str) -> Result<Index> {
    let path = path.to_path_buf();
    let value: Value = serde_json::from_str(text)
        .map_err(|e| Error::corrupt(&path, format!("not valid JSON: {e}")))?;
    let weight_map = value
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| Error::corrupt(&path, "missing `weight_map` object"))?;
    let mut files: Vec<String> = Vec::new();
    let mut by_name = HashMap::with_capacity(weight_map.len());
    for (name, file) in weight_map {
        let file = file.as_str().ok_or_else(|| {
            Error::corrupt(
                &path,
                format!("`weight_map` entry `{name}` is not a file name"),
            )
        })?;
        if file.is_empty() || file.contains('/') || file.contains('\\') || file.starts_with('.') {
            return Err(Error::corrupt(
                &path,
                format!("shard name `{file}` must be a plain file name inside the folder"),
            ));
        }
        if !files.iter().any(|f| f == file) {
            files.push(file.to_string());
        }
        by_name.insert(name.clone(), file.to_string());
    }
    files.sort();
    Ok(Index {
        path,
        value,
        files,
        by_name,
    })
}

/// The validated shard headers of the weights in `dir` (the single file, or every shard the
/// index names, checked against the index), with the index as written when sharded. The one
/// reader of HF weights: [`HfCheckpoint`] adds the config's checks, and the forward pass maps
/// the same headers' data.
pub fn open_weights(dir: &Path) -> Result<(Vec<SafetensorsFile>, Option<Value>)> {
    if dir.join(INDEX_FILE).is_file() {
        let (shards, index) = open_sharded(dir)?;
        Ok((shards, Some(index)))
    } else if dir.join(SINGLE_FILE).is_file() {
        Ok((vec![SafetensorsFile::open(&dir.join(SINGLE_FILE))?], None))
    } else {
        Err(Error::Invalid(format!(
            "`{}`: no `{SINGLE_FILE}` or `{INDEX_FILE}`; `plan` works from config.json alone, other commands need weights",
            dir.display()
        )))
    }
}

fn open_sharded(dir: &Path) -> Result<(Vec<SafetensorsFile>, Value)> {
    let index = read_index(dir)?
        .ok_or_else(|| Error::Invalid(format!("`{}`: no `{INDEX_FILE}`", dir.display())))?;
    let mut shards = Vec::with_capacity(index.files.len());
    for file in &index.files {
        let path = dir.join(file);
        if !path.is_file() {
            return Err(Error::corrupt(
                &index.path,
                format!("names shard `{file}`, which is missing from the folder"),
            ));
        }
        shards.push(SafetensorsFile::open(&path)?);
    }
    check_index(&index, &shards)?;
    Ok((shards, index.value))
}

/// The index and the shard headers must agree: every tensor in exactly one shard, the one the
/// index names, and every indexed tensor present. `shards` are in `index.files` order.
fn check_index(index: &Index, shards: &[SafetensorsFile]) -> Result<()> {
    let mut seen: HashMap<&str, &str> = HashMap::new();
    for (file, shard) in index.files.iter().zip(shards) {
        for t in &shard.tensors {
            if let Some(prev) = seen.insert(&t.name, file) {
                return Err(Error::corrupt(
                    &shard.path,
                    format!("tensor `{}` also appears in `{prev}`", t.name),
                ));
            }
            match index.by_name.get(t.name.as_str()) {
                Some(f) if f == file => {}
                Some(f) => {
                    return Err(Error::corrupt(
                        &index.path,
                        format!("places tensor `{}` in `{f}` but it is in `{file}`", t.name),
                    ))
                }
                None => {
                    return Err(Error::corrupt(
                        &index.path,
                        format!("does not list tensor `{}` found in `{file}`", t.name),
                    ))
                }
            }
        }
    }
    if let Some((name, file)) = index
        .by_name
        .iter()
        .find(|(n, _)| !seen.contains_key(n.as_str()))
    {
        return Err(Error::corrupt(
            &index.path,
            format!("lists tensor `{name}` in `{file}`, but that shard does not hold it"),
        ));
    }
    Ok(())
}
