//! The sliding/global layer pattern llama.cpp hard-codes for Gemma 2 and 3 instead of reading it
//! from the file, and the check that a GGUF prune keeps it.

use super::model::GgufModel;
use crate::error::{Error, Result};
use crate::select::Removal;

/// The layer pattern period llama.cpp hard-codes (one global layer in every `period`).
pub fn llama_cpp_period(arch: &str) -> Option<u64> {
    match arch {
        "gemma2" => Some(2),
        "gemma3" => Some(6),
        _ => None,
    }
}

/// `{arch}.attention.sliding_window`, `None` when absent.
fn window(model: &GgufModel, arch: &str) -> Result<Option<u64>> {
    let key = format!("{arch}.attention.sliding_window");
    match model.metadata().get(&key) {
        None => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| {
            Error::corrupt(
                model.path(),
                format!("metadata `{key}` is {}, not an integer", v.type_name()),
            )
        }),
    }
}

/// Refuses a GGUF prune whose kept layers break the sliding/global pattern llama.cpp fixes for
/// Gemma (`llama_cpp_period`): the file cannot say which layers are which, so llama.cpp would
/// give kept layers another attention type. Removing whole periods keeps the pattern.
pub fn check_gguf_prune(model: &GgufModel, removal: &Removal) -> Result<()> {
    let arch = model.architecture()?;
    let Some(period) = llama_cpp_period(arch) else {
        return Ok(());
    };
    if window(model, arch)?.unwrap_or(0) == 0 {
        return Ok(());
    }
    let global = |i: usize| (i as u64 + 1).is_multiple_of(period);
    if let Some((new, &old)) = removal
        .kept()
        .iter()
        .enumerate()
        .find(|&(new, &old)| global(new) != global(old))
    {
        return Err(Error::Unsupported(format!(
            "`{}`: removing layers {:?} would make layer {old} ({}) run as {} layer {new}: llama.cpp fixes `{arch}`'s pattern of {} sliding layers then one global, and a GGUF cannot say otherwise; hint: remove whole runs of {period} layers, or prune the HF checkpoint",
            model.path().display(),
            removal.removed(),
            if global(old) { "global" } else { "sliding" },
            if global(new) { "a global" } else { "a sliding" },
            period - 1
        )));
    }
    Ok(())
}
