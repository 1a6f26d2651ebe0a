//! The checks a heal passes before it writes anything (issue 25). The dense model of
//! `heal PRUNED --from DENSE` must be able to be PRUNED's origin, since the heal records DENSE's
//! hashes as the origin: a DENSE of another architecture, or one whose tensors could not have
//! produced PRUNED's, is refused before anything is fitted. Every tensor the prune kept must
//! exist in DENSE under its old layer number, with the same shape; the layer counts are checked
//! by the caller. And what the fit produced must be numbers ([`ensure_finite_healing`]).

use crate::arch::naming::LayerName;
use crate::checkpoint::gguf::GgufModel;
use crate::checkpoint::hf::HfCheckpoint;
use crate::error::{Error, Result};
use crate::eval::ensure_finite;
use crate::heal::Healing;
use std::collections::BTreeMap;
use std::path::Path;

/// A checkpoint's tensors as the check sees them: name and shape.
pub(super) struct Tensors<'a> {
    pub path: &'a Path,
    /// `model_type` (HF) or `general.architecture` (GGUF).
    pub arch: &'a str,
    pub shapes: Vec<(&'a str, Vec<u64>)>,
}

impl<'a> Tensors<'a> {
    pub fn of_gguf(m: &'a GgufModel) -> Result<Self> {
        Ok(Tensors {
            path: m.path(),
            arch: m.architecture()?,
            shapes: m
                .tensors()
                .iter()
                .map(|t| (t.name(), t.dims().to_vec()))
                .collect(),
        })
    }

    pub fn of_hf(c: &'a HfCheckpoint) -> Self {
        Tensors {
            path: &c.dir,
            arch: &c.arch.model_type,
            shapes: c
                .tensors()
                .map(|(_, t)| (t.name.as_str(), t.shape.clone()))
                .collect(),
        }
    }
}

/// Refuses a `dense` that cannot be where `pruned` came from: another architecture, a tensor
/// of `pruned` that `dense` lacks (renumbered through `kept`, the dense layer of each pruned
/// layer), or a shape that differs. `layer` splits a name around its layer number.
pub(super) fn check_origin(
    pruned: &Tensors,
    dense: &Tensors,
    kept: &[usize],
    layer: fn(&str) -> Option<LayerName<'_>>,
) -> Result<()> {
    let refuse = |why: String| {
        Err(Error::Invalid(format!(
            "`{}` cannot have been pruned from `{}`: {why}; heal from the model it was pruned from",
            pruned.path.display(),
            dense.path.display()
        )))
    };
    if pruned.arch != dense.arch {
        return refuse(format!(
            "it is a `{}` model and the dense one is `{}`",
            pruned.arch, dense.arch
        ));
    }
    let dense_shapes: std::collections::HashMap<&str, &[u64]> = dense
        .shapes
        .iter()
        .map(|(n, s)| (*n, s.as_slice()))
        .collect();
    for (name, shape) in &pruned.shapes {
        let origin = match layer(name) {
            Some(l) => match kept.get(l.layer) {
                Some(&d) => l.renumbered(d),
                None => {
                    return refuse(format!(
                        "its tensor `{name}` is in layer {} but it keeps {} layers",
                        l.layer,
                        kept.len()
                    ))
                }
            },
            None => name.to_string(),
        };
        match dense_shapes.get(origin.as_str()) {
            None => return refuse(format!("the dense model has no tensor `{origin}`")),
            Some(s) if *s != shape.as_slice() => {
                return refuse(format!(
                    "tensor `{origin}` is {shape:?} in the prune and {s:?} in the dense model"
                ))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Refuses a healing whose figures (residuals, ridge weights, validation and distillation KLs)
/// or folded weights are not finite, through the same check as every other result.
pub(super) fn ensure_finite_healing(h: &Healing, dense: &Path) -> Result<()> {
    #[derive(serde::Serialize)]
    struct Figures<'a> {
        fit: BTreeMap<String, f64>,
        distillation: Option<&'a crate::heal::kd::Distillation>,
    }
    let mut fit = BTreeMap::new();
    for b in h.sites() {
        let site = if b.range.is_empty() {
            format!("layer {}", b.fold_layer)
        } else {
            format!("block {}..{}", b.range.start, b.range.end)
        };
        let mut put = |k: &str, v: f64| fit.insert(format!("{site} {k}"), v);
        put("alpha", b.alpha);
        put("relative_residual", b.relative_residual);
        put("relative_residual_identity", b.relative_residual_identity);
        if let Some(v) = &b.validation {
            put("unhealed_kl", v.unhealed_kl);
            for c in &v.candidates {
                let o = c.objective.name();
                put(&format!("{o} alpha"), c.alpha);
                put(&format!("{o} train_residual"), c.train_residual);
                put(&format!("{o} validation_residual"), c.validation_residual);
                put(&format!("{o} validation_kl"), c.validation_kl);
            }
        }
    }
    let figures = Figures {
        fit,
        distillation: h.distillation.as_ref(),
    };
    ensure_finite(&figures, "the healing fit", dense).map_err(|e| match &h.distillation {
        Some(d) => Error::Invalid(format!(
            "{e}\nhint: distillation ran at `lr` {}; try a smaller one",
            d.lr
        )),
        None => e,
    })?;
    for (name, w) in &h.tensors {
        if let Some(v) = w.iter().find(|v| !v.is_finite()) {
            return Err(Error::Invalid(format!(
                "the healing fit on `{}` is not finite: the folded `{name}` holds {v}; the \
                 calibration activations or the learning rate give degenerate numbers",
                dense.display()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::naming::gguf_layer;

    fn t<'a>(path: &'a str, arch: &'a str, shapes: &[(&'a str, &[u64])]) -> Tensors<'a> {
        Tensors {
            path: Path::new(path),
            arch,
            shapes: shapes.iter().map(|(n, s)| (*n, s.to_vec())).collect(),
        }
    }

    fn dense() -> Tensors<'static> {
        t(
            "d.gguf",
            "llama",
            &[
                ("token_embd.weight", &[8, 64]),
                ("blk.0.attn_q.weight", &[8, 8]),
                ("blk.1.attn_q.weight", &[8, 8]),
                ("blk.2.attn_q.weight", &[8, 8]),
            ],
        )
    }

    #[test]
    fn a_prune_of_the_dense_model_passes() {
        let p = t(
            "p.gguf",
            "llama",
            &[
                ("token_embd.weight", &[8, 64]),
                ("blk.0.attn_q.weight", &[8, 8]),
                ("blk.1.attn_q.weight", &[8, 8]),
            ],
        );
        check_origin(&p, &dense(), &[0, 2], gguf_layer).unwrap();
    }

    #[test]
    fn another_architecture_shape_or_tensor_is_refused() {
        let e = |p: Tensors| {
            check_origin(&p, &dense(), &[0, 2], gguf_layer)
                .unwrap_err()
                .to_string()
        };
        let s = e(t("p.gguf", "qwen2", &[("token_embd.weight", &[8, 64])]));
        assert!(
            s.contains("`qwen2` model and the dense one is `llama`"),
            "{s}"
        );
        let s = e(t("p.gguf", "llama", &[("token_embd.weight", &[16, 64])]));
        assert!(s.contains("`token_embd.weight` is [16, 64]"), "{s}");
        let s = e(t("p.gguf", "llama", &[("blk.1.attn_k.weight", &[8, 8])]));
        assert!(s.contains("no tensor `blk.2.attn_k.weight`"), "{s}");
        let s = e(t("p.gguf", "llama", &[("blk.2.attn_q.weight", &[8, 8])]));
        assert!(s.contains("keeps 2 layers"), "{s}");
        assert!(
            s.starts_with("`p.gguf` cannot have been pruned from `d.gguf`"),
            "{s}"
        );
    }
}
