//! The summary `depthprune inspect` shows for a GGUF model: format details, metadata (long
//! strings and arrays shortened), tensors by ggml type, parameters by component, and which
//! metadata arrays a prune would treat as per-layer.

use super::model::GgufModel;
use super::types::GgmlType;
use super::value::{Array, Value};
use super::KEY_NAME;
use crate::arch::ParamCounts;
use serde::Serialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Array elements shown before the rest is summarised.
pub const SHOWN_ITEMS: usize = 6;
/// Characters of a string shown before it is cut.
pub const SHOWN_CHARS: usize = 80;

/// Everything `inspect` reports about a GGUF model.
#[derive(Debug, Clone, Serialize)]
pub struct GgufInfo {
    pub path: PathBuf,
    pub parts: Vec<PartSummary>,
    pub version: u32,
    pub alignment: u64,
    pub architecture: Option<String>,
    pub name: Option<String>,
    /// The layer count, when `{arch}.block_count` is present and agrees with the tensors.
    pub block_count: Option<usize>,
    /// Why there is no layer count, otherwise.
    pub block_count_problem: Option<String>,
    pub metadata: Vec<MetaEntry>,
    pub tensor_types: Vec<TypeSummary>,
    pub n_tensors: usize,
    pub tensor_bytes: u64,
    pub file_bytes: u64,
    pub params: ParamCounts,
    pub params_total: u64,
    /// Metadata arrays with one entry per layer, sliced by a prune.
    pub per_layer_keys: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PartSummary {
    pub path: PathBuf,
    pub bytes: u64,
    pub tensors: usize,
}

/// One metadata entry, shortened for display.
#[derive(Debug, Clone, Serialize)]
pub struct MetaEntry {
    pub key: String,
    #[serde(rename = "type")]
    pub ty: String,
    /// Arrays: the number of elements.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub len: Option<usize>,
    /// The value; for a long array, its first [`SHOWN_ITEMS`] elements.
    pub value: serde_json::Value,
    /// Whether `value` shows only part of an array or string.
    pub truncated: bool,
}

/// Tensors of one ggml type.
#[derive(Debug, Clone, Serialize)]
pub struct TypeSummary {
    pub ggml_type: GgmlType,
    pub tensors: usize,
    pub bytes: u64,
    pub params: u64,
}

impl GgufInfo {
    pub fn of(model: &GgufModel) -> GgufInfo {
        let (block_count, block_count_problem) = match model.block_count() {
            Ok(n) => (Some(n), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let mut by_type: BTreeMap<GgmlType, TypeSummary> = BTreeMap::new();
        for t in model.tensors() {
            let s = by_type.entry(t.ggml_type()).or_insert(TypeSummary {
                ggml_type: t.ggml_type(),
                tensors: 0,
                bytes: 0,
                params: 0,
            });
            s.tensors += 1;
            s.bytes += t.n_bytes();
            s.params += t.n_elements();
        }
        let params = ParamCounts::from_tensors(model.tensor_elements());
        GgufInfo {
            path: model.path().to_path_buf(),
            parts: model
                .parts()
                .iter()
                .map(|p| PartSummary {
                    path: p.path.clone(),
                    bytes: p.file_len,
                    tensors: p.n_tensors,
                })
                .collect(),
            version: model.version(),
            alignment: model.alignment(),
            architecture: model.architecture().ok().map(str::to_string),
            name: model.metadata().get_str(KEY_NAME).map(str::to_string),
            block_count,
            block_count_problem,
            metadata: model
                .metadata()
                .iter()
                .map(|(k, v)| MetaEntry::of(k, v))
                .collect(),
            tensor_types: by_type.into_values().collect(),
            n_tensors: model.tensors().len(),
            tensor_bytes: model.tensor_bytes(),
            file_bytes: model.file_bytes(),
            params_total: params.total(),
            params,
            per_layer_keys: block_count
                .map(|n| model.per_layer_keys(n))
                .unwrap_or_default(),
        }
    }
}

impl MetaEntry {
    pub fn of(key: &str, v: &Value) -> MetaEntry {
        let (value, truncated) = summarize(v);
        MetaEntry {
            key: key.to_string(),
            ty: v.type_name(),
            len: v.as_array().map(Array::len),
            value,
            truncated,
        }
    }
}

/// A value as JSON, shortened: strings to [`SHOWN_CHARS`], arrays to [`SHOWN_ITEMS`].
pub fn summarize(v: &Value) -> (serde_json::Value, bool) {
    match v {
        Value::String(bytes) => {
            let s = String::from_utf8_lossy(bytes);
            match s.char_indices().nth(SHOWN_CHARS) {
                Some((cut, _)) => (json!(format!("{}…", &s[..cut])), true),
                None => (json!(s), false),
            }
        }
        Value::Array(a) => {
            let shown = a.len().min(SHOWN_ITEMS);
            let mut truncated = shown < a.len();
            let items = (0..shown)
                .filter_map(|i| a.get(i))
                .map(|item| {
                    let (j, t) = summarize(&item);
                    truncated |= t;
                    j
                })
                .collect();
            (serde_json::Value::Array(items), truncated)
        }
        Value::U8(x) => (json!(x), false),
        Value::I8(x) => (json!(x), false),
        Value::U16(x) => (json!(x), false),
        Value::I16(x) => (json!(x), false),
        Value::U32(x) => (json!(x), false),
        Value::I32(x) => (json!(x), false),
        Value::U64(x) => (json!(x), false),
        Value::I64(x) => (json!(x), false),
        // Through its shortest decimal form, so 1e-5f32 shows as 0.00001, not 9.999999747378752e-6.
        Value::F32(x) => (json!(x.to_string().parse::<f64>().ok()), false),
        Value::F64(x) => (json!(x), false),
        Value::Bool(x) => (json!(x), false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_are_shortened() {
        let tokens = Value::Array(Array::String(
            (0..100).map(|i| format!("t{i}").into_bytes()).collect(),
        ));
        let e = MetaEntry::of("tokenizer.ggml.tokens", &tokens);
        assert_eq!(e.ty, "array[string]");
        assert_eq!(e.len, Some(100));
        assert!(e.truncated);
        assert_eq!(e.value, json!(["t0", "t1", "t2", "t3", "t4", "t5"]));
        let long = Value::string(&"x".repeat(200));
        let (j, t) = summarize(&long);
        assert!(t);
        assert_eq!(j.as_str().unwrap().chars().count(), SHOWN_CHARS + 1);
        assert_eq!(summarize(&Value::U32(30)), (json!(30), false));
        assert_eq!(summarize(&Value::F32(1e-5)).0.to_string(), "0.00001");
    }
}
