//! What can go wrong between a MODEL argument and a local copy of the model. Each variant is one
//! situation, and its message says what to do next; messages are one line, lowercase, with names
//! in backticks.

use std::path::PathBuf;

/// Errors of hub references, the cache and downloads.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// MODEL is neither an existing path nor a well-formed hub reference.
    #[error("`{arg}`: {msg}")]
    BadRef { arg: String, msg: String },
    /// No cache folder could be chosen (no `HF_HUB_CACHE`, `HF_HOME` or home folder).
    #[error("no Hugging Face cache folder: set `HF_HUB_CACHE` (or `HF_HOME`, or `HOME`)")]
    NoCache,
    /// The hub does not know the repo (404), or hides it from anonymous users (401).
    #[error("`{repo}`: no such {kind} on `{endpoint}`; check the ID (the `org/name` of the {kind} page's URL){}",
        if *.has_token { "" } else { ", and for a private repo set `HF_TOKEN` or run `huggingface-cli login`" })]
    RepoNotFound {
        repo: String,
        /// `model` or `dataset`.
        kind: &'static str,
        endpoint: String,
        has_token: bool,
    },
    /// The repo exists but not the branch, tag or commit.
    #[error("`{repo}`: revision `{revision}` not found; check the branch, tag or commit (see the model page's \"Files and versions\")")]
    RevisionNotFound { repo: String, revision: String },
    /// The revision exists but not the file.
    #[error(
        "`{repo}`@`{revision}`: no file `{file}` in the repo{}",
        hint_for_missing(file)
    )]
    FileNotFound {
        repo: String,
        revision: String,
        file: String,
    },
    /// A dataset without data files for a split (in a layout `datasets` reads, as parquet or
    /// JSON Lines).
    #[error("`{repo}` (config `{config}`): no `{split}` split among the dataset's parquet or JSON Lines files{}", if *.export { ", nor in its parquet export (`refs/convert/parquet`)" } else { "" })]
    NoSplit {
        repo: String,
        config: String,
        split: String,
        /// Whether the parquet export was looked at too.
        export: bool,
    },
    /// A gated or private repo refused the request (401/403).
    #[error("`{repo}`: access refused (HTTP {status}); {}", if *.has_token {
        "the token in `HF_TOKEN` (or the token file) was not accepted: check it, and accept the model's terms on its page"
    } else {
        "the repo is gated or private: accept its terms on the model page, then set `HF_TOKEN` or run `huggingface-cli login`"
    })]
    Unauthorized {
        repo: String,
        status: u16,
        has_token: bool,
    },
    /// Offline mode is on and the cache lacks something.
    #[error("`{repo}`@`{revision}`: {what} is not in the cache `{}` and `HF_HUB_OFFLINE` is set; unset it to download, or fetch the {kind} once while online", cache.display())]
    NotCached {
        repo: String,
        /// `model` or `dataset`.
        kind: &'static str,
        revision: String,
        what: String,
        cache: PathBuf,
    },
    /// The hub could not be reached.
    #[error("`{repo}`: cannot reach `{url}`: {msg}; check the network and `HF_ENDPOINT`{}",
        if *.cached { ", or set `HF_HUB_OFFLINE=1` to use the copy in the cache" } else { "" })]
    Network {
        repo: String,
        url: String,
        msg: String,
        /// Whether the cache could serve this model offline.
        cached: bool,
    },
    /// A download kept failing after resuming [`super::client::MAX_ATTEMPTS`] times.
    #[error("`{url}`: the download stopped at {got} of {total} bytes after {attempts} attempts ({msg}); run the command again to resume it")]
    Interrupted {
        url: String,
        got: u64,
        total: u64,
        attempts: u32,
        msg: String,
    },
    /// A downloaded LFS file whose SHA-256 is not its ETag.
    #[error("`{repo}`: `{file}` downloaded with sha256 `{actual}` but the hub gives `{expected}`; the download was deleted, run the command again")]
    Checksum {
        repo: String,
        file: String,
        expected: String,
        actual: String,
    },
    /// The server answered something the hub protocol does not allow.
    #[error("`{url}`: {msg}")]
    BadResponse { url: String, msg: String },
}

fn hint_for_missing(file: &str) -> &'static str {
    if file == crate::checkpoint::hf::CONFIG_FILE {
        "; for a GGUF repo, name the file: `org/name:FILE.gguf`"
    } else {
        ""
    }
}
