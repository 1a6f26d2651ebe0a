//! The sparse mixture-of-experts feed-forward block of Mixtral, Qwen2-MoE and Qwen3-MoE, as
//! transformers 5 computes it: a router `(experts, hidden)` scores each token, the softmax over
//! all experts is taken in f32, the top k are kept (renormalised over the k for Mixtral, and for
//! qwen when `norm_topk_prob` is set), and the chosen SwiGLU experts' outputs are summed with
//! those weights. Qwen2-MoE adds a shared expert scaled by `sigmoid(shared_expert_gate(x))`.
//!
//! Tokens are grouped by expert: each active expert gathers its rows, runs one product per
//! projection and scatter-adds its weighted output, so no expert runs on a token that did not
//! choose it. Experts are visited in ascending order, as transformers does, so the sums agree.
//!
//! Checkpoints store one tensor per expert (`…experts.{e}.w1.weight` for Mixtral,
//! `…experts.{e}.gate_proj.weight` for qwen); the router is `…gate.weight`.

use super::config::ModelConfig;
use super::layer::{load_in, Linear, Mlp};
use super::weights::WeightSource;
use crate::arch::ArchConfig;
use crate::checkpoint::moe_check::moe_layout;
use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor};

/// The names of every down projection in layer `layer`'s feed-forward block: the dense MLP's
/// one, or each expert's (and the shared expert's) in a sparse layer. Healing folds its map into
/// all of them, since the block's output is linear in each.
pub fn down_proj_names(arch: &ArchConfig, layer: usize) -> Vec<String> {
    let p = format!("model.layers.{layer}");
    let Some(moe) = arch.moe.as_ref().filter(|_| arch.layer_is_sparse(layer)) else {
        return vec![format!("{p}.mlp.down_proj.weight")];
    };
    let (block, [_, _, down]) = moe_layout(&arch.model_type);
    let mut names: Vec<String> = (0..moe.num_experts)
        .map(|e| format!("{p}.{block}.experts.{e}.{down}.weight"))
        .collect();
    if moe.shared_expert_intermediate_size > 0 {
        names.push(format!("{p}.{block}.shared_expert.down_proj.weight"));
    }
    names
}

/// The sparse block of one layer.
#[derive(Debug, Clone)]
pub struct SparseMoe {
    router: Linear,
    experts: Vec<Mlp>,
    /// The shared expert and its `(1, hidden)` gate (Qwen2-MoE).
    shared: Option<(Mlp, Linear)>,
    top_k: usize,
    norm_topk: bool,
}

impl SparseMoe {
    /// Loads the block under `model.layers.{layer}.`, checking every shape against the config
    /// and that the checkpoint holds exactly the configured number of experts.
    pub(crate) fn load(src: &dyn WeightSource, cfg: &ModelConfig, layer: usize) -> Result<Self> {
        let a = &cfg.arch;
        let moe = a
            .moe
            .as_ref()
            .ok_or_else(|| Error::Invalid("a sparse layer needs a MoE config".into()))?;
        let (block, names) = moe_layout(&a.model_type);
        let p = format!("model.layers.{layer}.{block}");
        let (h, n) = (a.hidden_size, moe.num_experts);
        let extra = format!("{p}.experts.{n}.{}.weight", names[2]);
        if src.contains(&extra) {
            return Err(Error::corrupt(
                src.path(),
                format!("layer {layer} has more experts than config.json's {n} (found `{extra}`)"),
            ));
        }
        let router = Linear::from_weight(load_in(
            src,
            &format!("{p}.gate.weight"),
            &[n, h],
            cfg.compute,
        )?);
        let experts = (0..n)
            .map(|e| {
                Mlp::load_named(
                    src,
                    cfg,
                    &format!("{p}.experts.{e}"),
                    names,
                    moe.moe_intermediate_size,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let shared = if moe.shared_expert_intermediate_size > 0 {
            let mlp = Mlp::load_named(
                src,
                cfg,
                &format!("{p}.shared_expert"),
                ["gate_proj", "up_proj", "down_proj"],
                moe.shared_expert_intermediate_size,
            )?;
            let gate = load_in(
                src,
                &format!("{p}.shared_expert_gate.weight"),
                &[1, h],
                cfg.compute,
            )?;
            Some((mlp, Linear::from_weight(gate)))
        } else {
            None
        };
        Ok(SparseMoe {
            router,
            experts,
            shared,
            top_k: moe.num_experts_per_tok,
            norm_topk: cfg.norm_topk_prob,
        })
    }

    /// `(..., hidden)` → `(..., hidden)`.
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let dims = xs.dims().to_vec();
        let h = *dims
            .last()
            .ok_or_else(|| Error::Compute("MoE input has no dimensions".into()))?;
        let n = xs.elem_count() / h.max(1);
        let flat = xs.contiguous()?.reshape((n, h))?;
        let logits = self.router.forward(&flat)?.to_dtype(DType::F32)?;
        let logits: Vec<f32> = logits.flatten_all()?.to_vec1()?;
        let routes = route(&logits, self.experts.len(), self.top_k, self.norm_topk)?;
        let mut out = Tensor::zeros((n, h), DType::F32, &Device::Cpu)?;
        for (expert, (rows, weights)) in self.experts.iter().zip(&routes) {
            if rows.is_empty() {
                continue;
            }
            let ids = Tensor::from_slice(rows.as_slice(), rows.len(), &Device::Cpu)?;
            let w = Tensor::from_slice(weights.as_slice(), (rows.len(), 1), &Device::Cpu)?;
            let ys = expert.forward(&flat.index_select(&ids, 0)?)?;
            out = out.index_add(&ids, &ys.broadcast_mul(&w)?, 0)?;
        }
        if let Some((mlp, gate)) = &self.shared {
            let g = candle_nn::ops::sigmoid(&gate.forward(&flat)?)?;
            out = (out + mlp.forward(&flat)?.broadcast_mul(&g)?)?;
        }
        Ok(out.reshape(dims)?)
    }
}

/// Per expert, the token rows that chose it and their routing weights, from router logits
/// `(tokens, experts)` row-major: softmax in f32, the `k` largest probabilities (ties to the
/// lower expert), divided by their sum when `renormalise`.
pub(crate) fn route(
    logits: &[f32],
    n_experts: usize,
    k: usize,
    renormalise: bool,
) -> Result<Vec<(Vec<u32>, Vec<f32>)>> {
    if n_experts == 0 || k == 0 || k > n_experts || !logits.len().is_multiple_of(n_experts) {
        return Err(Error::Compute(format!(
            "cannot route {} logits to the top {k} of {n_experts} experts",
            logits.len()
        )));
    }
    let mut routes = vec![(Vec::new(), Vec::new()); n_experts];
    let mut order: Vec<usize> = (0..n_experts).collect();
    for (row, l) in logits.chunks_exact(n_experts).enumerate() {
        let max = l.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let exps: Vec<f32> = l.iter().map(|&v| (v - max).exp()).collect();
        let sum: f32 = exps.iter().sum();
        let probs: Vec<f32> = exps.iter().map(|&e| e / sum).collect();
        order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
        let top = &order[..k];
        let total: f32 = top.iter().map(|&e| probs[e]).sum();
        for &e in top {
            let w = if renormalise {
                probs[e] / total
            } else {
                probs[e]
            };
            routes[e].0.push(row as u32);
            routes[e].1.push(w);
        }
    }
    Ok(routes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_the_top_k_with_and_without_renormalising() {
        // One token, three experts: probabilities ∝ e^0, e^1, e^2.
        let l = [0.0f32, 1.0, 2.0];
        let r = route(&l, 3, 2, false).unwrap();
        let z = 1.0 + 1f32.exp() + 2f32.exp();
        assert!(r[0].0.is_empty());
        assert_eq!((r[1].0.clone(), r[2].0.clone()), (vec![0], vec![0]));
        assert!((r[2].1[0] - 2f32.exp() / z).abs() < 1e-6);
        let r = route(&l, 3, 2, true).unwrap();
        let s = 1f32.exp() + 2f32.exp();
        assert!((r[1].1[0] - 1f32.exp() / s).abs() < 1e-6);
        assert!((r[1].1[0] + r[2].1[0] - 1.0).abs() < 1e-6);
        assert!(route(&l, 3, 4, true).is_err());
        assert!(route(&l[..2], 3, 1, true).is_err());
    }

    #[test]
    fn ties_go_to_the_lower_expert() {
        let r = route(&[1.0, 1.0, 1.0, 0.0, 5.0, 5.0], 3, 1, true).unwrap();
        assert_eq!(r[0].0, vec![0]);
        assert_eq!(r[1].0, vec![1]);
    }
}
