//! Heal-aware selection with finalists for `prune --heal` (issue 23), the default when no layers
//! and no other strategy are named: the heal-aware proxy runs on calibration windows the heal
//! fits on, proposes a few candidate sets ([`crate::choose::finalists`]), each is healed with the
//! closed form on the heal's own options and tokens (at most [`FINALIST_SAMPLES`] of them) and
//! judged on the guard's held-out windows. When the heal asks for no more tokens than that, the
//! winner's heal is kept as the final heal (the same fit, so it is not made twice); otherwise the
//! winner is healed again on all of them.
//! With a time budget, the finalists stop when the next heal would take more than their share.

use super::choose::{Chosen, LayerChoice};
use super::heal::HealRequest;
use crate::arch::ParamCounts;
use crate::choose::finalists::{self, Candidate, Judged, DEFAULT_WIDTH};
use crate::choose::strategy::{Amount, Protect};
use crate::error::{Error, Result};
use crate::eval::windows::whole_windows;
use crate::heal::{self, Healing};
use crate::model::Model;
use crate::progress::Progress;
use crate::select::{format_ranges, Removal};
use crate::tokenizer::HfTokenizer;
use candle_core::Tensor;
use serde_json::json;
use std::fmt::Write;
use std::path::Path;
use std::time::Instant;

/// Calibration windows after the heal's tokens on which finalists are also judged, by default
/// (none: on SmolLM2 the extra windows ranked the finalists as the held-out ones did, at a
/// quarter more time per finalist).
pub const DEFAULT_JUDGE_WINDOWS: usize = 0;

/// The share of a time budget that selection and the finalists may take; training gets the rest.
pub const SELECTION_SHARE: f64 = 0.4;

/// The most calibration tokens a finalist is healed on by default (`finalist_samples`). The final heal of the winner uses all of
/// `heal_samples`; when that is more, the winner is healed again. On SmolLM2 (8 of 30 removed),
/// 65,536 heal tokens gave perplexity 79.5 against 89.3 for 16,384, and a heal costs about its
/// token count, so judging five finalists on the full count would cost four heals more.
pub const FINALIST_SAMPLES: usize = 16384;

/// A heal-aware choice: the removal with its provenance, and the winner's closed-form heal when
/// it was made on the final heal's tokens (else the final heal fits again).
pub(crate) struct HealAware {
    pub chosen: Chosen,
    pub healing: Option<Healing>,
}

/// The number of layers `choice` asks to remove from a model with `counts`. A parameter target
/// counts layers at the smallest layer size, so any `k` layers reach it.
fn layers_to_remove(choice: &LayerChoice, counts: &ParamCounts, n: usize) -> Result<usize> {
    let k = match choice.amount() {
        Some(Amount::Layers(k)) => k,
        Some(Amount::Ratio(r)) if r > 0.0 && r < 1.0 => (r * n as f64).round() as usize,
        Some(Amount::Ratio(r)) => {
            return Err(Error::Invalid(format!(
                "`ratio` {r}: must be a fraction of the layers between 0 and 1"
            )))
        }
        Some(Amount::TargetParams(p)) => {
            let smallest = counts.layers.iter().map(|l| l.total()).min().unwrap_or(0);
            (0..=n)
                .find(|&k| counts.total().saturating_sub(k as u64 * smallest) <= p)
                .ok_or_else(|| {
                    Error::Invalid(format!(
                        "`target_params` {p} cannot be reached by removing layers (the model has {} parameters)",
                        counts.total()
                    ))
                })?
        }
        None => {
            return Err(Error::Invalid(
                "heal-aware selection needs an amount (`remove` N)".into(),
            ))
        }
    };
    if k == 0 || k + 1 >= n {
        return Err(Error::Invalid(format!(
            "`remove` {k}: heal-aware selection removes between 1 and {} of the {n} layers (layer 0 and one other stay)",
            n.saturating_sub(2)
        )));
    }
    Ok(k)
}

/// Chooses the layers of the model at `dense` (tokenized by `tok`) heal-aware with finalists
/// and heals each finalist as `heal_req` says (its closed form; `kd` trains afterwards, on the
/// winner only). `deadline` is when the finalists must be done, if a budget was given.
pub(crate) fn choose_heal_aware(
    dense: &Path,
    tok: &HfTokenizer,
    choice: &LayerChoice,
    heal_req: &HealRequest,
    counts: &ParamCounts,
    deadline: Option<Instant>,
    progress: &dyn Progress,
) -> Result<HealAware> {
    let opts = heal_req.fit.options(heal_req.method, heal_req.text.ctx)?;
    if opts.holdout == 0 {
        return Err(Error::Invalid(
            "heal-aware finalists are judged on held-out windows, so they need `holdout` 2 or more, not 0; hint: name the layers, or give `finalists` 0".into(),
        ));
    }
    let protect = match &choice.protect {
        Some(p) => Protect::parse(p)?,
        None => Protect::default(),
    };
    let mut tokens = heal_req
        .text
        .heal_tokens(tok, heal_req.fit.heal_samples, progress)?;
    // Finalists are judged on a prefix of the heal's tokens; the winner is healed on all of them.
    let cap = choice.finalist_samples.unwrap_or(FINALIST_SAMPLES);
    if cap < opts.ctx {
        return Err(Error::Invalid(format!(
            "`finalist_samples` {cap} is less than one window of `ctx` {}",
            opts.ctx
        )));
    }
    let reheal = tokens.len() > cap;
    tokens.truncate(cap);
    let windows: Vec<Vec<u32>> = whole_windows(&tokens, opts.ctx)
        .map(<[u32]>::to_vec)
        .collect();
    let proxy_idx = finalists::proxy_windows(windows.len(), opts.holdout, choice.calib.samples);
    let held: Vec<usize> = (0..windows.len())
        .filter(|&i| heal::held_out(i, opts.holdout))
        .collect();
    if proxy_idx.is_empty() || held.is_empty() {
        return Err(Error::Invalid(format!(
            "heal-aware finalists need calibration windows to fit on and to hold out: {} tokens give {} windows of {}; hint: raise `heal_samples` to {} or more",
            tokens.len(),
            windows.len(),
            opts.ctx,
            opts.ctx * opts.holdout
        )));
    }
    let model = Model::open(dense)?;
    let n = model.n_layers();
    let k = layers_to_remove(choice, counts, n)?;
    let proxy_windows: Vec<Vec<u32>> = proxy_idx.iter().map(|&i| windows[i].clone()).collect();
    let mut proxy = crate::score::healed::Proxy::new(&model, &proxy_windows, progress)?;
    let judge = match choice.judge_windows.unwrap_or(DEFAULT_JUDGE_WINDOWS) {
        0 => None,
        w => JudgeSlice::new(&model, tok, heal_req, w, progress)?,
    };
    drop(model);
    let width = choice.finalists.unwrap_or(DEFAULT_WIDTH);
    let allowed = |l: usize| !protect.covers(l, n);
    let cands = finalists::candidates(&mut proxy, k, width, &allowed, progress)?;
    drop(proxy);
    let started = Instant::now();
    let mut judge_one = |i: usize, c: &Candidate| -> Result<Option<Judged<Healing>>> {
        if let (Some(d), true) = (deadline, i > 0) {
            // The mean heal so far predicts the next; the proxy's first choice always runs.
            let each = started.elapsed().as_secs_f64() / i as f64;
            if Instant::now() + std::time::Duration::from_secs_f64(each) > d {
                return Ok(None);
            }
        }
        progress.message(&format!(
            "finalist {} of {}: {}",
            i + 1,
            cands.len(),
            format_ranges(&heal::blocks(&c.removed))
        ));
        let t = Instant::now();
        let h = match heal::heal(dense, &c.removed, &tokens, &opts, progress) {
            Ok(h) => h,
            // A later finalist that cannot be healed drops out; the first must heal.
            Err(e) if i > 0 => {
                progress.warn(&format!(
                    "finalist {} was not judged: {e}",
                    format_ranges(&heal::blocks(&c.removed))
                ));
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let Some((unhealed, healed)) = finalists::validation_kls(&h) else {
            return Ok(None);
        };
        // The guard's KL is a mean over its windows' positions; the judging windows add theirs.
        let guard_n = (held.len() * (opts.ctx - 1)) as f64;
        let (judge_kl, validation_kl) = match &judge {
            Some(j) => {
                let (kl, n) = j.kl(dense, &c.removed, &h)?;
                (
                    Some(kl),
                    (healed * guard_n + kl * n as f64) / (guard_n + n as f64),
                )
            }
            None => (None, healed),
        };
        Ok(Some(Judged {
            validation_kl,
            guard_kl: Some(healed),
            judge_kl,
            unhealed_kl: Some(unhealed),
            seconds: t.elapsed().as_secs_f64(),
            kept: h,
        }))
    };
    let (list, healing) = finalists::judge(&cands, &mut judge_one)?;
    let winner = list
        .iter()
        .find(|f| f.chosen)
        .ok_or_else(|| Error::Invalid("heal-aware selection chose no finalist".into()))?;
    let removal = Removal::from_layers(n, winner.removed.iter().copied())?;
    let drop = format_ranges(&removal.removed_ranges());
    let calibration = format!(
        "{} windows of {} tokens from token {} of `{}` (the proxy on {} fit windows, finalists judged on the {} held out)",
        windows.len(),
        opts.ctx,
        heal_req.text.calib_offset,
        heal_req.text.calib.as_deref().unwrap_or(Path::new("")).display(),
        proxy_idx.len(),
        held.len()
    );
    let mut explain = String::new();
    let _ = writeln!(
        explain,
        "strategy     healed with finalists: the heal-aware proxy's best sets and other criteria's, each healed (closed form) and judged by next-token KL to the dense model on held-out windows"
    );
    let _ = writeln!(explain, "calibration  {calibration}");
    for f in &list {
        let _ = writeln!(explain, "{}", f.describe());
    }
    let _ = writeln!(explain, "reproduce with: --drop {drop}");
    let method = json!({
        "kind": "strategy",
        "metric": "healed",
        "amount": Amount::Layers(k),
        "protect": protect,
        "finalists": list,
        "beam_width": width,
        "proxy_windows": proxy_idx,
        "validation_windows": held,
        "judge_windows": judge.as_ref().map_or(0, |j| j.windows.len()),
        "calibration": calibration,
        "drop": drop,
    });
    let runner_up = list
        .iter()
        .filter(|f| !f.chosen)
        .filter_map(|f| f.validation_kl)
        .fold(f64::INFINITY, f64::min);
    Ok(HealAware {
        chosen: Chosen {
            removal,
            method,
            how_chosen: format!(
                "chosen heal-aware: {} finalists healed and judged on held-out windows, this one at validation KL {:.4}{} ({}); reproduce with `--drop {drop}`",
                list.len(),
                winner.validation_kl.unwrap_or(f64::NAN),
                if runner_up.is_finite() {
                    format!(" against {runner_up:.4} for the next best")
                } else {
                    String::new()
                },
                winner.sources.join(", ")
            ),
            explain: Some(explain),
            duplicates: Vec::new(),
        },
        healing: (!reheal).then_some(healing),
    })
}

/// Extra judging windows: calibration text right after the heal's tokens (so disjoint from
/// every fit window, the proxy's and the guard's), with the dense model's final hidden states.
struct JudgeSlice {
    windows: Vec<Vec<u32>>,
    dense_final: Tensor,
}

impl JudgeSlice {
    /// Up to `n` windows of `ctx` tokens after the heal's; `None` when the text has
    /// none left (a warning says so).
    fn new(
        model: &Model,
        tok: &HfTokenizer,
        heal_req: &HealRequest,
        n: usize,
        progress: &dyn Progress,
    ) -> Result<Option<Self>> {
        let Some(calib) = &heal_req.text.calib else {
            return Ok(None);
        };
        let windows = heal_req
            .text
            .windows_after_heal(tok, heal_req.fit.heal_samples, n)?;
        if windows.len() < n {
            progress.warn(&format!(
                "`{}` has {} of the {n} judging windows asked for after the heal's tokens; the finalists are judged on those and the held-out windows",
                calib.display(),
                windows.len()
            ));
        }
        if windows.is_empty() {
            return Ok(None);
        }
        let mut finals = Vec::with_capacity(windows.len());
        for w in &windows {
            finals.push(model.forward_hidden(&model.tokens(&[w])?, &[], None, &mut |_| Ok(()))?);
        }
        Ok(Some(JudgeSlice {
            dense_final: Tensor::cat(&finals, 0)?,
            windows,
        }))
    }

    /// `(mean KL(dense ‖ healed), positions scored)` of the heal `h` of `removed`.
    fn kl(&self, dense: &Path, removed: &[usize], h: &Healing) -> Result<(f64, usize)> {
        let healed = heal::open_healed(dense, &h.tensors)?;
        let mut finals = Vec::with_capacity(self.windows.len());
        for w in &self.windows {
            finals.push(healed.forward_hidden(
                &healed.tokens(&[w])?,
                removed,
                None,
                &mut |_| Ok(()),
            )?);
        }
        let hidden = Tensor::cat(&finals, 0)?;
        let totals = crate::eval::score_hidden_windows(
            &healed,
            &hidden,
            Some(&self.dense_final),
            &self.windows,
        )?;
        let (kl, n) = totals
            .iter()
            .fold((0.0, 0), |(k, n), t| (k + t.kl, n + t.n));
        Ok((kl / n.max(1) as f64, n))
    }
}

/// A [`Progress`] that names the time left of a budget in each message, so a log shows what
/// remains of the whole command's budget. Labels stay as they are: a label is drawn for the
/// whole phase, so a time in it would be the time left when the phase began.
pub(crate) struct Budgeted<'a> {
    pub inner: &'a dyn Progress,
    pub end: Instant,
}

impl Budgeted<'_> {
    fn left(&self) -> String {
        let s = self.end.saturating_duration_since(Instant::now()).as_secs();
        format!("{}:{:02} left", s / 60, s % 60)
    }
}

impl Progress for Budgeted<'_> {
    fn start(&self, label: &str, total: u64) {
        self.inner.start(label, total)
    }
    fn start_bytes(&self, label: &str, total: u64) {
        self.inner.start_bytes(label, total)
    }
    fn advance(&self, n: u64) {
        self.inner.advance(n)
    }
    fn message(&self, msg: &str) {
        // Training names its own time left.
        if msg.contains(" s left") {
            return self.inner.message(msg);
        }
        self.inner.message(&format!("{msg} ({})", self.left()))
    }
    fn finish(&self) {
        self.inner.finish()
    }
    fn step_done(&self, what: &str) {
        self.inner.step_done(what)
    }
    fn warn(&self, msg: &str) {
        self.inner.warn(msg)
    }
}
