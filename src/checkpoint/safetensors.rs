//! The safetensors format: an 8-byte little-endian header length, a JSON header, then tensor
//! data. The reader reads only the header, never the data, and checks it in a fixed order before
//! trusting any of it:
//!
//! 1. the file holds at least 8 bytes, and the header length is at most [`MAX_HEADER_BYTES`] and
//!    fits in the file;
//! 2. the header is UTF-8 JSON, an object of tensors plus an optional `__metadata__` of strings;
//! 3. each tensor has a known dtype, a shape, and `data_offsets` `[begin, end]` with `begin ≤ end`,
//!    whose length equals the element count times the dtype size (checked arithmetic);
//! 4. sorted by offset, the tensors tile the data region exactly: no gap, no overlap, and the last
//!    one ends at the end of the file.
//!
//! The writer streams: it writes the header, then copies each tensor's bytes from its source.

use crate::error::{Error, IoContext, Result};
use serde_json::{Map, Value};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// The largest header accepted (the reference implementation's cap).
pub const MAX_HEADER_BYTES: u64 = 100_000_000;
/// The most dimensions a tensor's shape may have.
pub const MAX_SHAPE_DIMS: usize = 16;
/// The most entries `__metadata__` may hold (real files hold one or two).
pub const MAX_METADATA_ENTRIES: usize = 4096;

/// Element types of the safetensors format, named as in its headers.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Dtype {
    BOOL,
    U8,
    I8,
    F8_E5M2,
    F8_E4M3,
    I16,
    U16,
    F16,
    BF16,
    I32,
    U32,
    F32,
    F64,
    I64,
    U64,
}

impl Dtype {
    pub fn parse(s: &str) -> Option<Self> {
        use Dtype::*;
        Some(match s {
            "BOOL" => BOOL,
            "U8" => U8,
            "I8" => I8,
            "F8_E5M2" => F8_E5M2,
            "F8_E4M3" => F8_E4M3,
            "I16" => I16,
            "U16" => U16,
            "F16" => F16,
            "BF16" => BF16,
            "I32" => I32,
            "U32" => U32,
            "F32" => F32,
            "F64" => F64,
            "I64" => I64,
            "U64" => U64,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        use Dtype::*;
        match self {
            BOOL => "BOOL",
            U8 => "U8",
            I8 => "I8",
            F8_E5M2 => "F8_E5M2",
            F8_E4M3 => "F8_E4M3",
            I16 => "I16",
            U16 => "U16",
            F16 => "F16",
            BF16 => "BF16",
            I32 => "I32",
            U32 => "U32",
            F32 => "F32",
            F64 => "F64",
            I64 => "I64",
            U64 => "U64",
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        use Dtype::*;
        match self {
            BOOL | U8 | I8 | F8_E5M2 | F8_E4M3 => 1,
            I16 | U16 | F16 | BF16 => 2,
            I32 | U32 | F32 => 4,
            F64 | I64 | U64 => 8,
        }
    }

    /// Whether `--dtype` conversions apply to this type.
    pub fn is_convertible_float(self) -> bool {
        matches!(self, Dtype::F16 | Dtype::BF16 | Dtype::F32)
    }
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One tensor as declared in a header, with its data located in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<u64>,
    /// Absolute byte offset of the data in the file.
    pub file_offset: u64,
    /// Byte length of the data.
    pub len: u64,
}

impl TensorInfo {
    pub fn numel(&self) -> u64 {
        self.shape.iter().product()
    }
}

/// A validated safetensors header.
#[derive(Debug, Clone)]
pub struct SafetensorsFile {
    pub path: PathBuf,
    pub file_len: u64,
    /// Tensors in the order of their data in the file.
    pub tensors: Vec<TensorInfo>,
    /// The `__metadata__` map, in its original order.
    pub metadata: Map<String, Value>,
    /// Bytes before the data region (8 + header length).
    pub data_start: u64,
}

impl SafetensorsFile {
    /// Reads and validates the header of `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let mut f = File::open(path).at(path)?;
        let file_len = f.metadata().at(path)?.len();
        let mut len_bytes = [0u8; 8];
        if file_len < 8 {
            return Err(Error::corrupt(
                path,
                format!("truncated safetensors file: {file_len} bytes, shorter than the 8-byte header length"),
            ));
        }
        f.read_exact(&mut len_bytes).at(path)?;
        let header_len = u64::from_le_bytes(len_bytes);
        if header_len > MAX_HEADER_BYTES {
            return Err(Error::corrupt(
                path,
                format!("safetensors header length {header_len} exceeds the {MAX_HEADER_BYTES}-byte limit"),
            ));
        }
        let data_start = 8 + header_len;
        if data_start > file_len {
            return Err(Error::corrupt(
                path,
                format!("truncated safetensors file: header claims {header_len} bytes but the file has {file_len}"),
            ));
        }
        let mut header = vec![0u8; header_len as usize];
        f.read_exact(&mut header).at(path)?;
        Self::parse_header(path, &header, data_start, file_len)
    }

    /// Validates a header already read into memory.
    pub fn parse_header(
        path: &Path,
        header: &[u8],
        data_start: u64,
        file_len: u64,
    ) -> Result<Self> {
        let corrupt = |msg: String| Error::corrupt(path, msg);
        let text = std::str::from_utf8(header).map_err(|e| {
            corrupt(format!(
                "safetensors header is not UTF-8 (byte {})",
                e.valid_up_to()
            ))
        })?;
        let text = text.trim_end_matches([' ', '\0']);
        if !text.trim_start().starts_with('{') {
            return Err(corrupt("safetensors header is not a JSON object".into()));
        }
        let Entries(entries) = serde_json::from_str(text).map_err(|e| {
            use serde_json::error::Category;
            match e.classify() {
                Category::Data => corrupt(format!("safetensors header: {e}")),
                _ => corrupt(format!("safetensors header is not valid JSON: {e}")),
            }
        })?;
        let mut seen = std::collections::HashSet::with_capacity(entries.len());
        if let Some((dup, _)) = entries.iter().find(|(k, _)| !seen.insert(k.as_str())) {
            return Err(corrupt(format!("duplicate tensor name `{dup}`")));
        }
        drop(seen);
        let mut metadata = Map::new();
        let mut tensors = Vec::with_capacity(entries.len());
        for (name, entry) in entries {
            match entry {
                Entry::Metadata(m) => {
                    metadata = m.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
                }
                Entry::Tensor(raw) => {
                    tensors.push(Self::parse_tensor(path, &name, raw, data_start)?);
                }
            }
        }
        tensors.sort_by_key(|t| t.file_offset);
        let mut expected = data_start;
        for t in &tensors {
            if t.file_offset < expected {
                return Err(corrupt(format!(
                    "tensor `{}` overlaps the tensor before it",
                    t.name
                )));
            }
            if t.file_offset > expected {
                return Err(corrupt(format!(
                    "gap of {} bytes before tensor `{}`; data offsets must be contiguous",
                    t.file_offset - expected,
                    t.name
                )));
            }
            expected = t.file_offset + t.len;
        }
        if expected > file_len {
            let last = tensors.last().map(|t| t.name.as_str()).unwrap_or("");
            return Err(corrupt(format!(
                "truncated: tensor `{last}` ends at byte {expected} but the file has {file_len}"
            )));
        }
        if expected < file_len {
            return Err(corrupt(format!(
                "{} trailing bytes after the last tensor",
                file_len - expected
            )));
        }
        Ok(SafetensorsFile {
            path: path.to_path_buf(),
            file_len,
            tensors,
            metadata,
            data_start,
        })
    }

    fn parse_tensor(
        path: &Path,
        name: &str,
        raw: RawTensor,
        data_start: u64,
    ) -> Result<TensorInfo> {
        let corrupt = |msg: String| Error::corrupt(path, format!("tensor `{name}`: {msg}"));
        let dtype_str = raw.dtype.ok_or_else(|| corrupt("missing `dtype`".into()))?;
        let dtype = Dtype::parse(&dtype_str).ok_or_else(|| {
            Error::Unsupported(format!(
                "`{}`: tensor `{name}` has unsupported dtype `{dtype_str}`",
                path.display()
            ))
        })?;
        let shape: Vec<u64> = raw
            .shape
            .ok_or_else(|| corrupt("missing `shape`".into()))?
            .0
            .into_iter()
            .map(|d| d.0)
            .collect();
        let offsets = raw
            .data_offsets
            .filter(|a| a.len() == 2)
            .ok_or_else(|| corrupt("`data_offsets` must be [begin, end]".into()))?;
        let (begin, end) = (offsets[0].0, offsets[1].0);
        if end < begin {
            return Err(corrupt(format!(
                "`data_offsets` [{begin}, {end}] end before they begin"
            )));
        }
        let numel = shape
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| corrupt("shape overflows".into()))?;
        let nbytes = numel
            .checked_mul(dtype.size() as u64)
            .ok_or_else(|| corrupt("byte size overflows".into()))?;
        if nbytes != end - begin {
            return Err(corrupt(format!(
                "shape {shape:?} of {dtype} needs {nbytes} bytes but `data_offsets` span {}",
                end - begin
            )));
        }
        let file_offset = data_start
            .checked_add(begin)
            .ok_or_else(|| corrupt("offset overflows".into()))?;
        Ok(TensorInfo {
            name: name.to_string(),
            dtype,
            shape,
            file_offset,
            len: nbytes,
        })
    }

    /// Finds a tensor by name.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }
}

/// A header's entries in file order, duplicates kept (so they can be refused). Entries are read
/// straight into compact types, never into `serde_json::Value`, so the memory a header takes is a
/// small multiple of its bytes (see [`crate::checkpoint::limits`]).
struct Entries(Vec<(String, Entry)>);

enum Entry {
    Tensor(RawTensor),
    /// `__metadata__`: string keys to string values.
    Metadata(Vec<(String, String)>),
}

/// One tensor entry as written; `parse_tensor` checks it. Unknown fields are skipped unread.
#[derive(serde::Deserialize)]
struct RawTensor {
    dtype: Option<String>,
    shape: Option<Dims>,
    data_offsets: Option<Dims>,
}

/// A short array of [`Dim`]s: at most [`MAX_SHAPE_DIMS`], refused as soon as it holds more.
struct Dims(Vec<Dim>);

impl std::ops::Deref for Dims {
    type Target = Vec<Dim>;
    fn deref(&self) -> &Vec<Dim> {
        &self.0
    }
}

impl<'de> serde::Deserialize<'de> for Dims {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Dims;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                write!(
                    f,
                    "an array of at most {MAX_SHAPE_DIMS} non-negative integers"
                )
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut s: A,
            ) -> std::result::Result<Dims, A::Error> {
                let mut out = Vec::new();
                while let Some(d) = s.next_element::<Dim>()? {
                    if out.len() == MAX_SHAPE_DIMS {
                        return Err(serde::de::Error::custom(format!(
                            "more than {MAX_SHAPE_DIMS} entries in a shape or offsets"
                        )));
                    }
                    out.push(d);
                }
                Ok(Dims(out))
            }
        }
        d.deserialize_seq(V)
    }
}

/// A shape entry or data offset: a non-negative integer.
struct Dim(u64);

impl<'de> serde::Deserialize<'de> for Dim {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Dim;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a non-negative integer")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<Dim, E> {
                Ok(Dim(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<Dim, E> {
                u64::try_from(v)
                    .map(Dim)
                    .map_err(|_| E::custom(format!("{v} is not a non-negative integer")))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> serde::Deserialize<'de> for Entries {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Entries;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> std::result::Result<Entries, A::Error> {
                let mut out = Vec::new();
                while let Some(key) = m.next_key::<String>()? {
                    let entry = if key == "__metadata__" {
                        Entry::Metadata(m.next_value::<StringMap>()?.0)
                    } else {
                        Entry::Tensor(m.next_value()?)
                    };
                    out.push((key, entry));
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// `__metadata__`: an object whose values are all strings.
struct StringMap(Vec<(String, String)>);

impl<'de> serde::Deserialize<'de> for StringMap {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = StringMap;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("`__metadata__` as an object of strings")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> std::result::Result<StringMap, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = m.next_entry::<String, String>()? {
                    if out.len() == MAX_METADATA_ENTRIES {
                        return Err(serde::de::Error::custom(format!(
                            "more than {MAX_METADATA_ENTRIES} `__metadata__` entries"
                        )));
                    }
                    out.push(entry);
                }
                Ok(StringMap(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// A tensor to be written: its header entry. Data follow in the same order.
#[derive(Debug, Clone)]
pub struct OutTensor {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<u64>,
    pub len: u64,
}

/// Serialises a header for `tensors` (data in the order given), padded with spaces so the data
/// start 8-byte aligned. Returns the full prefix: length, then JSON.
pub fn encode_header(tensors: &[OutTensor], metadata: &Map<String, Value>) -> Vec<u8> {
    let mut obj = Map::new();
    if !metadata.is_empty() {
        obj.insert("__metadata__".into(), Value::Object(metadata.clone()));
    }
    let mut offset = 0u64;
    for t in tensors {
        let mut e = Map::new();
        e.insert("dtype".into(), Value::from(t.dtype.name()));
        e.insert("shape".into(), Value::from(t.shape.clone()));
        e.insert(
            "data_offsets".into(),
            Value::from(vec![offset, offset + t.len]),
        );
        offset += t.len;
        obj.insert(t.name.clone(), Value::Object(e));
    }
    let mut json = serde_json::to_vec(&Value::Object(obj)).unwrap_or_default();
    while !(8 + json.len()).is_multiple_of(8) {
        json.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + json.len());
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    out
}

/// Reads `len` bytes at `offset` of an open file into `buf` (cleared first).
pub fn read_range(
    f: &mut File,
    path: &Path,
    offset: u64,
    len: u64,
    buf: &mut Vec<u8>,
) -> Result<()> {
    buf.clear();
    f.seek(SeekFrom::Start(offset)).at(path)?;
    f.by_ref().take(len).read_to_end(buf).at(path)?;
    if buf.len() as u64 != len {
        return Err(Error::corrupt(
            path,
            "file changed or was truncated while reading",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, bytes: &[u8]) -> PathBuf {
        let p = dir.join("m.safetensors");
        std::fs::write(&p, bytes).unwrap();
        p
    }

    fn file_with(header: &str, data_len: usize) -> Vec<u8> {
        let mut v = (header.len() as u64).to_le_bytes().to_vec();
        v.extend_from_slice(header.as_bytes());
        v.extend(std::iter::repeat_n(0u8, data_len));
        v
    }

    /// A header of `(name, dtype, shape, data_offsets)` entries, shape and offsets as JSON.
    fn header(entries: &[(&str, &str, &str, &str)]) -> String {
        let fields: Vec<String> = entries
            .iter()
            .map(|(name, dtype, shape, offsets)| {
                format!(
                    r#""{name}":{{"dtype":"{dtype}","shape":{shape},"data_offsets":{offsets}}}"#
                )
            })
            .collect();
        format!("{{{}}}", fields.join(","))
    }

    #[test]
    fn round_trips_a_header() {
        let dir = tempfile::tempdir().unwrap();
        let ts = vec![
            OutTensor {
                name: "a".into(),
                dtype: Dtype::F32,
                shape: vec![2, 3],
                len: 24,
            },
            OutTensor {
                name: "b".into(),
                dtype: Dtype::BF16,
                shape: vec![5],
                len: 10,
            },
        ];
        let mut bytes = encode_header(&ts, &Map::new());
        assert_eq!(bytes.len() % 8, 0);
        bytes.extend(std::iter::repeat_n(1u8, 34));
        let f = SafetensorsFile::open(&write(dir.path(), &bytes)).unwrap();
        assert_eq!(f.tensors.len(), 2);
        assert_eq!(f.tensors[1].name, "b");
        assert_eq!(f.tensors[1].file_offset, f.data_start + 24);
    }

    #[test]
    fn each_broken_rule_has_its_error() {
        let dir = tempfile::tempdir().unwrap();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![1, 2, 3], "shorter than the 8-byte"),
            (u64::MAX.to_le_bytes().to_vec(), "exceeds"),
            (file_with("{", 0)[..5].to_vec(), "truncated"),
            (file_with("{\"a\":{", 0), "not valid JSON"),
            (file_with("{\"a\":1}", 0), "expected struct"),
            (file_with("[1]", 0), "not a JSON object"),
        ];
        // `(name, dtype, shape, data_offsets)` per tensor, the data length, the error.
        type Spec<'a> = (&'a str, &'a str, &'a str, &'a str);
        let broken: [(&[Spec], usize, &str); 10] = [
            (&[("a", "F32", "[2]", "[0,8]")], 4, "truncated"),
            (&[("a", "F32", "[2]", "[0,4]")], 4, "needs 8 bytes"),
            (
                &[("a", "F32", "[1]", "[0,4]"), ("b", "F32", "[1]", "[2,6]")],
                6,
                "overlaps",
            ),
            (&[("a", "F32", "[1]", "[4,8]")], 8, "gap of 4 bytes"),
            (&[("a", "F32", "[1]", "[0,4]")], 9, "trailing bytes"),
            (&[("a", "Q4", "[1]", "[0,4]")], 4, "unsupported dtype `Q4`"),
            (&[("a", "F32", "[-1]", "[0,4]")], 4, "not a non-negative"),
            (
                &[("a", "F32", "[4294967296,4294967296,4294967296]", "[0,4]")],
                4,
                "overflows",
            ),
            (&[("a", "F32", "[1]", "[8,4]")], 4, "end before"),
            (
                &[("a", "F32", "[1]", "[0,4]"), ("a", "F32", "[1]", "[4,8]")],
                8,
                "duplicate tensor name `a`",
            ),
        ];
        let cases = cases.into_iter().chain(
            broken
                .into_iter()
                .map(|(entries, len, want)| (file_with(&header(entries), len), want)),
        );
        for (bytes, want) in cases {
            let e = SafetensorsFile::open(&write(dir.path(), &bytes))
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "expected `{want}` in `{e}`");
            assert!(e.contains("m.safetensors"), "error must name the file: {e}");
        }
    }
}
