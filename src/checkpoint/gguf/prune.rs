//! Pruning a GGUF model: the tensors of removed layers are dropped, the kept `blk.N.*` tensors are
//! renumbered without gaps, and every tensor's bytes are copied unchanged whatever its ggml type,
//! in the original order. The metadata keeps its order; what changes:
//!
//! - `{arch}.block_count` becomes the kept count (same integer type);
//! - every per-layer array ([`GgufModel::per_layer_keys`]) keeps only the kept layers' entries;
//! - `{arch}.leading_dense_block_count` and `{arch}.nextn_predict_layers`, which count layers at
//!   the start and end of the stack, count only the kept ones;
//! - `general.name` gains ` (pruned 30→22L)`;
//! - `depthprune.*` keys record the tool version, the source file and the removal;
//! - `split.*` keys are dropped, and rewritten when the output is split.
//!
//! [`prune_with`] also takes [`Edits`]: tensors written with new data (and possibly a new float
//! type, same name and dims), as healing needs, and extra metadata entries. Every other tensor is
//! still copied byte for byte.
//!
//! Outputs are written to temporary siblings, read back and checked, and only then renamed.

use super::model::GgufModel;
use super::read::{GgufFile, TensorInfo};
use super::split::{self, MAX_SPLITS};
use super::types::GgmlType;
use super::value::{Array, Value};
use super::write::{header_len, tensor_info_len, GgufWriter};
use super::{
    Metadata, DEFAULT_ALIGNMENT, KEY_ALIGNMENT, KEY_NAME, KEY_SPLIT_COUNT, KEY_SPLIT_NO,
    KEY_SPLIT_TENSORS_COUNT,
};
use crate::arch::naming::gguf_layer;
use crate::checkpoint::atomic::{AtomicOutput, Overwrite};
use crate::error::{Error, IoContext, Result};
use crate::progress::Progress;
use crate::select::{format_ranges, Removal, RemovalSummary};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

/// How to write a pruned GGUF.
#[derive(Debug, Clone, Copy)]
pub struct PruneOptions {
    pub overwrite: Overwrite,
    /// Split the output into parts of at most this many bytes (`--split-max-size`).
    pub split_max_bytes: Option<u64>,
}

/// A tensor that a prune writes with new data in place of the source's bytes: same name (before
/// renumbering) and dims, in `ty`, with `data` in ggml's layout for those dims.
#[derive(Debug, Clone)]
pub struct Replacement {
    pub ty: GgmlType,
    pub data: Vec<u8>,
}

/// What a prune changes besides dropping layers.
#[derive(Debug, Clone, Default)]
pub struct Edits {
    /// New data by source tensor name; each tensor must belong to a kept layer or none.
    pub replace: BTreeMap<String, Replacement>,
    /// Metadata entries set after the prune's own, in order.
    pub metadata: Vec<(String, Value)>,
}

/// What a prune will write: the new metadata and each kept tensor under its new name.
#[derive(Debug, Clone)]
pub struct PrunePlan<'a> {
    pub metadata: Metadata,
    /// `(new name, source tensor)` in output order.
    pub tensors: Vec<(String, &'a TensorInfo)>,
    pub block_count_key: String,
    /// Arrays sliced as per-layer.
    pub per_layer_keys: Vec<String>,
    /// Layer counts rewritten besides the block count.
    pub adjusted_keys: Vec<String>,
    pub alignment: u64,
}

/// What a prune wrote.
#[derive(Debug, Clone, Serialize)]
pub struct PruneReport {
    pub outputs: Vec<PathBuf>,
    pub removal: RemovalSummary,
    pub block_count_key: String,
    pub per_layer_keys: Vec<String>,
    pub adjusted_keys: Vec<String>,
    pub tensors_before: usize,
    pub tensors_after: usize,
    pub tensor_bytes_before: u64,
    pub tensor_bytes_after: u64,
    pub bytes_written: u64,
}

/// Keys that count layers from the start (`leading`) or the end of the stack.
const LEADING_COUNT_SUFFIX: &str = ".leading_dense_block_count";
const TRAILING_COUNT_SUFFIX: &str = ".nextn_predict_layers";

/// Works out the pruned metadata and tensor list, without writing anything.
pub fn plan<'a>(model: &'a GgufModel, removal: &Removal) -> Result<PrunePlan<'a>> {
    let n = model.block_count()?;
    if removal.n_layers() != n {
        return Err(Error::Invalid(format!(
            "the removal plan is for {} layers, but `{}` has {n}",
            removal.n_layers(),
            model.path().display()
        )));
    }
    super::pattern::check_gguf_prune(model, removal)?;
    let arch = model.architecture()?.to_string();
    let block_count_key = model.block_count_key()?;
    let kept = removal.kept();
    let k = kept.len();
    let mut md = model.metadata().clone();

    let old_count = md.get(&block_count_key).cloned().unwrap_or(Value::U32(0));
    md.set(
        &block_count_key,
        old_count
            .with_same_int_type(k as u64)
            .unwrap_or(Value::U32(k as u32)),
    );

    let per_layer_keys = model.per_layer_keys(n);
    for key in &per_layer_keys {
        if let Some(Value::Array(a)) = md.get(key) {
            // Per-layer arrays have one entry per layer, so every kept index is in range.
            let sliced = a
                .select(&kept)
                .ok_or_else(|| Error::Invalid(format!("`{key}` is not per-layer")))?;
            md.set(key, Value::Array(sliced));
        }
    }

    let mut adjusted_keys = Vec::new();
    for (suffix, from_end) in [(LEADING_COUNT_SUFFIX, false), (TRAILING_COUNT_SUFFIX, true)] {
        let key = format!("{arch}{suffix}");
        let Some(v) = md.get(&key).cloned() else {
            continue;
        };
        let Some(count) = v.as_u64().filter(|&c| c as usize <= n) else {
            return Err(Error::config(
                model.path(),
                format!("`{key}` is {v:?}, which is not a layer count between 0 and {n}"),
            ));
        };
        let count = count as usize;
        let now = if from_end {
            kept.iter().filter(|&&l| l >= n - count).count()
        } else {
            kept.iter().filter(|&&l| l < count).count()
        };
        if let Some(new) = v.with_same_int_type(now as u64) {
            md.set(&key, new);
            adjusted_keys.push(key);
        }
    }

    if let Some(name) = md.get_str(KEY_NAME) {
        let renamed = format!("{name} (pruned {n}→{k}L)");
        md.set(KEY_NAME, Value::string(&renamed));
    }
    let source = model
        .path()
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let removed = removal.removed();
    md.set("depthprune.version", Value::string(crate::VERSION));
    md.set("depthprune.source", Value::string(&source));
    md.set("depthprune.layers_before", Value::U32(n as u32));
    md.set("depthprune.layers_after", Value::U32(k as u32));
    md.set(
        "depthprune.removed_layers",
        Value::Array(Array::U32(removed.iter().map(|&l| l as u32).collect())),
    );
    md.set(
        "depthprune.removed_ranges",
        Value::string(&format_ranges(&removal.removed_ranges())),
    );
    md.set(
        "depthprune.kept_layers",
        Value::Array(Array::U32(kept.iter().map(|&l| l as u32).collect())),
    );

    let mut tensors = Vec::new();
    for t in model.tensors() {
        match gguf_layer(t.name()) {
            Some(l) => {
                if let Some(new) = removal.new_index(l.layer) {
                    tensors.push((l.renumbered(new), t));
                }
            }
            None => tensors.push((t.name().to_string(), t)),
        }
    }
    Ok(PrunePlan {
        metadata: md,
        tensors,
        block_count_key,
        per_layer_keys,
        adjusted_keys,
        alignment: model.alignment(),
    })
}

/// Prunes `model` as `removal` says and writes the result to `out` (or to split parts named
/// after it). Nothing appears at `out` unless every part was written and read back intact.
pub fn prune(
    model: &GgufModel,
    removal: &Removal,
    out: &Path,
    opts: &PruneOptions,
    progress: &dyn Progress,
) -> Result<PruneReport> {
    prune_with(model, removal, out, opts, &Edits::default(), progress)
}

/// The type and byte length each planned tensor will have, with its replacement if any.
type Written<'e> = (GgmlType, u64, Option<&'e Replacement>);

/// Checks `edits` against `plan` and returns what each planned tensor is written as.
fn written<'e>(model: &GgufModel, plan: &PrunePlan, edits: &'e Edits) -> Result<Vec<Written<'e>>> {
    for name in edits.replace.keys() {
        if !plan.tensors.iter().any(|(_, t)| t.name() == name) {
            let why = if model.tensors().iter().any(|t| t.name() == name) {
                "it belongs to a removed layer"
            } else {
                "the model has no such tensor"
            };
            return Err(Error::Invalid(format!(
                "`{}`: cannot replace tensor `{name}`: {why}",
                model.path().display()
            )));
        }
    }
    plan.tensors
        .iter()
        .map(|(_, t)| match edits.replace.get(t.name()) {
            None => Ok((t.ggml_type(), t.n_bytes(), None)),
            Some(r) => {
                let want = r.ty.tensor_bytes(t.dims()).map_err(|e| {
                    Error::Invalid(format!(
                        "cannot write tensor `{}` with dims {:?} as {}: {e}",
                        t.name(),
                        t.dims(),
                        r.ty.name()
                    ))
                })?;
                if want != r.data.len() as u64 {
                    return Err(Error::Invalid(format!(
                        "replacement for tensor `{}` has {} bytes; {} with dims {:?} needs {want}",
                        t.name(),
                        r.data.len(),
                        r.ty.name(),
                        t.dims()
                    )));
                }
                Ok((r.ty, want, Some(r)))
            }
        })
        .collect()
}

/// [`prune`] with `edits` applied: replaced tensors and extra metadata.
pub fn prune_with(
    model: &GgufModel,
    removal: &Removal,
    out: &Path,
    opts: &PruneOptions,
    edits: &Edits,
    progress: &dyn Progress,
) -> Result<PruneReport> {
    let mut plan = plan(model, removal)?;
    for (k, v) in &edits.metadata {
        plan.metadata.set(k, v.clone());
    }
    let written = written(model, &plan, edits)?;
    let parts = layout(&plan, &written, opts.split_max_bytes)?;
    let targets: Vec<PathBuf> = if opts.split_max_bytes.is_some() {
        let prefix = split::output_prefix(out);
        (0..parts.len())
            .map(|i| split::part_path(&prefix, i + 1, parts.len()))
            .collect()
    } else {
        vec![out.to_path_buf()]
    };
    refuse_overwriting_input(model, &targets)?;

    let mut sources = model
        .parts()
        .iter()
        .map(|p| File::open(&p.path).at(&p.path))
        .collect::<Result<Vec<_>>>()?;
    let total: u64 = written.iter().map(|w| w.1).sum();
    progress.start_bytes("pruning", total);
    let mut outputs = Vec::new();
    for (i, (target, range)) in targets.iter().zip(&parts).enumerate() {
        let mut md = if i == 0 {
            plan.metadata.clone()
        } else {
            Metadata::default()
        };
        if opts.split_max_bytes.is_some() {
            if i > 0 && plan.alignment != DEFAULT_ALIGNMENT {
                md.set(KEY_ALIGNMENT, Value::U32(plan.alignment as u32));
            }
            add_split_keys(&mut md, i, parts.len(), plan.tensors.len());
        }
        let output = AtomicOutput::file(target, opts.overwrite)?;
        let tensors = &plan.tensors[range.clone()];
        let types = &written[range.clone()];
        write_part(
            output.path(),
            &md,
            tensors,
            types,
            plan.alignment,
            model,
            &mut sources,
            progress,
        )?;
        verify_part(output.path(), &md, tensors, types)?;
        outputs.push(output);
    }
    progress.finish();

    let mut written = Vec::new();
    let mut bytes_written = 0;
    for output in outputs {
        let path = output.commit()?;
        bytes_written += std::fs::metadata(&path).at(&path)?.len();
        written.push(path);
    }
    Ok(PruneReport {
        outputs: written,
        removal: removal.summary(),
        block_count_key: plan.block_count_key,
        per_layer_keys: plan.per_layer_keys,
        adjusted_keys: plan.adjusted_keys,
        tensors_before: model.tensors().len(),
        tensors_after: plan.tensors.len(),
        tensor_bytes_before: model.tensor_bytes(),
        tensor_bytes_after: total,
        bytes_written,
    })
}

fn add_split_keys(md: &mut Metadata, i: usize, count: usize, n_tensors: usize) {
    md.set(KEY_SPLIT_NO, Value::U16(i as u16));
    md.set(KEY_SPLIT_COUNT, Value::U16(count as u16));
    md.set(KEY_SPLIT_TENSORS_COUNT, Value::I32(n_tensors as i32));
}

/// Which tensors go in which output part: one part, or as many as `max_bytes` requires.
fn layout(
    plan: &PrunePlan,
    written: &[Written],
    max_bytes: Option<u64>,
) -> Result<Vec<std::ops::Range<usize>>> {
    let Some(max) = max_bytes else {
        return Ok(std::iter::once(0..plan.tensors.len()).collect());
    };
    if max == 0 {
        return Err(Error::Invalid(
            "`max_shard_size` must be more than 0 bytes".into(),
        ));
    }
    if plan.tensors.len() > i32::MAX as usize {
        return Err(Error::Invalid(
            "too many tensors for `split.tensors.count`".into(),
        ));
    }
    let a = plan.alignment;
    let mut split_keys = Metadata::default();
    add_split_keys(&mut split_keys, 0, 1, plan.tensors.len());
    let mut first = plan.metadata.clone();
    add_split_keys(&mut first, 0, 1, plan.tensors.len());
    if a != DEFAULT_ALIGNMENT {
        split_keys.set(KEY_ALIGNMENT, Value::U32(a as u32));
    }
    let overhead = |md: &Metadata| header_len(md.iter(), []) + a;
    let costs: Vec<u64> = plan
        .tensors
        .iter()
        .zip(written)
        .map(|((name, t), w)| tensor_info_len(name, t.dims().len()) + w.1.next_multiple_of(a))
        .collect();
    let parts = split::plan_parts(&costs, max, overhead(&first), overhead(&split_keys));
    if parts.len() > MAX_SPLITS {
        return Err(Error::Invalid(format!(
            "`max_shard_size` {max} would make {} parts; at most {MAX_SPLITS} are possible",
            parts.len()
        )));
    }
    Ok(parts)
}

/// Refuses a target that is, holds or lies inside a part of the model ([`crate::base::guard`]),
/// every part of a split model included.
fn refuse_overwriting_input(model: &GgufModel, targets: &[PathBuf]) -> Result<()> {
    let inputs: Vec<&Path> = model.parts().iter().map(|p| p.path.as_path()).collect();
    for t in targets {
        crate::base::guard::check_output(t, &inputs)?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn write_part(
    path: &Path,
    md: &Metadata,
    tensors: &[(String, &TensorInfo)],
    written: &[Written],
    alignment: u64,
    model: &GgufModel,
    sources: &mut [File],
    progress: &dyn Progress,
) -> Result<()> {
    let file = File::create(path).at(path)?;
    let mut w = GgufWriter::new(BufWriter::with_capacity(1 << 20, file), path, alignment)?;
    w.header(tensors.len() as u64, md.len() as u64)?;
    for (k, v) in md.iter() {
        w.kv(k, v)?;
    }
    for ((name, t), (ty, _, _)) in tensors.iter().zip(written) {
        w.tensor_info(name, t.dims(), *ty)?;
    }
    for ((_, t), (_, n, replacement)) in tensors.iter().zip(written) {
        match replacement {
            Some(r) => w.write_tensor(&r.data)?,
            None => {
                let src = &model.parts()[t.part()].path;
                w.copy_tensor(&mut sources[t.part()], src, t.file_offset())?;
            }
        }
        progress.advance(*n);
    }
    w.finish()?
        .into_inner()
        .map_err(|e| Error::io(path, e.into_error()))?;
    Ok(())
}

/// Reads a written part back and checks it holds what was meant to be written.
fn verify_part(
    path: &Path,
    md: &Metadata,
    tensors: &[(String, &TensorInfo)],
    written: &[Written],
) -> Result<()> {
    let back = GgufFile::read(path, 0)?;
    let fail = |what: String| {
        Err(Error::Invalid(format!(
            "`{}` did not read back as written: {what}",
            path.display()
        )))
    };
    if back.metadata != *md {
        return fail("metadata differs".into());
    }
    if back.tensors.len() != tensors.len() {
        return fail(format!(
            "{} tensors instead of {}",
            back.tensors.len(),
            tensors.len()
        ));
    }
    for ((b, (name, t)), (ty, _, _)) in back.tensors.iter().zip(tensors).zip(written) {
        if b.name() != name || b.dims() != t.dims() || b.ggml_type() != *ty {
            return fail(format!("tensor `{}` differs", b.name()));
        }
    }
    Ok(())
}
