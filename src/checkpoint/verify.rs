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
                super::hf_prune::convert(&b, st.dtype, t.dtype, &mut conv);
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
    let ok = bad.is_empty();
    let mut detail = format!("{same} byte-identical, {converted} exact dtype conversions, {skipped} healed (not compared)");
    if !ok {
        detail = format!(
            "{} mismatches: {}",
            bad.len(),
            bad.iter().take(5).cloned().collect::<Vec<_>>().join("; ")
        );
    }
    report.push(
        format!("tensors against source `{}`", src_dir.display()),
        ok,
        detail,
    );
    Ok(())
}

fn take_file(files: &mut HashMap<PathBuf, File>, path: &Path) -> Result<File> {
    match files.remove(path) {
        Some(f) => Ok(f),
        None => File::open(path).at(path),
    }
}
