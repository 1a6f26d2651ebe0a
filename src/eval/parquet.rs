//! Task data in parquet, the format the Hub keeps datasets in: each row becomes the JSON object
//! that the dataset's JSON Lines export (`datasets`' `to_json`) has for it, so the tasks read
//! parquet and JSON Lines alike. Strings, integers, floats and booleans map to themselves, lists
//! (`choices`) to arrays, structs (ARC's `choices: {text, label}`) to objects and nulls to `null`;
//! a `ClassLabel` column is stored as its integer, as in JSON. Read with the `parquet` crate's
//! record API; files compressed with Snappy (what `datasets` and the Hub write), gzip or none.

use super::registry::Record;
use crate::error::{Error, Result};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;
use serde_json::{Map, Number, Value};
use std::path::Path;

/// The rows of a parquet file as records, `keep` deciding for each in turn: `Ok(false)` stops.
/// Errors name the file, and the 1-based row for a value that cannot be read.
pub fn read_rows(path: &Path, mut keep: impl FnMut(usize, Record) -> Result<bool>) -> Result<()> {
    let bad = |msg: String| Error::corrupt(path, one_line(&msg));
    let file = std::fs::File::open(path).map_err(|e| bad(format!("cannot open: {e}")))?;
    let reader = SerializedFileReader::new(file)
        .map_err(|e| bad(format!("not a readable parquet file: {e}")))?;
    let rows = reader
        .get_row_iter(None)
        .map_err(|e| bad(format!("cannot read the parquet rows: {e}")))?;
    for (i, row) in rows.enumerate() {
        let row = row.map_err(|e| bad(format!("row {}: cannot read: {e}", i + 1)))?;
        let mut rec = Map::new();
        for (name, field) in row.get_column_iter() {
            let v = to_json(field).map_err(|m| bad(format!("row {}: `{name}`: {m}", i + 1)))?;
            rec.insert(name.clone(), v);
        }
        if !keep(i + 1, rec)? {
            break;
        }
    }
    Ok(())
}

/// A parquet value as the JSON export writes it.
fn to_json(f: &Field) -> std::result::Result<Value, String> {
    let float = |x: f64| {
        Number::from_f64(x)
            .map(Value::Number)
            .ok_or_else(|| format!("{x} has no JSON form"))
    };
    Ok(match f {
        Field::Null => Value::Null,
        Field::Bool(b) => Value::Bool(*b),
        Field::Byte(n) => (*n).into(),
        Field::Short(n) => (*n).into(),
        Field::Int(n) => (*n).into(),
        Field::Long(n) => (*n).into(),
        Field::UByte(n) => (*n).into(),
        Field::UShort(n) => (*n).into(),
        Field::UInt(n) => (*n).into(),
        Field::ULong(n) => (*n).into(),
        // A float32 as Python prints it: its shortest decimal form, read back as a double.
        Field::Float16(x) => float(shortest(f32::from(*x)))?,
        Field::Float(x) => float(shortest(*x))?,
        Field::Double(x) => float(*x)?,
        Field::Str(s) => Value::String(s.clone()),
        Field::Bytes(b) => match std::str::from_utf8(b.data()) {
            Ok(s) => Value::String(s.to_string()),
            Err(_) => return Err("binary data, not text".into()),
        },
        Field::Group(row) => {
            let mut o = Map::new();
            for (k, v) in row.get_column_iter() {
                o.insert(k.clone(), to_json(v)?);
            }
            Value::Object(o)
        }
        Field::ListInternal(list) => Value::Array(
            list.elements()
                .iter()
                .map(to_json)
                .collect::<std::result::Result<_, _>>()?,
        ),
        Field::MapInternal(map) => {
            let mut o = Map::new();
            for (k, v) in map.entries() {
                let key = match to_json(k)? {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                o.insert(key, to_json(v)?);
            }
            Value::Object(o)
        }
        // Dates, times and decimals: as text.
        other => Value::String(other.to_string()),
    })
}

/// `x`'s shortest decimal form, as a double.
fn shortest(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(f64::from(x))
}

/// The parquet crate's messages can span lines; ours are one.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_is_not_parquet_is_one_line_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("test-00000-of-00001.parquet");
        std::fs::write(&p, b"PAR1 this is not\nparquet at all").unwrap();
        let e = read_rows(&p, |_, _| Ok(true)).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, Error::Corrupt { .. }), "{msg}");
        assert!(msg.contains("test-00000-of-00001.parquet"), "{msg}");
        assert!(msg.contains("not a readable parquet file"), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
    }

    #[test]
    fn floats_read_as_python_prints_them() {
        assert_eq!(shortest(0.1), 0.1);
        assert_eq!(to_json(&Field::Float(0.1)).unwrap(), serde_json::json!(0.1));
        assert_eq!(to_json(&Field::Long(-3)).unwrap(), serde_json::json!(-3));
        assert!(to_json(&Field::Double(f64::NAN)).is_err());
    }
}
