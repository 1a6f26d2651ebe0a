//! A fake Hugging Face hub for hermetic tests: a thread serving HTTP/1.1 on 127.0.0.1 only,
//! one request per connection (each on its own thread, so several clients are served at once),
//! that stops by itself after [`MAX_REQUESTS`] requests or
//! [`LIFETIME`], and when dropped. It speaks the parts of the hub's protocol the client uses:
//!
//! - `HEAD`/`GET /{org}/{name}/resolve/{rev}/{file}`: `X-Repo-Commit`, and for small files `ETag`
//!   and the body; for `*.safetensors` and `*.gguf` (LFS) a 302 to `/cdn/{sha256}` with
//!   `X-Linked-Etag` and `X-Linked-Size`.
//! - `GET /cdn/{sha256}`: the bytes, honouring `Range`; it can drop the connection midway.
//! - A renamed repo's old name answers with a relative 307 to the new one.
//! - `GET /api/models/{org}/{name}/revision/{rev}`: the commit and file list.
//! - Dataset repos ([`Repo::dataset`]) under `/datasets/{org}/{name}/resolve/…` and
//!   `/api/datasets/{org}/{name}/revision/{rev}` (with the card's metadata as `cardData`);
//!   `*.parquet` files are LFS files there, as on the hub.
//! - Errors with the hub's `X-Error-Code`: `RepoNotFound`, `RevisionNotFound`, `EntryNotFound`,
//!   `GatedRepo`.
//!
//! Every request is logged with its method, path, `Range` and `Authorization` headers and the
//! number of body bytes sent, so tests can count what was fetched.
#![allow(dead_code)]

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Requests served before the server stops on its own.
pub const MAX_REQUESTS: usize = 500;
/// How long the server lives at most.
pub const LIFETIME: Duration = Duration::from_secs(120);

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One repo of the fake hub.
#[derive(Clone, Default)]
pub struct Repo {
    pub id: String,
    /// Revision name (branch or tag) → commit.
    pub refs: BTreeMap<String, String>,
    pub files: BTreeMap<String, Vec<u8>>,
    /// Requests must carry `Authorization: Bearer <token>`.
    pub gated_token: Option<String>,
    /// Files whose `X-Linked-Etag` is a wrong SHA-256.
    pub bad_sha: Vec<String>,
    /// Drop the connection after this many body bytes of this file, this many times.
    pub drops: Option<(String, u64, u32)>,
    /// Leave out `X-Repo-Commit`, like a server that is not a hub.
    pub strip_commit: bool,
    /// An old name that redirects here (a renamed repo), with a relative `Location`.
    pub renamed_from: Option<String>,
    /// Pause this long after each 4 KiB of a `/cdn/` body, so downloads take a while.
    pub pace: Option<Duration>,
    /// A dataset repo (served under `/datasets/` and `/api/datasets/`), not a model.
    pub dataset: bool,
    /// The card's metadata, answered as `cardData` by the API.
    pub card: Option<serde_json::Value>,
    /// Commits whose files are these rather than `files` (another branch, such as a dataset's
    /// `refs/convert/parquet`).
    pub commit_files: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
}

impl Repo {
    /// A repo with `main` at `commit` holding the files of `dir`.
    pub fn from_dir(id: &str, commit: &str, dir: &std::path::Path) -> Self {
        let mut files = BTreeMap::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_file() {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                files.insert(name, std::fs::read(&p).unwrap());
            }
        }
        Repo {
            id: id.into(),
            refs: BTreeMap::from([("main".to_string(), commit.to_string())]),
            files,
            ..Default::default()
        }
    }

    fn files_at(&self, commit: &str) -> &BTreeMap<String, Vec<u8>> {
        self.commit_files.get(commit).unwrap_or(&self.files)
    }

    fn commit_of(&self, rev: &str) -> Option<String> {
        if let Some(c) = self.refs.get(rev) {
            return Some(c.clone());
        }
        self.refs.values().find(|c| *c == rev).cloned()
    }
}

fn is_lfs(name: &str) -> bool {
    name.ends_with(".safetensors") || name.ends_with(".gguf") || name.ends_with(".parquet")
}

/// One logged request.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: String,
    pub path: String,
    pub range: Option<String>,
    pub auth: Option<String>,
    pub status: u16,
    pub body_bytes: u64,
}

struct State {
    repos: Vec<Repo>,
    dropped: u32,
    log: Vec<Req>,
}

pub struct FakeHub {
    pub url: String,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl FakeHub {
    pub fn start(repos: Vec<Repo>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State {
            repos,
            dropped: 0,
            log: Vec::new(),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp, base) = (state.clone(), stop.clone(), url.clone());
        let handle = std::thread::spawn(move || {
            let deadline = Instant::now() + LIFETIME;
            let mut served = 0;
            while !sp.load(Ordering::SeqCst) && Instant::now() < deadline && served < MAX_REQUESTS {
                match listener.accept() {
                    Ok((stream, _)) => {
                        served += 1;
                        let (st, base) = (st.clone(), base.clone());
                        std::thread::spawn(move || {
                            let _ = serve(stream, &st, &base);
                        });
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err(_) => break,
                }
            }
        });
        FakeHub {
            url,
            state,
            stop,
            handle: Some(handle),
        }
    }

    pub fn requests(&self) -> Vec<Req> {
        self.state.lock().unwrap().log.clone()
    }

    pub fn clear(&self) {
        self.state.lock().unwrap().log.clear();
    }

    /// Changes a repo while the server runs.
    pub fn edit(&self, id: &str, f: impl FnOnce(&mut Repo)) {
        let mut s = self.state.lock().unwrap();
        f(s.repos.iter_mut().find(|r| r.id == id).unwrap());
    }
}

impl Drop for FakeHub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Stop after this many body bytes and close the connection.
    cut: Option<u64>,
    /// Pause after each 4 KiB of the body.
    pace: Option<Duration>,
}

impl Answer {
    fn new(status: u16) -> Self {
        Answer {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            cut: None,
            pace: None,
        }
    }

    fn header(mut self, k: &str, v: impl Into<String>) -> Self {
        self.headers.push((k.into(), v.into()));
        self
    }

    fn error(status: u16, code: &str) -> Self {
        Answer::new(status).header("X-Error-Code", code)
    }
}

fn serve(mut stream: TcpStream, state: &Mutex<State>, base: &str) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    while !raw.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 || raw.len() > 65536 {
            return Ok(());
        }
        raw.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let mut lines = text.split("\r\n");
    let first: Vec<&str> = lines.next().unwrap_or("").split(' ').collect();
    let (method, path) = (
        first[0].to_string(),
        first.get(1).unwrap_or(&"").to_string(),
    );
    let mut range = None;
    let mut auth = None;
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "range" => range = Some(v.trim().to_string()),
                "authorization" => auth = Some(v.trim().to_string()),
                _ => {}
            }
        }
    }
    let answer = {
        let mut s = state.lock().unwrap();
        route(
            &mut s,
            &method,
            &path,
            range.as_deref(),
            auth.as_deref(),
            base,
        )
    };
    let head = method == "HEAD";
    let mut out = format!("HTTP/1.1 {} X\r\n", answer.status);
    let mut has_len = false;
    for (k, v) in &answer.headers {
        has_len |= k.eq_ignore_ascii_case("content-length");
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    if !has_len {
        out.push_str(&format!("Content-Length: {}\r\n", answer.body.len()));
    }
    out.push_str("Connection: close\r\n\r\n");
    let body: &[u8] = match (head, answer.cut) {
        (true, _) => &[],
        (false, Some(c)) => &answer.body[..c as usize],
        (false, None) => &answer.body[..],
    };
    // Log before answering: once the client has its answer it may ask for the log, and a log
    // written after the response would race with it.
    state.lock().unwrap().log.push(Req {
        method,
        path,
        range,
        auth,
        status: answer.status,
        body_bytes: body.len() as u64,
    });
    stream.write_all(out.as_bytes())?;
    match answer.pace {
        Some(pause) => {
            for chunk in body.chunks(4096) {
                stream.write_all(chunk)?;
                stream.flush()?;
                std::thread::sleep(pause);
            }
        }
        None => stream.write_all(body)?,
    }
    stream.flush()?;
    let _ = stream.shutdown(std::net::Shutdown::Both);
    Ok(())
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn route(
    s: &mut State,
    method: &str,
    path: &str,
    range: Option<&str>,
    auth: Option<&str>,
    base: &str,
) -> Answer {
    let parts: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(decode)
        .collect();
    let p: Vec<&str> = parts.iter().map(String::as_str).collect();
    match p.as_slice() {
        ["cdn", sha] => cdn(s, sha, range),
        ["api", kind @ ("models" | "datasets"), org, name, "revision", rev] => {
            let repo = match find(s, &format!("{org}/{name}"), auth, *kind == "datasets") {
                Ok(r) => r,
                Err(a) => return a,
            };
            let Some(commit) = repo.commit_of(rev) else {
                return Answer::error(404, "RevisionNotFound");
            };
            let siblings: Vec<serde_json::Value> = repo
                .files_at(&commit)
                .keys()
                .map(|f| serde_json::json!({ "rfilename": f }))
                .collect();
            let mut body = serde_json::json!({"id": repo.id, "sha": commit, "siblings": siblings});
            if let Some(card) = &repo.card {
                body["cardData"] = card.clone();
            }
            let mut a = Answer::new(200);
            a.body = body.to_string().into_bytes();
            a
        }
        ["datasets", org, name, "resolve", rev, file @ ..]
            if method == "HEAD" || method == "GET" =>
        {
            resolve(s, &format!("{org}/{name}"), rev, file, auth, base, true)
        }
        [org, name, "resolve", rev, file @ ..] if method == "HEAD" || method == "GET" => {
            let id = format!("{org}/{name}");
            if let Some(new) = s
                .repos
                .iter()
                .find(|r| r.renamed_from.as_deref() == Some(&id))
            {
                let rest = path.splitn(4, '/').nth(3).unwrap_or("");
                return Answer::new(307).header("Location", format!("/{}/{rest}", new.id));
            }
            resolve(s, &id, rev, file, auth, base, false)
        }
        _ => Answer::new(404),
    }
}

/// `HEAD`/`GET` of a file at a revision.
fn resolve(
    s: &State,
    id: &str,
    rev: &str,
    file: &[&str],
    auth: Option<&str>,
    base: &str,
    dataset: bool,
) -> Answer {
    let repo = match find(s, id, auth, dataset) {
        Ok(r) => r,
        Err(a) => return a,
    };
    let Some(commit) = repo.commit_of(rev) else {
        return Answer::error(404, "RevisionNotFound");
    };
    let files = repo.files_at(&commit);
    let commit = if repo.strip_commit {
        String::new()
    } else {
        commit
    };
    let file = file.join("/");
    let Some(bytes) = files.get(&file) else {
        return Answer::error(404, "EntryNotFound").header("X-Repo-Commit", commit);
    };
    let sha = sha256_hex(bytes);
    if is_lfs(&file) {
        let etag = if repo.bad_sha.contains(&file) {
            sha256_hex(b"something else")
        } else {
            sha.clone()
        };
        Answer::new(302)
            .header("Location", format!("{base}/cdn/{sha}"))
            .header("X-Repo-Commit", commit)
            .header("X-Linked-Etag", format!("\"{etag}\""))
            .header("X-Linked-Size", bytes.len().to_string())
            .header("ETag", "\"0123456789abcdef0123456789abcdef01234567\"")
    } else {
        let mut a = Answer::new(200)
            .header("X-Repo-Commit", commit)
            .header("ETag", format!("W/\"{}\"", &sha[..40]));
        a.body = bytes.clone();
        a
    }
}

/// The repo (a dataset or a model, as asked), or the hub's answer when it cannot be seen.
fn find<'s>(s: &'s State, id: &str, auth: Option<&str>, dataset: bool) -> Result<&'s Repo, Answer> {
    let repo = s
        .repos
        .iter()
        .find(|r| r.id == id && r.dataset == dataset)
        .ok_or_else(|| Answer::error(404, "RepoNotFound"))?;
    if let Some(t) = &repo.gated_token {
        if auth != Some(&format!("Bearer {t}")) {
            return Err(Answer::error(401, "GatedRepo"));
        }
    }
    Ok(repo)
}

fn cdn(s: &mut State, sha: &str, range: Option<&str>) -> Answer {
    let found = s.repos.iter().find_map(|r| {
        r.files
            .iter()
            .chain(r.commit_files.values().flatten())
            .find(|(_, b)| sha256_hex(b) == sha)
            .map(|(name, b)| (r.drops.clone(), r.pace, name.clone(), b.clone()))
    });
    let Some((drops, pace, name, bytes)) = found else {
        return Answer::new(404);
    };
    let total = bytes.len() as u64;
    let (start, end) = match range.and_then(|r| r.strip_prefix("bytes=")) {
        Some(r) => {
            let (a, b) = r.split_once('-').unwrap();
            let a: u64 = a.parse().unwrap();
            let b: u64 = if b.is_empty() {
                total - 1
            } else {
                b.parse().unwrap()
            };
            if a >= total {
                return Answer::new(416).header("Content-Range", format!("bytes */{total}"));
            }
            (a, b.min(total - 1))
        }
        None => (0, total - 1),
    };
    let mut a = if range.is_some() {
        Answer::new(206).header("Content-Range", format!("bytes {start}-{end}/{total}"))
    } else {
        Answer::new(200)
    };
    a.body = bytes[start as usize..=end as usize].to_vec();
    a.pace = pace;
    if let Some((file, after, times)) = drops {
        if file == name && s.dropped < times {
            s.dropped += 1;
            a.cut = Some(after.min(a.body.len() as u64));
        }
    }
    a
}
