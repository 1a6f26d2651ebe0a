//! What healing produced: the folded tensors, and per fold site what was chosen and why.

use super::fit::Solver;
use super::kd::Distillation;
use super::options::{HealOptions, Maps, Objective};
use super::METHOD;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::ops::Range;

/// One candidate map of a block, as validation saw it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Candidate {
    pub objective: Objective,
    /// The relative ridge weight chosen for this objective by the held-out residual.
    pub alpha: f64,
    /// `‖M·T − Z‖ / ‖Z‖` on the fit windows, in the objective's own weighting.
    pub train_residual: f64,
    /// The same on the validation windows.
    pub validation_residual: f64,
    /// Mean next-token KL(dense ‖ healed) on the validation windows, with this map folded,
    /// the earlier blocks as chosen and the later blocks removed unhealed.
    pub validation_kl: f64,
}

/// What validation measured for one block.
#[derive(Debug, Clone)]
pub struct Validation {
    /// The KL with this block left unhealed.
    pub unhealed_kl: f64,
    /// The best map of each objective.
    pub candidates: Vec<Candidate>,
}

/// One fold site and its map (or none): a removed block, or with [`super::Maps::PerLayer`] a kept
/// layer after the first removed block (its `range` is then empty, `fold_layer + 1` twice).
#[derive(Debug, Clone)]
pub struct HealedBlock {
    /// The removed layers `[start, end)`, numbered as in the dense model.
    pub range: Range<usize>,
    /// The dense-model layer whose `down_proj` took the map (`start − 1`).
    pub fold_layer: usize,
    /// The objective of the folded map; `None` when validation left the block unhealed.
    pub objective: Option<Objective>,
    /// The ridge weight of the folded map (the first weight tried when unhealed).
    pub alpha: f64,
    /// Relative residual of the folded map on the fit windows (the unhealed one when unhealed).
    pub relative_residual: f64,
    pub relative_residual_identity: f64,
    pub solver: Solver,
    /// `None` without a hold-out.
    pub validation: Option<Validation>,
}

impl HealedBlock {
    /// Whether a map was folded for this block.
    pub fn healed(&self) -> bool {
        self.objective.is_some()
    }

    /// One line for the user: what was folded, or why nothing was.
    pub fn describe(&self) -> String {
        let r = if self.range.is_empty() {
            format!("layer {}", self.fold_layer)
        } else {
            format!("block {}..{}", self.range.start, self.range.end)
        };
        let v = self.validation.as_ref();
        match (self.objective, v) {
            (Some(o), Some(v)) => format!(
                "{r}: {} map (alpha {:e}) folded into layer {} down_proj; validation KL {:.4} (unhealed {:.4}), fit residual {:.4} (unhealed {:.4})",
                o.name(),
                self.alpha,
                self.fold_layer,
                v.candidates.iter().find(|c| c.objective == o).map_or(f64::NAN, |c| c.validation_kl),
                v.unhealed_kl,
                self.relative_residual,
                self.relative_residual_identity
            ),
            (Some(o), None) => format!(
                "{r}: {} map (alpha {:e}) folded into layer {} down_proj; fit residual {:.4} (unhealed {:.4}, {:?})",
                o.name(),
                self.alpha,
                self.fold_layer,
                self.relative_residual,
                self.relative_residual_identity,
                self.solver
            ),
            (None, Some(v)) => format!(
                "{r}: left unhealed: no map beat it on the validation windows (KL {:.4} unhealed; {})",
                v.unhealed_kl,
                v.candidates
                    .iter()
                    .map(|c| format!("{} {:.4}", c.objective.name(), c.validation_kl))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            (None, None) => format!("{r}: left unhealed"),
        }
    }
}

/// The result of healing: the new `down_proj` weights by their dense-model name, as f32.
#[derive(Debug, Clone)]
pub struct Healing {
    pub blocks: Vec<HealedBlock>,
    /// With [`super::Maps::PerLayer`]: the kept layers after the first removed block.
    pub layers: Vec<HealedBlock>,
    pub tensors: BTreeMap<String, Vec<f32>>,
    /// Calibration tokens the maps were fitted on.
    pub samples: usize,
    /// Calibration tokens held out for validation.
    pub validation_samples: usize,
    pub options: HealOptions,
    /// What map-only distillation did after the fits, when it ran ([`super::kd`]).
    pub distillation: Option<Distillation>,
}

impl Healing {
    /// The removed layers (dense-model numbers) of the healed blocks.
    pub fn removed(&self) -> Vec<usize> {
        self.blocks.iter().flat_map(|b| b.range.clone()).collect()
    }

    /// Every fold site, blocks first.
    pub fn sites(&self) -> impl Iterator<Item = &HealedBlock> {
        self.blocks.iter().chain(&self.layers)
    }

    /// A one-line summary of the method, for model cards and notes.
    pub fn summary(&self) -> String {
        let healed = self.blocks.iter().filter(|b| b.healed()).count();
        let fit = if self.post_norm() {
            "training-free rotation and scale (orthogonal Procrustes alternated with per-channel least squares)".to_string()
        } else {
            format!(
                "training-free least squares ({} prior)",
                self.options.prior.name()
            )
        };
        let mut s = format!(
            "{fit}, {healed} of {} removed blocks healed, maps fitted on {} calibration tokens",
            self.blocks.len(),
            self.samples
        );
        if self.options.maps == Maps::PerLayer {
            s.push_str(&format!(
                ", plus maps on {} of the {} kept layers after the first removed block",
                self.layers.iter().filter(|b| b.healed()).count(),
                self.layers.len()
            ));
        }
        if self.options.holdout > 0 {
            s.push_str(&format!(
                ", objective ({}) and ridge weight ({}) chosen per block on {} held-out tokens by next-token KL to the dense model",
                self.options.objectives.iter().map(|o| o.name()).collect::<Vec<_>>().join(", "),
                self.options.alphas.iter().map(|a| format!("{a:e}")).collect::<Vec<_>>().join(", "),
                self.validation_samples
            ));
        } else {
            s.push_str(&format!(
                ", {} objective, ridge weight {:e}",
                self.options.objectives[0].name(),
                self.options.alphas[0]
            ));
        }
        if let Some(d) = &self.distillation {
            if d.kept() {
                s.push_str(&format!(
                    "; then the maps at layers {:?} distilled towards the dense model's next-token distribution ({} of {} steps kept, {} tokens, held-out KL {:.4} → {:.4})",
                    d.fold_layers, d.best_step, d.steps, d.samples, d.start_kl, d.best_kl
                ));
            } else {
                s.push_str(&format!(
                    "; distillation ({} steps) did not lower the held-out KL {:.4}, so the least-squares maps were kept",
                    d.steps, d.start_kl
                ));
            }
        }
        s
    }

    /// Whether the maps are the rotation and scale of a post-norm family ([`super::postnorm`]).
    pub fn post_norm(&self) -> bool {
        self.options
            .objectives
            .iter()
            .any(|o| matches!(o, Objective::Rotation | Objective::Gain))
    }

    /// What was folded where, for the notes on a healed checkpoint; `down` and `norm` name the
    /// MLP's down projection and post-MLP norm in the checkpoint's own terms.
    pub fn fold_phrase(&self, down: &str, norm: &str) -> String {
        let distilled = self.distillation.as_ref().is_some_and(|d| d.kept());
        if self.post_norm() && distilled {
            format!("a trained linear map per fold site was folded into that layer's `{down}` (it acts before the layer's `{norm}`) and a trained per-channel scale into that `{norm}`")
        } else if self.post_norm() {
            format!("a rotation per healed block was folded into the `{down}` before it and a per-channel scale into that layer's `{norm}`")
        } else {
            format!("a linear map per healed block was folded into the `{down}` before it")
        }
    }

    /// How the note on a healed checkpoint begins.
    pub fn headline(&self) -> &'static str {
        let low_rank = self
            .distillation
            .as_ref()
            .is_some_and(|d| !d.lowrank_tensors.is_empty());
        if low_rank {
            "Healed by distillation of the maps and low-rank weight updates"
        } else if self.method() == "kd" {
            "Healed by map-only distillation"
        } else {
            "Healed without training"
        }
    }

    /// The method name recorded in `pruning.json`: `kd` when distilled maps were kept.
    pub fn method(&self) -> &'static str {
        match &self.distillation {
            Some(d) if d.kept() => "kd",
            _ => METHOD,
        }
    }

    /// The `healing` entry of `pruning.json`; `renamed` maps a dense-model tensor name to its
    /// name in the pruned checkpoint.
    pub fn provenance(&self, renamed: &dyn Fn(&str) -> String) -> Value {
        json!({
            "method": self.method(),
            "prior": self.options.prior.name(),
            "alpha": self.options.alphas[0],
            "alphas": self.options.alphas,
            "objectives": self.options.objectives.iter().map(|o| o.name()).collect::<Vec<_>>(),
            "holdout": self.options.holdout,
            "maps": self.options.maps.name(),
            "samples": self.samples,
            "validation_samples": self.validation_samples,
            "ctx": self.options.ctx,
            "blocks": self.blocks.iter().map(site_json).collect::<Vec<_>>(),
            "layers": self.layers.iter().map(site_json).collect::<Vec<_>>(),
            "tensors": self.tensors.keys().map(|k| renamed(k)).collect::<Vec<_>>(),
            "distillation": self.distillation.as_ref().map(|d| {
                let mut v = json!(d);
                if let Some(o) = v.as_object_mut() {
                    o.insert("kept".into(), d.kept().into());
                }
                v
            }),
        })
    }
}

fn site_json(b: &HealedBlock) -> Value {
    json!({
        "start": b.range.start,
        "end": b.range.end,
        "fold_layer": b.fold_layer,
        "healed": b.healed(),
        "objective": b.objective.map(Objective::name),
        "alpha": b.alpha,
        "relative_residual": b.relative_residual,
        "relative_residual_unhealed": b.relative_residual_identity,
        "solver": format!("{:?}", b.solver).to_lowercase(),
        "validation": b.validation.as_ref().map(|v| json!({
            "kl_unhealed": v.unhealed_kl,
            "candidates": v.candidates,
        })),
    })
}
