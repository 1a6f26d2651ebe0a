//! The library's front door: one call per job, each taking a model, an options struct and a
//! [`Progress`](crate::progress::Progress), and returning a result that serialises to the JSON
//! the command line prints with `--json`. The CLI (`cli/`) and the Python package (`python/`)
//! are two thin faces over these calls; nothing here prints.
//!
//! - [`source`]: a model given as a path, a GGUF file or a hub ID, resolved to files on disk.
//! - [`run`]: how one call runs (precision, threads, symlink policy), carried by its request.
//! - [`text`]: a slice of a text file as token windows, under the one tokenization rule, and
//!   the calibration text ([`CalibText`]) that scoring, healing and the sweep share.
//! - [`convert`]: HF ↔ GGUF, and random-weight checkpoints.
//! - [`inspect`], [`plan`], [`prune`](prune::prune), [`heal`](heal::heal): checkpoints.
//! - [`sweep`](sweep::sweep), [`report`](report::report): the study, every strategy at every
//!   count, and its `report.md`.
//! - [`score`](score::score), [`choose`]: layer importance and the layers it picks.
//! - [`doctor`](doctor::doctor): the machine report (CPU, peak rates, kernels chosen).
//! - [`eval`](eval::eval), [`eval_tasks`](eval::eval_tasks), [`generate`](generate::generate):
//!   measuring a model, optionally with layers skipped; [`tasks`]: standard benchmarks by name.
//!
//! Options structs deserialise from JSON objects whose keys are the CLI flags with `_` for `-`
//! (`calib_offset` for `--calib-offset`), with the CLI's defaults for absent keys. Nested option
//! groups are flattened into one object, so [`unknown_keys`] is how a caller refuses a key that
//! no field took.

pub mod choose;
pub mod convert;
pub mod doctor;
pub mod eval;
mod finalists;
pub mod generate;
pub mod heal;
pub mod inspect;
pub mod plan;
pub mod prune;
pub mod report;
pub mod run;
pub mod score;
pub mod source;
pub mod sweep;
pub mod tasks;
pub mod text;

pub use choose::{Chosen, LayerChoice, Layers};
pub use run::RunOptions;
pub use source::ModelSource;
pub use text::{CalibText, TextSlice};

/// The keys of `given` (a JSON object of options) that `parsed`, the options read from it, has no
/// field for: serde ignores them when option groups are flattened, so callers that take options
/// by name check with this.
pub fn unknown_keys<T: serde::Serialize>(given: &serde_json::Value, parsed: &T) -> Vec<String> {
    let known = serde_json::to_value(parsed).unwrap_or_default();
    match (given.as_object(), known.as_object()) {
        (Some(g), Some(k)) => g
            .keys()
            .filter(|key| !k.contains_key(*key))
            .cloned()
            .collect(),
        _ => Vec::new(),
    }
}
