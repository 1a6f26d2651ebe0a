//! A streaming GGUF v3 writer that moves through fixed stages: header → metadata → tensor infos →
//! aligned tensor data. Calls out of order, or more or fewer entries than the header declared,
//! are refused with an error rather than producing a file that looks valid and is not.
//!
//! Tensor data is either copied from a range of a source file (`std::io::copy` on `File::take`,
//! which Linux turns into `copy_file_range`, so the bytes need not pass through user space) or
//! written from a caller's buffer. The writer itself never holds tensor data.

use super::types::GgmlType;
use super::value::{write_string, Value};
use super::{DEFAULT_ALIGNMENT, KEY_ALIGNMENT, MAGIC, WRITE_VERSION};
use crate::error::{Error, IoContext, Result};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Header,
    Metadata,
    TensorInfos,
    Data,
    Finished,
}

/// Writes a GGUF v3 file to `W` (normally a `BufWriter<File>`).
pub struct GgufWriter<W: Write> {
    out: W,
    path: PathBuf,
    stage: Stage,
    alignment: u64,
    pos: u64,
    kv_left: u64,
    infos_left: u64,
    alignment_key_written: bool,
    /// `(name, bytes, data-section offset)` for each tensor info written, in order.
    planned: Vec<(String, u64, u64)>,
    next_offset: u64,
    data_start: u64,
    data_done: usize,
}

const ZEROS: [u8; 64] = [0; 64];

impl<W: Write> GgufWriter<W> {
    /// A writer for the file at `path` (named in errors), with data aligned to `alignment`.
    pub fn new(out: W, path: &Path, alignment: u64) -> Result<Self> {
        if !alignment.is_power_of_two() || alignment > u64::from(u32::MAX) {
            return Err(Error::Invalid(format!(
                "GGUF alignment {alignment} is not a power-of-two u32"
            )));
        }
        Ok(GgufWriter {
            out,
            path: path.to_path_buf(),
            stage: Stage::Header,
            alignment,
            pos: 0,
            kv_left: 0,
            infos_left: 0,
            alignment_key_written: false,
            planned: Vec::new(),
            next_offset: 0,
            data_start: 0,
            data_done: 0,
        })
    }

    fn misuse(&self, msg: String) -> Error {
        Error::Invalid(format!("GGUF writer for `{}`: {msg}", self.path.display()))
    }

    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.out.write_all(bytes).at(&self.path)?;
        self.pos += bytes.len() as u64;
        Ok(())
    }

    fn pad_to(&mut self, target: u64) -> Result<()> {
        while self.pos < target {
            let n = (target - self.pos).min(ZEROS.len() as u64) as usize;
            self.put(&ZEROS[..n])?;
        }
        Ok(())
    }

    /// Stage 1: magic, version and the counts every later stage is held to.
    pub fn header(&mut self, n_tensors: u64, n_kv: u64) -> Result<()> {
        if self.stage != Stage::Header {
            return Err(self.misuse("`header` called twice".into()));
        }
        self.put(&MAGIC)?;
        self.put(&WRITE_VERSION.to_le_bytes())?;
        self.put(&n_tensors.to_le_bytes())?;
        self.put(&n_kv.to_le_bytes())?;
        self.kv_left = n_kv;
        self.infos_left = n_tensors;
        self.stage = Stage::Metadata;
        Ok(())
    }

    /// Stage 2: one metadata entry. `general.alignment`, if written, must match the writer's.
    pub fn kv(&mut self, key: &str, value: &Value) -> Result<()> {
        match self.stage {
            Stage::Metadata if self.kv_left > 0 => {}
            Stage::Metadata => {
                return Err(self.misuse(format!(
                    "`kv({key})` called after every declared metadata entry"
                )))
            }
            Stage::Header => return Err(self.misuse(format!("`kv({key})` called before `header`"))),
            _ => return Err(self.misuse(format!("`kv({key})` called after the metadata stage"))),
        }
        if key.is_empty() {
            return Err(self.misuse("empty metadata key".into()));
        }
        if key == KEY_ALIGNMENT {
            if *value != Value::U32(self.alignment as u32) {
                return Err(self.misuse(format!(
                    "`{KEY_ALIGNMENT}` = {value:?} does not match the writer's alignment {}",
                    self.alignment
                )));
            }
            self.alignment_key_written = true;
        }
        let mut buf = Vec::with_capacity(key.len() + 12);
        write_string(&mut buf, key.as_bytes()).at(&self.path)?;
        buf.extend_from_slice(&value.value_type().id().to_le_bytes());
        self.put(&buf)?;
        value.write(&mut self.out).at(&self.path)?;
        self.pos += value.encoded_len();
        self.kv_left -= 1;
        Ok(())
    }

    /// Stage 3: one tensor info. Data offsets are assigned here, in call order.
    pub fn tensor_info(&mut self, name: &str, dims: &[u64], ty: GgmlType) -> Result<()> {
        match self.stage {
            Stage::Metadata if self.kv_left == 0 => {
                if self.alignment != DEFAULT_ALIGNMENT && !self.alignment_key_written {
                    return Err(self.misuse(format!(
                        "alignment {} needs a `{KEY_ALIGNMENT}` entry in the metadata",
                        self.alignment
                    )));
                }
                self.stage = Stage::TensorInfos;
            }
            Stage::Metadata => {
                return Err(self.misuse(format!(
                    "`tensor_info({name})` called with {} metadata entries still to write",
                    self.kv_left
                )))
            }
            Stage::TensorInfos => {}
            _ => return Err(self.misuse(format!("`tensor_info({name})` called out of order"))),
        }
        if self.infos_left == 0 {
            return Err(self.misuse(format!(
                "`tensor_info({name})` called after every declared tensor"
            )));
        }
        if name.is_empty() || dims.len() > super::MAX_DIMS {
            return Err(self.misuse(format!(
                "tensor `{name}` has an empty name or more than 4 dims"
            )));
        }
        let n_bytes = ty
            .tensor_bytes(dims)
            .map_err(|e| self.misuse(format!("tensor `{name}` with shape {dims:?}: {e}")))?;
        let offset = self.next_offset;
        self.next_offset = offset
            .checked_add(n_bytes)
            .and_then(|end| end.checked_next_multiple_of(self.alignment))
            .ok_or_else(|| self.misuse("tensor data overflows 64 bits".into()))?;
        let mut buf = Vec::with_capacity(name.len() + 48);
        write_string(&mut buf, name.as_bytes()).at(&self.path)?;
        buf.extend_from_slice(&(dims.len() as u32).to_le_bytes());
        for d in dims {
            buf.extend_from_slice(&d.to_le_bytes());
        }
        buf.extend_from_slice(&ty.id().to_le_bytes());
        buf.extend_from_slice(&offset.to_le_bytes());
        self.put(&buf)?;
        self.planned.push((name.to_string(), n_bytes, offset));
        self.infos_left -= 1;
        Ok(())
    }

    /// Checks that tensor data may come next and pads up to it; returns its expected length.
    fn begin_data(&mut self, call: &str) -> Result<u64> {
        let ready = match self.stage {
            Stage::Metadata => self.kv_left == 0 && self.infos_left == 0,
            Stage::TensorInfos => self.infos_left == 0,
            Stage::Data => true,
            _ => false,
        };
        if !ready {
            return Err(self.misuse(format!(
                "`{call}` called before every metadata entry and tensor info was written"
            )));
        }
        if self.stage != Stage::Data {
            self.data_start = self.pos.next_multiple_of(self.alignment);
            self.pad_to(self.data_start)?;
            self.stage = Stage::Data;
        }
        let Some((_, n_bytes, offset)) = self.planned.get(self.data_done) else {
            return Err(self.misuse(format!("`{call}` called after the data of every tensor")));
        };
        let (n_bytes, target) = (*n_bytes, self.data_start + offset);
        self.pad_to(target)?;
        Ok(n_bytes)
    }

    /// The name of the tensor whose data comes next.
    pub fn next_tensor(&self) -> Option<&str> {
        self.planned.get(self.data_done).map(|(n, _, _)| n.as_str())
    }

    /// Stage 4: the next tensor's data, copied from `src` (at `src_path`) starting at `offset`.
    pub fn copy_tensor(&mut self, src: &mut File, src_path: &Path, offset: u64) -> Result<()> {
        let n_bytes = self.begin_data("copy_tensor")?;
        src.seek(SeekFrom::Start(offset)).at(src_path)?;
        let copied = copy_err(
            std::io::copy(&mut src.take(n_bytes), &mut self.out),
            src_path,
            &self.path,
        )?;
        self.pos += copied;
        if copied != n_bytes {
            let name = &self.planned[self.data_done].0;
            return Err(Error::corrupt(
                src_path,
                format!("tensor `{name}` ended after {copied} of {n_bytes} bytes (did the file change?)"),
            ));
        }
        self.data_done += 1;
        Ok(())
    }

    /// Stage 4: the next tensor's data from a buffer of exactly its size.
    pub fn write_tensor(&mut self, data: &[u8]) -> Result<()> {
        let n_bytes = self.begin_data("write_tensor")?;
        if data.len() as u64 != n_bytes {
            let name = self.planned[self.data_done].0.clone();
            return Err(self.misuse(format!(
                "tensor `{name}` needs {n_bytes} bytes, got {}",
                data.len()
            )));
        }
        self.put(data)?;
        self.data_done += 1;
        Ok(())
    }

    /// Pads the last tensor, flushes, and returns the output. Refused until every declared
    /// entry, info and tensor has been written.
    pub fn finish(mut self) -> Result<W> {
        if self.stage == Stage::Header || self.kv_left > 0 || self.infos_left > 0 {
            return Err(self.misuse(
                "`finish` called before the header, metadata and tensor infos were complete".into(),
            ));
        }
        if self.data_done < self.planned.len() {
            return Err(self.misuse(format!(
                "`finish` called with {} of {} tensors' data written",
                self.data_done,
                self.planned.len()
            )));
        }
        if self.stage != Stage::Data {
            self.data_start = self.pos.next_multiple_of(self.alignment);
        }
        let end = self
            .pos
            .next_multiple_of(self.alignment)
            .max(self.data_start);
        self.pad_to(end)?;
        self.out.flush().at(&self.path)?;
        self.stage = Stage::Finished;
        Ok(self.out)
    }

    /// Bytes written so far.
    pub fn position(&self) -> u64 {
        self.pos
    }
}

/// Attributes a copy error to the side that failed, as far as the error kind tells.
fn copy_err(r: std::io::Result<u64>, src: &Path, dst: &Path) -> Result<u64> {
    r.map_err(|e| match e.kind() {
        std::io::ErrorKind::WriteZero | std::io::ErrorKind::StorageFull => Error::io(dst, e),
        _ => Error::io(src, e),
    })
}

/// The bytes a header with these entries and tensor infos takes, before alignment padding:
/// used to plan split parts without writing them.
pub fn header_len<'a>(
    kvs: impl IntoIterator<Item = (&'a str, &'a Value)>,
    infos: impl IntoIterator<Item = (&'a str, usize)>,
) -> u64 {
    let kv: u64 = kvs
        .into_iter()
        .map(|(k, v)| 8 + k.len() as u64 + 4 + v.encoded_len())
        .sum();
    let ti: u64 = infos
        .into_iter()
        .map(|(name, n_dims)| tensor_info_len(name, n_dims))
        .sum();
    4 + 4 + 8 + 8 + kv + ti
}

/// The bytes one tensor info takes.
pub fn tensor_info_len(name: &str, n_dims: usize) -> u64 {
    8 + name.len() as u64 + 4 + 8 * n_dims as u64 + 4 + 8
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::gguf::read::parse;

    fn writer() -> GgufWriter<Vec<u8>> {
        GgufWriter::new(Vec::new(), Path::new("t.gguf"), 32).unwrap()
    }

    #[test]
    fn writes_a_file_the_reader_accepts() {
        let mut w = writer();
        w.header(2, 1).unwrap();
        w.kv("general.architecture", &Value::string("llama"))
            .unwrap();
        w.tensor_info("a", &[3], GgmlType::F32).unwrap();
        w.tensor_info("b", &[32, 2], GgmlType::Q8_0).unwrap();
        w.write_tensor(&[1; 12]).unwrap();
        w.write_tensor(&[2; 68]).unwrap();
        let bytes = w.finish().unwrap();
        assert_eq!(bytes.len() % 32, 0);
        let f = parse(&bytes[..], bytes.len() as u64, 0).unwrap();
        assert_eq!(f.version, 3);
        assert_eq!(f.tensors[1].n_bytes(), 68);
        let start = f.tensors[1].file_offset() as usize;
        assert_eq!(start % 32, 0);
        assert_eq!(&bytes[start..start + 68], &[2; 68]);
        assert_eq!(f.metadata.get_str("general.architecture"), Some("llama"));
    }

    #[test]
    fn refuses_out_of_order_calls() {
        let mut w = writer();
        let e = w.kv("k", &Value::U8(1)).unwrap_err();
        assert!(e.to_string().contains("before `header`"), "{e}");
        w.header(1, 1).unwrap();
        assert!(w.header(1, 1).unwrap_err().to_string().contains("twice"));
        let e = w.tensor_info("t", &[1], GgmlType::F32).unwrap_err();
        assert!(
            e.to_string().contains("1 metadata entries still to write"),
            "{e}"
        );
        let e = w.write_tensor(&[0; 4]).unwrap_err();
        assert!(e.to_string().contains("before every metadata entry"), "{e}");
        w.kv("k", &Value::U8(1)).unwrap();
        let e = w.kv("k2", &Value::U8(1)).unwrap_err();
        assert!(e.to_string().contains("after every declared"), "{e}");
        w.tensor_info("t", &[1], GgmlType::F32).unwrap();
        let e = w.write_tensor(&[0; 3]).unwrap_err();
        assert!(e.to_string().contains("needs 4 bytes, got 3"), "{e}");
    }

    #[test]
    fn refuses_finishing_early() {
        let mut w = writer();
        w.header(1, 0).unwrap();
        w.tensor_info("t", &[1], GgmlType::F32).unwrap();
        let e = w.finish().unwrap_err();
        assert!(e.to_string().contains("0 of 1 tensors"), "{e}");
    }

    #[test]
    fn custom_alignment_needs_its_key() {
        let mut w = GgufWriter::new(Vec::new(), Path::new("t.gguf"), 64).unwrap();
        w.header(1, 1).unwrap();
        let e = w.kv(KEY_ALIGNMENT, &Value::U32(32)).unwrap_err();
        assert!(e.to_string().contains("does not match"), "{e}");
        let mut w = GgufWriter::new(Vec::new(), Path::new("t.gguf"), 64).unwrap();
        w.header(1, 1).unwrap();
        w.kv("x", &Value::U8(0)).unwrap();
        let e = w.tensor_info("t", &[1], GgmlType::F32).unwrap_err();
        assert!(e.to_string().contains("needs a `general.alignment`"), "{e}");
        assert!(GgufWriter::new(Vec::new(), Path::new("t"), 48).is_err());
    }

    #[test]
    fn header_len_matches_what_is_written() {
        let v = Value::string("llama");
        let mut w = writer();
        w.header(1, 1).unwrap();
        w.kv("general.architecture", &v).unwrap();
        w.tensor_info("blk.0.x", &[4, 2], GgmlType::F16).unwrap();
        assert_eq!(
            w.position(),
            header_len([("general.architecture", &v)], [("blk.0.x", 2)])
        );
    }
}
