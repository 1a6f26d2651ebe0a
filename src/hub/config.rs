//! Where the cache is, which hub to talk to, with which token, and whether talking is allowed:
//! the `huggingface_hub` environment variables, read once into a plain struct so that library
//! callers and tests can set them without touching the process environment.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `HF_HUB_CACHE` | the cache folder | `$HF_HOME/hub` |
//! | `HF_HOME` | HF's home folder | `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface` |
//! | `HF_ENDPOINT` | the hub's URL | `https://huggingface.co` |
//! | `HF_TOKEN` | a token, sent as `Authorization: Bearer …` | the file `$HF_HOME/token` (`HF_TOKEN_PATH`) |
//! | `HF_HUB_OFFLINE` | `1`, `true`, `yes` or `on`: never use the network | off |

use std::ffi::OsString;
use std::path::PathBuf;

/// The public hub.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// How to reach the hub and where to keep what comes from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubConfig {
    /// The cache root (`…/hub`), or `None` when no home folder is known.
    pub cache: Option<PathBuf>,
    /// The hub's base URL, without a trailing `/`.
    pub endpoint: String,
    /// A bearer token for gated and private repos.
    pub token: Option<String>,
    /// Never use the network; serve only from the cache.
    pub offline: bool,
}

impl HubConfig {
    /// A config for `cache` and `endpoint`, with no token and offline mode off.
    pub fn new(cache: impl Into<PathBuf>, endpoint: &str) -> Self {
        HubConfig {
            cache: Some(cache.into()),
            endpoint: endpoint.trim_end_matches('/').to_string(),
            token: None,
            offline: false,
        }
    }

    /// Reads the process environment.
    pub fn from_env() -> Self {
        Self::from_vars(|k| std::env::var_os(k))
    }

    /// Reads the variables through `var`; the token file is read from disk if no `HF_TOKEN`.
    pub fn from_vars(var: impl Fn(&str) -> Option<OsString>) -> Self {
        let nonempty = |k: &str| var(k).filter(|v| !v.is_empty());
        let home = nonempty("HOME")
            .or_else(|| nonempty("USERPROFILE"))
            .map(PathBuf::from);
        let hf_home = nonempty("HF_HOME").map(PathBuf::from).or_else(|| {
            nonempty("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| home.as_ref().map(|h| h.join(".cache")))
                .map(|c| c.join("huggingface"))
        });
        let cache = nonempty("HF_HUB_CACHE")
            .map(PathBuf::from)
            .or_else(|| hf_home.as_ref().map(|h| h.join("hub")));
        let endpoint = nonempty("HF_ENDPOINT")
            .and_then(|e| e.into_string().ok())
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        let token = nonempty("HF_TOKEN")
            .and_then(|t| t.into_string().ok())
            .or_else(|| {
                let path = nonempty("HF_TOKEN_PATH")
                    .map(PathBuf::from)
                    .or_else(|| hf_home.as_ref().map(|h| h.join("token")))?;
                std::fs::read_to_string(path).ok()
            })
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty());
        let offline = var("HF_HUB_OFFLINE")
            .and_then(|v| v.into_string().ok())
            .is_some_and(|v| is_true(&v));
        HubConfig {
            cache,
            endpoint: endpoint.trim_end_matches('/').to_string(),
            token,
            offline,
        }
    }
}

/// `huggingface_hub`'s truth values.
fn is_true(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "on"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(vars: &[(&str, &str)]) -> HubConfig {
        let m: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        HubConfig::from_vars(|k| m.get(k).cloned())
    }

    #[test]
    fn cache_root_follows_hf_rules() {
        let c = cfg(&[("HOME", "/home/u")]);
        assert_eq!(
            c.cache,
            Some(PathBuf::from("/home/u/.cache/huggingface/hub"))
        );
        assert_eq!(c.endpoint, DEFAULT_ENDPOINT);
        let c = cfg(&[("HOME", "/home/u"), ("XDG_CACHE_HOME", "/x")]);
        assert_eq!(c.cache, Some(PathBuf::from("/x/huggingface/hub")));
        let c = cfg(&[("HOME", "/home/u"), ("HF_HOME", "/hf")]);
        assert_eq!(c.cache, Some(PathBuf::from("/hf/hub")));
        let c = cfg(&[("HF_HOME", "/hf"), ("HF_HUB_CACHE", "/cache")]);
        assert_eq!(c.cache, Some(PathBuf::from("/cache")));
        assert_eq!(cfg(&[]).cache, None);
    }

    #[test]
    fn endpoint_token_and_offline() {
        let c = cfg(&[
            ("HF_ENDPOINT", "http://127.0.0.1:9/"),
            ("HF_TOKEN", " hf_abc\n"),
        ]);
        assert_eq!(c.endpoint, "http://127.0.0.1:9");
        assert_eq!(c.token.as_deref(), Some("hf_abc"));
        for v in ["1", "true", "YES", "on"] {
            assert!(cfg(&[("HF_HUB_OFFLINE", v)]).offline, "{v}");
        }
        for v in ["0", "false", "", "no"] {
            assert!(!cfg(&[("HF_HUB_OFFLINE", v)]).offline, "{v}");
        }
    }

    #[test]
    fn token_file_is_read_when_no_variable() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("token"), "hf_file\n").unwrap();
        let home = tmp.path().to_str().unwrap();
        assert_eq!(cfg(&[("HF_HOME", home)]).token.as_deref(), Some("hf_file"));
        assert_eq!(
            cfg(&[("HF_HOME", home), ("HF_TOKEN", "hf_var")])
                .token
                .as_deref(),
            Some("hf_var")
        );
    }
}
