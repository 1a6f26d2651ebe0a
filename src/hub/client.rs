//! A small blocking client for the hub's file protocol, over `ureq`:
//!
//! - `HEAD {endpoint}/{repo}/resolve/{revision}/{file}` (a dataset's: `{endpoint}/datasets/{repo}/…`) gives the commit (`X-Repo-Commit`), the
//!   ETag (`X-Linked-Etag` for LFS files, where it is the SHA-256, else `ETag`) and the size
//!   (`X-Linked-Size`, else `Content-Length`). Relative redirects (renamed repos) are followed;
//!   an absolute one points at the file's storage, where the bytes are then fetched.
//! - `GET` of that location, with `Range: bytes=N-` to continue a download that stopped.
//! - `GET {endpoint}/api/models/{repo}/revision/{revision}` (`api/datasets/…`) lists a revision's
//!   files, and for a dataset gives its card's metadata (`cardData`: the configs and their files).
//!
//! The token goes only to the endpoint, never to the storage host a redirect names. Status codes
//! and the hub's `X-Error-Code` header become [`HubError`]s that say what to do next.

use super::cache::RepoKind;
use super::config::HubConfig;
use super::error::HubError;
use super::model_ref::{is_commit, validate_repo_path};
use crate::checkpoint::provenance::hex;
use crate::error::{Error, IoContext, Result};
use crate::progress::Progress;
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Duration;
use ureq::http::{HeaderMap, Response};
use ureq::Body;

/// Tries of one download before giving up; each continues where the last one stopped.
pub const MAX_ATTEMPTS: u32 = 5;
/// Relative redirects followed for one file.
pub const MAX_REDIRECTS: usize = 5;
/// The largest JSON answer of the API accepted.
pub const MAX_API_BYTES: u64 = 64 << 20;
/// Bytes read from the network per step.
const CHUNK: usize = 1 << 20;

/// What the hub says about one file at one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMeta {
    /// The commit the revision resolved to.
    pub commit: String,
    /// The blob's name in the cache.
    pub etag: String,
    /// The SHA-256 the bytes must have (LFS files).
    pub sha256: Option<String>,
    pub size: Option<u64>,
    /// Where the bytes are.
    pub url: String,
}

/// A revision's commit and files, from the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoInfo {
    pub commit: String,
    pub files: Vec<String>,
    /// The repo card's metadata (`cardData`), when the hub gives it.
    pub card: Option<serde_json::Value>,
}

/// A client for one repo.
pub struct Client<'a> {
    agent: ureq::Agent,
    cfg: &'a HubConfig,
    repo: &'a str,
    kind: RepoKind,
}

impl<'a> Client<'a> {
    /// A client for model `repo`.
    pub fn new(cfg: &'a HubConfig, repo: &'a str) -> Self {
        Self::of_kind(cfg, repo, RepoKind::Model)
    }

    /// A client for `repo` of `kind`.
    pub fn of_kind(cfg: &'a HubConfig, repo: &'a str, kind: RepoKind) -> Self {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .user_agent(format!("depthprune/{}", crate::VERSION))
            .accept_encoding("identity")
            .timeout_connect(Some(Duration::from_secs(20)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .timeout_per_read(Some(Duration::from_secs(60)));
        // A proxy from the environment never applies to a hub on this machine.
        let config = if is_loopback(&cfg.endpoint) {
            config.proxy(None)
        } else {
            config
        }
        .build();
        Client {
            agent: config.new_agent(),
            cfg,
            repo,
            kind,
        }
    }

    /// `{endpoint}/{repo}/resolve/{revision}/{file}` (`{endpoint}/datasets/{repo}/…`).
    pub fn resolve_url(&self, revision: &str, file: &str) -> String {
        format!(
            "{}/{}{}/resolve/{}/{}",
            self.cfg.endpoint,
            self.kind.url_prefix(),
            self.repo,
            encode(revision, false),
            encode(file, true)
        )
    }

    /// Asks for a file's commit, ETag, size and location without fetching it.
    pub fn head(&self, revision: &str, file: &str) -> Result<FileMeta> {
        let mut url = self.resolve_url(revision, file);
        for _ in 0..=MAX_REDIRECTS {
            let resp = self.call(self.agent.head(&url), &url)?;
            self.check(&resp, revision, Some(file), &url)?;
            let status = resp.status().as_u16();
            let headers = resp.headers();
            if !(300..400).contains(&status) {
                return meta_from(headers, url);
            }
            let location = header(headers, "location").ok_or_else(|| HubError::BadResponse {
                url: url.clone(),
                msg: format!("HTTP {status} without a `Location` header"),
            })?;
            if location.starts_with('/') {
                url = format!("{}{location}", origin(&url));
                continue;
            }
            if !(location.starts_with("https://") || location.starts_with("http://")) {
                return Err(HubError::BadResponse {
                    url,
                    msg: format!("redirect to `{location}`, which is not an HTTP URL"),
                }
                .into());
            }
            return meta_from(headers, location.to_string());
        }
        Err(HubError::BadResponse {
            url,
            msg: format!("more than {MAX_REDIRECTS} redirects"),
        }
        .into())
    }

    /// Lists a revision's files and the commit it resolves to.
    pub fn repo_info(&self, revision: &str) -> Result<RepoInfo> {
        let url = format!(
            "{}/api/{}/{}/revision/{}",
            self.cfg.endpoint,
            self.kind.plural(),
            self.repo,
            encode(revision, false)
        );
        let resp = self.call(self.agent.get(&url), &url)?;
        self.check(&resp, revision, None, &url)?;
        let bad = |msg: String| HubError::BadResponse {
            url: url.clone(),
            msg,
        };
        let text = resp
            .into_body()
            .into_with_config()
            .limit(MAX_API_BYTES)
            .read_to_string()
            .map_err(|e| bad(format!("reading the answer failed: {e}")))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
        let commit = v
            .get("sha")
            .and_then(|s| s.as_str())
            .filter(|s| is_commit(s))
            .ok_or_else(|| bad("no commit hash in `sha`".into()))?
            .to_string();
        let files = v
            .get("siblings")
            .and_then(|s| s.as_array())
            .ok_or_else(|| bad("no `siblings` list".into()))?
            .iter()
            .filter_map(|s| s.get("rfilename").and_then(|f| f.as_str()))
            .filter(|f| validate_repo_path(f).is_ok())
            .map(str::to_string)
            .collect();
        let card = v.get("cardData").filter(|c| c.is_object()).cloned();
        Ok(RepoInfo {
            commit,
            files,
            card,
        })
    }

    /// Reads `len` bytes at `start` of a file with one range request.
    pub fn read_range(&self, url: &str, start: u64, len: u64) -> Result<Vec<u8>> {
        let bad = |msg: String| HubError::BadResponse {
            url: url.to_string(),
            msg,
        };
        if len == 0 {
            return Ok(Vec::new());
        }
        let range = format!("bytes={start}-{}", start + len - 1);
        let resp = self.call(self.agent.get(url).header("Range", &range), url)?;
        self.check(&resp, "", None, url)?;
        if resp.status().as_u16() != 206 {
            return Err(bad(format!(
                "answered HTTP {} to `Range: {range}`; the server must support range requests",
                resp.status().as_u16()
            ))
            .into());
        }
        let mut bytes = Vec::with_capacity(len as usize);
        resp.into_body()
            .into_reader()
            .take(len + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| network(self.repo, url, e.to_string(), false))?;
        if bytes.len() as u64 != len {
            return Err(bad(format!(
                "sent {} bytes for `Range: {range}`, not {len}",
                bytes.len()
            ))
            .into());
        }
        Ok(bytes)
    }

    /// Downloads a file into `part`, continuing what is already there, and checks its SHA-256
    /// when the hub gave one. On a checksum mismatch `part` is deleted.
    pub fn download(
        &self,
        meta: &FileMeta,
        file: &str,
        part: &Path,
        progress: &dyn Progress,
    ) -> Result<()> {
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(part)
            .at(part)?;
        let mut have = f.seek(SeekFrom::End(0)).at(part)?;
        if meta.size.is_some_and(|s| have > s) {
            restart(&mut f, part, &mut have)?;
        }
        let mut hasher = Sha256::new();
        if meta.sha256.is_some() && have > 0 {
            hash_prefix(&mut f, part, have, &mut hasher)?;
        }
        progress.start_bytes(file, meta.size.unwrap_or(0));
        progress.advance(have);
        let mut attempts = 0;
        let mut last = String::from("no attempt");
        let mut buf = vec![0u8; CHUNK];
        loop {
            if meta.size == Some(have) {
                break;
            }
            if attempts == MAX_ATTEMPTS {
                progress.finish();
                return Err(HubError::Interrupted {
                    url: meta.url.clone(),
                    got: have,
                    total: meta.size.unwrap_or(0),
                    attempts,
                    msg: last,
                }
                .into());
            }
            if attempts > 0 {
                std::thread::sleep(Duration::from_millis(200 * u64::from(attempts)));
            }
            attempts += 1;
            let mut req = self.agent.get(&meta.url);
            if have > 0 {
                req = req.header("Range", &format!("bytes={have}-"));
            }
            let resp = match self.call(req, &meta.url) {
                Ok(r) => r,
                Err(e) => {
                    last = e.to_string();
                    continue;
                }
            };
            match resp.status().as_u16() {
                206 => {
                    let want = format!("bytes {have}-");
                    let got = header(resp.headers(), "content-range").unwrap_or_default();
                    if !got.starts_with(&want) {
                        return Err(HubError::BadResponse {
                            url: meta.url.clone(),
                            msg: format!(
                                "asked for `bytes={have}-` but got `Content-Range: {got}`"
                            ),
                        }
                        .into());
                    }
                }
                200 => {
                    if have > 0 {
                        restart(&mut f, part, &mut have)?;
                        hasher = Sha256::new();
                        progress.start_bytes(file, meta.size.unwrap_or(0));
                    }
                }
                416 => {
                    restart(&mut f, part, &mut have)?;
                    hasher = Sha256::new();
                    last = "the server refused the range".into();
                    continue;
                }
                _ => {
                    self.check(&resp, &meta.commit, Some(file), &meta.url)?;
                    return Err(HubError::BadResponse {
                        url: meta.url.clone(),
                        msg: format!("unexpected HTTP {}", resp.status().as_u16()),
                    }
                    .into());
                }
            }
            let mut body = resp.into_body().into_reader();
            let finished = loop {
                match body.read(&mut buf) {
                    Ok(0) => break true,
                    Ok(n) => {
                        if meta.size.is_some_and(|s| have + n as u64 > s) {
                            return Err(HubError::BadResponse {
                                url: meta.url.clone(),
                                msg: format!(
                                    "sent more than the {} bytes announced",
                                    meta.size.unwrap_or(0)
                                ),
                            }
                            .into());
                        }
                        f.write_all(&buf[..n]).at(part)?;
                        hasher.update(&buf[..n]);
                        have += n as u64;
                        progress.advance(n as u64);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        last = e.to_string();
                        break false;
                    }
                }
            };
            if finished && meta.size.is_none() {
                break;
            }
            if finished && meta.size != Some(have) {
                last = format!("the connection closed after {have} bytes");
            }
        }
        f.flush().at(part)?;
        drop(f);
        progress.finish();
        if let Some(expected) = &meta.sha256 {
            let actual = hex(&hasher.finalize());
            if &actual != expected {
                let _ = std::fs::remove_file(part);
                return Err(HubError::Checksum {
                    repo: self.repo.to_string(),
                    file: file.to_string(),
                    expected: expected.clone(),
                    actual,
                }
                .into());
            }
        }
        Ok(())
    }

    /// Sends a request to the endpoint, with the token; transport failures become
    /// [`HubError::Network`].
    fn call(
        &self,
        req: ureq::RequestBuilder<ureq::typestate::WithoutBody>,
        url: &str,
    ) -> Result<Response<Body>> {
        self.authed(req, url)
            .call()
            .map_err(|e| network(self.repo, url, e.to_string(), false))
    }

    /// Adds the bearer token when `url` is on the endpoint.
    fn authed(
        &self,
        req: ureq::RequestBuilder<ureq::typestate::WithoutBody>,
        url: &str,
    ) -> ureq::RequestBuilder<ureq::typestate::WithoutBody> {
        match &self.cfg.token {
            Some(t) if on_endpoint(&self.cfg.endpoint, url) => {
                req.header("Authorization", &format!("Bearer {t}"))
            }
            _ => req,
        }
    }

    /// Turns an error status into the [`HubError`] that explains it.
    fn check(
        &self,
        resp: &Response<Body>,
        revision: &str,
        file: Option<&str>,
        url: &str,
    ) -> Result<(), HubError> {
        let status = resp.status().as_u16();
        if status < 400 {
            return Ok(());
        }
        let code = header(resp.headers(), "x-error-code").unwrap_or_default();
        let has_token = self.cfg.token.is_some();
        let repo = self.repo.to_string();
        let not_found = || HubError::RepoNotFound {
            repo: repo.clone(),
            kind: self.kind.noun(),
            endpoint: self.cfg.endpoint.clone(),
            has_token,
        };
        Err(match code {
            "RepoNotFound" | "RepositoryNotFound" => not_found(),
            "RevisionNotFound" => HubError::RevisionNotFound {
                repo: repo.clone(),
                revision: revision.to_string(),
            },
            "EntryNotFound" => HubError::FileNotFound {
                repo: repo.clone(),
                revision: revision.to_string(),
                file: file.unwrap_or_default().to_string(),
            },
            "GatedRepo" => HubError::Unauthorized {
                repo: repo.clone(),
                status,
                has_token,
            },
            _ => match status {
                401 | 403 => HubError::Unauthorized {
                    repo: repo.clone(),
                    status,
                    has_token,
                },
                404 => not_found(),
                s if s >= 500 => HubError::BadResponse {
                    url: url.to_string(),
                    msg: format!("HTTP {s}: the hub is having trouble; try again later"),
                },
                s => HubError::BadResponse {
                    url: url.to_string(),
                    msg: format!("unexpected HTTP {s}"),
                },
            },
        })
    }
}

/// A transport failure.
fn network(repo: &str, url: &str, msg: String, cached: bool) -> Error {
    HubError::Network {
        repo: repo.to_string(),
        url: url.to_string(),
        msg,
        cached,
    }
    .into()
}

/// A header's value as text.
fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Reads the hub's file headers.
fn meta_from(headers: &HeaderMap, url: String) -> Result<FileMeta> {
    let bad = |msg: &str| -> Error {
        HubError::BadResponse {
            url: url.clone(),
            msg: msg.to_string(),
        }
        .into()
    };
    let commit = header(headers, "x-repo-commit")
        .filter(|c| is_commit(c))
        .ok_or_else(|| {
            bad("no commit hash in `X-Repo-Commit`; is `HF_ENDPOINT` a Hugging Face hub?")
        })?
        .to_string();
    let raw = header(headers, "x-linked-etag")
        .or_else(|| header(headers, "etag"))
        .ok_or_else(|| bad("no `ETag` header"))?;
    let etag = raw
        .trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .to_string();
    let safe = !etag.is_empty()
        && etag.len() <= 128
        && etag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !safe {
        return Err(bad(&format!(
            "ETag `{raw}` cannot name a file in the cache"
        )));
    }
    let size = match header(headers, "x-linked-size").or_else(|| header(headers, "content-length"))
    {
        Some(s) => Some(
            s.trim()
                .parse::<u64>()
                .map_err(|_| bad(&format!("size `{s}` is not a number")))?,
        ),
        None => None,
    };
    let sha256 = (etag.len() == 64 && etag.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| etag.to_ascii_lowercase());
    Ok(FileMeta {
        commit,
        etag,
        sha256,
        size,
        url,
    })
}

/// `scheme://host[:port]` of a URL.
fn origin(url: &str) -> &str {
    let after = url.find("://").map_or(0, |i| i + 3);
    match url[after..].find('/') {
        Some(i) => &url[..after + i],
        None => url,
    }
}

/// Whether a URL's host is this machine.
fn is_loopback(url: &str) -> bool {
    let host = origin(url).split("://").nth(1).unwrap_or("");
    let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
    host == "localhost" || host.starts_with("127.") || host == "[::1]"
}

/// Whether `url` is on the endpoint (so it may see the token).
fn on_endpoint(endpoint: &str, url: &str) -> bool {
    url.strip_prefix(endpoint)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Percent-encodes a revision or file path for a URL; `/` is kept in file paths only.
fn encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Empties a partial download to start over.
fn restart(f: &mut File, part: &Path, have: &mut u64) -> Result<()> {
    f.set_len(0).at(part)?;
    f.seek(SeekFrom::Start(0)).at(part)?;
    *have = 0;
    Ok(())
}

/// Hashes the first `len` bytes of a partial download, leaving the position at its end.
fn hash_prefix(f: &mut File, part: &Path, len: u64, hasher: &mut Sha256) -> Result<()> {
    f.seek(SeekFrom::Start(0)).at(part)?;
    let mut buf = vec![0u8; CHUNK];
    let mut left = len;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        f.read_exact(&mut buf[..n]).at(part)?;
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    f.seek(SeekFrom::End(0)).at(part)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_encoded() {
        assert_eq!(encode("refs/pr/3", false), "refs%2Fpr%2F3");
        assert_eq!(encode("sub/a b.gguf", true), "sub/a%20b.gguf");
        assert_eq!(origin("http://127.0.0.1:8/a/b"), "http://127.0.0.1:8");
        assert_eq!(origin("https://hf.co"), "https://hf.co");
        assert!(on_endpoint("https://hf.co", "https://hf.co/x"));
        assert!(!on_endpoint("https://hf.co", "https://hf.co.evil/x"));
        assert!(!on_endpoint("https://hf.co", "https://cdn.hf.co/x"));
        assert!(is_loopback("http://127.0.0.1:8080"));
        assert!(is_loopback("http://localhost"));
        assert!(!is_loopback("https://huggingface.co"));
    }
}
