//! The sweep's three slices of text: calibration (scoring and healing), evaluation, and
//! validation (where the best removal at each count is chosen), each named with the option that
//! moves it, refused when two share a token of one file.

use super::SweepRequest;
use crate::api::text::TextSlice;
use crate::error::{Error, Result};
use std::ops::Range;

/// A slice of a file with its role and the option that moves it.
pub(super) struct Named {
    pub(super) role: &'static str,
    pub(super) option: &'static str,
    /// The windows the role reads.
    pub(super) slice: TextSlice,
    /// The tokens the role claims: the slice's, and for calibration also those healing takes,
    /// which need not be whole windows.
    pub(super) range: Range<usize>,
}

impl Named {
    fn new(role: &'static str, option: &'static str, slice: TextSlice) -> Self {
        let range = slice.range();
        Named {
            role,
            option,
            slice,
            range,
        }
    }
}

impl SweepRequest {
    pub(super) fn eval_ctx(&self) -> usize {
        self.eval_ctx.unwrap_or(self.calib.text.ctx)
    }

    /// The calibration slice (scoring and healing; healing takes at most `calib_tokens`, the
    /// calibration text's length) and the evaluation slice.
    pub(super) fn fixed(&self, calib_tokens: usize) -> Vec<Named> {
        let mut out = Vec::new();
        if let Some(slice) = self.calib.slice() {
            let healed = if self.heal.is_empty() {
                0
            } else {
                let text = &self.calib.text;
                text.heal_range(self.heal_fit.heal_samples, calib_tokens)
                    .len()
            };
            let mut calib = Named::new("calibration", "calib_offset", slice);
            calib.range.end = calib
                .range
                .end
                .max(calib.range.start.saturating_add(healed));
            out.push(calib);
        }
        out.push(Named::new(
            "evaluation",
            "eval_offset",
            TextSlice {
                file: self.eval.clone(),
                offset: self.eval_offset,
                ctx: self.eval_ctx(),
                windows: self.eval_samples,
            },
        ));
        out
    }

    /// The validation slice.
    pub(super) fn select(&self, fixed: &[Named]) -> Named {
        let file = self
            .select_on
            .clone()
            .or(self.calib.text.calib.clone())
            .unwrap_or(self.eval.clone());
        let offset = self.select_offset.unwrap_or_else(|| {
            fixed
                .iter()
                .filter(|s| crate::api::text::same_file(&s.slice.file, &file))
                .map(|s| s.range.end)
                .max()
                .unwrap_or(0)
        });
        Named::new(
            "validation",
            "select_offset",
            TextSlice {
                file,
                offset,
                ctx: self.eval_ctx(),
                windows: self.select_samples.unwrap_or(self.eval_samples),
            },
        )
    }
}

/// Refuses sizes no text can hold before anything is read: windows under 2 tokens, no
/// windows, or an end past `usize::MAX`, naming the options (`ctx`, `eval_samples`, …).
pub(super) fn check_sizes(slices: &[Named], req: &SweepRequest) -> Result<()> {
    for s in slices {
        s.slice.check(s.role).map_err(|e| {
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
            if overlap && crate::api::text::same_file(&a.slice.file, &b.slice.file) {
                return Err(Error::Invalid(format!(
                    "{} tokens {}..{} and {} tokens {}..{} of `{}` overlap\nhint: set `{}` or `{}` so they are disjoint",
                    a.role,
                    ra.start,
                    ra.end,
                    b.role,
                    rb.start,
                    rb.end,
                    a.slice.file.display(),
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
    s.slice.cut(tok, s.role).map_err(|e| {
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
