//! Where model weights come from. The forward pass asks a [`WeightSource`] for one tensor at a time
//! by its HF name and gets an f32 tensor on the CPU, so any checkpoint format can feed it: an HF
//! safetensors folder ([`HfFolder`], here) or a GGUF file (dequantized, with llama.cpp's Q/K row
//! permutation undone) later. Sources convert lazily, so a model that loads one layer at a time
//! holds only that layer in f32.

use super::config::Compute;
use crate::checkpoint::hf::open_weights;
use crate::checkpoint::safetensors::{Dtype, SafetensorsFile, TensorInfo};
use crate::error::{Error, IoContext, Result};
use candle_core::quantized::QTensor;
use candle_core::{Device, Tensor};
use memmap2::Mmap;
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The name of a sharded HF checkpoint's index.
pub use crate::checkpoint::hf::INDEX_FILE;
/// The name of a single-file HF checkpoint.
pub use crate::checkpoint::hf::SINGLE_FILE;

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
    /// Tensor `name` as ggml blocks, a `(out, in)` matrix in HF layout, for [`Compute::Quant`]:
    /// `None` when the source does not store it in a block type the quantized kernels multiply
    /// (the caller then reads it as floats).
    fn quantized(&self, _name: &str) -> Result<Option<Arc<QTensor>>> {
        Ok(None)
    }
    /// The precision `compute auto` runs this checkpoint in: how its matrix weights are stored.
    fn stored_compute(&self) -> Compute {
        Compute::F32
    }
    /// Whether the source holds a tensor called `name`.
    fn contains(&self, name: &str) -> bool;
    /// The shape of tensor `name`, without reading its data.
    fn shape(&self, name: &str) -> Option<Vec<usize>>;
    /// The checkpoint path, for messages.
    fn path(&self) -> &Path;
}

/// One memory-mapped safetensors file with the header the checkpoint reader validated.
struct Shard {
    header: SafetensorsFile,
    mmap: Mmap,
}

impl Shard {
    fn open(header: SafetensorsFile) -> Result<Self> {
        let path = &header.path;
        let file = File::open(path).at(path)?;
        // SAFETY: the map is read-only and we never hand out references that outlive `self`;
        // a file truncated underneath us is the one hazard, as with every mmap reader.
        let mmap = unsafe { Mmap::map(&file) }.at(path)?;
        if (mmap.len() as u64) < header.file_len {
            return Err(Error::corrupt(
                path,
                "the file shrank after its header was read",
            ));
        }
        Ok(Shard { header, mmap })
    }

    /// The stored bytes of tensor `t` (bounds were checked with the header).
    fn bytes(&self, t: &TensorInfo) -> Result<&[u8]> {
        let start = usize::try_from(t.file_offset).ok();
        let end = t
            .file_offset
            .checked_add(t.len)
            .and_then(|e| usize::try_from(e).ok());
        start
            .zip(end)
            .and_then(|(a, b)| self.mmap.get(a..b))
            .ok_or_else(|| {
                Error::corrupt(
                    &self.header.path,
                    format!("tensor `{}` lies outside the file", t.name),
                )
            })
    }

    fn read(&self, t: &TensorInfo) -> Result<Tensor> {
        let bytes = self.bytes(t)?;
        let Some(width) = f32_width(t.dtype) else {
            return Err(Error::Unsupported(format!(
                "`{}`: tensor `{}` has dtype {}; the forward pass reads F32, F16 and BF16",
                self.header.path.display(),
                t.name,
                t.dtype
            )));
        };
        let mut values = Vec::with_capacity(bytes.len() / width);
        for piece in bytes.chunks(READ_CHUNK) {
            push_f32(piece, t.dtype, &mut values);
            self.release(piece);
        }
        Ok(Tensor::from_vec(values, shape(t).as_slice(), &Device::Cpu)?)
    }

    /// The tensor as stored when it is bf16 or f16, else rounded to bf16 from f32.
    fn read_half(&self, t: &TensorInfo) -> Result<Tensor> {
        let shape = shape(t);
        match t.dtype {
            Dtype::BF16 => self.half_tensor(self.bytes(t)?, half::bf16::from_bits, &shape),
            Dtype::F16 => self.half_tensor(self.bytes(t)?, half::f16::from_bits, &shape),
            _ => Ok(self.read(t)?.to_dtype(candle_core::DType::BF16)?),
        }
    }

    /// A tensor of 16-bit values (bf16 or f16, by `from_bits`) from their little-endian bytes,
    /// releasing each piece of the file once it is read.
    fn half_tensor<T: candle_core::WithDType>(
        &self,
        bytes: &[u8],
        from_bits: fn(u16) -> T,
        shape: &[usize],
    ) -> Result<Tensor> {
        let mut v: Vec<T> = Vec::with_capacity(bytes.len() / 2);
        for piece in bytes.chunks(READ_CHUNK) {
            v.extend((piece.chunks_exact(2)).map(|c| from_bits(u16::from_le_bytes([c[0], c[1]]))));
            self.release(piece);
        }
        Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
    }

    /// Drops the file pages of `bytes` (a piece of this shard's map, just converted) from this
    /// process's resident memory, so a model holds its weights once rather than twice, even
    /// while one large tensor is being converted. They stay in the page cache.
    fn release(&self, bytes: &[u8]) {
        release_pages(&self.mmap, bytes);
    }
}

/// Bytes converted between two releases of the file pages they came from (a multiple of 4,
/// so no value straddles two pieces).
const READ_CHUNK: usize = 4 << 20;

/// Drops the pages of `bytes`, which must lie inside `map`, from this process's resident
/// memory (best effort: a failed hint changes nothing but memory use). They stay in the page
/// cache, and a later read faults them back in.
pub(crate) fn release_pages(map: &Mmap, bytes: &[u8]) {
    #[cfg(unix)]
    {
        let base = map.as_ptr() as usize;
        let at = bytes.as_ptr() as usize;
        if at >= base && at + bytes.len() <= base + map.len() {
            // SAFETY: the map is private and read-only, so MADV_DONTNEED only makes later
            // reads fault the same bytes back in from the file; no data can be lost or changed.
            unsafe {
                let _ = map.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    at - base,
                    bytes.len(),
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (map, bytes);
}

fn shape(t: &TensorInfo) -> Vec<usize> {
    t.shape.iter().map(|&d| d as usize).collect()
}

/// Bytes per value of the dtypes the forward pass reads as f32; `None` for the others.
fn f32_width(dtype: Dtype) -> Option<usize> {
    match dtype {
        Dtype::F32 => Some(4),
        Dtype::BF16 | Dtype::F16 => Some(2),
        _ => None,
    }
}

/// Appends little-endian raw values of `dtype` (one [`f32_width`] reads) to `out` as f32.
fn push_f32(bytes: &[u8], dtype: Dtype, out: &mut Vec<f32>) {
    match dtype {
        Dtype::F32 => out
            .extend((bytes.chunks_exact(4)).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))),
        Dtype::BF16 => out.extend(
            (bytes.chunks_exact(2))
                .map(|c| half::bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32()),
        ),
        Dtype::F16 => out.extend(
            (bytes.chunks_exact(2))
                .map(|c| half::f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32()),
        ),
        _ => {}
    }
}

/// Converts little-endian raw values to f32; `None` for dtypes the forward pass does not read.
#[cfg(test)]
fn to_f32(bytes: &[u8], dtype: Dtype) -> Option<Vec<f32>> {
    f32_width(dtype)?;
    let mut out = Vec::new();
    push_f32(bytes, dtype, &mut out);
    Some(out)
}

/// An HF checkpoint folder: `model.safetensors`, or shards listed in `model.safetensors.index.json`,
/// read and validated by the checkpoint reader ([`open_weights`]) that `prune` and `verify` use.
/// Files are memory-mapped; a tensor is converted to f32 only when asked for.
pub struct HfFolder {
    dir: PathBuf,
    shards: Vec<Shard>,
    /// Tensor name → (shard, tensor in that shard).
    index: HashMap<String, (usize, usize)>,
}

impl HfFolder {
    /// Opens the checkpoint in `dir`, validating every shard's header and the index.
    pub fn open(dir: &Path) -> Result<Self> {
        crate::checkpoint::links::check_folder(dir)?;
        let (files, _) = open_weights(dir)?;
        let mut shards = Vec::with_capacity(files.len());
        let mut index = HashMap::new();
        for (i, header) in files.into_iter().enumerate() {
            for (k, t) in header.tensors.iter().enumerate() {
                if index.insert(t.name.clone(), (i, k)).is_some() {
                    return Err(Error::corrupt(
                        &header.path,
                        format!("tensor `{}` appears in more than one shard", t.name),
                    ));
                }
            }
            shards.push(Shard::open(header)?);
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

    fn find(&self, name: &str) -> Result<(&Shard, &TensorInfo)> {
        let &(i, k) = self.index.get(name).ok_or_else(|| {
            Error::corrupt(&self.dir, format!("the checkpoint has no tensor `{name}`"))
        })?;
        let shard = &self.shards[i];
        Ok((shard, &shard.header.tensors[k]))
    }
}

impl WeightSource for HfFolder {
    fn tensor(&self, name: &str) -> Result<Tensor> {
        let (shard, t) = self.find(name)?;
        shard.read(t)
    }

    fn tensor_half(&self, name: &str) -> Result<Tensor> {
        let (shard, t) = self.find(name)?;
        shard.read_half(t)
    }

    fn stored_compute(&self) -> Compute {
        // The layers' matrices decide; norms and biases are often kept in f32 beside them.
        let half = self.shards.iter().flat_map(|s| &s.header.tensors).any(|t| {
            t.shape.len() == 2
                && t.name.contains(".layers.")
                && matches!(t.dtype, Dtype::BF16 | Dtype::F16)
        });
        if half {
            Compute::Bf16
        } else {
            Compute::F32
        }
    }

    fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.find(name).ok().map(|(_, t)| shape(t))
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
        use crate::checkpoint::safetensors::{encode_header, OutTensor};
        let heads: Vec<OutTensor> = tensors
            .iter()
            .map(|(n, d, b, s)| OutTensor {
                name: n.to_string(),
                dtype: *d,
                shape: s.iter().map(|&x| x as u64).collect(),
                len: b.len() as u64,
            })
            .collect();
        let mut bytes = encode_header(&heads, &Default::default());
        for (_, _, b, _) in tensors {
            bytes.extend_from_slice(b);
        }
        std::fs::write(path, bytes).unwrap();
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
