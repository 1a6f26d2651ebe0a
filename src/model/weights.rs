//! Where model weights come from. The forward pass asks a [`WeightSource`] for one tensor at a time
//! by its HF name and gets an f32 tensor on the CPU, so any checkpoint format can feed it: an HF
//! safetensors folder ([`HfFolder`], here) or a GGUF file (dequantized, with llama.cpp's Q/K row
//! permutation undone) later. Sources convert lazily, so a model that loads one layer at a time
//! holds only that layer in f32.

use crate::error::{Error, IoContext, Result};
use candle_core::{Device, Tensor};
use memmap2::Mmap;
use safetensors::tensor::{Dtype, Metadata, SafeTensors};
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

/// The name of a single-file HF checkpoint.
pub const SINGLE_FILE: &str = "model.safetensors";
/// The name of a sharded HF checkpoint's index.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// A store of named tensors that the forward pass reads from.
pub trait WeightSource: Send + Sync {
    /// The tensor called `name` (an HF name such as `model.layers.0.self_attn.q_proj.weight`) as
    /// contiguous f32 on the CPU. A missing tensor is an error naming it and the checkpoint.
    fn tensor(&self, name: &str) -> Result<Tensor>;
    /// The tensor in 16 bits, for `--compute bf16`: bf16 or f16 as stored where the source stores
    /// them (never widened on the way), anything else rounded to bf16.
    fn tensor_half(&self, name: &str) -> Result<Tensor> {
        Ok(self.tensor(name)?.to_dtype(candle_core::DType::BF16)?)
    }
    /// Whether the source holds a tensor called `name`.
    fn contains(&self, name: &str) -> bool;
    /// The shape of tensor `name`, without reading its data.
    fn shape(&self, name: &str) -> Option<Vec<usize>>;
    /// The checkpoint path, for messages.
    fn path(&self) -> &Path;
}

/// One memory-mapped safetensors file with its validated header.
struct Shard {
    path: PathBuf,
    mmap: Mmap,
    /// Where the data section starts in the file.
    data_start: usize,
    metadata: Metadata,
}

impl Shard {
    fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).at(path)?;
        // SAFETY: the map is read-only and we never hand out references that outlive `self`;
        // a file truncated underneath us is the one hazard, as with every mmap reader.
        let mmap = unsafe { Mmap::map(&file) }.at(path)?;
        let (header_len, metadata) = SafeTensors::read_metadata(&mmap)
            .map_err(|e| Error::corrupt(path, format!("not a valid safetensors file: {e}")))?;
        Ok(Shard {
            path: path.to_path_buf(),
            mmap,
            data_start: 8 + header_len,
            metadata,
        })
    }

    fn read(&self, name: &str) -> Result<Tensor> {
        let info = self
            .metadata
            .info(name)
            .ok_or_else(|| Error::corrupt(&self.path, format!("no tensor `{name}`")))?;
        let (start, end) = info.data_offsets;
        let bytes = self
            .data_start
            .checked_add(start)
            .zip(self.data_start.checked_add(end))
            .and_then(|(a, b)| self.mmap.get(a..b))
            .ok_or_else(|| {
                Error::corrupt(&self.path, format!("tensor `{name}` lies outside the file"))
            })?;
        let values = to_f32(bytes, info.dtype).ok_or_else(|| {
            Error::Unsupported(format!(
                "`{}`: tensor `{name}` has dtype {:?}; the forward pass reads F32, F16 and BF16",
                self.path.display(),
                info.dtype
            ))
        })?;
        self.release(self.data_start + start, end - start);
        Ok(Tensor::from_vec(
            values,
            info.shape.as_slice(),
            &Device::Cpu,
        )?)
    }

    /// The tensor as stored when it is bf16 or f16, else rounded to bf16 from f32.
    fn read_half(&self, name: &str) -> Result<Tensor> {
        let info = self
            .metadata
            .info(name)
            .ok_or_else(|| Error::corrupt(&self.path, format!("no tensor `{name}`")))?;
        let (start, end) = info.data_offsets;
        let bytes = self
            .data_start
            .checked_add(start)
            .zip(self.data_start.checked_add(end))
            .and_then(|(a, b)| self.mmap.get(a..b))
            .ok_or_else(|| {
                Error::corrupt(&self.path, format!("tensor `{name}` lies outside the file"))
            })?;
        let bits = |b: &[u8]| -> Vec<u16> {
            b.chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect()
        };
        let shape = info.shape.as_slice();
        let t = match info.dtype {
            Dtype::BF16 => {
                let v: Vec<half::bf16> =
                    bits(bytes).into_iter().map(half::bf16::from_bits).collect();
                Tensor::from_vec(v, shape, &Device::Cpu)?
            }
            Dtype::F16 => {
                let v: Vec<half::f16> = bits(bytes).into_iter().map(half::f16::from_bits).collect();
                Tensor::from_vec(v, shape, &Device::Cpu)?
            }
            _ => return Ok(self.read(name)?.to_dtype(candle_core::DType::BF16)?),
        };
        self.release(self.data_start + start, end - start);
        Ok(t)
    }

    /// Drops the file pages of a converted tensor from this process's resident memory, so a
    /// model holds its weights once (as f32) rather than twice. They stay in the page cache.
    fn release(&self, offset: usize, len: usize) {
        #[cfg(unix)]
        // SAFETY: the map is private and read-only, so MADV_DONTNEED only makes later reads
        // fault the same bytes back in from the file; no data can be lost or changed.
        unsafe {
            // Best effort: a failed hint changes nothing but memory use.
            let _ =
                self.mmap
                    .unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, len);
        }
        #[cfg(not(unix))]
        let _ = (offset, len);
    }
}

/// Converts little-endian raw values to f32; `None` for dtypes the forward pass does not read.
fn to_f32(bytes: &[u8], dtype: Dtype) -> Option<Vec<f32>> {
    let out = match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32())
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32())
            .collect(),
        _ => return None,
    };
    Some(out)
}

/// An HF checkpoint folder: `model.safetensors`, or shards listed in `model.safetensors.index.json`.
/// Files are memory-mapped; a tensor is converted to f32 only when asked for.
pub struct HfFolder {
    dir: PathBuf,
    shards: Vec<Shard>,
    /// Tensor name → index into `shards`.
    index: HashMap<String, usize>,
}

impl HfFolder {
    /// Opens the checkpoint in `dir`, validating every shard's header.
    pub fn open(dir: &Path) -> Result<Self> {
        crate::checkpoint::links::check_folder(dir)?;
        let single = dir.join(SINGLE_FILE);
        let index_path = dir.join(INDEX_FILE);
        let files: Vec<PathBuf> = if index_path.is_file() {
            shard_files(&index_path)?
        } else if single.is_file() {
            vec![single]
        } else {
            return Err(Error::Invalid(format!(
                "`{}`: no `{SINGLE_FILE}` or `{INDEX_FILE}` in this folder",
                dir.display()
            )));
        };
        let mut shards = Vec::with_capacity(files.len());
        let mut index = HashMap::new();
        for (i, path) in files.iter().enumerate() {
            let shard = Shard::open(path)?;
            for name in shard.metadata.tensors().keys() {
                if index.insert(name.clone(), i).is_some() {
                    return Err(Error::corrupt(
                        path,
                        format!("tensor `{name}` appears in more than one shard"),
                    ));
                }
            }
            shards.push(shard);
        }
        Ok(HfFolder {
            dir: dir.to_path_buf(),
            shards,
            index,
        })
    }

    /// The names of all tensors, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.index.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }
}

/// The distinct shard files an index names, in first-seen order of sorted tensor names.
fn shard_files(index_path: &Path) -> Result<Vec<PathBuf>> {
    let text = crate::checkpoint::limits::read_text_capped(
        index_path,
        crate::checkpoint::limits::MAX_JSON_BYTES,
    )?;
    #[derive(serde::Deserialize)]
    struct Index {
        weight_map: BTreeMap<String, String>,
    }
    let parsed: Index = serde_json::from_str(&text)
        .map_err(|e| Error::corrupt(index_path, format!("not a valid index: {e}")))?;
    let dir = index_path.parent().unwrap_or(Path::new("."));
    let mut files: Vec<PathBuf> = Vec::new();
    for file in parsed.weight_map.values() {
        if file.contains('/') || file.contains('\\') || file == ".." {
            return Err(Error::corrupt(
                index_path,
                format!("shard name `{file}` is not a plain file name"),
            ));
        }
        let path = dir.join(file);
        if !files.contains(&path) {
            files.push(path);
        }
    }
    if files.is_empty() {
        return Err(Error::corrupt(index_path, "the index lists no tensors"));
    }
    Ok(files)
}

impl WeightSource for HfFolder {
    fn tensor(&self, name: &str) -> Result<Tensor> {
        match self.index.get(name) {
            Some(&i) => self.shards[i].read(name),
            None => Err(Error::corrupt(
                &self.dir,
                format!("the checkpoint has no tensor `{name}`"),
            )),
        }
    }

    fn tensor_half(&self, name: &str) -> Result<Tensor> {
        match self.index.get(name) {
            Some(&i) => self.shards[i].read_half(name),
            None => Err(Error::corrupt(
                &self.dir,
                format!("the checkpoint has no tensor `{name}`"),
            )),
        }
    }

    fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        let &i = self.index.get(name)?;
        self.shards[i].metadata.info(name).map(|t| t.shape.clone())
    }

    fn path(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_half_types() {
        let bf = half::bf16::from_f32(1.5).to_bits().to_le_bytes();
        let f = half::f16::from_f32(-2.25).to_bits().to_le_bytes();
        assert_eq!(to_f32(&bf, Dtype::BF16).unwrap(), vec![1.5]);
        assert_eq!(to_f32(&f, Dtype::F16).unwrap(), vec![-2.25]);
        assert_eq!(
            to_f32(&0.5f32.to_le_bytes(), Dtype::F32).unwrap(),
            vec![0.5]
        );
        assert!(to_f32(&[0u8; 8], Dtype::I64).is_none());
    }

    #[test]
    fn missing_folder_names_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let err = HfFolder::open(dir.path()).err().unwrap().to_string();
        assert!(
            err.contains(SINGLE_FILE) && err.contains(INDEX_FILE),
            "{err}"
        );
    }

    fn write_shard(path: &Path, tensors: &[(&str, Dtype, Vec<u8>, Vec<usize>)]) {
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
            .iter()
            .map(|(n, d, b, s)| {
                (
                    n.to_string(),
                    safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
                )
            })
            .collect();
        safetensors::serialize_to_file(views, None, path).unwrap();
    }

    #[test]
    fn reads_sharded_folders_and_converts_to_f32() {
        let dir = tempfile::tempdir().unwrap();
        let bf: Vec<u8> = [1.0f32, -0.5]
            .iter()
            .flat_map(|&v| half::bf16::from_f32(v).to_bits().to_le_bytes())
            .collect();
        let f: Vec<u8> = [3.0f32, 4.0, 5.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        write_shard(
            &dir.path().join("a.safetensors"),
            &[("x", Dtype::BF16, bf, vec![2])],
        );
        write_shard(
            &dir.path().join("b.safetensors"),
            &[("y", Dtype::F32, f, vec![3, 1])],
        );
        let index = serde_json::json!({"metadata": {}, "weight_map": {"x": "a.safetensors", "y": "b.safetensors"}});
        std::fs::write(dir.path().join(INDEX_FILE), index.to_string()).unwrap();
        let src = HfFolder::open(dir.path()).unwrap();
        assert_eq!(src.names(), vec!["x", "y"]);
        assert_eq!(
            src.tensor("x").unwrap().to_vec1::<f32>().unwrap(),
            vec![1.0, -0.5]
        );
        assert_eq!(src.shape("y"), Some(vec![3, 1]));
        assert_eq!(
            src.tensor("y")
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
            vec![3.0, 4.0, 5.0]
        );
        let err = src.tensor("z").unwrap_err().to_string();
        assert!(err.contains("`z`"), "{err}");
    }

    #[test]
    fn refuses_index_paths_outside_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        let index = serde_json::json!({"weight_map": {"x": "../a.safetensors"}});
        std::fs::write(dir.path().join(INDEX_FILE), index.to_string()).unwrap();
        let err = HfFolder::open(dir.path()).err().unwrap();
        assert!(
            matches!(err, Error::Corrupt { .. }) && err.to_string().contains("plain file name"),
            "{err}"
        );
    }

    #[test]
    fn truncated_file_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(SINGLE_FILE),
            b"\x10\x00\x00\x00\x00\x00\x00\x00{}",
        )
        .unwrap();
        let err = HfFolder::open(dir.path()).err().unwrap();
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    }
}
