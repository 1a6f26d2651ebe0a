//! What a MODEL argument names: a local path, or a model on the Hugging Face hub written the way
//! HF users write it.
//!
//! | form | meaning |
//! |---|---|
//! | `./Qwen3-4B`, `model.gguf`, `config.json` | a local folder or file |
//! | `Qwen/Qwen3-4B` | the hub repo at its `main` branch |
//! | `Qwen/Qwen3-4B@v1.0`, `…@refs/pr/3`, `…@<40-hex commit>` | a branch, tag or commit |
//! | `org/name:file.gguf`, `org/name@rev:sub/file.gguf` | one GGUF file of a repo |
//!
//! Ambiguity rule: **an existing local path always wins**. `Qwen/Qwen3-4B` is read as a hub ID
//! only when no file or folder of that name exists (relative to the working folder); to force the
//! hub, run from another folder. Arguments that can only be paths (starting with `.`, `/` or `~`,
//! or holding a backslash) are never read as IDs, so a typo in a path is reported as a missing
//! path.

use super::error::HubError;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// The longest repo ID the hub accepts (`org/name` together).
pub const MAX_REPO_ID_LEN: usize = 96;

/// The revision used when none is named.
pub const DEFAULT_REVISION: &str = "main";

/// A MODEL argument, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelRef {
    /// A local file or folder (it may not exist; the command says so when it opens it).
    Local(PathBuf),
    /// A model on the hub.
    Hub(HubRef),
}

/// A repo on the hub, a revision in it, and optionally one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubRef {
    /// `org/name`, validated by [`validate_repo_id`].
    pub repo: String,
    /// A branch, tag or commit; `None` means [`DEFAULT_REVISION`].
    pub revision: Option<String>,
    /// One file of the repo (a `.gguf`), as a relative path.
    pub file: Option<String>,
}

impl HubRef {
    /// The revision asked for, `main` when none was.
    pub fn revision(&self) -> &str {
        self.revision.as_deref().unwrap_or(DEFAULT_REVISION)
    }
}

impl std::fmt::Display for HubRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.repo)?;
        if let Some(r) = &self.revision {
            write!(f, "@{r}")?;
        }
        if let Some(file) = &self.file {
            write!(f, ":{file}")?;
        }
        Ok(())
    }
}

impl ModelRef {
    /// Parses a MODEL argument; see the module docs for the forms and the ambiguity rule.
    pub fn parse(arg: &OsStr) -> Result<ModelRef, HubError> {
        Self::parse_with(arg, |p| p.exists())
    }

    /// [`ModelRef::parse`] with the existence test passed in, so tests need no real files.
    fn parse_with(arg: &OsStr, exists: impl Fn(&Path) -> bool) -> Result<ModelRef, HubError> {
        let path = PathBuf::from(arg);
        if exists(&path) {
            return Ok(ModelRef::Local(path));
        }
        let Some(s) = arg.to_str() else {
            return Ok(ModelRef::Local(path));
        };
        if looks_like_path(s) {
            return Ok(ModelRef::Local(path));
        }
        let bad = |msg: String| HubError::BadRef {
            arg: s.to_string(),
            msg,
        };
        let (id_rev, file) = match s.split_once(':') {
            Some((a, f)) => (a, Some(f)),
            None => (s, None),
        };
        let (repo, revision) = match id_rev.split_once('@') {
            Some((r, rev)) => (r, Some(rev)),
            None => (id_rev, None),
        };
        if !repo.contains('/') {
            // `model`, `foo.gguf`: a plain name is a path that does not exist.
            if revision.is_none() && file.is_none() {
                return Ok(ModelRef::Local(path));
            }
            return Err(bad(format!(
                "`{repo}` is not a hub ID; write it as `org/name` (`openai-community/gpt2`, not `gpt2`)"
            )));
        }
        validate_repo_id(repo).map_err(|m| bad(format!("no such file or folder, and {m}")))?;
        if let Some(rev) = revision {
            validate_revision(rev).map_err(&bad)?;
        }
        if let Some(f) = file {
            validate_file(f).map_err(&bad)?;
        }
        Ok(ModelRef::Hub(HubRef {
            repo: repo.to_string(),
            revision: revision.map(str::to_string),
            file: file.map(str::to_string),
        }))
    }
}

/// Arguments that can only be paths.
fn looks_like_path(s: &str) -> bool {
    s.is_empty()
        || s.starts_with('.')
        || s.starts_with('/')
        || s.starts_with('~')
        || s.contains('\\')
}

/// Checks an `org/name` repo ID by the hub's rules: two parts of letters, digits, `-`, `_` and
/// `.`, neither starting nor ending with `-` or `.`, no `--` or `..`, at most
/// [`MAX_REPO_ID_LEN`] characters.
pub fn validate_repo_id(id: &str) -> Result<(), String> {
    let fail = |why: &str| Err(format!("`{id}` is not a hub ID (`org/name`): {why}"));
    if id.len() > MAX_REPO_ID_LEN {
        return fail(&format!("longer than {MAX_REPO_ID_LEN} characters"));
    }
    let parts: Vec<&str> = id.split('/').collect();
    if parts.len() != 2 {
        return fail("it must have exactly one `/`");
    }
    for p in parts {
        if p.is_empty() {
            return fail("a part is empty");
        }
        if let Some(c) = p
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "-_.".contains(*c)))
        {
            return fail(&format!("`{c}` is not allowed"));
        }
        if p.starts_with(['-', '.']) || p.ends_with(['-', '.']) {
            return fail("a part starts or ends with `-` or `.`");
        }
        if p.contains("--") || p.contains("..") {
            return fail("`--` and `..` are not allowed");
        }
    }
    Ok(())
}

/// Checks a revision: a branch, tag (`v1.0`, `refs/pr/3`) or commit.
pub fn validate_revision(rev: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || "-_./".contains(c);
    if rev.is_empty() {
        return Err("the revision after `@` is empty".into());
    }
    if let Some(c) = rev.chars().find(|c| !ok_char(*c)) {
        return Err(format!("revision `{rev}`: `{c}` is not allowed"));
    }
    if rev.contains("..") || rev.starts_with('/') || rev.ends_with('/') || rev.contains("//") {
        return Err(format!("revision `{rev}` is not a branch, tag or commit"));
    }
    Ok(())
}

/// Whether `rev` is a full commit hash (40 lowercase hex digits).
pub fn is_commit(rev: &str) -> bool {
    rev.len() == 40 && rev.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Checks a file named after `:`: a relative path to a `.gguf` file, with no `.`/`..` parts.
pub fn validate_file(file: &str) -> Result<(), String> {
    if file.is_empty() {
        return Err("the file after `:` is empty".into());
    }
    validate_repo_path(file)?;
    if !file.to_ascii_lowercase().ends_with(".gguf") {
        return Err(format!(
            "`{file}`: only a `.gguf` file can be named after `:`; for safetensors repos give just `org/name`"
        ));
    }
    Ok(())
}

/// Checks a path inside a repo: relative, `/`-separated, no empty, `.` or `..` parts, no
/// backslashes or control characters. Paths that pass are safe to join under a cache folder.
pub fn validate_repo_path(file: &str) -> Result<(), String> {
    if file.starts_with('/') || file.contains('\\') || file.chars().any(char::is_control) {
        return Err(format!("`{file}` is not a relative path inside the repo"));
    }
    if file
        .split('/')
        .any(|p| p.is_empty() || p == "." || p == "..")
    {
        return Err(format!("`{file}` has an empty, `.` or `..` part"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub(s: &str) -> HubRef {
        match ModelRef::parse(OsStr::new(s)).unwrap() {
            ModelRef::Hub(h) => h,
            other => panic!("`{s}` parsed as {other:?}"),
        }
    }

    fn local(s: &str) -> bool {
        matches!(ModelRef::parse(OsStr::new(s)).unwrap(), ModelRef::Local(_))
    }

    fn bad(s: &str) -> String {
        match ModelRef::parse(OsStr::new(s)) {
            Err(e @ HubError::BadRef { .. }) => e.to_string(),
            other => panic!("`{s}` must be refused, got {other:?}"),
        }
    }

    #[test]
    fn parses_ids_revisions_and_files() {
        let h = hub("Qwen/Qwen3-4B");
        assert_eq!(
            (h.repo.as_str(), h.revision(), h.file.as_deref()),
            ("Qwen/Qwen3-4B", "main", None)
        );
        let h = hub("Qwen/Qwen3-4B@v1.0");
        assert_eq!(h.revision.as_deref(), Some("v1.0"));
        let h = hub("org/m@refs/pr/3");
        assert_eq!(h.revision.as_deref(), Some("refs/pr/3"));
        let c = "0123456789abcdef0123456789abcdef01234567";
        let h = hub(&format!("org/m@{c}"));
        assert!(is_commit(h.revision()));
        let h = hub("bartowski/Qwen3-4B-GGUF:Qwen3-4B-Q4_K_M.gguf");
        assert_eq!(h.file.as_deref(), Some("Qwen3-4B-Q4_K_M.gguf"));
        assert_eq!(h.revision, None);
        let h = hub("org/m@dev:sub/x.GGUF");
        assert_eq!(
            (h.revision.as_deref(), h.file.as_deref()),
            (Some("dev"), Some("sub/x.GGUF"))
        );
        assert_eq!(h.to_string(), "org/m@dev:sub/x.GGUF");
    }

    #[test]
    fn paths_stay_paths() {
        assert!(local("./Qwen/Qwen3-4B"));
        assert!(local("/no/such/dir"));
        assert!(local("~/models/x"));
        assert!(local("model.gguf"));
        assert!(local("config.json"));
        assert!(local("a\\b"));
    }

    #[test]
    fn an_existing_path_wins_over_an_id() {
        let arg = OsStr::new("Qwen/Qwen3-4B");
        let exists = |p: &Path| p == Path::new("Qwen/Qwen3-4B");
        assert_eq!(
            ModelRef::parse_with(arg, exists).unwrap(),
            ModelRef::Local(PathBuf::from("Qwen/Qwen3-4B"))
        );
        assert!(matches!(
            ModelRef::parse_with(arg, |_| false).unwrap(),
            ModelRef::Hub(_)
        ));
    }

    #[test]
    fn refuses_malformed_refs() {
        assert!(bad("a/b/c").contains("exactly one `/`"));
        assert!(bad("org/na me").contains("` ` is not allowed"));
        assert!(bad("org/-name").contains("starts or ends"));
        assert!(bad("org/a--b").contains("`--`"));
        assert!(bad(&format!("org/{}", "x".repeat(100))).contains("longer than"));
        assert!(bad("org/m@").contains("empty"));
        assert!(bad("org/m@a..b").contains("not a branch"));
        assert!(bad("org/m@a b").contains("not allowed"));
        assert!(bad("org/m:model.safetensors").contains("only a `.gguf`"));
        assert!(bad("org/m:../x.gguf").contains("`..`"));
        assert!(bad("org/m:").contains("empty"));
        assert!(bad("gpt2@main").contains("`org/name`"));
    }
}
