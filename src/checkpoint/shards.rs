//! Writing safetensors shards for a prune: the floats converted on the way (F32, F16, BF16), a
//! count of non-finite values, and a writer that fills the output shards one after another while
//! hashing every byte it writes.

use super::atomic::AtomicOutput;
use super::hashing::HashWorker;
use super::provenance::FileHash;
use super::safetensors::Dtype;
use crate::error::{Error, IoContext, Result};
use std::fs::File;
use std::io::Write;
use std::sync::Arc;

/// Counts NaN and infinite values in a chunk of F32, F16 or BF16 data (0 for other dtypes).
pub fn count_nonfinite(bytes: &[u8], dtype: Dtype) -> u64 {
    match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .filter(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) & 0x7f80_0000 == 0x7f80_0000)
            .count() as u64,
        Dtype::F16 => bytes
            .chunks_exact(2)
            .filter(|c| u16::from_le_bytes([c[0], c[1]]) & 0x7c00 == 0x7c00)
            .count() as u64,
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .filter(|c| u16::from_le_bytes([c[0], c[1]]) & 0x7f80 == 0x7f80)
            .count() as u64,
        _ => 0,
    }
}

/// Converts a chunk of floats between F32, F16 and BF16.
/// Non-float `to` types are written as BF16, as before; callers pass F32, F16 or BF16.
pub(crate) fn convert(src: &[u8], from: Dtype, to: Dtype, out: &mut Vec<u8>) {
    use half::{bf16, f16};
    out.clear();
    let read = |c: &[u8]| -> f32 {
        match from {
            Dtype::F32 => f32::from_le_bytes([c[0], c[1], c[2], c[3]]),
            Dtype::F16 => f16::from_le_bytes([c[0], c[1]]).to_f32(),
            _ => bf16::from_le_bytes([c[0], c[1]]).to_f32(),
        }
    };
    let xs: Vec<f32> = src.chunks_exact(from.size()).map(read).collect();
    let to = super::floats::Float::of_dtype(to).unwrap_or(super::floats::Float::BF16);
    super::floats::encode_extend(&xs, to, out);
}

/// Writes output shards one after another; a [`HashWorker`] hashes what is written.
pub(crate) struct ShardWriter<'a> {
    output: &'a AtomicOutput,
    names: &'a [String],
    headers: &'a [Vec<u8>],
    current: Option<(usize, File, u64)>,
    closed: Vec<(String, u64)>,
    hasher: HashWorker,
}

impl<'a> ShardWriter<'a> {
    pub(crate) fn new(
        output: &'a AtomicOutput,
        names: &'a [String],
        headers: &'a [Vec<u8>],
    ) -> Self {
        ShardWriter {
            output,
            names,
            headers,
            current: None,
            closed: Vec::new(),
            hasher: HashWorker::spawn(),
        }
    }

    /// Makes shard `k` the current one, closing the previous shard.
    pub(crate) fn enter(&mut self, k: usize) -> Result<()> {
        if self.current.as_ref().is_some_and(|c| c.0 == k) {
            return Ok(());
        }
        self.close();
        let path = self.output.join(&self.names[k]);
        let mut f = File::create(&path).at(&path)?;
        let header = Arc::new(self.headers[k].clone());
        f.write_all(&header).at(&path)?;
        self.hasher.update(&header, 0..header.len());
        self.current = Some((k, f, header.len() as u64));
        Ok(())
    }

    pub(crate) fn write(&mut self, bytes: &Arc<Vec<u8>>) -> Result<()> {
        let Some((k, f, n)) = self.current.as_mut() else {
            return Err(Error::Invalid(
                "internal: write before a shard was opened".into(),
            ));
        };
        f.write_all(bytes)
            .map_err(|e| Error::io(self.output.join(&self.names[*k]), e))?;
        self.hasher.update(bytes, 0..bytes.len());
        *n += bytes.len() as u64;
        Ok(())
    }

    /// Closes the current shard. Durability comes from the fsync in `AtomicOutput::commit`.
    fn close(&mut self) {
        if let Some((k, _f, n)) = self.current.take() {
            self.hasher.end_file();
            self.closed.push((self.names[k].clone(), n));
        }
    }

    /// Closes the last shard and returns every shard with its hash. Shards with no tensors
    /// (possible only if every tensor was dropped) are still written so the index never names a
    /// missing file.
    pub(crate) fn finish(mut self) -> Result<Vec<FileHash>> {
        self.close();
        for k in 0..self.names.len() {
            if !self.closed.iter().any(|d| d.0 == self.names[k]) {
                self.enter(k)?;
                self.close();
            }
        }
        let hashes = self.hasher.finish();
        Ok(self
            .closed
            .into_iter()
            .zip(hashes)
            .map(|((name, bytes), sha256)| FileHash {
                name,
                bytes,
                sha256,
            })
            .collect())
    }
}
