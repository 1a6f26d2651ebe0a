//! Heal-aware selection ([`super::Metric::Healed`], issue 18): remove the layers that least-squares
//! healing can best make up for, rather than the layers that matter least unhealed.
//!
//! One dense pass over the calibration windows keeps, per layer `l`, its output `X_l` and its MLP
//! output `M_l` (tokens × hidden, f32). Removing the block `[s, e)` and healing it folds a map
//! `T` into layer `f = s − 1`'s MLP, fitted so that `M_f·T ≈ Z = X_{e−1} − X_f + M_f` (the
//! block's contribution plus the MLP output the map replaces; see [`crate::heal`]). What healing
//! cannot repair is `E = M_f·T − Z`, an error in the residual stream at layer `e − 1`. The
//! block's cost is the mean over tokens of `‖E_t‖² / ‖X_{e−1,t}‖²`, the relative disturbance each
//! token's stream is left with (every later layer sees the stream through an RMSNorm, so the
//! relative size is what it feels).
//!
//! Removal is greedy: each step removes the layer whose removal gives the lowest total cost over
//! the blocks of the removed set (a new layer starts a block or joins and merges its
//! neighbours). Only the block that changes needs a new fit, and fits are cached by block, so
//! the whole order costs about one Gram solve per distinct block, with no forward pass beyond
//! the first. A block starting at layer 0 cannot be healed (no MLP precedes it), so layer 0 is
//! removed last.
//!
//! [`Proxy`] holds the activations and the cached fits, so the same costs also drive a beam
//! search ([`Proxy::beam`]) and give, on the same activations, Block Influence and the angular
//! distance of blocks: the candidate sets that [`crate::choose::finalists`] heals for real.
//!
//! The fit is the heal's own: identity prior, ridge `alpha` relative to the mean diagonal of
//! `MᵀM`, f64 Gram and Cholesky solve (eigen solve when ill-conditioned). The cost uses the
//! dense model's activations at every block, which is cheap but ignores how earlier repairs
//! change later inputs; `prune --heal` then fits the chosen blocks sequentially on the real
//! pruned stream.

use super::scores::{HealedStep, LayerScores};
use crate::error::{Error, Result};
use crate::heal::fit::{cholesky_solve, eigen_solve, identity};
use crate::model::Model;
use crate::progress::Progress;
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::ops::Range;

/// The relative ridge weight of the proxy fits.
pub const ALPHA: f64 = 1e-3;

/// Per layer, the dense activations over every calibration token, `(tokens, hidden)`.
struct Taps {
    outputs: Vec<Tensor>,
    /// The fit rows: the MLP outputs, or after a post-MLP norm the normalised ones.
    mlps: Vec<Tensor>,
    /// After a post-MLP norm (Gemma 2/3, OLMo 2), what the norm adds to the stream; the proxy
    /// is then the linear fit on the normalised rows, a relaxation of the rotation and scale
    /// the heal folds ([`crate::heal::postnorm`]).
    updates: Option<Vec<Tensor>>,
}

/// The heal-aware proxy over one set of dense activations: the taps, and the fits and block
/// costs computed so far (cached by fold layer and by block, so any number of candidate sets
/// costs at most one Gram solve per distinct block). Heal-aware scoring runs it greedily;
/// [`crate::choose::finalists`] also runs it as a beam and asks it for other criteria's sets.
pub struct Proxy {
    taps: Taps,
    /// `(MᵀM + ridge·I)⁻¹` and the ridge, per fold layer, f64.
    inverses: HashMap<usize, (Tensor, f64)>,
    blocks: HashMap<(usize, usize), f64>,
}

impl Proxy {
    fn from_taps(taps: Taps) -> Self {
        Proxy {
            taps,
            inverses: HashMap::new(),
            blocks: HashMap::new(),
        }
    }

    /// One dense pass of `model` over `windows`, keeping every layer's output and MLP output.
    pub fn new(model: &Model, windows: &[Vec<u32>], progress: &dyn Progress) -> Result<Self> {
        Ok(Proxy::from_taps(dense_taps(model, windows, progress)?))
    }

    /// The number of layers of the model the taps come from.
    pub fn n_layers(&self) -> usize {
        self.taps.outputs.len()
    }

    /// The cost of the removed block `r` (`r.start ≥ 1`).
    fn block(&mut self, r: Range<usize>) -> Result<f64> {
        if let Some(&c) = self.blocks.get(&(r.start, r.end)) {
            return Ok(c);
        }
        let f = r.start - 1;
        let m = &self.taps.mlps[f];
        let (inv, ridge) = match self.inverses.entry(f) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(ridge_inverse(m)?),
        };
        let target = &self.taps.outputs[r.end - 1];
        let update = self.taps.updates.as_ref().map_or(m, |u| &u[f]);
        let z = ((target - &self.taps.outputs[f])? + update)?;
        let m64 = m.to_dtype(DType::F64)?;
        let mtz = m64.t()?.matmul(&z.to_dtype(DType::F64)?)?;
        let h = m.dim(1)?;
        let prior = (Tensor::eye(h, DType::F64, &Device::Cpu)? * *ridge)?;
        let t = inv.matmul(&(mtz + prior)?)?.to_dtype(DType::F32)?;
        let err = (m.matmul(&t)? - &z)?;
        let e2 = err.sqr()?.sum(1)?;
        let y2 = target.sqr()?.sum(1)?;
        let rel = (e2 / (y2 + 1e-30)?)?.mean_all()?.to_scalar::<f32>()? as f64;
        self.blocks.insert((r.start, r.end), rel);
        Ok(rel)
    }

    /// The total cost of removing `removed`: the sum over its maximal blocks, infinite when a
    /// block starts at layer 0 (nothing precedes it to fold a map into).
    pub fn cost(&mut self, removed: &[usize]) -> Result<f64> {
        let mut sum = 0.0;
        for b in crate::heal::blocks(removed) {
            if b.start == 0 {
                return Ok(f64::INFINITY);
            }
            if b.end > self.n_layers() {
                return Err(Error::Invalid(format!(
                    "layer {} is past the model's {} layers",
                    b.end - 1,
                    self.n_layers()
                )));
            }
            sum += self.block(b)?;
        }
        Ok(sum)
    }

    /// Greedy removal of up to `steps` layers: `(layer, cost)` in removal order.
    pub fn greedy(&mut self, steps: usize, progress: &dyn Progress) -> Result<Vec<(usize, f64)>> {
        let n = self.n_layers();
        super::greedy::order(
            n,
            steps.min(n.saturating_sub(1)),
            "heal-aware steps",
            progress,
            &mut |set, _| self.cost(set),
            &mut |_, _| Ok(()),
        )
    }

    /// The `width` cheapest sets of `k` layers that `allowed` admits, as a beam search over the
    /// proxy finds them (width 1 is the greedy set), cheapest first, each sorted; sets with an
    /// infinite cost are dropped.
    pub fn beam(
        &mut self,
        k: usize,
        width: usize,
        allowed: &dyn Fn(usize) -> bool,
        progress: &dyn Progress,
    ) -> Result<Vec<(Vec<usize>, f64)>> {
        let n = self.n_layers();
        let width = width.max(1);
        let mut beam: Vec<(Vec<usize>, f64)> = vec![(Vec::new(), 0.0)];
        progress.start("heal-aware beam", k as u64);
        for _ in 0..k.min(n.saturating_sub(1)) {
            let mut next: Vec<(Vec<usize>, f64)> = Vec::new();
            let mut seen = std::collections::HashSet::new();
            for (set, _) in &beam {
                for c in (0..n).filter(|&c| !set.contains(&c) && allowed(c)) {
                    let mut s = set.clone();
                    s.push(c);
                    s.sort_unstable();
                    if seen.insert(s.clone()) {
                        let v = self.cost(&s)?;
                        if v.is_finite() {
                            next.push((s, v));
                        }
                    }
                }
            }
            // Cheapest first; ties to the later layers, as greedy's ties go.
            next.sort_by(|a, b| a.1.total_cmp(&b.1).then_with(|| b.0.cmp(&a.0)));
            next.truncate(width);
            beam = next;
            progress.advance(1);
        }
        progress.finish();
        Ok(beam)
    }

    /// Block Influence per layer on the same activations, `1 − cos(input, output)` averaged over
    /// tokens; layer 0 (whose input, the embedding, is not kept, and which no heal can follow)
    /// is infinite.
    pub fn block_influence(&self) -> Result<Vec<f64>> {
        let mut v = vec![f64::INFINITY; self.n_layers()];
        for (l, bi) in v.iter_mut().enumerate().skip(1) {
            *bi = 1.0 - mean_cosine(&self.taps.outputs[l - 1], &self.taps.outputs[l])?;
        }
        Ok(v)
    }

    /// The contiguous block of `k` layers that `allowed` admits (not starting at layer 0) whose
    /// input and output are nearest in mean angular distance over all tokens: `(start,
    /// distance)`.
    pub fn angular_block(
        &self,
        k: usize,
        allowed: &dyn Fn(usize) -> bool,
    ) -> Result<Option<(usize, f64)>> {
        let n = self.n_layers();
        let mut best: Option<(usize, f64)> = None;
        for s in (1..n).filter(|&s| k > 0 && s + k <= n && (s..s + k).all(allowed)) {
            let d = mean_angular(&self.taps.outputs[s - 1], &self.taps.outputs[s + k - 1])?;
            if best.is_none_or(|(_, b)| d < b) {
                best = Some((s, d));
            }
        }
        Ok(best)
    }
}

/// Mean over rows of the cosine between the rows of `a` and `b`, `(tokens, hidden)`.
fn mean_cosine(a: &Tensor, b: &Tensor) -> Result<f64> {
    let cos = row_cosines(a, b)?;
    Ok(cos.iter().sum::<f64>() / cos.len().max(1) as f64)
}

/// Mean over rows of `arccos(cos) / π` between the rows of `a` and `b`.
fn mean_angular(a: &Tensor, b: &Tensor) -> Result<f64> {
    let cos = row_cosines(a, b)?;
    let d: f64 = cos.iter().map(|c| c.acos() / std::f64::consts::PI).sum();
    Ok(d / cos.len().max(1) as f64)
}

fn row_cosines(a: &Tensor, b: &Tensor) -> Result<Vec<f64>> {
    let h = a.dim(1)?;
    let (a, b): (Vec<f32>, Vec<f32>) = (a.flatten_all()?.to_vec1()?, b.flatten_all()?.to_vec1()?);
    Ok(a.chunks(h)
        .zip(b.chunks(h))
        .map(|(x, y)| super::cosine::cosine(x, y))
        .collect())
}

/// `(MᵀM + ridge·I)⁻¹` in f64 and the ridge (`ALPHA` times the mean diagonal of `MᵀM`).
fn ridge_inverse(m: &Tensor) -> Result<(Tensor, f64)> {
    let h = m.dim(1)?;
    let m64 = m.to_dtype(DType::F64)?;
    let mut a: Vec<f64> = m64.t()?.matmul(&m64)?.flatten_all()?.to_vec1()?;
    let mean_diag = (0..h).map(|i| a[i * h + i]).sum::<f64>() / h as f64;
    let ridge = ALPHA * mean_diag.max(f64::MIN_POSITIVE);
    for i in 0..h {
        a[i * h + i] += ridge;
    }
    let eye = identity(h);
    let inv = match cholesky_solve(&a, &eye, h) {
        Some(x) => x,
        None => eigen_solve(&a, &eye, h)?,
    };
    Ok((Tensor::from_vec(inv, (h, h), &Device::Cpu)?, ridge))
}

/// Bytes the taps hold: two `(tokens, hidden)` f32 matrices per layer.
pub fn taps_bytes(n_layers: usize, tokens: usize, hidden: usize) -> u64 {
    2 * n_layers as u64 * tokens as u64 * hidden as u64 * 4
}

/// One dense pass over `windows`: every layer's output and MLP output (normalised after a
/// post-MLP norm, with what the norm adds kept beside them).
fn dense_taps(model: &Model, windows: &[Vec<u32>], progress: &dyn Progress) -> Result<Taps> {
    let n = model.n_layers();
    let mut outputs: Vec<Vec<Tensor>> = vec![Vec::new(); n];
    let mut mlps: Vec<Vec<Tensor>> = vec![Vec::new(); n];
    progress.start("dense pass", windows.len() as u64);
    for w in windows {
        model.forward_hidden(&model.tokens(&[w])?, &[], None, &mut |tap| {
            outputs[tap.layer].push(tap.parts.output.squeeze(0)?);
            mlps[tap.layer].push(tap.parts.mlp.squeeze(0)?);
            Ok(())
        })?;
        progress.advance(1);
    }
    progress.finish();
    let cat = |v: Vec<Vec<Tensor>>| -> Result<Vec<Tensor>> {
        v.into_iter()
            .map(|parts| Ok(Tensor::cat(&parts, 0)?))
            .collect()
    };
    let mut taps = Taps {
        outputs: cat(outputs)?,
        mlps: cat(mlps)?,
        updates: None,
    };
    if let Some(post) = crate::heal::postnorm::PostNorm::of(model.config()) {
        let mut updates = Vec::with_capacity(n);
        for (l, m) in taps.mlps.iter_mut().enumerate() {
            let (norm, update) =
                post.normalize_tensor(m, &post.gain(model.source().as_ref(), l)?)?;
            *m = norm;
            updates.push(update);
        }
        taps.updates = Some(updates);
    }
    Ok(taps)
}

/// Scores `model` on `windows` by heal-aware greedy removal; `steps` limits the removals
/// computed (the rest keep their order by last cost). Fills `scores.importance` (the step at
/// which each layer goes) and `scores.healed`.
pub(super) fn healed_scores(
    model: &Model,
    windows: &[Vec<u32>],
    steps: Option<usize>,
    scores: &mut LayerScores,
    progress: &dyn Progress,
) -> Result<()> {
    let n = model.n_layers();
    if n < 2 {
        return Err(Error::Invalid(
            "heal-aware selection needs a model of at least 2 layers".into(),
        ));
    }
    let mut proxy = Proxy::new(model, windows, progress)?;
    let chosen = proxy.greedy(steps.unwrap_or(n - 1), progress)?;
    scores.importance = super::greedy::importance(n, &chosen);
    let order: Vec<HealedStep> = chosen
        .into_iter()
        .map(|(layer, cost)| HealedStep { layer, cost })
        .collect();
    scores.healed = Some(order);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A constructed stream: layer 2's contribution is a linear function of layer 1's MLP output,
    /// so healing repairs its removal exactly, while layer 3's is not.
    #[test]
    fn a_linearly_absorbable_layer_costs_nothing() {
        let (t, h) = (64, 4);
        let mut s = 7u64;
        let mut rnd = || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        let mat = |f: &mut dyn FnMut() -> f32| {
            Tensor::from_vec(
                (0..t * h).map(|_| f()).collect::<Vec<f32>>(),
                (t, h),
                &Device::Cpu,
            )
            .unwrap()
        };
        let m1 = mat(&mut rnd);
        let x0 = mat(&mut rnd);
        let x1 = (&x0 + &m1).unwrap();
        // Layer 2 adds 0.5·M1·P for a fixed P; layer 3 adds unrelated noise.
        let p = Tensor::from_vec(
            vec![
                0f32, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0,
            ],
            (h, h),
            &Device::Cpu,
        )
        .unwrap();
        let x2 = (&x1 + (m1.matmul(&p).unwrap() * 0.5).unwrap()).unwrap();
        let x3 = (&x2 + mat(&mut rnd)).unwrap();
        let taps = Taps {
            outputs: vec![x0.clone(), x1, x2, x3],
            mlps: vec![x0.clone(), m1, mat(&mut rnd), mat(&mut rnd)],
            updates: None,
        };
        let mut proxy = Proxy::from_taps(taps);
        let c2 = proxy.cost(&[2]).unwrap();
        let c3 = proxy.cost(&[3]).unwrap();
        assert!(c2 < 1e-4, "layer 2 is absorbable: cost {c2}");
        assert!(c3 > 1e-2, "layer 3 is not: cost {c3}");
        assert!(proxy.cost(&[0, 2]).unwrap().is_infinite());
        // The beam's first set is the greedy one; its second is the next cheapest.
        let beam = proxy
            .beam(1, 2, &|_| true, &crate::progress::Silent)
            .unwrap();
        assert_eq!(beam[0].0, vec![2]);
        assert_eq!(beam.len(), 2);
        assert!(beam[1].1 >= beam[0].1);
        let greedy = proxy.greedy(1, &crate::progress::Silent).unwrap();
        assert_eq!(greedy[0].0, 2);
    }
}
