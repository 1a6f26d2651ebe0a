//! Strict readers for `config.json` fields (issue 25): a key that is absent or `null` gives
//! `None` (the caller then applies transformers' default), and a key that is present with the
//! wrong type or a meaningless value is an error naming the key. Nothing the config states is
//! replaced by a default: `"0.5"` is not a number, `"NaN"` is not a soft-cap, `0` is not a window.
//!
//! Errors are messages without the file name (the caller adds it).

use serde_json::{Map, Value};

/// The largest width, head count or vocabulary a config may state (2^24): far above any real
/// model, and small enough that products of two of them fit in `u64` without overflow.
pub const MAX_DIM: u64 = 1 << 24;

/// The most layers a config may state.
pub const MAX_LAYERS: u64 = 1 << 16;

type R<T> = std::result::Result<T, String>;

/// A JSON object of config fields.
pub type Obj = Map<String, Value>;

/// Shows a found value briefly for an error message.
fn shown(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 40 {
        format!("{}…", s.chars().take(40).collect::<String>())
    } else {
        s
    }
}

/// The value of `key`, with `null` read as absent.
pub fn present<'a>(obj: &'a Obj, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

/// A non-negative integer no larger than `max`.
pub fn uint_max(obj: &Obj, key: &str, max: u64) -> R<Option<usize>> {
    let Some(v) = present(obj, key) else {
        return Ok(None);
    };
    match v.as_u64() {
        Some(x) if x <= max => Ok(Some(x as usize)),
        Some(x) => Err(format!("`{key}` ({x}) is larger than {max}")),
        None => Err(format!(
            "`{key}` must be a non-negative integer, found {}",
            shown(v)
        )),
    }
}

/// A non-negative integer no larger than [`MAX_DIM`].
pub fn uint(obj: &Obj, key: &str) -> R<Option<usize>> {
    uint_max(obj, key, MAX_DIM)
}

/// A positive integer no larger than [`MAX_DIM`].
pub fn positive_uint(obj: &Obj, key: &str) -> R<Option<usize>> {
    match uint(obj, key)? {
        Some(0) => Err(format!("`{key}` must be positive, found 0")),
        x => Ok(x),
    }
}

/// A number (JSON has no NaN or infinity, so any number is finite).
pub fn number(obj: &Obj, key: &str) -> R<Option<f64>> {
    let Some(v) = present(obj, key) else {
        return Ok(None);
    };
    match v.as_f64() {
        Some(x) if x.is_finite() => Ok(Some(x)),
        _ => Err(format!("`{key}` must be a number, found {}", shown(v))),
    }
}

/// A number above zero.
pub fn positive(obj: &Obj, key: &str) -> R<Option<f64>> {
    match number(obj, key)? {
        Some(x) if x <= 0.0 => Err(format!("`{key}` must be positive, found {x}")),
        x => Ok(x),
    }
}

/// `true` or `false`.
pub fn boolean(obj: &Obj, key: &str) -> R<Option<bool>> {
    let Some(v) = present(obj, key) else {
        return Ok(None);
    };
    v.as_bool()
        .map(Some)
        .ok_or_else(|| format!("`{key}` must be true or false, found {}", shown(v)))
}

/// A string.
pub fn string<'a>(obj: &'a Obj, key: &str) -> R<Option<&'a str>> {
    let Some(v) = present(obj, key) else {
        return Ok(None);
    };
    v.as_str()
        .map(Some)
        .ok_or_else(|| format!("`{key}` must be a string, found {}", shown(v)))
}

/// An object (a nested group of fields such as `rope_scaling`).
pub fn object<'a>(obj: &'a Obj, key: &str) -> R<Option<&'a Obj>> {
    let Some(v) = present(obj, key) else {
        return Ok(None);
    };
    v.as_object()
        .map(Some)
        .ok_or_else(|| format!("`{key}` must be an object, found {}", shown(v)))
}

/// A list whose every entry `item` reads; the error names the entry.
pub fn list<T>(obj: &Obj, key: &str, item: impl Fn(&Value) -> Option<T>) -> R<Option<Vec<T>>> {
    let Some(v) = present(obj, key) else {
        return Ok(None);
    };
    let a = v
        .as_array()
        .ok_or_else(|| format!("`{key}` must be a list, found {}", shown(v)))?;
    a.iter()
        .enumerate()
        .map(|(i, x)| {
            item(x).ok_or_else(|| format!("`{key}` entry {i} is not valid: {}", shown(x)))
        })
        .collect::<R<Vec<T>>>()
        .map(Some)
}

/// A list of layer numbers, each below `layers`.
pub fn layer_list(obj: &Obj, key: &str, layers: usize) -> R<Option<Vec<usize>>> {
    let l = list(obj, key, |v| v.as_u64().map(|x| x as u128))?;
    l.map(|l| {
        l.into_iter()
            .map(|x| {
                if x < layers as u128 {
                    Ok(x as usize)
                } else {
                    Err(format!(
                        "`{key}` names layer {x}, but the model has {layers} layers"
                    ))
                }
            })
            .collect()
    })
    .transpose()
}

/// A list of positive numbers.
pub fn positive_list(obj: &Obj, key: &str) -> R<Option<Vec<f64>>> {
    list(obj, key, |v| {
        v.as_f64().filter(|x| x.is_finite() && *x > 0.0)
    })
    .map_err(|e| format!("{e} (entries must be positive numbers)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn o(v: Value) -> Obj {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn a_stated_value_of_the_wrong_type_is_never_the_default() {
        let c = o(json!({"a":"0.5","b":"NaN","c":0,"d":-1e-6,"e":null,"f":"true","g":[0,"x"]}));
        assert!(number(&c, "a")
            .unwrap_err()
            .contains("`a` must be a number"));
        assert!(positive(&c, "b").is_err());
        assert!(positive_uint(&c, "c")
            .unwrap_err()
            .contains("`c` must be positive"));
        assert!(positive(&c, "d").is_err());
        assert_eq!(positive(&c, "e").unwrap(), None);
        assert_eq!(positive(&c, "missing").unwrap(), None);
        assert!(boolean(&c, "f").is_err());
        assert!(layer_list(&c, "g", 4).unwrap_err().contains("entry 1"));
        let big = o(json!({"n": MAX_DIM + 1}));
        assert!(uint(&big, "n").unwrap_err().contains("larger"));
    }

    #[test]
    fn layer_lists_stay_inside_the_model() {
        let c = o(json!({"l":[0,3]}));
        assert_eq!(layer_list(&c, "l", 4).unwrap(), Some(vec![0, 3]));
        assert!(layer_list(&c, "l", 3).unwrap_err().contains("layer 3"));
    }
}
