//! `verify`: checks a pruned checkpoint against its own `pruning.json` and, optionally, against its
//! source. Every file listed is re-hashed; every tensor is checked against its declared dtype and
//! shape (the header validation does that); with the source, each kept tensor must be
//! byte-identical to the source tensor it came from, or equal to its exact dtype conversion when
//! one was recorded. Tensors recorded as healed are reported, not compared.

use super::hf::HfCheckpoint;
use super::provenance::{hash_file, Provenance, PROVENANCE_FILE};
use super::safetensors::read_range;
use crate::arch::naming::hf_layer;
use crate::error::{Error, IoContext, Result};
use serde::Serialize;
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

/// One check and its outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub what: String,
    pub ok: bool,
    pub detail: String,
}

/// The outcome of `verify`.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub checks: Vec<Check>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }

    fn push(&mut self, what: impl Into<String>, ok: bool, detail: impl Into<String>) {
        self.checks.push(Check {
            what: what.into(),
            ok,
            detail: detail.into(),
        });
    }

    /// The check of every tensor against `source`: `matched` when nothing in `bad` differs,
    /// else the number of mismatches and the first five.
    fn push_source_check(&mut self, source: &Path, bad: &[String], matched: String) {
        let detail = if bad.is_empty() {
            matched
        } else {
            format!(
                "{} mismatches: {}",
                bad.len(),
                bad[..bad.len().min(5)].join("; ")
            )
        };
        self.push(
            format!("tensors against source `{}`", source.display()),
            bad.is_empty(),
            detail,
        );
    }
}

/// Reads `pruning.json` from an output folder.
pub fn read_provenance(dir: &Path) -> Result<Provenance> {
    let path = dir.join(PROVENANCE_FILE);
    let text = std::fs::read_to_string(&path).at(&path)?;
    serde_json::from_str(&text)
        .map_err(|e| Error::corrupt(&path, format!("not a depthprune provenance file: {e}")))
}

/// Verifies an HF output folder.
pub fn verify_hf(out: &Path, source: Option<&Path>) -> Result<VerifyReport> {
    super::links::check_folder(out)?;
    if let Some(src) = source {
        super::links::check_folder(src)?;
    }
    let prov = read_provenance(out)?;
    let mut report = VerifyReport { checks: Vec::new() };

    for f in &prov.output {
        let path = out.join(&f.name);
        if !path.is_file() {
            report.push(
                format!("file `{}`", f.name),
                false,
                "listed in pruning.json but missing",
            );
            continue;
        }
        let h = hash_file(&path)?;
        let ok = h.sha256 == f.sha256 && h.bytes == f.bytes;
        let detail = if ok {
            format!("sha256 {}", &h.sha256[..16])
        } else {
            format!(
                "sha256 {} ({} bytes), pruning.json says {} ({} bytes)",
                &h.sha256[..16],
                h.bytes,
                &f.sha256[..16.min(f.sha256.len())],
                f.bytes
            )
        };
        report.push(format!("file `{}`", f.name), ok, detail);
    }

    // Opening validates every header (dtype × shape = bytes, offsets tile the data), the index
    // against the shards, and the config against the tensors.
    let ckpt = match HfCheckpoint::open(out) {
        Ok(c) => c,
        Err(e) => {
            report.push("checkpoint structure", false, e.to_string());
            return Ok(report);
        }
    };
    let n_tensors = ckpt.tensors().count();
    report.push(
        "tensor headers",
        true,
        format!("{n_tensors} tensors match their dtype and shape"),
    );
    let layers_ok = ckpt.arch.num_hidden_layers == prov.layers.layers_after;
    report.push(
        "layer count",
        layers_ok,
        format!(
            "config has {}, pruning.json says {}",
            ckpt.arch.num_hidden_layers, prov.layers.layers_after
        ),
    );
    let params = ckpt.param_counts().total();
    report.push(
        "parameter count",
        params == prov.params.after,
        format!(
            "tensors hold {params}, pruning.json says {}",
            prov.params.after
        ),
    );

    if let Some(src_dir) = source {
        compare_with_source(&ckpt, &prov, src_dir, &mut report)?;
    }
    Ok(report)
}

fn healed_tensors(prov: &Provenance) -> Vec<String> {
    prov.healing
        .as_ref()
        .and_then(|h| h.get("tensors"))
        .and_then(|t| t.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn compare_with_source(
    ckpt: &HfCheckpoint,
    prov: &Provenance,
    src_dir: &Path,
    report: &mut VerifyReport,
) -> Result<()> {
    let src = HfCheckpoint::open(src_dir)?;
    let old_of: HashMap<usize, usize> =
        prov.layers.mapping.iter().map(|m| (m.new, m.old)).collect();
    let healed = healed_tensors(prov);
    let mut files: HashMap<PathBuf, File> = HashMap::new();
    let (mut same, mut converted, mut skipped) = (0usize, 0usize, 0usize);
    let mut bad = Vec::new();
    let (mut a, mut b, mut conv) = (Vec::new(), Vec::new(), Vec::new());
    for shard in &ckpt.shards {
        for t in &shard.tensors {
            if healed.contains(&t.name) {
                skipped += 1;
                continue;
            }
            let src_name = match hf_layer(&t.name) {
                Some(l) => match old_of.get(&l.layer) {
                    Some(&old) => l.renumbered(old),
                    None => {
                        bad.push(format!(
                            "`{}`: layer {} is not in the mapping",
                            t.name, l.layer
                        ));
                        continue;
                    }
                },
                None => t.name.clone(),
            };
            let Some((src_shard, st)) = src.tensor(&src_name) else {
                bad.push(format!("`{}`: source has no `{src_name}`", t.name));
                continue;
            };
            if st.shape != t.shape {
                bad.push(format!(
                    "`{}`: shape {:?}, source {:?}",
                    t.name, t.shape, st.shape
                ));
                continue;
            }
            let mut fa = take_file(&mut files, &shard.path)?;
            read_range(&mut fa, &shard.path, t.file_offset, t.len, &mut a)?;
            files.insert(shard.path.clone(), fa);
            let mut fb = take_file(&mut files, &src_shard.path)?;
            read_range(&mut fb, &src_shard.path, st.file_offset, st.len, &mut b)?;
            files.insert(src_shard.path.clone(), fb);
            if t.dtype == st.dtype {
                if a == b {
                    same += 1;
                } else {
                    bad.push(format!("`{}` differs from source `{src_name}`", t.name));
                }
            } else if prov.dtype.as_deref() == Some(t.dtype.name())
                && st.dtype.is_convertible_float()
            {
                super::shards::convert(&b, st.dtype, t.dtype, &mut conv);
                if a == conv {
                    converted += 1;
                } else {
                    bad.push(format!(
                        "`{}` is not the {} conversion of source `{src_name}`",
                        t.name, t.dtype
                    ));
                }
            } else {
                bad.push(format!(
                    "`{}` is {} but source `{src_name}` is {} and no conversion was recorded",
                    t.name, t.dtype, st.dtype
                ));
            }
        }
    }
    report.push_source_check(
        src_dir,
        &bad,
        format!("{same} byte-identical, {converted} exact dtype conversions, {skipped} healed (not compared)"),
    );
    Ok(())
}

fn take_file(files: &mut HashMap<PathBuf, File>, path: &Path) -> Result<File> {
    match files.remove(path) {
        Some(f) => Ok(f),
        None => File::open(path).at(path),
    }
}

/// Reads `key` as an array of layer numbers.
fn layer_list(md: &super::gguf::Metadata, key: &str) -> Option<Vec<usize>> {
    use super::gguf::{Array, Value};
    match md.get(key)? {
        Value::Array(Array::U32(v)) => Some(v.iter().map(|&l| l as usize).collect()),
        _ => None,
    }
}

/// Verifies a GGUF file written by `depthprune prune` (the first part, if split). Reading it
/// checks every tensor's type, shape and byte size, that its data lies inside the file, aligned,
/// and overlapping no other; the `depthprune.*` keys must describe a consistent removal that
/// matches the block count. With the source, every kept tensor must be byte-identical to the
/// source tensor it was renumbered from, and every source tensor outside the removed layers must
/// be present: a GGUF prune never changes tensor bytes (it records no healing or type change).
pub fn verify_gguf(out: &Path, source: Option<&Path>) -> Result<VerifyReport> {
    use super::gguf::GgufModel;
    let mut report = VerifyReport { checks: Vec::new() };
    let model = match GgufModel::open(out) {
        Ok(m) => m,
        Err(e) => {
            report.push("file structure", false, e.to_string());
            return Ok(report);
        }
    };
    report.push(
        "tensor headers",
        true,
        format!(
            "{} tensors in {} file(s): types, shapes, sizes, bounds and alignment hold, no overlap",
            model.tensors().len(),
            model.parts().len()
        ),
    );
    let md = model.metadata();
    if md.get("depthprune.version").is_none() {
        return Err(Error::corrupt(
            out,
            "no `depthprune.*` metadata: this file was not written by `depthprune prune`",
        ));
    }
    let kept = layer_list(md, "depthprune.kept_layers");
    let removed = layer_list(md, "depthprune.removed_layers");
    let before = md.get("depthprune.layers_before").and_then(|v| v.as_u64());
    let after = md.get("depthprune.layers_after").and_then(|v| v.as_u64());
    let (Some(kept), Some(removed), Some(before), Some(after)) = (kept, removed, before, after)
    else {
        report.push(
            "provenance",
            false,
            "`depthprune.kept_layers`, `removed_layers`, `layers_before` or `layers_after` is missing or mistyped",
        );
        return Ok(report);
    };
    let mut all: Vec<usize> = kept.iter().chain(&removed).copied().collect();
    all.sort_unstable();
    let partition = all.iter().copied().eq(0..before as usize)
        && kept.windows(2).all(|w| w[0] < w[1])
        && kept.len() as u64 == after;
    report.push(
        "provenance",
        partition,
        format!(
            "{} kept + {} removed of {before} layers, layers_after {after}",
            kept.len(),
            removed.len()
        ),
    );
    let blocks = model.block_count();
    let blocks_ok = matches!(blocks, Ok(b) if b as u64 == after);
    report.push(
        "layer count",
        blocks_ok,
        match blocks {
            Ok(b) => format!("block count {b}, depthprune.layers_after says {after}"),
            Err(e) => e.to_string(),
        },
    );
    let mut stray = Vec::new();
    for t in model.tensors() {
        if let Some(l) = crate::arch::naming::gguf_layer(t.name()) {
            if l.layer as u64 >= after {
                stray.push(t.name().to_string());
            }
        }
    }
    report.push(
        "layer tensors",
        stray.is_empty(),
        if stray.is_empty() {
            format!("every `blk.N.*` tensor is below layer {after}")
        } else {
            format!("past the last layer: {}", stray.join(", "))
        },
    );
    if let Some(src) = source {
        if partition {
            compare_gguf_with_source(&model, &kept, removed.len(), src, &mut report)?;
        }
    }
    Ok(report)
}

fn compare_gguf_with_source(
    out: &super::gguf::GgufModel,
    kept: &[usize],
    removed: usize,
    src_path: &Path,
    report: &mut VerifyReport,
) -> Result<()> {
    use crate::arch::naming::gguf_layer;
    let src = super::gguf::GgufModel::open(src_path)?;
    let src_layers = src.block_count()?;
    if src_layers != kept.len() + removed {
        report.push(
            format!("source `{}`", src_path.display()),
            false,
            format!(
                "source has {src_layers} layers, depthprune.layers_before says {}",
                kept.len() + removed
            ),
        );
        return Ok(());
    }
    let by_name: HashMap<&str, &super::gguf::TensorInfo> =
        src.tensors().iter().map(|t| (t.name(), t)).collect();
    let mut expected: std::collections::HashSet<String> = src
        .tensors()
        .iter()
        .filter_map(|t| match gguf_layer(t.name()) {
            Some(l) => kept
                .iter()
                .position(|&k| k == l.layer)
                .map(|new| l.renumbered(new)),
            None => Some(t.name().to_string()),
        })
        .collect();
    let mut files: HashMap<PathBuf, File> = HashMap::new();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let mut same = 0usize;
    let mut bad = Vec::new();
    for t in out.tensors() {
        expected.remove(t.name());
        let src_name = match gguf_layer(t.name()) {
            Some(l) => match kept.get(l.layer) {
                Some(&old) => l.renumbered(old),
                None => {
                    bad.push(format!("`{}`: layer {} was not kept", t.name(), l.layer));
                    continue;
                }
            },
            None => t.name().to_string(),
        };
        let Some(st) = by_name.get(src_name.as_str()) else {
            bad.push(format!("`{}`: source has no `{src_name}`", t.name()));
            continue;
        };
        if st.ggml_type() != t.ggml_type() || st.dims() != t.dims() {
            bad.push(format!(
                "`{}` is {} {:?}, source `{src_name}` is {} {:?}",
                t.name(),
                t.ggml_type().name(),
                t.dims(),
                st.ggml_type().name(),
                st.dims()
            ));
            continue;
        }
        let pa = &out.parts()[t.part()].path;
        let mut fa = take_file(&mut files, pa)?;
        read_range(&mut fa, pa, t.file_offset(), t.n_bytes(), &mut a)?;
        files.insert(pa.clone(), fa);
        let pb = &src.parts()[st.part()].path;
        let mut fb = take_file(&mut files, pb)?;
        read_range(&mut fb, pb, st.file_offset(), st.n_bytes(), &mut b)?;
        files.insert(pb.clone(), fb);
        if a == b {
            same += 1;
        } else {
            bad.push(format!("`{}` differs from source `{src_name}`", t.name()));
        }
    }
    let mut missing: Vec<String> = expected.into_iter().collect();
    missing.sort();
    bad.extend(
        missing
            .iter()
            .map(|m| format!("`{m}` (from a kept layer or outside the layers) is missing")),
    );
    report.push_source_check(
        src_path,
        &bad,
        format!("{same} byte-identical under the old→new layer mapping"),
    );
    Ok(())
}
