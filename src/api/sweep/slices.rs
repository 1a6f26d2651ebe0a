//! The sweep's three slices of text: calibration (scoring and healing), evaluation, and
//! validation (where the best removal at each count is chosen), each named with the option that
//! moves it, refused when two share a token of one file.

use super::SweepRequest;
use crate::api::text::TextSlice;
use crate::error::{Error, Result};
use std::path::PathBuf;

/// A slice of a file with its role and the option that moves it. Calibration's range also
/// covers the tokens healing takes, which need not be whole windows.
pub(super) struct Named {
    pub(super) role: &'static str,
    pub(super) option: &'static str,
    pub(super) file: PathBuf,
    pub(super) range: std::ops::Range<usize>,
    pub(super) ctx: usize,
}

impl Named {
    /// The whole windows of the range.
    pub(super) fn slice(&self) -> TextSlice {
        TextSlice {
            file: self.file.clone(),
            offset: self.range.start,
            ctx: self.ctx,
            windows: self.range.len() / self.ctx.max(1),
        }
    }
}

impl SweepRequest {
    pub(super) fn eval_ctx(&self) -> usize {
        self.eval_ctx.unwrap_or(self.calib.ctx)
    }

    /// The calibration slice (scoring and healing; healing takes at most `calib_tokens`, the
    /// calibration text's length) and the evaluation slice.
    pub(super) fn fixed(&self, calib_tokens: usize) -> Vec<Named> {
        let mut out = Vec::new();
        if let Some(file) = &self.calib.calib {
            let c = &self.calib;
            let healed = if self.heal.is_empty() {
                0
            } else {
                self.heal_fit
                    .heal_samples
                    .min(calib_tokens.saturating_sub(c.calib_offset))
            };
            let scored = c.ctx.saturating_mul(c.samples);
            out.push(Named {
                role: "calibration",
                option: "calib_offset",
                file: file.clone(),
                range: c.calib_offset..c.calib_offset.saturating_add(scored.max(healed)),
                ctx: c.ctx,
            });
        }
        out.push(Named {
            role: "evaluation",
            option: "eval_offset",
            file: self.eval.clone(),
            range: self.eval_offset
                ..(self.eval_ctx().saturating_mul(self.eval_samples))
                    .saturating_add(self.eval_offset),
            ctx: self.eval_ctx(),
        });
        out
    }

    /// The validation slice.
    pub(super) fn select(&self, fixed: &[Named]) -> Named {
        let file = self
            .select_on
            .clone()
            .or(self.calib.calib.clone())
            .unwrap_or(self.eval.clone());
        let offset = self.select_offset.unwrap_or_else(|| {
            fixed
                .iter()
                .filter(|s| crate::api::text::same_file(&s.file, &file))
                .map(|s| s.range.end)
                .max()
                .unwrap_or(0)
        });
        let windows = self.select_samples.unwrap_or(self.eval_samples);
        Named {
            role: "validation",
            option: "select_offset",
            file,
            range: offset..(self.eval_ctx().saturating_mul(windows)).saturating_add(offset),
            ctx: self.eval_ctx(),
        }
    }
}

/// Refuses sizes no text can hold before anything is read: windows under 2 tokens, no
/// windows, or an end past `usize::MAX`, naming the options (`ctx`, `eval_samples`, …).
pub(super) fn check_sizes(slices: &[Named], req: &SweepRequest) -> Result<()> {
    for s in slices {
        let windows = match s.role {
            "calibration" => req.calib.samples,
            "evaluation" => req.eval_samples,
            _ => req.select_samples.unwrap_or(req.eval_samples),
        };
        let slice = TextSlice {
            file: s.file.clone(),
            offset: s.range.start,
            ctx: s.ctx,
            windows,
        };
        slice.check(s.role).map_err(|e| {
            if s.role == "validation" && req.select_offset.is_none() {
                Error::Invalid(format!(
                    "{e}\nhint: by default the validation slice follows the calibration tokens (`calib_offset`, `ctx` × `samples`, or `heal_samples` when healing); set `select_offset` or `select_on`"
                ))
            } else {
                e
            }
        })?;
    }
    Ok(())
}

/// Refuses two slices of the same file that share a token.
pub(super) fn check_disjoint(slices: &[Named]) -> Result<()> {
    for (i, a) in slices.iter().enumerate() {
        for b in &slices[i + 1..] {
            let (ra, rb) = (&a.range, &b.range);
            let overlap = ra.start < rb.end && rb.start < ra.end;
            if overlap && crate::api::text::same_file(&a.file, &b.file) {
                return Err(Error::Invalid(format!(
                    "{} tokens {}..{} and {} tokens {}..{} of `{}` overlap\nhint: set `{}` or `{}` so they are disjoint",
                    a.role,
                    ra.start,
                    ra.end,
                    b.role,
                    rb.start,
                    rb.end,
                    a.file.display(),
                    a.option,
                    b.option
                )));
            }
        }
    }
    Ok(())
}

/// The windows of a named slice, with a hint naming the option that moves it.
pub(super) fn windows(tok: &crate::tokenizer::HfTokenizer, s: &Named) -> Result<Vec<Vec<u32>>> {
    s.slice().cut(tok, s.role).map_err(|e| {
        let extra = if s.role == "validation" {
            " (`select_on` takes another file; healing uses up to `heal_samples` tokens of the calibration text)"
        } else {
            ""
        };
        Error::Invalid(format!(
            "{e}\nhint: a longer text, fewer windows, or `{}`{extra}",
            s.option
        ))
    })
}
