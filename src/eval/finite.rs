//! The one check every measured result passes before it is printed or written (issue 25): a
//! perplexity, divergence, accuracy, score, heal fit or sweep cell that is NaN or infinite is an
//! error, not a number to report. Degenerate inputs (a tensor whose bytes are not its declared
//! type, a config with a zero RoPE factor) end up here, and `perplexity NaN` with exit 0 hides
//! them.
//!
//! Results are checked through their `Serialize` form, so every float a user would see is
//! covered, named by its path in the JSON (`kl.mean`, `cells[3].perplexity`), and a field added
//! later is checked without anyone remembering to. Fields marked `#[serde(skip)]` are not shown
//! and not checked.

use crate::error::{Error, Result};
use serde::ser::{self, Serialize};
use std::fmt;
use std::path::Path;

/// Refuses `value` if any float in it is not finite: one error naming `what` was measured, the
/// field, and the `file` it was measured on.
pub fn ensure_finite(value: &impl Serialize, what: &str, file: &Path) -> Result<()> {
    match first_non_finite(value) {
        None => Ok(()),
        Some((path, v)) => Err(Error::Invalid(format!(
            "{what} on `{}` is not finite: `{path}` is {v}; the model's weights or config give \
             degenerate numbers",
            file.display()
        ))),
    }
}

/// The JSON path and value of the first float in `value` that is NaN or infinite.
pub fn first_non_finite(value: &impl Serialize) -> Option<(String, f64)> {
    let mut f = Finder {
        path: Vec::new(),
        found: None,
    };
    // The finder never fails except to stop early once it has found one.
    let _ = value.serialize(&mut f);
    f.found
}

struct Finder {
    path: Vec<String>,
    found: Option<(String, f64)>,
}

#[derive(Debug)]
struct Stop;

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("stop")
    }
}

impl std::error::Error for Stop {}

impl ser::Error for Stop {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Stop
    }
}

type R = std::result::Result<(), Stop>;

impl Finder {
    fn float(&mut self, v: f64) -> R {
        if v.is_finite() {
            return Ok(());
        }
        let mut p = String::new();
        for part in &self.path {
            if !(p.is_empty() || part.starts_with('[')) {
                p.push('.');
            }
            p.push_str(part);
        }
        self.found = Some((if p.is_empty() { "value".into() } else { p }, v));
        Err(Stop)
    }

    fn inside(&mut self, name: String, value: &(impl Serialize + ?Sized)) -> R {
        self.path.push(name);
        let r = value.serialize(&mut *self);
        self.path.pop();
        r
    }
}

/// Sequences count their items for the path (`[3]`).
struct Seq<'a> {
    f: &'a mut Finder,
    i: usize,
}

impl Seq<'_> {
    fn item(&mut self, value: &(impl Serialize + ?Sized)) -> R {
        let name = format!("[{}]", self.i);
        self.i += 1;
        self.f.inside(name, value)
    }
}

macro_rules! ok {
    ($($name:ident($t:ty)),*) => {
        $(fn $name(self, _: $t) -> R { Ok(()) })*
    };
}

impl<'a> ser::Serializer for &'a mut Finder {
    type Ok = ();
    type Error = Stop;
    type SerializeSeq = Seq<'a>;
    type SerializeTuple = Seq<'a>;
    type SerializeTupleStruct = Seq<'a>;
    type SerializeTupleVariant = Seq<'a>;
    type SerializeMap = Map<'a>;
    type SerializeStruct = &'a mut Finder;
    type SerializeStructVariant = &'a mut Finder;

    ok!(
        serialize_bool(bool),
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32)
    );
    ok!(
        serialize_i64(i64),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32)
    );
    ok!(
        serialize_u64(u64),
        serialize_char(char),
        serialize_str(&str),
        serialize_bytes(&[u8])
    );
    ok!(serialize_unit_struct(&'static str));

    fn serialize_f32(self, v: f32) -> R {
        self.float(v as f64)
    }
    fn serialize_f64(self, v: f64) -> R {
        self.float(v)
    }
    fn serialize_none(self) -> R {
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> R {
        value.serialize(self)
    }
    fn serialize_unit(self) -> R {
        Ok(())
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> R {
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, v: &T) -> R {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        v: &T,
    ) -> R {
        self.inside(variant.into(), v)
    }
    fn serialize_seq(self, _: Option<usize>) -> std::result::Result<Seq<'a>, Stop> {
        Ok(Seq { f: self, i: 0 })
    }
    fn serialize_tuple(self, _: usize) -> std::result::Result<Seq<'a>, Stop> {
        Ok(Seq { f: self, i: 0 })
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> std::result::Result<Seq<'a>, Stop> {
        Ok(Seq { f: self, i: 0 })
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> std::result::Result<Seq<'a>, Stop> {
        Ok(Seq { f: self, i: 0 })
    }
    fn serialize_map(self, _: Option<usize>) -> std::result::Result<Map<'a>, Stop> {
        Ok(Map { f: self, key: None })
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> std::result::Result<Self, Stop> {
        Ok(self)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> std::result::Result<Self, Stop> {
        Ok(self)
    }
}

macro_rules! seq_impl {
    ($($tr:ident :: $m:ident),*) => {
        $(impl ser::$tr for Seq<'_> {
            type Ok = ();
            type Error = Stop;
            fn $m<T: Serialize + ?Sized>(&mut self, value: &T) -> R {
                self.item(value)
            }
            fn end(self) -> R {
                Ok(())
            }
        })*
    };
}

seq_impl!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field
);

macro_rules! struct_impl {
    ($($tr:ident),*) => {
        $(impl ser::$tr for &mut Finder {
            type Ok = ();
            type Error = Stop;
            fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, v: &T) -> R {
                self.inside(key.into(), v)
            }
            fn end(self) -> R {
                Ok(())
            }
        })*
    };
}

struct_impl!(SerializeStruct, SerializeStructVariant);

/// Maps name their entries by the key's text (`"3"` of a map keyed by layer counts).
struct Map<'a> {
    f: &'a mut Finder,
    key: Option<String>,
}

impl ser::SerializeMap for Map<'_> {
    type Ok = ();
    type Error = Stop;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> R {
        self.key = Some(
            serde_json::to_string(key)
                .map_or_else(|_| "?".into(), |s| s.trim_matches('"').to_string()),
        );
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> R {
        let key = self.key.take().unwrap_or_else(|| "?".into());
        self.f.inside(key, value)
    }
    fn end(self) -> R {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;
    use std::collections::BTreeMap;

    #[derive(Serialize)]
    struct Inner {
        mean: f64,
        ci: [f64; 2],
    }

    #[derive(Serialize)]
    struct Outer {
        name: String,
        perplexity: f32,
        kl: Option<Inner>,
        cells: Vec<BTreeMap<usize, f64>>,
        #[serde(skip)]
        _hidden: f64,
    }

    fn outer() -> Outer {
        Outer {
            name: "x".into(),
            perplexity: 3.0,
            kl: Some(Inner {
                mean: 0.5,
                ci: [0.1, 0.9],
            }),
            cells: vec![BTreeMap::from([(3, 1.0)]), BTreeMap::from([(8, 2.0)])],
            _hidden: f64::NAN,
        }
    }

    #[test]
    fn finite_results_pass_and_skipped_fields_are_not_checked() {
        assert_eq!(first_non_finite(&outer()), None);
    }

    #[test]
    fn the_first_non_finite_float_is_named_by_its_path() {
        let mut o = outer();
        o.perplexity = f32::NAN;
        let (p, v) = first_non_finite(&o).unwrap();
        assert_eq!(p, "perplexity");
        assert!(v.is_nan());
        let mut o = outer();
        o.kl.as_mut().unwrap().ci[1] = f64::INFINITY;
        assert_eq!(first_non_finite(&o).unwrap().0, "kl.ci[1]");
        let mut o = outer();
        o.cells[1].insert(8, f64::NEG_INFINITY);
        assert_eq!(
            first_non_finite(&o).unwrap(),
            ("cells[1].8".into(), f64::NEG_INFINITY)
        );
        assert_eq!(first_non_finite(&f64::NAN).unwrap().0, "value");
    }

    #[test]
    fn the_error_names_what_and_the_file() {
        let mut o = outer();
        o.perplexity = f32::NAN;
        let e = ensure_finite(&o, "perplexity", Path::new("m.gguf")).unwrap_err();
        let s = e.to_string();
        assert!(s.contains("perplexity on `m.gguf` is not finite"), "{s}");
        assert!(s.contains("`perplexity` is NaN"), "{s}");
        ensure_finite(&outer(), "perplexity", Path::new("m.gguf")).unwrap();
    }
}
