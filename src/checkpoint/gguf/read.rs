//! Reading one GGUF file's header region: magic, version, counts, metadata and tensor infos. The
//! tensor data is never read; its ranges are only checked against the file.
//!
//! Checks run in a fixed order: magic and version; counts against the named caps and against
//! the bytes left; each string and array length against the bytes left before allocating; then
//! keys, shapes and types; then `general.alignment`; and last the data ranges (aligned, inside
//! the file, not overlapping). Files are accepted in any layout that passes those checks:
//! tensors need not be stored in info order or packed back to back.

use super::error::{Bound, FormatError};
use super::source::Source;
use super::types::{element_count, GgmlType};
use super::value::{Value, ValueType};
use super::{
    Metadata, DEFAULT_ALIGNMENT, KEY_ALIGNMENT, MAGIC, MAX_DIMS, MAX_KEYS, MAX_NAME_LEN,
    MAX_TENSORS,
};
use crate::error::{IoContext, Result};
use std::collections::HashSet;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

/// The fewest bytes a metadata entry can take: key length, a 1-byte key, type, a 1-byte value.
const MIN_KV_LEN: u64 = 8 + 1 + 4 + 1;
/// The fewest bytes a tensor info can take: name length, a 1-byte name, `n_dims` (0), type,
/// offset.
const MIN_TENSOR_INFO_LEN: u64 = 8 + 1 + 4 + 4 + 8;

/// One tensor of a GGUF model and where its bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    name: String,
    dims: Vec<u64>,
    ggml_type: GgmlType,
    n_bytes: u64,
    part: usize,
    file_offset: u64,
}

impl TensorInfo {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The shape in GGUF order: `dims()[0]` is the row length.
    pub fn dims(&self) -> &[u64] {
        &self.dims
    }

    pub fn ggml_type(&self) -> GgmlType {
        self.ggml_type
    }

    /// Bytes of tensor data.
    pub fn n_bytes(&self) -> u64 {
        self.n_bytes
    }

    /// The number of elements. The byte size was checked against the file, which bounds this
    /// far below `u64::MAX`; it saturates rather than wraps all the same.
    pub fn n_elements(&self) -> u64 {
        element_count(&self.dims).unwrap_or(u64::MAX)
    }

    /// Which part of a split model holds the data (0 for a single file).
    pub fn part(&self) -> usize {
        self.part
    }

    /// The absolute offset of the data in its part file.
    pub fn file_offset(&self) -> u64 {
        self.file_offset
    }
}

/// One GGUF file as read: everything before the tensor data, validated.
#[derive(Debug, Clone)]
pub struct GgufFile {
    pub path: PathBuf,
    pub version: u32,
    /// The data alignment (`general.alignment`, or 32).
    pub alignment: u64,
    pub metadata: Metadata,
    /// Tensors in file order.
    pub tensors: Vec<TensorInfo>,
    /// Where the data section starts (the end of the header, padded to the alignment).
    pub data_start: u64,
    pub file_len: u64,
}

impl GgufFile {
    /// Reads and validates the header region of the file at `path`. `part` is recorded in each
    /// tensor (0 for a single file).
    pub fn read(path: &Path, part: usize) -> Result<GgufFile> {
        let file = std::fs::File::open(path).at(path)?;
        let len = file.metadata().at(path)?.len();
        let mut parsed =
            parse(BufReader::with_capacity(1 << 20, file), len, part).map_err(|e| e.at(path))?;
        parsed.path = path.to_path_buf();
        Ok(parsed)
    }
}

impl GgufFile {
    /// Reads the header region from a whole file already in memory (tests and fuzzing); `path`
    /// is only used in errors.
    pub fn from_bytes(path: &Path, data: &[u8]) -> Result<GgufFile> {
        let mut parsed = parse(data, data.len() as u64, 0).map_err(|e| e.at(path))?;
        parsed.path = path.to_path_buf();
        Ok(parsed)
    }
}

impl GgufFile {
    /// Parses the header region from `prefix`, the first bytes of a file of `len` bytes that is
    /// not on disk (read over HTTP by range requests). `Ok(None)` when `prefix` ends before the
    /// header does, so the caller can read more; a header that is broken within `prefix` is an
    /// error as for a file. `path` is used in errors; `part` as in [`GgufFile::read`].
    pub fn from_prefix(
        path: &Path,
        prefix: &[u8],
        len: u64,
        part: usize,
    ) -> Result<Option<GgufFile>> {
        let mut r = Prefix {
            data: prefix,
            short: false,
        };
        match parse(&mut r, len, part) {
            Ok(mut parsed) => {
                parsed.path = path.to_path_buf();
                Ok(Some(parsed))
            }
            Err(_) if r.short => Ok(None),
            Err(e) => Err(e.at(path)),
        }
    }
}

/// A reader over the first bytes of a longer file that records whether a read went past them.
struct Prefix<'a> {
    data: &'a [u8],
    short: bool,
}

impl Read for Prefix<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.data.is_empty() && !buf.is_empty() {
            self.short = true;
            return Err(std::io::Error::other("read past the bytes fetched so far"));
        }
        let n = buf.len().min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// Parses a GGUF header from `r`, a reader at byte 0 of a file of `len` bytes.
pub(super) fn parse<R: Read>(r: R, len: u64, part: usize) -> Result<GgufFile, FormatError> {
    let mut src = Source::new(r, len);
    let magic: [u8; 4] = src.array("magic")?;
    if magic != MAGIC {
        return Err(FormatError::BadMagic {
            found: magic.to_vec(),
        });
    }
    let version = src.u32("version")?;
    check_version(version)?;
    let n_tensors = src.u64("tensor count")?;
    let n_kv = src.u64("metadata key count")?;
    check_count(
        "tensors",
        n_tensors,
        MAX_TENSORS,
        src.left() / MIN_TENSOR_INFO_LEN,
    )?;
    check_count("metadata keys", n_kv, MAX_KEYS, src.left() / MIN_KV_LEN)?;

    let metadata = read_metadata(&mut src, n_kv)?;
    let alignment = alignment_of(&metadata)?;
    let mut tensors = read_tensor_infos(&mut src, n_tensors, part)?;

    let data_start =
        src.pos()
            .checked_next_multiple_of(alignment)
            .ok_or(FormatError::Truncated {
                what: "data section".into(),
                at: src.pos(),
                need: alignment,
                left: src.left(),
            })?;
    place_tensors(&mut tensors, data_start, alignment, len)?;
    Ok(GgufFile {
        path: PathBuf::new(),
        version,
        alignment,
        metadata,
        tensors: tensors.into_iter().map(|(t, _)| t).collect(),
        data_start,
        file_len: len,
    })
}

fn check_version(version: u32) -> Result<(), FormatError> {
    match version {
        2 | 3 => Ok(()),
        // A little-endian reader sees a big-endian 3 as 0x0300_0000.
        v if v & 0xffff == 0 && (1..=3).contains(&v.swap_bytes()) => {
            Err(FormatError::BigEndian(v.swap_bytes()))
        }
        v => Err(FormatError::UnsupportedVersion(v)),
    }
}

fn check_count(what: &'static str, count: u64, cap: u64, fit: u64) -> Result<(), FormatError> {
    let too_many = |bound| FormatError::TooMany { what, count, bound };
    if count > cap {
        return Err(too_many(Bound::Cap(cap)));
    }
    if count > fit {
        return Err(too_many(Bound::File(fit)));
    }
    Ok(())
}

fn read_metadata<R: Read>(src: &mut Source<R>, n_kv: u64) -> Result<Metadata, FormatError> {
    // `n_kv` was checked against the bytes left, so this reserves a few times the file at most.
    let mut metadata = Metadata::with_capacity(n_kv as usize);
    let mut seen = HashSet::with_capacity(n_kv as usize);
    for i in 0..n_kv {
        let key = src.entry_name(i, ("metadata key", "metadata key"), "key", MAX_NAME_LEN)?;
        let id = src.u32("value type")?;
        let ty = ValueType::from_id(id).ok_or_else(|| FormatError::UnknownValueType {
            what: src.describe("value"),
            id,
        })?;
        let value = Value::read(src, ty)?;
        if !seen.insert(key.clone()) {
            return Err(FormatError::DuplicateKey(key));
        }
        metadata.push_unique(key, value);
    }
    src.ctx.clear();
    Ok(metadata)
}

/// `general.alignment` if present (a power-of-two u32, as llama.cpp requires), else 32.
fn alignment_of(metadata: &Metadata) -> Result<u64, FormatError> {
    let bad = |problem: String| FormatError::BadKey {
        key: KEY_ALIGNMENT.into(),
        problem,
    };
    match metadata.get(KEY_ALIGNMENT) {
        None => Ok(DEFAULT_ALIGNMENT),
        Some(Value::U32(a)) if a.is_power_of_two() => Ok(u64::from(*a)),
        Some(Value::U32(a)) => Err(bad(format!("is {a}, which is not a power of two"))),
        Some(v) => Err(bad(format!("has type {}, not u32", v.type_name()))),
    }
}

fn read_tensor_infos<R: Read>(
    src: &mut Source<R>,
    n_tensors: u64,
    part: usize,
) -> Result<Vec<(TensorInfo, u64)>, FormatError> {
    // `n_tensors` was checked against the bytes left, so this reserves a few times the file.
    let mut tensors = Vec::with_capacity(n_tensors as usize);
    let mut seen = HashSet::with_capacity(n_tensors as usize);
    for i in 0..n_tensors {
        let name = src.entry_name(i, ("tensor info", "tensor"), "name", MAX_NAME_LEN)?;
        let n_dims = src.u32("dimension count")?;
        if n_dims as usize > MAX_DIMS {
            return Err(FormatError::TooManyDims { name, n_dims });
        }
        let dims = (0..n_dims)
            .map(|_| src.u64("dimension"))
            .collect::<Result<Vec<_>, _>>()?;
        let id = src.u32("type")?;
        let offset = src.u64("data offset")?;
        let Some(ggml_type) = GgmlType::from_id(id) else {
            return Err(FormatError::UnknownType { name, id });
        };
        let n_bytes = match ggml_type.tensor_bytes(&dims) {
            Ok(n) => n,
            Err(source) => return Err(FormatError::BadShape { name, dims, source }),
        };
        if !seen.insert(name.clone()) {
            return Err(FormatError::DuplicateTensor(name));
        }
        let info = TensorInfo {
            name,
            dims,
            ggml_type,
            n_bytes,
            part,
            file_offset: 0,
        };
        tensors.push((info, offset));
    }
    src.ctx.clear();
    Ok(tensors)
}

/// Turns data-section offsets into file offsets, checking alignment, bounds and overlap.
fn place_tensors(
    tensors: &mut [(TensorInfo, u64)],
    data_start: u64,
    alignment: u64,
    file_len: u64,
) -> Result<(), FormatError> {
    for (t, offset) in tensors.iter_mut() {
        if *offset % alignment != 0 {
            return Err(FormatError::Misaligned {
                name: t.name.clone(),
                offset: *offset,
                alignment,
            });
        }
        let start = data_start.saturating_add(*offset);
        let end = start.saturating_add(t.n_bytes);
        if end > file_len || end == u64::MAX {
            return Err(FormatError::OutOfBounds {
                name: t.name.clone(),
                start,
                end,
                file_len,
            });
        }
        t.file_offset = start;
    }
    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_by_key(|&i| tensors[i].0.file_offset);
    for pair in order.windows(2) {
        let (a, b) = (&tensors[pair[0]].0, &tensors[pair[1]].0);
        if a.file_offset + a.n_bytes > b.file_offset {
            return Err(FormatError::Overlap {
                first: a.name.clone(),
                second: b.name.clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::gguf::value::Array;
    use crate::checkpoint::gguf::write::GgufWriter;
    use proptest::prelude::*;

    /// A small valid file with every section: scalar, string and array metadata, and tensors.
    fn sample() -> Vec<u8> {
        let mut w = GgufWriter::new(Vec::new(), Path::new("s.gguf"), 32).unwrap();
        w.header(3, 4).unwrap();
        w.kv("general.architecture", &Value::string("llama"))
            .unwrap();
        w.kv("llama.block_count", &Value::U32(2)).unwrap();
        w.kv(
            "tokenizer.ggml.tokens",
            &Value::Array(Array::String(vec![b"a".to_vec(), b"bc".to_vec()])),
        )
        .unwrap();
        w.kv(
            "nested",
            &Value::Array(Array::Array(vec![Array::U8(vec![1, 2])])),
        )
        .unwrap();
        w.tensor_info("blk.0.w", &[32, 2], GgmlType::Q4_0).unwrap();
        w.tensor_info("blk.1.w", &[4], GgmlType::F32).unwrap();
        w.tensor_info("x", &[256], GgmlType::IQ2_XXS).unwrap();
        w.write_tensor(&[7; 36]).unwrap();
        w.write_tensor(&[8; 16]).unwrap();
        w.write_tensor(&[9; 66]).unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn sample_reads_back() {
        let b = sample();
        let f = parse(&b[..], b.len() as u64, 0).unwrap();
        assert_eq!(f.tensors.len(), 3);
        assert_eq!(f.metadata.len(), 4);
        let x = &f.tensors[2];
        assert_eq!(&b[x.file_offset() as usize..][..66], &[9; 66]);
    }

    #[test]
    fn a_prefix_is_short_until_the_header_ends() {
        let b = sample();
        let whole = parse(&b[..], b.len() as u64, 0).unwrap();
        let p = Path::new("s.gguf");
        let mut first_whole = None;
        for n in 0..=b.len() {
            match GgufFile::from_prefix(p, &b[..n], b.len() as u64, 1).unwrap() {
                None => assert!(first_whole.is_none(), "short again at {n}"),
                Some(f) => {
                    first_whole.get_or_insert(n);
                    assert_eq!(f.tensors.len(), whole.tensors.len());
                    assert_eq!(f.data_start, whole.data_start);
                    assert!(f.tensors.iter().all(|t| t.part() == 1));
                }
            }
        }
        // The header ends where the tensor infos do, before the padding and the data.
        let n = first_whole.unwrap() as u64;
        assert!(n <= whole.data_start && n + 32 > whole.data_start, "{n}");

        // A rule broken inside the prefix is an error, not a request for more.
        let mut bad = b.clone();
        bad[4..8].copy_from_slice(&9u32.to_le_bytes());
        let e = GgufFile::from_prefix(p, &bad[..16], bad.len() as u64, 0).unwrap_err();
        assert!(e.to_string().contains("GGUF version 9"), "{e}");
    }

    proptest! {
        /// A small fuzz target: any edit or truncation of a valid file gives `Ok` or an error,
        /// never a panic or an absurd allocation.
        #[test]
        fn edited_files_never_panic(
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut b = sample();
            for (i, v) in edits {
                let i = i.index(b.len());
                b[i] = v;
            }
            let cut = cut.index(b.len() + 1);
            let _ = parse(&b[..cut], cut as u64, 0);
        }

        #[test]
        fn random_headers_never_panic(
            n_tensors in 0u64..8,
            n_kv in 0u64..8,
            body in prop::collection::vec(any::<u8>(), 0..400),
        ) {
            let mut b = b"GGUF\x03\0\0\0".to_vec();
            b.extend_from_slice(&n_tensors.to_le_bytes());
            b.extend_from_slice(&n_kv.to_le_bytes());
            b.extend(body);
            let _ = parse(&b[..], b.len() as u64, 0);
        }
    }
}
