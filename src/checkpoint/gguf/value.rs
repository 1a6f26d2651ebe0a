//! GGUF metadata values: the thirteen value types, reading them from a bounded source and
//! writing them back byte for byte.
//!
//! Strings are kept as raw bytes: the format says UTF-8, but vocabularies in the wild do not
//! always comply, and a prune must copy them unchanged. Arrays are stored typed (`Vec<u32>`, not
//! `Vec<Value>`), so a long array costs about what it costs on disk.

use super::error::{Bound, FormatError};
use super::source::Source;
use super::{MAX_ARRAY_DEPTH, MAX_ARRAY_LEN, MAX_STRING_LEN};
use std::io::{self, Read, Write};

/// The type tag written before each metadata value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum ValueType {
    U8 = 0,
    I8 = 1,
    U16 = 2,
    I16 = 3,
    U32 = 4,
    I32 = 5,
    F32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    U64 = 10,
    I64 = 11,
    F64 = 12,
}

impl ValueType {
    pub fn from_id(id: u32) -> Option<Self> {
        use ValueType::*;
        Some(match id {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => String,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }

    pub fn id(self) -> u32 {
        self as u32
    }

    /// A short lowercase name: `u32`, `string`, `array`.
    pub fn name(self) -> &'static str {
        use ValueType::*;
        match self {
            U8 => "u8",
            I8 => "i8",
            U16 => "u16",
            I16 => "i16",
            U32 => "u32",
            I32 => "i32",
            F32 => "f32",
            Bool => "bool",
            String => "string",
            Array => "array",
            U64 => "u64",
            I64 => "i64",
            F64 => "f64",
        }
    }

    /// The fewest bytes one value of this type takes on disk (a string's length prefix, an
    /// array's type and length), used to bound array lengths by the bytes left in the file.
    fn min_encoded_len(self) -> u64 {
        use ValueType::*;
        match self {
            U8 | I8 | Bool => 1,
            U16 | I16 => 2,
            U32 | I32 | F32 => 4,
            U64 | I64 | F64 | String => 8,
            Array => 4 + 8,
        }
    }
}

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(Vec<u8>),
    Array(Array),
    U64(u64),
    I64(i64),
    F64(f64),
}

/// A metadata array; the variant is the element type.
#[derive(Debug, Clone, PartialEq)]
pub enum Array {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    F32(Vec<f32>),
    Bool(Vec<bool>),
    String(Vec<Vec<u8>>),
    Array(Vec<Array>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F64(Vec<f64>),
}

/// Applies `$body` to the vector inside any [`Array`] variant.
macro_rules! with_vec {
    ($array:expr, $v:ident => $body:expr) => {
        match $array {
            Array::U8($v) => $body,
            Array::I8($v) => $body,
            Array::U16($v) => $body,
            Array::I16($v) => $body,
            Array::U32($v) => $body,
            Array::I32($v) => $body,
            Array::F32($v) => $body,
            Array::Bool($v) => $body,
            Array::String($v) => $body,
            Array::Array($v) => $body,
            Array::U64($v) => $body,
            Array::I64($v) => $body,
            Array::F64($v) => $body,
        }
    };
}

/// Like [`with_vec`], but `$body` yields a new vector, rewrapped in the same variant.
macro_rules! map_vec {
    ($array:expr, $v:ident => $body:expr) => {
        match $array {
            Array::U8($v) => Array::U8($body),
            Array::I8($v) => Array::I8($body),
            Array::U16($v) => Array::U16($body),
            Array::I16($v) => Array::I16($body),
            Array::U32($v) => Array::U32($body),
            Array::I32($v) => Array::I32($body),
            Array::F32($v) => Array::F32($body),
            Array::Bool($v) => Array::Bool($body),
            Array::String($v) => Array::String($body),
            Array::Array($v) => Array::Array($body),
            Array::U64($v) => Array::U64($body),
            Array::I64($v) => Array::I64($body),
            Array::F64($v) => Array::F64($body),
        }
    };
}

impl Value {
    /// A string value from UTF-8 text.
    pub fn string(s: &str) -> Value {
        Value::String(s.as_bytes().to_vec())
    }

    pub fn value_type(&self) -> ValueType {
        match self {
            Value::U8(_) => ValueType::U8,
            Value::I8(_) => ValueType::I8,
            Value::U16(_) => ValueType::U16,
            Value::I16(_) => ValueType::I16,
            Value::U32(_) => ValueType::U32,
            Value::I32(_) => ValueType::I32,
            Value::F32(_) => ValueType::F32,
            Value::Bool(_) => ValueType::Bool,
            Value::String(_) => ValueType::String,
            Value::Array(_) => ValueType::Array,
            Value::U64(_) => ValueType::U64,
            Value::I64(_) => ValueType::I64,
            Value::F64(_) => ValueType::F64,
        }
    }

    /// `u32`, `string`, `array[string]`, `array[array]`.
    pub fn type_name(&self) -> String {
        match self {
            Value::Array(a) => format!("array[{}]", a.elem_type().name()),
            v => v.value_type().name().to_string(),
        }
    }

    /// The value as text, if it is a UTF-8 string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    /// The value as an unsigned integer, if it is an integer of any width and not negative.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// An integer of the same type as `self` holding `n`, or `None` if `self` is not an integer
    /// or `n` does not fit its type. Used to rewrite counts without changing their type.
    pub fn with_same_int_type(&self, n: u64) -> Option<Value> {
        Some(match self {
            Value::U8(_) => Value::U8(n.try_into().ok()?),
            Value::U16(_) => Value::U16(n.try_into().ok()?),
            Value::U32(_) => Value::U32(n.try_into().ok()?),
            Value::U64(_) => Value::U64(n),
            Value::I8(_) => Value::I8(n.try_into().ok()?),
            Value::I16(_) => Value::I16(n.try_into().ok()?),
            Value::I32(_) => Value::I32(n.try_into().ok()?),
            Value::I64(_) => Value::I64(n.try_into().ok()?),
            _ => return None,
        })
    }

    pub fn as_array(&self) -> Option<&Array> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// Bytes this value takes on disk, without its type tag.
    pub fn encoded_len(&self) -> u64 {
        match self {
            Value::String(s) => 8 + s.len() as u64,
            Value::Array(a) => a.encoded_len(),
            v => v.value_type().min_encoded_len(),
        }
    }

    /// Reads a value of type `ty`.
    pub(super) fn read<R: Read>(src: &mut Source<R>, ty: ValueType) -> Result<Value, FormatError> {
        Ok(match ty {
            ValueType::U8 => Value::U8(src.u8("value")?),
            ValueType::I8 => Value::I8(src.i8("value")?),
            ValueType::U16 => Value::U16(src.u16("value")?),
            ValueType::I16 => Value::I16(src.i16("value")?),
            ValueType::U32 => Value::U32(src.u32("value")?),
            ValueType::I32 => Value::I32(src.i32("value")?),
            ValueType::F32 => Value::F32(src.f32("value")?),
            ValueType::Bool => Value::Bool(read_bool(src)?),
            ValueType::String => Value::String(src.string("string value", MAX_STRING_LEN)?),
            ValueType::Array => Value::Array(Array::read(src, 1)?),
            ValueType::U64 => Value::U64(src.u64("value")?),
            ValueType::I64 => Value::I64(src.i64("value")?),
            ValueType::F64 => Value::F64(src.f64("value")?),
        })
    }

    /// Writes the value without its type tag.
    pub fn write<W: Write>(&self, w: &mut W) -> io::Result<()> {
        match self {
            Value::U8(v) => w.write_all(&v.to_le_bytes()),
            Value::I8(v) => w.write_all(&v.to_le_bytes()),
            Value::U16(v) => w.write_all(&v.to_le_bytes()),
            Value::I16(v) => w.write_all(&v.to_le_bytes()),
            Value::U32(v) => w.write_all(&v.to_le_bytes()),
            Value::I32(v) => w.write_all(&v.to_le_bytes()),
            Value::F32(v) => w.write_all(&v.to_le_bytes()),
            Value::Bool(v) => w.write_all(&[u8::from(*v)]),
            Value::String(s) => write_string(w, s),
            Value::Array(a) => a.write(w),
            Value::U64(v) => w.write_all(&v.to_le_bytes()),
            Value::I64(v) => w.write_all(&v.to_le_bytes()),
            Value::F64(v) => w.write_all(&v.to_le_bytes()),
        }
    }
}

fn read_bool<R: Read>(src: &mut Source<R>) -> Result<bool, FormatError> {
    match src.u8("bool")? {
        0 => Ok(false),
        1 => Ok(true),
        byte => Err(FormatError::BadBool {
            what: src.describe("value"),
            byte,
        }),
    }
}

fn read_vec<R: Read, T>(
    src: &mut Source<R>,
    n: usize,
    mut one: impl FnMut(&mut Source<R>) -> Result<T, FormatError>,
) -> Result<Vec<T>, FormatError> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(one(src)?);
    }
    Ok(out)
}

/// Writes a length-prefixed string.
pub fn write_string<W: Write>(w: &mut W, s: &[u8]) -> io::Result<()> {
    w.write_all(&(s.len() as u64).to_le_bytes())?;
    w.write_all(s)
}

impl Array {
    pub fn elem_type(&self) -> ValueType {
        match self {
            Array::U8(_) => ValueType::U8,
            Array::I8(_) => ValueType::I8,
            Array::U16(_) => ValueType::U16,
            Array::I16(_) => ValueType::I16,
            Array::U32(_) => ValueType::U32,
            Array::I32(_) => ValueType::I32,
            Array::F32(_) => ValueType::F32,
            Array::Bool(_) => ValueType::Bool,
            Array::String(_) => ValueType::String,
            Array::Array(_) => ValueType::Array,
            Array::U64(_) => ValueType::U64,
            Array::I64(_) => ValueType::I64,
            Array::F64(_) => ValueType::F64,
        }
    }

    pub fn len(&self) -> usize {
        with_vec!(self, v => v.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements at `indices`, in that order, or `None` if an index is out of range.
    pub fn select(&self, indices: &[usize]) -> Option<Array> {
        Some(
            map_vec!(self, v => indices.iter().map(|&i| v.get(i).cloned()).collect::<Option<_>>()?),
        )
    }

    /// The first `n` elements (or all, if fewer).
    pub fn head(&self, n: usize) -> Array {
        map_vec!(self, v => v.iter().take(n).cloned().collect())
    }

    /// Element `i` as a [`Value`].
    pub fn get(&self, i: usize) -> Option<Value> {
        Some(match self {
            Array::U8(v) => Value::U8(*v.get(i)?),
            Array::I8(v) => Value::I8(*v.get(i)?),
            Array::U16(v) => Value::U16(*v.get(i)?),
            Array::I16(v) => Value::I16(*v.get(i)?),
            Array::U32(v) => Value::U32(*v.get(i)?),
            Array::I32(v) => Value::I32(*v.get(i)?),
            Array::F32(v) => Value::F32(*v.get(i)?),
            Array::Bool(v) => Value::Bool(*v.get(i)?),
            Array::String(v) => Value::String(v.get(i)?.clone()),
            Array::Array(v) => Value::Array(v.get(i)?.clone()),
            Array::U64(v) => Value::U64(*v.get(i)?),
            Array::I64(v) => Value::I64(*v.get(i)?),
            Array::F64(v) => Value::F64(*v.get(i)?),
        })
    }

    /// Bytes on disk: element type, length, elements.
    pub fn encoded_len(&self) -> u64 {
        let body: u64 = match self {
            Array::String(v) => v.iter().map(|s| 8 + s.len() as u64).sum(),
            Array::Array(v) => v.iter().map(Array::encoded_len).sum(),
            a => a.len() as u64 * a.elem_type().min_encoded_len(),
        };
        4 + 8 + body
    }

    /// Reads an array (element type, length, elements) at nesting depth `depth` (1 = a top-level
    /// value). Lengths are checked against the bytes left before anything is allocated.
    pub(super) fn read<R: Read>(src: &mut Source<R>, depth: usize) -> Result<Array, FormatError> {
        if depth > MAX_ARRAY_DEPTH {
            return Err(FormatError::ArrayTooDeep {
                what: src.describe("array"),
                limit: MAX_ARRAY_DEPTH,
            });
        }
        let id = src.u32("array element type")?;
        let elem = ValueType::from_id(id).ok_or_else(|| FormatError::UnknownValueType {
            what: src.describe("array element type"),
            id,
        })?;
        let len = src.u64("array length")?;
        let too_long = |bound| FormatError::ArrayTooLong {
            what: src.describe("array"),
            len,
            bound,
        };
        if len > MAX_ARRAY_LEN {
            return Err(too_long(Bound::Cap(MAX_ARRAY_LEN)));
        }
        let fit = src.left() / elem.min_encoded_len();
        if len > fit {
            return Err(too_long(Bound::File(fit)));
        }
        let n = len as usize;
        Ok(match elem {
            ValueType::U8 => Array::U8(read_vec(src, n, |s| s.u8("array element"))?),
            ValueType::I8 => Array::I8(read_vec(src, n, |s| s.i8("array element"))?),
            ValueType::U16 => Array::U16(read_vec(src, n, |s| s.u16("array element"))?),
            ValueType::I16 => Array::I16(read_vec(src, n, |s| s.i16("array element"))?),
            ValueType::U32 => Array::U32(read_vec(src, n, |s| s.u32("array element"))?),
            ValueType::I32 => Array::I32(read_vec(src, n, |s| s.i32("array element"))?),
            ValueType::F32 => Array::F32(read_vec(src, n, |s| s.f32("array element"))?),
            ValueType::Bool => Array::Bool(read_vec(src, n, read_bool)?),
            ValueType::String => Array::String(read_vec(src, n, |s| {
                s.string("array element", MAX_STRING_LEN)
            })?),
            ValueType::Array => Array::Array(read_vec(src, n, |s| Array::read(s, depth + 1))?),
            ValueType::U64 => Array::U64(read_vec(src, n, |s| s.u64("array element"))?),
            ValueType::I64 => Array::I64(read_vec(src, n, |s| s.i64("array element"))?),
            ValueType::F64 => Array::F64(read_vec(src, n, |s| s.f64("array element"))?),
        })
    }

    /// Writes element type, length and elements.
    pub fn write<W: Write>(&self, w: &mut W) -> io::Result<()> {
        w.write_all(&self.elem_type().id().to_le_bytes())?;
        w.write_all(&(self.len() as u64).to_le_bytes())?;
        match self {
            Array::U8(v) => w.write_all(v),
            Array::I8(v) => v.iter().try_for_each(|x| w.write_all(&x.to_le_bytes())),
            Array::U16(v) => v.iter().try_for_each(|x| w.write_all(&x.to_le_bytes())),
            Array::I16(v) => v.iter().try_for_each(|x| w.write_all(&x.to_le_bytes())),
            Array::U32(v) => v.iter().try_for_each(|x| w.write_all(&x.to_le_bytes())),
            Array::I32(v) => v.iter().try_for_each(|x| w.write_all(&x.to_le_bytes())),
            Array::F32(v) => v.iter().try_for_each(|x| w.write_all(&x.to_le_bytes())),
            Array::Bool(v) => v.iter().try_for_each(|&x| w.write_all(&[u8::from(x)])),
            Array::String(v) => v.iter().try_for_each(|s| write_string(w, s)),
            Array::Array(v) => v.iter().try_for_each(|a| a.write(w)),
            Array::U64(v) => v.iter().try_for_each(|x| w.write_all(&x.to_le_bytes())),
            Array::I64(v) => v.iter().try_for_each(|x| w.write_all(&x.to_le_bytes())),
            Array::F64(v) => v.iter().try_for_each(|x| w.write_all(&x.to_le_bytes())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(v: &Value) -> Value {
        let mut buf = Vec::new();
        v.write(&mut buf).unwrap();
        assert_eq!(buf.len() as u64, v.encoded_len(), "encoded_len of {v:?}");
        let mut src = Source::new(&buf[..], buf.len() as u64);
        let back = Value::read(&mut src, v.value_type()).unwrap();
        assert_eq!(src.left(), 0);
        back
    }

    #[test]
    fn every_type_round_trips() {
        let values = [
            Value::U8(7),
            Value::I8(-7),
            Value::U16(65535),
            Value::I16(-300),
            Value::U32(30),
            Value::I32(-1),
            Value::F32(1e-5),
            Value::Bool(true),
            Value::string("llama"),
            Value::String(vec![0xff, 0x00]),
            Value::U64(u64::MAX),
            Value::I64(i64::MIN),
            Value::F64(0.1),
            Value::Array(Array::String(vec![b"a".to_vec(), b"".to_vec()])),
            Value::Array(Array::Bool(vec![true, false])),
            Value::Array(Array::F64(vec![])),
            Value::Array(Array::Array(vec![
                Array::U16(vec![1, 2]),
                Array::String(vec![b"x".to_vec()]),
            ])),
        ];
        for v in &values {
            assert_eq!(&round_trip(v), v);
        }
    }

    #[test]
    fn array_length_beyond_file_is_refused_before_allocating() {
        let mut buf = Vec::new();
        buf.extend_from_slice(&ValueType::U64.id().to_le_bytes());
        buf.extend_from_slice(&1000u64.to_le_bytes());
        buf.extend_from_slice(&[0; 16]);
        let mut src = Source::new(&buf[..], buf.len() as u64);
        let e = Array::read(&mut src, 1).unwrap_err();
        assert!(
            matches!(
                e,
                FormatError::ArrayTooLong {
                    bound: Bound::File(2),
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn array_length_over_cap_is_refused() {
        let mut buf = Vec::new();
        buf.extend_from_slice(&ValueType::U8.id().to_le_bytes());
        buf.extend_from_slice(&(MAX_ARRAY_LEN + 1).to_le_bytes());
        let mut src = Source::new(&buf[..], u64::MAX);
        let e = Array::read(&mut src, 1).unwrap_err();
        assert!(
            matches!(
                e,
                FormatError::ArrayTooLong {
                    bound: Bound::Cap(MAX_ARRAY_LEN),
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut buf = Vec::new();
        for _ in 0..=MAX_ARRAY_DEPTH {
            buf.extend_from_slice(&ValueType::Array.id().to_le_bytes());
            buf.extend_from_slice(&1u64.to_le_bytes());
        }
        buf.extend_from_slice(&[0; 64]);
        let mut src = Source::new(&buf[..], buf.len() as u64);
        let e = Value::read(&mut src, ValueType::Array).unwrap_err();
        assert!(matches!(e, FormatError::ArrayTooDeep { .. }), "{e}");
    }

    #[test]
    fn bad_bool_and_unknown_element_type_are_refused() {
        let mut src = Source::new(&[2u8][..], 1);
        assert!(matches!(
            Value::read(&mut src, ValueType::Bool),
            Err(FormatError::BadBool { byte: 2, .. })
        ));
        let buf = [13u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let mut src = Source::new(&buf[..], buf.len() as u64);
        assert!(matches!(
            Array::read(&mut src, 1),
            Err(FormatError::UnknownValueType { id: 13, .. })
        ));
    }

    #[test]
    fn select_and_rewrite_keep_types() {
        let a = Array::I32(vec![10, 11, 12, 13]);
        assert_eq!(a.select(&[0, 2, 3]), Some(Array::I32(vec![10, 12, 13])));
        assert_eq!(a.select(&[4]), None);
        assert_eq!(Value::U16(30).with_same_int_type(22), Some(Value::U16(22)));
        assert_eq!(Value::U8(30).with_same_int_type(300), None);
        assert_eq!(Value::I32(-1).as_u64(), None);
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    fn scalar() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<u8>().prop_map(Value::U8),
            any::<i16>().prop_map(Value::I16),
            any::<u32>().prop_map(Value::U32),
            any::<i64>().prop_map(Value::I64),
            (-1e30f32..1e30).prop_map(Value::F32),
            (-1e300f64..1e300).prop_map(Value::F64),
            any::<bool>().prop_map(Value::Bool),
            prop::collection::vec(any::<u8>(), 0..20).prop_map(Value::String),
        ]
    }

    fn array() -> impl Strategy<Value = Array> {
        let leaf = prop_oneof![
            prop::collection::vec(any::<u32>(), 0..10).prop_map(Array::U32),
            prop::collection::vec(any::<i8>(), 0..10).prop_map(Array::I8),
            prop::collection::vec(any::<bool>(), 0..10).prop_map(Array::Bool),
            prop::collection::vec(prop::collection::vec(any::<u8>(), 0..8), 0..6)
                .prop_map(Array::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop::collection::vec(inner, 0..4).prop_map(Array::Array)
        })
    }

    proptest! {
        #[test]
        fn values_round_trip(v in prop_oneof![scalar(), array().prop_map(Value::Array)]) {
            let mut buf = Vec::new();
            v.write(&mut buf).unwrap();
            prop_assert_eq!(buf.len() as u64, v.encoded_len());
            let mut src = Source::new(&buf[..], buf.len() as u64);
            let back = Value::read(&mut src, v.value_type()).unwrap();
            prop_assert_eq!(back, v);
            prop_assert_eq!(src.left(), 0);
        }
    }
}
