//! One logical GGUF model, from a single file or from all the parts of a split model. Given the
//! first part, the others are found by name, each is validated, and their tensors are joined in
//! order; every tensor remembers which part file holds it and at what offset.

use super::read::{GgufFile, TensorInfo};
use super::split::{self, MAX_SPLITS};
use super::value::Value;
use super::{Metadata, KEY_ARCHITECTURE, KEY_SPLIT_COUNT, KEY_SPLIT_NO, KEY_SPLIT_TENSORS_COUNT};
use crate::arch::naming::{gguf_layer, layers_mismatch};
use crate::error::{Error, Result};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

/// One file of a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgufPart {
    pub path: PathBuf,
    pub version: u32,
    pub alignment: u64,
    pub data_start: u64,
    pub file_len: u64,
    pub n_tensors: usize,
}

/// A validated GGUF model. Metadata is the first part's, without the `split.*` keys.
#[derive(Debug, Clone)]
pub struct GgufModel {
    parts: Vec<GgufPart>,
    metadata: Metadata,
    tensors: Vec<TensorInfo>,
}

fn part_of(file: &GgufFile) -> GgufPart {
    GgufPart {
        path: file.path.clone(),
        version: file.version,
        alignment: file.alignment,
        data_start: file.data_start,
        file_len: file.file_len,
        n_tensors: file.tensors.len(),
    }
}

/// A split key as an integer, if present.
fn split_key(file: &GgufFile, key: &str) -> Result<Option<u64>> {
    match file.metadata.get(key) {
        None => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| {
            Error::corrupt(
                &file.path,
                format!("`{key}` is {}, not a non-negative integer", v.type_name()),
            )
        }),
    }
}

impl GgufModel {
    /// Opens a GGUF file; if it is the first part of a split model, opens all its parts.
    pub fn open(path: &Path) -> Result<GgufModel> {
        let first = GgufFile::read(path, 0)?;
        let count = match split_key(&first, KEY_SPLIT_COUNT)? {
            None => return Ok(Self::single(first)),
            Some(c) => c,
        };
        let no = split_key(&first, KEY_SPLIT_NO)?.unwrap_or(0);
        if no != 0 {
            let hint = split::parse_part_path(path)
                .map(|(prefix, _, n)| {
                    format!(
                        "; open the first part `{}`",
                        split::part_path(&prefix, 1, n).display()
                    )
                })
                .unwrap_or_default();
            return Err(Error::Invalid(format!(
                "`{}` is part {} of {count} of a split model{hint}",
                path.display(),
                no + 1
            )));
        }
        if count == 0 || count as usize > MAX_SPLITS {
            return Err(Error::corrupt(
                path,
                format!("`{KEY_SPLIT_COUNT}` is {count}"),
            ));
        }
        if count == 1 {
            return Self::join(vec![first], 1);
        }
        let count = count as usize;
        let prefix = match split::parse_part_path(path) {
            Some((prefix, 1, n)) if n == count => prefix,
            _ => {
                return Err(Error::Invalid(format!(
                    "`{}` is the first of {count} parts, but is not named `NAME-00001-of-{count:05}.gguf`, \
                     so its other parts cannot be found",
                    path.display()
                )))
            }
        };
        let mut files = vec![first];
        for no in 2..=count {
            let p = split::part_path(&prefix, no, count);
            if !p.exists() {
                return Err(Error::Invalid(format!(
                    "split part `{}` is missing (`{}` has {count} parts)",
                    p.display(),
                    path.display()
                )));
            }
            crate::checkpoint::links::check_sibling(path, &p)?;
            files.push(GgufFile::read(&p, no - 1)?);
        }
        Self::join(files, count)
    }

    /// A model from header regions already read (over HTTP, say): one file, or every part of
    /// a split model in order. The parts are checked as [`GgufModel::open`] checks them.
    pub fn from_parts(mut files: Vec<GgufFile>) -> Result<GgufModel> {
        let Some(first) = files.first() else {
            return Err(Error::Invalid(
                "a GGUF model needs at least one file".into(),
            ));
        };
        if files.len() == 1 && split_key(first, KEY_SPLIT_COUNT)?.is_none() {
            return Ok(Self::single(files.remove(0)));
        }
        let count = files.len();
        Self::join(files, count)
    }

    fn single(file: GgufFile) -> GgufModel {
        GgufModel {
            parts: vec![part_of(&file)],
            metadata: file.metadata,
            tensors: file.tensors,
        }
    }

    /// Checks each part's split keys and joins their tensors.
    fn join(files: Vec<GgufFile>, count: usize) -> Result<GgufModel> {
        let mut seen = HashSet::new();
        let mut tensors = Vec::new();
        let mut parts = Vec::new();
        for (i, file) in files.iter().enumerate() {
            let no = split_key(file, KEY_SPLIT_NO)?;
            let c = split_key(file, KEY_SPLIT_COUNT)?;
            if no != Some(i as u64) || c != Some(count as u64) {
                return Err(Error::corrupt(
                    &file.path,
                    format!(
                        "expected `{KEY_SPLIT_NO}` = {i} and `{KEY_SPLIT_COUNT}` = {count}, found {} and {}",
                        show(no),
                        show(c)
                    ),
                ));
            }
            for t in &file.tensors {
                if !seen.insert(t.name().to_string()) {
                    return Err(Error::corrupt(
                        &file.path,
                        format!("tensor `{}` appears in two parts", t.name()),
                    ));
                }
            }
            tensors.extend(file.tensors.iter().cloned());
            parts.push(part_of(file));
        }
        let first = &files[0];
        if let Some(total) = split_key(first, KEY_SPLIT_TENSORS_COUNT)? {
            if total != tensors.len() as u64 {
                return Err(Error::corrupt(
                    &first.path,
                    format!(
                        "`{KEY_SPLIT_TENSORS_COUNT}` is {total}, but the {count} parts hold {} tensors",
                        tensors.len()
                    ),
                ));
            }
        }
        let mut metadata = first.metadata.clone();
        metadata.retain(|k, _| !k.starts_with("split."));
        Ok(GgufModel {
            parts,
            metadata,
            tensors,
        })
    }

    /// The path the model was opened from (the first part).
    pub fn path(&self) -> &Path {
        &self.parts[0].path
    }

    pub fn parts(&self) -> &[GgufPart] {
        &self.parts
    }

    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// Tensors in order (part by part, each in file order).
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The GGUF version of the first part.
    pub fn version(&self) -> u32 {
        self.parts[0].version
    }

    /// The data alignment of the first part.
    pub fn alignment(&self) -> u64 {
        self.parts[0].alignment
    }

    /// Bytes on disk over all parts.
    pub fn file_bytes(&self) -> u64 {
        self.parts.iter().map(|p| p.file_len).sum()
    }

    /// Bytes of tensor data over all parts.
    pub fn tensor_bytes(&self) -> u64 {
        self.tensors.iter().map(TensorInfo::n_bytes).sum()
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> Result<&str> {
        self.metadata.get_str(KEY_ARCHITECTURE).ok_or_else(|| {
            Error::config(
                self.path(),
                format!("`{KEY_ARCHITECTURE}` is missing or not a string, so the layer count key is unknown"),
            )
        })
    }

    /// `{arch}.block_count`, the key that holds the layer count.
    pub fn block_count_key(&self) -> Result<String> {
        Ok(format!("{}.block_count", self.architecture()?))
    }

    /// The number of layers, from `{arch}.block_count`, checked against the `blk.N` tensors.
    pub fn block_count(&self) -> Result<usize> {
        let key = self.block_count_key()?;
        let n = match self.metadata.get(&key) {
            None => {
                return Err(Error::config(
                    self.path(),
                    format!("`{key}` is missing, so the number of layers is unknown"),
                ))
            }
            Some(v) => v.as_u64().ok_or_else(|| {
                Error::config(
                    self.path(),
                    format!("`{key}` is {}, not a non-negative integer", v.type_name()),
                )
            })?,
        };
        let n = usize::try_from(n)
            .map_err(|_| Error::config(self.path(), format!("`{key}` is {n}")))?;
        self.check_blocks(&key, n)?;
        Ok(n)
    }

    /// The blocks `{arch}.block_count` declares must be the blocks the tensors hold (issue 13): no
    /// tensor beyond the count, no block without tensors, and every block with the same tensor
    /// names ([`layers_mismatch`]; which names an architecture needs is checked when the engine
    /// loads a block, as a reader of the format may hold any). The errors are
    /// [`Error::Corrupt`]: the file contradicts itself.
    fn check_blocks(&self, key: &str, n: usize) -> Result<()> {
        // By block number: a hostile name like `blk.4000000000.x` must not size an allocation.
        let mut present: BTreeMap<usize, Vec<&str>> = BTreeMap::new();
        for t in &self.tensors {
            let Some(l) = gguf_layer(t.name()) else {
                continue;
            };
            if l.layer >= n {
                return Err(Error::corrupt(
                    self.path(),
                    format!(
                        "tensor `{}` belongs to layer {}, but `{key}` is {n}; the metadata contradicts the tensors",
                        t.name(),
                        l.layer
                    ),
                ));
            }
            present.entry(l.layer).or_default().push(l.rest);
        }
        let held = present.len();
        if held != n {
            let first_missing = (0..n).find(|i| !present.contains_key(i)).unwrap_or(0);
            return Err(Error::corrupt(
                self.path(),
                format!(
                    "`{key}` is {n} but the tensors hold {held} blocks (block {first_missing} has none); the metadata contradicts the tensors"
                ),
            ));
        }
        if let Some(msg) = layers_mismatch(&present, "blk.", "ffn") {
            return Err(Error::corrupt(self.path(), msg));
        }
        Ok(())
    }

    /// `(name, elements)` for every tensor, for [`crate::arch::ParamCounts::from_tensors`].
    pub fn tensor_elements(&self) -> impl Iterator<Item = (&str, u64)> {
        self.tensors.iter().map(|t| (t.name(), t.n_elements()))
    }

    /// Metadata arrays treated as per-layer: those whose length equals the layer count `n`,
    /// except under prefixes that never hold per-layer values: `general.` (languages, tags,
    /// base models), `tokenizer.` (vocabularies), `split.` and `depthprune.`.
    pub fn per_layer_keys(&self, n: usize) -> Vec<String> {
        self.metadata
            .iter()
            .filter(|(k, _)| {
                !["general.", "tokenizer.", "split.", "depthprune."]
                    .iter()
                    .any(|p| k.starts_with(p))
            })
            .filter(|(_, v)| matches!(v, Value::Array(a) if a.len() == n))
            .map(|(k, _)| k.to_string())
            .collect()
    }
}

fn show(v: Option<u64>) -> String {
    v.map_or_else(|| "nothing".into(), |n| n.to_string())
}
