//! The healing loop: the dense and the pruned model run in lockstep over the calibration
//! windows, fold site by fold site from the bottom up, and each site's Gram matrices are filled,
//! solved and (when validation agrees) folded before the pruned stream moves on.

use super::cosine;
use super::fit::{self, fold_down_proj, Fit, Gram, Solver};
use super::options::{HealOptions, Objective};
use super::postnorm::{self, PostNorm};
use super::result::{Candidate, HealedBlock, Healing, Validation};
use super::site::{site_line, site_rows, sites};
use super::validate::{Validator, BATCH};
use super::{blocks, down_proj_names, rows, Overlay};
use crate::error::{Error, Result};
use crate::eval::windows::whole_windows;
use crate::model::{open_checkpoint, DecoderLayer, Model, ModelConfig, WeightSource};
use crate::progress::Progress;
use candle_core::Tensor;
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

/// Fits and folds the maps for the removed layers `removed` (dense-model numbers), on the
/// calibration tokens `calib` cut into windows of `opts.ctx`. `progress` counts windows.
/// `dense_dir` is an HF folder or a `.gguf` file (dequantized to f32); either way the maps and
/// the returned tensors are in HF terms (names and layout). With `opts.holdout > 0` each site
/// takes the candidate map that validates best, or none ([`HealOptions::holdout`]).
pub fn heal(
    dense_dir: &Path,
    removed: &[usize],
    calib: &[u32],
    opts: &HealOptions,
    progress: &dyn Progress,
) -> Result<Healing> {
    opts.check()?;
    let windows: Vec<&[u32]> = whole_windows(calib, opts.ctx).collect();
    // Window `i` validates when `(i + 1) % holdout == 0`: spread through the text, not its end.
    let held = |i: usize| super::options::held_out(i, opts.holdout);
    let n_val = (0..windows.len()).filter(|&i| held(i)).count();
    if windows.len() == n_val || (opts.holdout > 0 && n_val == 0) {
        return Err(Error::Invalid(format!(
            "the calibration text has {} tokens: {} windows of {} tokens, but healing needs {}; hint: give more calibration tokens or a smaller window",
            calib.len(),
            windows.len(),
            opts.ctx,
            if opts.holdout > 0 {
                format!(
                    "{} windows (`holdout` {}: one in {} is held out for validation)",
                    opts.holdout, opts.holdout, opts.holdout
                )
            } else {
                "at least one".to_string()
            }
        )));
    }
    let (cfg, source) = open_checkpoint(dense_dir)?;
    // A post-norm family fits a rotation and scale in place of the linear maps (issue 23).
    let post = PostNorm::of(&cfg);
    let mut opts = opts.clone();
    if post.is_some() {
        opts.objectives = postnorm::objectives(&opts.objectives);
    }
    opts.maps = opts.maps.resolve(post.is_some());
    let opts = &opts;
    let dense = Model::from_source(cfg.clone(), source.clone(), &|_| true)?;
    dense.check_skip(removed)?;
    let hidden = dense.config().arch.hidden_size;
    if let Some(b) = blocks(removed).iter().find(|b| b.start == 0) {
        return Err(Error::Invalid(format!(
            "cannot heal the removed block {}..{}: it starts at layer 0, so no kept MLP precedes it to take the map; hint: keep layer 0 or prune without healing",
            b.start, b.end
        )));
    }
    let sites = sites(removed, dense.n_layers(), opts.maps);
    // One Gram per distinct kind of rows: the objectives that share rows share a Gram.
    let kinds: Vec<usize> = opts
        .objectives
        .iter()
        .map(|&o| usize::from(o == Objective::Weighted))
        .collect();
    let validating = n_val > 0;
    let per_site = 1 + opts.objectives.len() * (1 + usize::from(validating));
    progress.start(
        "healing",
        (windows.len() * sites.len() + sites.len() * per_site + n_val + usize::from(validating))
            as u64,
    );
    let ctx = dense.attn_ctx(0, opts.ctx)?;
    // The windows in batches of `BATCH`, each one `(windows, seq, hidden)` tensor per stream.
    let batches: Vec<Range<usize>> = (0..windows.len())
        .step_by(BATCH)
        .map(|s| s..(s + BATCH).min(windows.len()))
        .collect();
    let mut validator = if validating {
        let val: Vec<usize> = (0..windows.len()).filter(|&i| held(i)).collect();
        let mut finals = Vec::with_capacity(val.len().div_ceil(BATCH));
        for b in val.chunks(BATCH) {
            let ws: Vec<&[u32]> = b.iter().map(|&i| windows[i]).collect();
            finals.push(dense.forward_hidden(&dense.tokens(&ws)?, &[], None, &mut |_| Ok(()))?);
            progress.advance(b.len() as u64);
        }
        let val_windows = val.iter().map(|&i| windows[i].to_vec()).collect();
        Some(Validator::new(
            Tensor::cat(&finals, 0)?,
            val_windows,
            removed,
        ))
    } else {
        None
    };
    // Per batch, the dense residual stream entering layer `dense_next`, and the pruned, healed
    // one entering layer `from`: both only move forward, so each model runs once in all. These
    // two streams, `tokens × hidden` each, are all that grows with the calibration tokens; the
    // statistics are Gram matrices (issue 34).
    let mut dense_states = Vec::with_capacity(batches.len());
    for b in &batches {
        dense_states.push(dense.embed(&dense.tokens(&windows[b.clone()])?)?);
    }
    let mut states = dense_states.clone();
    let mut dense_next = 0;
    let mut from = 0;
    let mut tensors: BTreeMap<String, Vec<f32>> = BTreeMap::new();
    let mut replaced: BTreeMap<usize, Arc<DecoderLayer>> = BTreeMap::new();
    let mut out_blocks = Vec::new();
    let mut out_layers = Vec::new();
    for (site_no, site) in sites.iter().enumerate() {
        let fold_layer = site.fold;
        let n_kinds = kinds.iter().max().map_or(0, |k| k + 1);
        let mut train: Vec<Gram> = (0..n_kinds).map(|_| Gram::new(hidden)).collect();
        let mut val: Vec<Gram> = (0..n_kinds).map(|_| Gram::new(hidden)).collect();
        let mut val_inputs = Vec::new();
        // The fit rows, kept for the objectives that are not a Gram solve (cosine).
        let keep_rows = opts.objectives.contains(&Objective::Cosine);
        let (mut fit_m, mut fit_z) = (Vec::new(), Vec::new());
        let gain = match &post {
            Some(p) => Some(p.gain(source.as_ref(), fold_layer)?),
            None => None,
        };
        for (b, batch) in batches.iter().enumerate() {
            let mut ys = dense_states[b].clone();
            for i in dense_next..=site.target {
                ys = dense.fetch_layer(i)?.forward(&ys, &ctx, None)?.output;
            }
            dense_states[b] = ys.clone();
            let mut xs = states[b].clone();
            for i in (from..fold_layer).filter(|i| !removed.contains(i)) {
                let layer = match replaced.get(&i) {
                    Some(l) => l.clone(),
                    None => dense.fetch_layer(i)?,
                };
                xs = layer.forward(&xs, &ctx, None)?.output;
            }
            let parts = dense.fetch_layer(fold_layer)?.forward(&xs, &ctx, None)?;
            let (y, x, m) = (rows(&ys)?, rows(&parts.output)?, rows(&parts.mlp)?);
            let per = opts.ctx * hidden;
            for (k, w) in batch.clone().enumerate() {
                if held(w) {
                    val_inputs.push(xs.narrow(0, k, 1)?);
                }
                let at = k * per..(k + 1) * per;
                let (m, z) = site_rows(
                    (&y[at.clone()], &x[at.clone()], &m[at]),
                    post.as_ref().zip(gain.as_deref()),
                    hidden,
                );
                if keep_rows && !held(w) {
                    fit_m.extend_from_slice(&m);
                    fit_z.extend_from_slice(&z);
                }
                let grams = if held(w) { &mut val } else { &mut train };
                for (kind, g) in grams.iter_mut().enumerate() {
                    if kind == 1 {
                        let (m, z) = fit::weigh_rows(&m, &z, hidden);
                        g.add(&m, &z)?
                    } else {
                        g.add(&m, &z)?
                    }
                }
            }
            states[b] = xs;
            progress.advance(batch.len() as u64);
        }
        dense_next = site.target + 1;
        from = fold_layer;
        // Each fold layer is distinct, so the dense weights are the ones to fold into: the one
        // `down_proj`, or every expert's in a MoE layer.
        let ws = down_proj_names(&cfg.arch, fold_layer)
            .into_iter()
            .map(|n| Ok((rows(&source.tensor(&n)?)?, n)))
            .collect::<Result<Vec<_>>>()?;
        let train: Vec<&Gram> = kinds.iter().map(|&k| &train[k]).collect();
        let val: Vec<&Gram> = kinds.iter().map(|&k| &val[k]).collect();
        let fits = best_alphas(
            opts,
            (&train, &val),
            (&fit_m, &fit_z),
            gain.as_deref(),
            progress,
        )?;
        drop((fit_m, fit_z));
        let mut record = HealedBlock {
            range: site.range.clone(),
            fold_layer,
            objective: None,
            alpha: opts.alphas[0],
            relative_residual: fits.first().map_or(1.0, |f| f.1.relative_residual_identity),
            relative_residual_identity: fits
                .first()
                .map_or(1.0, |f| f.1.relative_residual_identity),
            solver: fits.first().map_or(Solver::Cholesky, |f| f.1.solver),
            validation: None,
        };
        let mut chosen: Option<(Objective, Fit, f64, Folded)> = None;
        match validator.as_mut() {
            None => {
                if let Some((o, fit, alpha, _)) = fits.into_iter().next() {
                    let folded = fold_fit(&fit, &ws, post, fold_layer)?;
                    chosen = Some((o, fit, alpha, folded));
                }
            }
            Some(v) => {
                let unhealed_kl = v.current_kl(&dense, &val_inputs, fold_layer, progress)?;
                let mut candidates = Vec::new();
                let mut best_kl = unhealed_kl;
                for (o, fit, alpha, vr) in fits {
                    let folded = fold_fit(&fit, &ws, post, fold_layer)?;
                    let layer = fold_layer_with(&source, &cfg, &folded, fold_layer)?;
                    let kl = v.kl_with(&dense, &val_inputs, fold_layer, &layer)?;
                    progress.advance(1);
                    candidates.push(Candidate {
                        objective: o,
                        alpha,
                        train_residual: fit.relative_residual,
                        validation_residual: vr,
                        validation_kl: kl,
                    });
                    if kl < best_kl {
                        best_kl = kl;
                        chosen = Some((o, fit, alpha, folded));
                    }
                }
                v.set_current(best_kl);
                record.validation = Some(Validation {
                    unhealed_kl,
                    candidates,
                });
            }
        }
        // A post-norm site refits the chosen objective on every window, the held-out ones too:
        // the guard has judged the objective, and the rotation's h² parameters gain from the
        // extra rows (`refit_on_all`).
        if let (Some(g), Some((o, fit, _, folded))) = (&gain, chosen.as_mut()) {
            if let Some(all) = refit_on_all(*o, &opts.objectives, &train, &val) {
                let refit = postnorm::solve(*o, &all, g)?;
                *folded = fold_fit(&refit, &ws, post, fold_layer)?;
                *fit = refit;
            }
        }
        if let Some((o, fit, alpha, folded)) = chosen {
            let layer = fold_layer_with(&source, &cfg, &folded, fold_layer)?;
            replaced.insert(fold_layer, Arc::new(layer));
            tensors.extend(folded);
            record.objective = Some(o);
            record.alpha = alpha;
            record.relative_residual = fit.relative_residual;
            record.relative_residual_identity = fit.relative_residual_identity;
            record.solver = fit.solver;
        }
        progress.step_done(&site_line(site_no, sites.len(), &record));
        if site.range.is_empty() {
            out_layers.push(record);
        } else {
            out_blocks.push(record);
        }
    }
    progress.finish();
    Ok(Healing {
        blocks: out_blocks,
        layers: out_layers,
        tensors,
        samples: (windows.len() - n_val) * opts.ctx,
        validation_samples: n_val * opts.ctx,
        options: opts.clone(),
        distillation: None,
    })
}

/// The training and held-out rows of objective `o` together, when some were held out.
fn refit_on_all(
    o: Objective,
    objectives: &[Objective],
    train: &[&Gram],
    val: &[&Gram],
) -> Option<Gram> {
    let i = objectives.iter().position(|&x| x == o)?;
    let (t, v) = (train.get(i)?, val.get(i)?);
    (v.rows() > 0).then(|| t.merged(v)).flatten()
}

/// The map of `fit` folded into each `(weight, name)` of `ws`, and for a post-norm family its
/// scale into layer `fold_layer`'s post-MLP norm.
fn fold_fit(
    fit: &Fit,
    ws: &[(Vec<f32>, String)],
    post: Option<PostNorm>,
    fold_layer: usize,
) -> Result<Folded> {
    match post {
        Some(p) => p.fold(fit, ws, fold_layer),
        None => fold_all(&fit.t, ws, fit.hidden),
    }
}

/// Folded `down_proj` weights (and post-MLP norms) by name.
type Folded = BTreeMap<String, Vec<f32>>;

/// Layer `fold_layer` with its `down_proj`s replaced by `folded`. Only those tensors are swapped
/// in: each fold layer takes exactly one map, so the other healed tensors are irrelevant.
fn fold_layer_with(
    source: &Arc<dyn WeightSource>,
    cfg: &ModelConfig,
    folded: &Folded,
    fold_layer: usize,
) -> Result<DecoderLayer> {
    DecoderLayer::load(&Overlay::new(source.clone(), folded)?, cfg, fold_layer)
}

/// `T` folded into each `(weight, name)` of `ws`: a MoE layer's output is a gate-weighted sum of
/// its experts' down projections (plus the shared expert's, scaled by its sigmoid gate), so
/// right-multiplying it by `T` is right-multiplying each of them (issue 17).
fn fold_all(t: &[f64], ws: &[(Vec<f32>, String)], hidden: usize) -> Result<Folded> {
    ws.iter()
        .map(|(w, name)| Ok((name.clone(), fold_down_proj(t, w, hidden)?)))
        .collect()
}

/// Per objective, the fit with the ridge weight of lowest held-out residual (the first weight
/// when nothing is held out): `(objective, fit, alpha, held-out residual)`. The cosine map is
/// the least-squares one of that weight, refined on the fit rows `rows` (`M`, `Z`).
fn best_alphas(
    opts: &HealOptions,
    (train, val): (&[&Gram], &[&Gram]),
    rows: (&[f32], &[f32]),
    gain: Option<&[f64]>,
    progress: &dyn Progress,
) -> Result<Vec<(Objective, Fit, f64, f64)>> {
    let mut fits = Vec::new();
    for (o, (&tg, &vg)) in opts.objectives.iter().zip(train.iter().zip(val)) {
        progress.advance(1);
        if let Some(g) = gain {
            // A post-norm fit has no ridge: one fit, whatever the weight.
            let fit = postnorm::solve(*o, tg, g)?;
            let vr = if vg.rows() > 0 {
                vg.relative_residual(&fit.t)
            } else {
                0.0
            };
            fits.push((*o, fit, opts.alphas[0], vr));
            continue;
        }
        let mut best: Option<(Fit, f64, f64)> = None;
        for &alpha in &opts.alphas {
            // The scalar map has no ridge: one fit, whatever the weight.
            if *o == Objective::Scale && best.is_some() {
                break;
            }
            let fit = if *o == Objective::Scale {
                tg.solve_scale()?
            } else {
                tg.solve(alpha, opts.prior)?
            };
            let vr = if vg.rows() > 0 {
                vg.relative_residual(&fit.t)
            } else {
                0.0
            };
            if best.as_ref().is_none_or(|(_, _, b)| vr < *b) {
                best = Some((fit, alpha, vr));
            }
        }
        if let Some((mut fit, alpha, mut vr)) = best {
            if *o == Objective::Cosine {
                let h = tg.hidden();
                fit.t = cosine::refine(rows.0, rows.1, h, &fit.t, cosine::STEPS, cosine::LR)?;
                fit.relative_residual = tg.relative_residual(&fit.t);
                if vg.rows() > 0 {
                    vr = vg.relative_residual(&fit.t);
                }
            }
            fits.push((*o, fit, alpha, vr));
        }
    }
    Ok(fits)
}
