//! Heal-aware finalists per sweep cell (issue 23, `sweep --heal --finalists K`): for the
//! `healed` strategy at each count, the candidate sets of [`crate::choose::finalists`] are each
//! healed with the sweep's closed-form heal and judged on its held-out calibration windows, and
//! the cell measures the winner. The proxy runs once, on calibration windows the heal fits on.
//! Each count costs one heal per finalist (the beam's `K` plus up to three other sets, fewer
//! where they coincide) instead of one.

use crate::choose::finalists::{self, Candidate, Finalist, Judged};
use crate::choose::strategy::Protect;
use crate::error::{Error, Result};
use crate::heal::{self, HealOptions, Healing};
use crate::model::Model;
use crate::progress::{Progress, Silent};
use crate::score::healed::Proxy;
use std::path::Path;

/// How many calibration windows the proxy runs on (the heal-aware scores' default).
const PROXY_WINDOWS: usize = 16;

/// The proxy, kept across the counts of a sweep.
pub(super) struct CellFinalists {
    proxy: Proxy,
    width: usize,
}

impl CellFinalists {
    /// The proxy on the fit windows of `calib` (as `opts` cuts and holds them out).
    pub fn new(
        model: &Model,
        calib: &[u32],
        opts: &HealOptions,
        width: usize,
        progress: &dyn Progress,
    ) -> Result<Self> {
        if opts.holdout == 0 {
            return Err(Error::Invalid(
                "`finalists` are judged on held-out windows, so they need `holdout` 2 or more, not 0".into(),
            ));
        }
        let windows: Vec<Vec<u32>> = crate::eval::windows::whole_windows(calib, opts.ctx)
            .map(<[u32]>::to_vec)
            .collect();
        let idx = finalists::proxy_windows(windows.len(), opts.holdout, PROXY_WINDOWS);
        if idx.is_empty() {
            return Err(Error::Invalid(
                "`finalists`: the calibration text gives no window to fit on; hint: raise `heal_samples`".into(),
            ));
        }
        let w: Vec<Vec<u32>> = idx.iter().map(|&i| windows[i].clone()).collect();
        Ok(CellFinalists {
            proxy: Proxy::new(model, &w, progress)?,
            width,
        })
    }

    /// The winning set of `k` layers, the finalists, and the winner's heal.
    pub fn choose(
        &mut self,
        k: usize,
        protect: Protect,
        model_path: &Path,
        calib: &[u32],
        opts: &HealOptions,
    ) -> Result<(Vec<usize>, Vec<Finalist>, Healing)> {
        let n = self.proxy.n_layers();
        let allowed = |l: usize| !protect.covers(l, n);
        let cands = finalists::candidates(&mut self.proxy, k, self.width, &allowed, &Silent)?;
        let mut judge_one = |_: usize, c: &Candidate| -> Result<Option<Judged<Healing>>> {
            let t = std::time::Instant::now();
            let h = heal::heal(model_path, &c.removed, calib, opts, &Silent)?;
            Ok(
                finalists::validation_kls(&h).map(|(unhealed, healed)| Judged {
                    validation_kl: healed,
                    guard_kl: Some(healed),
                    judge_kl: None,
                    unhealed_kl: Some(unhealed),
                    seconds: t.elapsed().as_secs_f64(),
                    kept: h,
                }),
            )
        };
        let (list, healing) = finalists::judge(&cands, &mut judge_one)?;
        let set = list
            .iter()
            .find(|f| f.chosen)
            .map(|f| f.removed.clone())
            .unwrap_or_default();
        Ok((set, list, healing))
    }
}
