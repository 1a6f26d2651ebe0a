//! Pruning an HF folder. One sequential pass over each source shard: every byte is read once and
//! hashed (for provenance); bytes of kept tensors go straight to the output shard, converted only
//! when `--dtype` asks, and are hashed as written. Memory stays at one chunk buffer whatever the
//! model size. Output goes to a temporary sibling folder that is renamed into place at the end.

use super::atomic::{AtomicOutput, Overwrite};
use super::card::{self, CardInfo};
use super::config_surgery::prune_config;
use super::hashing::HashWorker;
use super::hf::{self, HfCheckpoint, CONFIG_FILE, INDEX_FILE, SIDE_FILES};
use super::provenance::{
    hash_file, FileHash, HubSource, ParamSummary, Provenance, Source, PROVENANCE_FILE,
};
use super::safetensors::{encode_header, Dtype, OutTensor, TensorInfo};
use super::shards::{convert, count_nonfinite, ShardWriter};
use crate::arch::naming::hf_layer;
use crate::arch::params::reduction_pct;
use crate::error::{Error, IoContext, Result};
use crate::progress::Progress;
use crate::select::Removal;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Bytes read per step.
const CHUNK: usize = 4 << 20;

/// HF's default shard cap.
pub const DEFAULT_MAX_SHARD: u64 = 5_000_000_000;

/// How to write the pruned checkpoint.
#[derive(Debug, Clone)]
pub struct PruneOptions {
    /// Convert floating-point tensors to this dtype (F32, F16 or BF16).
    pub dtype: Option<Dtype>,
    pub max_shard_size: u64,
    pub overwrite: Overwrite,
    /// The command line, recorded in the card and `pruning.json`.
    pub command: Vec<String>,
    /// How the layers were chosen, recorded in `pruning.json`.
    pub method: Value,
    /// One sentence for the card.
    pub how_chosen: String,
    /// The card's `base_model`, overriding [`base_model_name`] (the hub ID a model came from).
    pub base_model: Option<String>,
    /// The hub repo and commit the source came from, recorded in `pruning.json`.
    pub hub: Option<HubSource>,
    /// Tensors to write in place of the source's, by source name, as F32 (healing, issue 6).
    /// Each must have the source tensor's element count.
    pub replace: BTreeMap<String, Vec<f32>>,
    /// The `healing` entry of `pruning.json`, with a sentence for the card.
    pub healing: Option<(Value, String)>,
}

/// What a prune wrote.
#[derive(Debug, Clone)]
pub struct PruneResult {
    pub out: PathBuf,
    pub provenance: Provenance,
    pub warnings: Vec<String>,
}

/// One output tensor and where its bytes come from.
struct Planned<'a> {
    src: &'a TensorInfo,
    out: OutTensor,
    src_dtype: Dtype,
}

/// The name under which a model is known: its hub ID if the config records one, else the folder.
pub fn base_model_name(ckpt: &HfCheckpoint) -> String {
    if let Some(id) = ckpt.config.get("_name_or_path").and_then(Value::as_str) {
        let looks_like_id =
            id.split('/').count() == 2 && !id.starts_with('.') && !id.starts_with('/');
        if looks_like_id {
            return id.to_string();
        }
    }
    let dir = std::fs::canonicalize(&ckpt.dir).unwrap_or_else(|_| ckpt.dir.clone());
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into())
}

fn dtype_config_name(d: Dtype) -> &'static str {
    match d {
        Dtype::F32 => "float32",
        Dtype::F16 => "float16",
        _ => "bfloat16",
    }
}

/// Prunes `ckpt` into `out`: the kept tensors streamed shard by shard (converted or replaced
/// where asked), then the index, the config after surgery, the side files, the model card and
/// `pruning.json`, all in a temporary folder renamed into place at the end.
pub fn prune_hf(
    ckpt: &HfCheckpoint,
    removal: &Removal,
    out: &Path,
    opts: &PruneOptions,
    progress: &dyn Progress,
) -> Result<PruneResult> {
    let planned = plan_checked(ckpt, removal, opts)?;
    let shard_of = assign_shards(&planned, opts.max_shard_size);
    let n_out = shard_of.last().map_or(1, |s| s + 1);
    let shard_names = hf::shard_names(n_out);
    let output = AtomicOutput::dir(out, opts.overwrite)?;
    let headers = shard_headers(ckpt, &planned, &shard_of, n_out);
    let mut writer = ShardWriter::new(&output, &shard_names, &headers);
    let (mut source_files, nonfinite) =
        copy_tensors(ckpt, &planned, &shard_of, &mut writer, opts, progress)?;
    let mut output_files = writer.finish()?;
    progress.finish();
    let surgery = write_side_files(
        ckpt,
        removal,
        opts,
        &output,
        (&planned, &shard_of, &shard_names),
        (&mut source_files, &mut output_files),
    )?;
    let mut provenance = provenance(ckpt, removal, opts, source_files, &surgery.changes);
    output_files.push(write_card(ckpt, opts, &output, &provenance)?);
    provenance.output = output_files;
    write_json(
        &output.join(PROVENANCE_FILE),
        &serde_json::to_value(&provenance).map_err(|e| Error::Invalid(e.to_string()))?,
    )?;
    let out_path = output.commit()?;
    let mut warnings = surgery.warnings;
    warnings.extend(nonfinite_warning(&nonfinite));
    Ok(PruneResult {
        out: out_path,
        provenance,
        warnings,
    })
}

/// The output tensors after checking the request: a removal for this model, a float dtype,
/// and replacements that fit tensors the prune keeps (they are written as F32).
fn plan_checked<'a>(
    ckpt: &'a HfCheckpoint,
    removal: &Removal,
    opts: &PruneOptions,
) -> Result<Vec<Planned<'a>>> {
    if removal.n_layers() != ckpt.arch.num_hidden_layers {
        return Err(Error::Invalid(format!(
            "the removal plan is for {} layers but the model has {}",
            removal.n_layers(),
            ckpt.arch.num_hidden_layers
        )));
    }
    if let Some(d) = opts.dtype {
        if !d.is_convertible_float() {
            return Err(Error::Unsupported(format!(
                "`dtype` must be f32, f16 or bf16, not {d}"
            )));
        }
    }
    let mut planned = plan_tensors(ckpt, removal, opts.dtype);
    for p in planned.iter_mut() {
        if let Some(v) = opts.replace.get(&p.src.name) {
            if v.len() as u64 != p.src.numel() {
                return Err(Error::Invalid(format!(
                    "replacement for `{}` has {} values, the tensor {}",
                    p.src.name,
                    v.len(),
                    p.src.numel()
                )));
            }
            p.out.dtype = Dtype::F32;
            p.out.len = p.src.numel() * 4;
        }
    }
    if let Some(name) = opts
        .replace
        .keys()
        .find(|n| !planned.iter().any(|p| &p.src.name == *n))
    {
        return Err(Error::Invalid(format!(
            "cannot replace `{name}`: the pruned checkpoint does not keep it"
        )));
    }
    Ok(planned)
}

/// Each output shard's header, with the source's `__metadata__` (and `format: pt`).
fn shard_headers(
    ckpt: &HfCheckpoint,
    planned: &[Planned],
    shard_of: &[usize],
    n_out: usize,
) -> Vec<Vec<u8>> {
    let mut st_meta = ckpt
        .shards
        .first()
        .map(|s| s.metadata.clone())
        .unwrap_or_default();
    st_meta.entry("format").or_insert_with(|| Value::from("pt"));
    (0..n_out)
        .map(|k| {
            let ts: Vec<OutTensor> = planned
                .iter()
                .zip(shard_of)
                .filter(|(_, &s)| s == k)
                .map(|(p, _)| p.out.clone())
                .collect();
            encode_header(&ts, &st_meta)
        })
        .collect()
}

/// Streams every source shard once: the kept tensors go to `writer` (as stored, converted, or
/// replaced), every byte is hashed for provenance, and NaN/Inf values are counted per tensor.
fn copy_tensors(
    ckpt: &HfCheckpoint,
    planned: &[Planned],
    shard_of: &[usize],
    writer: &mut ShardWriter,
    opts: &PruneOptions,
    progress: &dyn Progress,
) -> Result<(Vec<FileHash>, BTreeMap<String, u64>)> {
    let total: u64 = ckpt.weight_bytes();
    progress.start_bytes("pruning", total);
    let mut by_name: HashMap<&str, usize> = HashMap::new();
    for (i, p) in planned.iter().enumerate() {
        by_name.insert(p.src.name.as_str(), i);
    }
    let src_hasher = HashWorker::spawn();
    let mut src_names = Vec::new();
    let mut conv = Vec::new();
    let mut nonfinite: std::collections::BTreeMap<String, u64> = Default::default();
    for shard in &ckpt.shards {
        let mut f = File::open(&shard.path).at(&shard.path)?;
        let mut header = vec![0u8; shard.data_start as usize];
        f.read_exact(&mut header).at(&shard.path)?;
        src_hasher.update(&Arc::new(header), 0..shard.data_start as usize);
        progress.advance(shard.data_start);
        for t in &shard.tensors {
            let dest = by_name.get(t.name.as_str()).copied();
            if let Some(i) = dest {
                writer.enter(shard_of[i])?;
            }
            let replacement = opts.replace.get(&t.name);
            if let (Some(v), Some(_)) = (replacement, dest) {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                writer.write(&Arc::new(bytes))?;
            }
            let mut remaining = t.len;
            while remaining > 0 {
                let n = remaining.min(CHUNK as u64) as usize;
                let mut buf = vec![0u8; n];
                f.read_exact(&mut buf).map_err(|e| {
                    Error::corrupt(
                        &shard.path,
                        format!("read failed inside tensor `{}`: {e}", t.name),
                    )
                })?;
                let bad = count_nonfinite(&buf, t.dtype);
                if bad > 0 {
                    *nonfinite.entry(t.name.clone()).or_insert(0) += bad;
                }
                let buf = Arc::new(buf);
                src_hasher.update(&buf, 0..n);
                if let (Some(i), None) = (dest, replacement) {
                    let p = &planned[i];
                    if p.out.dtype == p.src_dtype {
                        writer.write(&buf)?;
                    } else {
                        convert(&buf, p.src_dtype, p.out.dtype, &mut conv);
                        writer.write(&Arc::new(std::mem::take(&mut conv)))?;
                    }
                }
                remaining -= n as u64;
                progress.advance(n as u64);
            }
        }
        src_hasher.end_file();
        src_names.push((file_name(&shard.path), shard.file_len));
    }
    let source_files: Vec<FileHash> = src_names
        .into_iter()
        .zip(src_hasher.finish())
        .map(|((name, bytes), sha256)| FileHash {
            name,
            bytes,
            sha256,
        })
        .collect();
    Ok((source_files, nonfinite))
}

/// The index (when sharded), `config.json` after surgery and the side files copied unchanged,
/// each hashed into `files`; returns the surgery.
fn write_side_files(
    ckpt: &HfCheckpoint,
    removal: &Removal,
    opts: &PruneOptions,
    output: &AtomicOutput,
    (planned, shard_of, shard_names): (&[Planned], &[usize], &[String]),
    (source_files, output_files): (&mut Vec<FileHash>, &mut Vec<FileHash>),
) -> Result<super::config_surgery::ConfigSurgery> {
    let n_out = shard_names.len();
    if n_out > 1 {
        let index = build_index(planned, shard_of, shard_names);
        write_json(&output.join(INDEX_FILE), &index)?;
        output_files.push(hash_file(&output.join(INDEX_FILE))?);
    }

    // Config.
    let surgery = prune_config(
        &ckpt.config,
        &ckpt.arch,
        removal,
        opts.dtype.map(dtype_config_name),
    );
    write_json(&output.join(CONFIG_FILE), &surgery.config)?;
    output_files.push(hash_file(&output.join(CONFIG_FILE))?);
    source_files.push(hash_file(&ckpt.dir.join(CONFIG_FILE))?);
    if ckpt.index.is_some() {
        source_files.push(hash_file(&ckpt.dir.join(INDEX_FILE))?);
    }

    // Side files, copied unchanged.
    for name in SIDE_FILES {
        let src = ckpt.dir.join(name);
        if src.is_file() {
            let dst = output.join(name);
            std::fs::copy(&src, &dst).at(&dst)?;
            output_files.push(hash_file(&dst)?);
        }
    }

    Ok(surgery)
}

/// `pruning.json`'s record, without the output files (they are hashed last).
fn provenance(
    ckpt: &HfCheckpoint,
    removal: &Removal,
    opts: &PruneOptions,
    source_files: Vec<FileHash>,
    config_changes: &[String],
) -> Provenance {
    let before = ckpt.param_counts();
    let after = before.after(removal);
    Provenance {
        tool: "depthprune".into(),
        version: crate::VERSION.into(),
        command: opts.command.clone(),
        source: Source {
            path: ckpt.dir.display().to_string(),
            format: "hf-safetensors".into(),
            hub: opts.hub.clone(),
            files: source_files,
        },
        layers: removal.summary(),
        params: ParamSummary {
            before: before.total(),
            after: after.total(),
            reduction_pct: reduction_pct(before.total(), after.total()),
            layer_reduction_pct: removal.layer_reduction_pct(),
        },
        method: opts.method.clone(),
        dtype: opts.dtype.map(|d| d.name().to_string()),
        config_changes: config_changes.to_vec(),
        healing: opts.healing.as_ref().map(|(v, _)| v.clone()),
        output: Vec::new(),
    }
}

/// Writes the model card; returns its hash.
fn write_card(
    ckpt: &HfCheckpoint,
    opts: &PruneOptions,
    output: &AtomicOutput,
    provenance: &Provenance,
) -> Result<FileHash> {
    let mut notes = Vec::new();
    if let Some(d) = opts.dtype {
        notes.push(format!(
            "Floating-point tensors were converted to {d}; all other bytes are copied unchanged."
        ));
    } else {
        notes.push(
            "Every kept tensor is byte-identical to the original, under its new layer number."
                .into(),
        );
    }
    if let Some((_, note)) = &opts.healing {
        notes.push(note.clone());
    }
    let base_model = opts
        .base_model
        .clone()
        .unwrap_or_else(|| base_model_name(ckpt));
    let info = CardInfo {
        base_model: &base_model,
        model_type: &ckpt.arch.model_type,
        library_name: "transformers",
        how_chosen: opts.how_chosen.clone(),
        notes,
    };
    let card_text = card::render(&info, provenance);
    let card_path = output.join(card::CARD_FILE);
    std::fs::write(&card_path, card_text).at(&card_path)?;
    hash_file(&card_path)
}

/// A warning when the source holds NaN or Inf values (copied as they are).
fn nonfinite_warning(nonfinite: &BTreeMap<String, u64>) -> Option<String> {
    if nonfinite.is_empty() {
        return None;
    }
    let total: u64 = nonfinite.values().sum();
    let names: Vec<&str> = nonfinite.keys().take(3).map(String::as_str).collect();
    Some(format!(
        "the source holds {total} NaN/Inf values in {} tensors (first: {}); they were copied as they are",
        nonfinite.len(),
        names.join(", ")
    ))
}

/// The output tensors, in source order, with removed layers dropped and kept ones renumbered.
fn plan_tensors<'a>(
    ckpt: &'a HfCheckpoint,
    removal: &Removal,
    dtype: Option<Dtype>,
) -> Vec<Planned<'a>> {
    let mut out = Vec::new();
    for (_, t) in ckpt.tensors() {
        let name = match hf_layer(&t.name) {
            Some(l) => match removal.new_index(l.layer) {
                Some(new) => l.renumbered(new),
                None => continue,
            },
            None => t.name.clone(),
        };
        let out_dtype = match dtype {
            Some(d) if t.dtype.is_convertible_float() => d,
            _ => t.dtype,
        };
        let len = t.numel() * out_dtype.size() as u64;
        out.push(Planned {
            src: t,
            out: OutTensor {
                name,
                dtype: out_dtype,
                shape: t.shape.clone(),
                len,
            },
            src_dtype: t.dtype,
        });
    }
    out
}

/// Greedy shard assignment in tensor order: a new shard starts when the next tensor would push
/// the current one past `max`. A tensor larger than `max` gets a shard of its own.
fn assign_shards(planned: &[Planned], max: u64) -> Vec<usize> {
    let mut shard = 0;
    let mut size = 0u64;
    planned
        .iter()
        .map(|p| {
            if size > 0 && size + p.out.len > max {
                shard += 1;
                size = 0;
            }
            size += p.out.len;
            shard
        })
        .collect()
}

fn build_index(planned: &[Planned], shard_of: &[usize], names: &[String]) -> Value {
    let total_size: u64 = planned.iter().map(|p| p.out.len).sum();
    let total_parameters: u64 = planned.iter().map(|p| p.src.numel()).sum();
    let mut meta = Map::new();
    meta.insert("total_parameters".into(), Value::from(total_parameters));
    meta.insert("total_size".into(), Value::from(total_size));
    let mut map = Map::new();
    let mut entries: Vec<(&str, &str)> = planned
        .iter()
        .zip(shard_of)
        .map(|(p, &s)| (p.out.name.as_str(), names[s].as_str()))
        .collect();
    entries.sort();
    for (n, f) in entries {
        map.insert(n.into(), Value::from(f));
    }
    let mut idx = Map::new();
    idx.insert("metadata".into(), Value::Object(meta));
    idx.insert("weight_map".into(), Value::Object(map));
    Value::Object(idx)
}

/// Writes JSON with two-space indentation and a final newline, as HF tools do.
pub fn write_json(path: &Path, value: &Value) -> Result<()> {
    let mut text =
        serde_json::to_string_pretty(value).map_err(|e| Error::Invalid(e.to_string()))?;
    text.push('\n');
    std::fs::write(path, text).at(path)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_nonfinite_values() {
        let xs = [1.0f32, f32::NAN, f32::INFINITY, -f32::INFINITY, 0.0];
        let b: Vec<u8> = xs.iter().flat_map(|x| x.to_le_bytes()).collect();
        assert_eq!(count_nonfinite(&b, Dtype::F32), 3);
        let h: Vec<u8> = xs
            .iter()
            .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
            .collect();
        assert_eq!(count_nonfinite(&h, Dtype::BF16), 3);
        let h: Vec<u8> = xs
            .iter()
            .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
            .collect();
        assert_eq!(count_nonfinite(&h, Dtype::F16), 3);
    }

    #[test]
    fn converts_between_float_types() {
        let xs = [1.5f32, -2.0, 0.25];
        let src: Vec<u8> = xs.iter().flat_map(|x| x.to_le_bytes()).collect();
        let mut bf = Vec::new();
        convert(&src, Dtype::F32, Dtype::BF16, &mut bf);
        let mut back = Vec::new();
        convert(&bf, Dtype::BF16, Dtype::F32, &mut back);
        assert_eq!(back, src);
    }
}
