//! Writing a healed, pruned GGUF: the layers are dropped and renumbered as by
//! [`crate::checkpoint::gguf::prune()`], every tensor is copied byte for byte except the healed
//! weights (the `ffn_down`s that took a map; for Gemma and OLMo 2 also the `post_ffw_norm` that
//! takes the scale, Gemma's stored as `1 + w`, which [`GgufWeights::to_gguf_layout`] restores;
//! and, after low-rank distillation, every linear weight that took an update), which are written
//! from the fitted f32 values as F32 or F16, or requantized to their source type
//! ([`GgufHealOptions::keep_types`]), and the fit is recorded under `depthprune.healing.*` with a
//! note (`depthprune.note`) naming the tensors written that way.
//!
//! Layout: a healed weight comes back from [`super::heal`] in HF terms, `(hidden, ffn)` row-major
//! for `down_proj`. GGUF lists dims fastest first, so the same tensor is `ffn_down` with
//! `ne = [n_ff, n_embd]` and the very same element order; only llama's Q/K rows would need
//! permuting, which [`GgufWeights::to_gguf_layout`] does should such a tensor ever be replaced.
//! A MoE layer's healed experts come back one HF tensor per expert; they are concatenated in
//! expert order into their stacked `ffn_down_exps`, whose outermost dimension is the expert.

use super::Healing;
use crate::checkpoint::atomic::Overwrite;
use crate::checkpoint::gguf::{
    prune_with, Array, Edits, GgmlType, GgufModel, PruneOptions, PruneReport, Replacement, Value,
};
use crate::error::{Error, Result};
use crate::model::gguf::GgufWeights;
use crate::progress::Progress;
use crate::select::Removal;
use std::path::Path;

/// How to write a healed GGUF.
#[derive(Debug, Clone)]
pub struct GgufHealOptions {
    pub overwrite: Overwrite,
    /// Split the output into parts of at most this many bytes.
    pub split_max_bytes: Option<u64>,
    /// The type of the healed tensors: F32 or F16 (with `keep_types`, only where the source type
    /// cannot be written).
    pub ty: GgmlType,
    /// Write each healed tensor back in its source type when depthprune can quantize to it (F32,
    /// F16, BF16, the legacy Q4_0 … Q8_0 and the k-quants Q2_K … Q6_K), so a healed Q4_K_M stays
    /// Q4_K_M-sized; the others (Q8_K, the i-quants) take `ty`. The requantization costs some
    /// accuracy that the in-memory heal did not see (issue 23).
    pub keep_types: bool,
    /// More `depthprune.healing.*` entries (the calibration file, say), set after the fit's own.
    pub metadata: Vec<(String, Value)>,
}

/// Encodes f32 values as F32 or F16 bytes.
pub fn encode_float(values: &[f32], ty: GgmlType) -> Result<Vec<u8>> {
    use crate::checkpoint::floats::{encode, Float};
    match ty {
        GgmlType::F32 => Ok(encode(values, Float::F32)),
        GgmlType::F16 => Ok(encode(values, Float::F16)),
        other => Err(Error::Unsupported(format!(
            "healed tensors are written as F32 or F16, not {}",
            other.name()
        ))),
    }
}

/// The type a healed tensor of source type `src` is written in.
fn target_type(src: GgmlType, opts: &GgufHealOptions) -> GgmlType {
    let quantizable = crate::quant::QuantFormat::from_type_id(src.id())
        .map(|f| f.can_quantize())
        .unwrap_or(false);
    if opts.keep_types && quantizable {
        src
    } else {
        opts.ty
    }
}

/// Encodes f32 values (in GGUF element order) as `ty`: a float type, or a quantized one
/// depthprune can write ([`crate::quant::quantize`]).
pub fn encode(values: &[f32], ty: GgmlType) -> Result<Vec<u8>> {
    if matches!(ty, GgmlType::F32 | GgmlType::F16) {
        return encode_float(values, ty);
    }
    let format = crate::quant::QuantFormat::from_type_id(ty.id())?;
    let mut out = Vec::new();
    crate::quant::quantize(format, values, &mut out)?;
    Ok(out)
}

/// The GGUF name, in the pruned file, of source tensor `name`.
fn renamed(removal: &Removal, name: &str) -> String {
    removal.renamed_gguf(name)
}

/// The note recorded in `depthprune.note`: what was healed and which tensors were written from
/// f32 values rather than copied. `tensors` are `(new name, source type, written type)`.
pub fn healing_note(healing: &Healing, tensors: &[(String, GgmlType, GgmlType)]) -> String {
    let list = tensors
        .iter()
        .map(|(n, src, ty)| {
            if src == ty && src.is_quantized() {
                format!("`{n}` (requantized to {})", ty.name())
            } else if src.is_quantized() {
                format!(
                    "`{n}` (dequantized from {}) stored as {}",
                    src.name(),
                    ty.name()
                )
            } else {
                format!("`{n}` (was {}) stored as {}", src.name(), ty.name())
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "{} ({}): {} (with any low-rank updates merged into the kept layers' weights), so these \
         tensors differ from the original: {list}. All other tensors are byte-identical to the source.",
        healing.headline(),
        healing.summary(),
        healing.fold_phrase("ffn_down", "post_ffw_norm"),
    )
}

/// Prunes the GGUF `model` as `removal` says, writing the healed tensors of `healing` (fitted on
/// this same model) in place of the copied ones.
pub fn write_healed_gguf(
    model: &GgufModel,
    removal: &Removal,
    healing: &Healing,
    out: &Path,
    opts: &GgufHealOptions,
    progress: &dyn Progress,
) -> Result<PruneReport> {
    if !matches!(opts.ty, GgmlType::F32 | GgmlType::F16) {
        // The fallback type; `keep_types` may still write quantized ones.
        return Err(Error::Unsupported(format!(
            "healed tensors are written as F32 or F16, not {}",
            opts.ty.name()
        )));
    }
    let weights = GgufWeights::new(model)?;
    let mut edits = Edits::default();
    let mut written = Vec::new();
    let not_here = |hf: &str| {
        Error::Invalid(format!(
            "`{}`: the healed tensor `{hf}` is not in this file; heal and write the same model",
            model.path().display()
        ))
    };
    // A MoE layer's healed experts go back into their stacked `ffn_down_exps` (issue 17).
    let mut stacked: std::collections::BTreeMap<String, Vec<Option<&Vec<f32>>>> =
        Default::default();
    for (hf, values) in &healing.tensors {
        if let Some((info, e)) = weights.expert_info(hf) {
            let n = info.dims().get(2).map_or(1, |&n| n as usize);
            let slot = stacked
                .entry(info.name().to_string())
                .or_insert_with(|| vec![None; n]);
            *slot.get_mut(e).ok_or_else(|| not_here(hf))? = Some(values);
            continue;
        }
        let info = weights.info(hf).ok_or_else(|| not_here(hf))?;
        let name = info.name().to_string();
        let src_ty = info.ggml_type();
        let ty = target_type(src_ty, opts);
        let data = encode(&weights.to_gguf_layout(hf, values.clone())?, ty)?;
        written.push((renamed(removal, &name), src_ty, ty));
        edits.replace.insert(name, Replacement { ty, data });
    }
    for (name, experts) in stacked {
        let src_ty = model
            .tensors()
            .iter()
            .find(|t| t.name() == name)
            .map(|t| t.ggml_type())
            .ok_or_else(|| not_here(&name))?;
        // The experts are the outermost dimension: their HF-layout values, concatenated in
        // order, are the stacked tensor's element order.
        let mut values = Vec::new();
        for (e, v) in experts.iter().enumerate() {
            let v = v.ok_or_else(|| {
                Error::Invalid(format!(
                    "`{name}`: expert {e} was not healed with the others"
                ))
            })?;
            values.extend_from_slice(v);
        }
        let ty = target_type(src_ty, opts);
        let data = encode(&values, ty)?;
        written.push((renamed(removal, &name), src_ty, ty));
        edits.replace.insert(name, Replacement { ty, data });
    }
    let u32v = |x: usize| Value::U32(x as u32);
    let blocks = &healing.blocks;
    let p = "depthprune.healing.";
    let mut md: Vec<(String, Value)> = vec![
        (format!("{p}method"), Value::string(healing.method())),
        (
            format!("{p}prior"),
            Value::string(healing.options.prior.name()),
        ),
        (format!("{p}alpha"), Value::F64(healing.options.alphas[0])),
        (format!("{p}samples"), Value::U64(healing.samples as u64)),
        (format!("{p}holdout"), u32v(healing.options.holdout)),
        (
            format!("{p}validation_samples"),
            Value::U64(healing.validation_samples as u64),
        ),
        (
            format!("{p}block_objectives"),
            Value::Array(Array::String(
                blocks
                    .iter()
                    .map(|b| {
                        b.objective
                            .map_or("unhealed", |o| o.name())
                            .as_bytes()
                            .to_vec()
                    })
                    .collect(),
            )),
        ),
        (
            format!("{p}block_alphas"),
            Value::Array(Array::F64(blocks.iter().map(|b| b.alpha).collect())),
        ),
        (format!("{p}ctx"), u32v(healing.options.ctx)),
        (
            format!("{p}block_starts"),
            Value::Array(Array::U32(
                blocks.iter().map(|b| b.range.start as u32).collect(),
            )),
        ),
        (
            format!("{p}block_ends"),
            Value::Array(Array::U32(
                blocks.iter().map(|b| b.range.end as u32).collect(),
            )),
        ),
        (
            format!("{p}fold_layers"),
            Value::Array(Array::U32(
                blocks.iter().map(|b| b.fold_layer as u32).collect(),
            )),
        ),
        (
            format!("{p}relative_residual"),
            Value::Array(Array::F64(
                blocks.iter().map(|b| b.relative_residual).collect(),
            )),
        ),
        (
            format!("{p}relative_residual_unhealed"),
            Value::Array(Array::F64(
                blocks
                    .iter()
                    .map(|b| b.relative_residual_identity)
                    .collect(),
            )),
        ),
        (
            format!("{p}solvers"),
            Value::Array(Array::String(
                blocks
                    .iter()
                    .map(|b| format!("{:?}", b.solver).to_lowercase().into_bytes())
                    .collect(),
            )),
        ),
        (
            format!("{p}tensors"),
            Value::Array(Array::String(
                written
                    .iter()
                    .map(|(n, _, _)| n.clone().into_bytes())
                    .collect(),
            )),
        ),
        (
            format!("{p}tensor_type"),
            Value::string(if opts.keep_types {
                "source"
            } else {
                opts.ty.name()
            }),
        ),
        (
            format!("{p}maps"),
            Value::string(healing.options.maps.name()),
        ),
    ];
    if !healing.layers.is_empty() {
        md.push((
            format!("{p}healed_layer_folds"),
            Value::Array(Array::U32(
                healing
                    .layers
                    .iter()
                    .filter(|b| b.healed())
                    .map(|b| b.fold_layer as u32)
                    .collect(),
            )),
        ));
    }
    if blocks.iter().all(|b| b.validation.is_some()) && !blocks.is_empty() {
        let kl = |f: &dyn Fn(&crate::heal::HealedBlock) -> f64| {
            Value::Array(Array::F64(blocks.iter().map(f).collect()))
        };
        md.push((
            format!("{p}validation_kl_unhealed"),
            kl(&|b| b.validation.as_ref().map_or(f64::NAN, |v| v.unhealed_kl)),
        ));
        md.push((
            format!("{p}validation_kl"),
            kl(&|b| {
                let v = b.validation.as_ref();
                match b.objective {
                    Some(o) => v
                        .and_then(|v| v.candidates.iter().find(|c| c.objective == o))
                        .map_or(f64::NAN, |c| c.validation_kl),
                    None => v.map_or(f64::NAN, |v| v.unhealed_kl),
                }
            }),
        ));
    }
    if let Some(d) = &healing.distillation {
        md.extend([
            (
                format!("{p}kd_fold_layers"),
                Value::Array(Array::U32(
                    d.fold_layers.iter().map(|&l| l as u32).collect(),
                )),
            ),
            (format!("{p}kd_lr"), Value::F64(d.lr)),
            (format!("{p}kd_steps"), u32v(d.steps)),
            (format!("{p}kd_best_step"), u32v(d.best_step)),
            (format!("{p}kd_samples"), Value::U64(d.samples as u64)),
            (format!("{p}kd_validation_kl_start"), Value::F64(d.start_kl)),
            (format!("{p}kd_validation_kl"), Value::F64(d.best_kl)),
        ]);
    }
    md.extend(opts.metadata.iter().cloned());
    md.push((
        "depthprune.note".into(),
        Value::string(&healing_note(healing, &written)),
    ));
    edits.metadata = md;
    let prune_opts = PruneOptions {
        overwrite: opts.overwrite,
        split_max_bytes: opts.split_max_bytes,
    };
    crate::model::gguf_moe::check_gguf_moe(model)?;
    prune_with(model, removal, out, &prune_opts, &edits, progress)
}
