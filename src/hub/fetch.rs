//! From a hub reference to files on disk: what a command [`Need`]s, served from the cache when
//! the snapshot has it (no request at all), otherwise fetched and written into the cache.
//!
//! - A named file (`org/name:file.gguf`): that file for [`Need::Snapshot`]; otherwise, unless the
//!   cache has it, only its GGUF header (and each split part's), read by range requests that
//!   grow until the header parses (issue 13).
//! - [`Need::Config`]: `config.json`; one `HEAD` to learn the commit, one `GET` if new.
//! - [`Need::Headers`]: also the index, and each shard's header by two range requests (the
//!   8-byte length, then the JSON); the weights themselves are never requested.
//! - [`Need::Snapshot`]: the API's file list for the revision, then config, index, every shard
//!   and the side files (tokenizer, generation config, license) the repo has.
//!
//! Branch and tag refs found in the cache are trusted: a snapshot that has what is needed is
//! used even if the branch has moved on since. Name a commit (`@<hash>`) to pin one, or delete
//! `refs/<branch>` in the cache to look again.

use super::cache::RepoCache;
use super::client::{Client, FileMeta};
use super::config::HubConfig;
use super::error::HubError;
use super::model_ref::HubRef;
use super::{Need, Resolved};
use crate::checkpoint::gguf::{split, GgufFile, GgufModel, KEY_SPLIT_COUNT};
use crate::checkpoint::hf::{self, HfCheckpoint, CONFIG_FILE, INDEX_FILE, SIDE_FILES, SINGLE_FILE};
use crate::checkpoint::limits::MAX_REMOTE_GGUF_HEADER;
use crate::checkpoint::provenance::HubSource;
use crate::checkpoint::safetensors::{SafetensorsFile, MAX_HEADER_BYTES};
use crate::error::{Error, IoContext, Result};
use crate::model::is_gguf;
use crate::progress::Progress;
use std::path::{Path, PathBuf};

/// The first range read of a remote GGUF header; each further read doubles what is held.
pub const GGUF_FIRST_READ: u64 = 64 << 10;

/// Resolves `r` for `need`; see the module docs.
pub fn fetch(r: &HubRef, need: Need, cfg: &HubConfig, progress: &dyn Progress) -> Result<Resolved> {
    let root = cfg.cache.as_deref().ok_or(HubError::NoCache)?;
    let f = Fetcher {
        cfg,
        r,
        cache: RepoCache::new(root, &r.repo),
        progress,
    };
    let revision = r.revision();
    let cached = f.cache.commit_for(revision)?;
    if let Some(commit) = &cached {
        if let Some(res) = f.cached(commit, need)? {
            return Ok(res);
        }
    }
    if cfg.offline {
        return Err(f.not_cached(cached.as_deref(), need).into());
    }
    f.online(need).map_err(|e| match e {
        Error::Hub(h) => match *h {
            HubError::Network { repo, url, msg, .. } => HubError::Network {
                repo,
                url,
                msg,
                cached: cached.as_deref().is_some_and(|c| f.has_something(c)),
            }
            .into(),
            other => Error::Hub(Box::new(other)),
        },
        other => other,
    })
}

struct Fetcher<'a> {
    cfg: &'a HubConfig,
    r: &'a HubRef,
    cache: RepoCache,
    progress: &'a dyn Progress,
}

impl Fetcher<'_> {
    fn resolved(&self, path: PathBuf, commit: &str, remote: Option<HfCheckpoint>) -> Resolved {
        Resolved {
            path,
            hub: Some(HubSource {
                repo: self.r.repo.clone(),
                revision: self.r.revision().to_string(),
                commit: commit.to_string(),
                file: self.r.file.clone(),
            }),
            remote,
            remote_gguf: None,
        }
    }

    /// What the cache alone can serve, or `None`.
    fn cached(&self, commit: &str, need: Need) -> Result<Option<Resolved>> {
        if let Some(file) = &self.r.file {
            return Ok(self
                .cache
                .file(commit, file)
                .map(|p| self.resolved(p, commit, None)));
        }
        if !self.cache.has_config(commit) {
            return Ok(None);
        }
        let weights = self.cache.has_all_weights(commit);
        Ok(match (need, weights) {
            (_, true) => Some(self.resolved(self.cache.snapshot(commit), commit, None)),
            (Need::Config, false) => {
                Some(self.resolved(self.cache.snapshot(commit).join(CONFIG_FILE), commit, None))
            }
            (Need::Headers | Need::Snapshot, false) => None,
        })
    }

    /// Whether the cache holds anything of this model at `commit` that offline mode could use.
    fn has_something(&self, commit: &str) -> bool {
        match &self.r.file {
            Some(f) => self.cache.file(commit, f).is_some(),
            None => self.cache.has_config(commit),
        }
    }

    /// The offline error: what is missing.
    fn not_cached(&self, commit: Option<&str>, need: Need) -> HubError {
        let revision = self.r.revision().to_string();
        let what = match (commit, &self.r.file) {
            (None, _) => format!("revision `{revision}`"),
            (Some(_), Some(f)) => format!("`{f}`"),
            (Some(c), None) if !self.cache.has_config(c) => format!("`{CONFIG_FILE}`"),
            (Some(c), None) => {
                let what = match hf::read_index(&self.cache.snapshot(c)) {
                    Ok(Some(index)) => {
                        let missing: Vec<&str> = index
                            .files
                            .iter()
                            .filter(|f| self.cache.file(c, f).is_none())
                            .map(String::as_str)
                            .collect();
                        format!("shard `{}`", missing.first().copied().unwrap_or("?"))
                    }
                    _ => format!("`{SINGLE_FILE}` (or `{INDEX_FILE}`)"),
                };
                match need {
                    Need::Headers => format!("{what}, needed for exact counts,"),
                    _ => what,
                }
            }
        };
        HubError::NotCached {
            repo: self.r.repo.clone(),
            kind: "model",
            revision,
            what,
            cache: self.cache.root.clone(),
        }
    }

    fn online(&self, need: Need) -> Result<Resolved> {
        let client = Client::new(self.cfg, &self.r.repo);
        let revision = self.r.revision();
        if let Some(file) = &self.r.file {
            let meta = client.head(revision, file)?;
            let commit = meta.commit.clone();
            if need != Need::Snapshot && is_gguf(Path::new(file)) {
                let mut meta = meta;
                // As in `ensure`: a file answered at a branch is read at the commit.
                if meta.url == client.resolve_url(revision, file) {
                    meta.url = client.resolve_url(&commit, file);
                }
                let model = remote_gguf(&client, &commit, file, meta)?;
                self.cache.write_ref(revision, &commit)?;
                let path = self.cache.snapshot(&commit).join(file);
                let mut res = self.resolved(path, &commit, None);
                res.remote_gguf = Some(model);
                return Ok(res);
            }
            let path = self.ensure(&client, &commit, file, Some(meta))?;
            self.cache.write_ref(revision, &commit)?;
            return Ok(self.resolved(path, &commit, None));
        }
        if need == Need::Snapshot {
            return self.snapshot(&client);
        }
        let meta = client.head(revision, CONFIG_FILE)?;
        let commit = meta.commit.clone();
        self.ensure(&client, &commit, CONFIG_FILE, Some(meta))?;
        self.cache.write_ref(revision, &commit)?;
        let snap = self.cache.snapshot(&commit);
        if self.cache.has_all_weights(&commit) {
            return Ok(self.resolved(snap, &commit, None));
        }
        if need == Need::Config {
            return Ok(self.resolved(snap.join(CONFIG_FILE), &commit, None));
        }
        let shards = match self.optional(&client, &commit, INDEX_FILE)? {
            Some(_) => match hf::read_index(&snap)? {
                Some(index) => index.files,
                None => Vec::new(),
            },
            None => vec![SINGLE_FILE.to_string()],
        };
        let mut headers = Vec::with_capacity(shards.len());
        for name in &shards {
            headers.push(match self.cache.file(&commit, name) {
                Some(local) => SafetensorsFile::open(&local)?,
                None => remote_header(&client, &commit, name)?,
            });
        }
        let ckpt = HfCheckpoint::from_headers(&snap, headers)?;
        Ok(self.resolved(snap, &commit, Some(ckpt)))
    }

    /// Everything a checkpoint folder needs, listed by the API.
    fn snapshot(&self, client: &Client) -> Result<Resolved> {
        let revision = self.r.revision();
        let info = client.repo_info(revision)?;
        let commit = info.commit;
        self.cache.write_ref(revision, &commit)?;
        let has = |f: &str| info.files.iter().any(|x| x == f);
        let missing = |file: &str| -> Error {
            HubError::FileNotFound {
                repo: self.r.repo.clone(),
                revision: revision.to_string(),
                file: file.to_string(),
            }
            .into()
        };
        if !has(CONFIG_FILE) {
            return Err(missing(CONFIG_FILE));
        }
        self.ensure(client, &commit, CONFIG_FILE, None)?;
        let snap = self.cache.snapshot(&commit);
        if has(INDEX_FILE) {
            self.ensure(client, &commit, INDEX_FILE, None)?;
            let index = hf::read_index(&snap)?.ok_or_else(|| missing(INDEX_FILE))?;
            for shard in &index.files {
                self.ensure(client, &commit, shard, None)?;
            }
        } else if has(SINGLE_FILE) {
            self.ensure(client, &commit, SINGLE_FILE, None)?;
        } else {
            return Err(missing(SINGLE_FILE));
        }
        for side in SIDE_FILES {
            if has(side) {
                self.ensure(client, &commit, side, None)?;
            }
        }
        Ok(self.resolved(snap, &commit, None))
    }

    /// A file that may be absent from the repo: `None` when the hub says so.
    fn optional(&self, client: &Client, commit: &str, file: &str) -> Result<Option<PathBuf>> {
        if let Some(p) = self.cache.file(commit, file) {
            return Ok(Some(p));
        }
        match client.head(commit, file) {
            Ok(meta) => self.ensure(client, commit, file, Some(meta)).map(Some),
            // The hub says `EntryNotFound`; a server without error codes answers a plain 404,
            // read as an unknown repo, but the repo was just seen, so it is the file that is
            // missing.
            Err(Error::Hub(h))
                if matches!(
                    *h,
                    HubError::FileNotFound { .. } | HubError::RepoNotFound { .. }
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// The snapshot's copy of `file` ([`ensure_file`]).
    fn ensure(
        &self,
        client: &Client,
        commit: &str,
        file: &str,
        meta: Option<FileMeta>,
    ) -> Result<PathBuf> {
        let at = Revision {
            revision: self.r.revision(),
            commit,
        };
        ensure_file(&self.cache, client, self.progress, at, file, meta)
    }
}

/// A revision as asked for and the commit it resolved to.
#[derive(Debug, Clone, Copy)]
pub(super) struct Revision<'a> {
    pub revision: &'a str,
    pub commit: &'a str,
}

/// The snapshot's copy of `file` at `at.commit`, downloaded into a blob first when missing, under
/// the blob's lock. `meta` is the answer of a `HEAD` already made for it, if any.
pub(super) fn ensure_file(
    cache: &RepoCache,
    client: &Client,
    progress: &dyn Progress,
    at: Revision,
    file: &str,
    meta: Option<FileMeta>,
) -> Result<PathBuf> {
    let commit = at.commit;
    if let Some(p) = cache.file(commit, file) {
        return Ok(p);
    }
    let mut meta = match meta {
        Some(m) => m,
        None => client.head(commit, file)?,
    };
    // A small file answered at a branch is fetched at the commit, so it cannot change
    // between the HEAD and the GET.
    if meta.url == client.resolve_url(at.revision, file) {
        meta.url = client.resolve_url(commit, file);
    }
    let blob = cache.blob(&meta.etag);
    if !blob.is_file() {
        // Only the holder of the blob's lock writes its `.incomplete`; a process that waited
        // finds the blob complete (renamed into place under the lock) and downloads nothing.
        let waited = std::cell::Cell::new(false);
        let _lock = cache.lock_blob(&meta.etag, || {
            waited.set(true);
            let label = format!("{file} (waiting for another process downloading it)");
            progress.start(&label, 0);
        })?;
        if waited.get() {
            progress.finish();
        }
        if !blob.is_file() {
            let blobs = cache.dir.join("blobs");
            std::fs::create_dir_all(&blobs).at(&blobs)?;
            let part = cache.incomplete(&meta.etag);
            client.download(&meta, file, &part, progress)?;
            std::fs::rename(&part, &blob).at(&blob)?;
        }
    }
    cache.link(commit, file, &meta.etag)
}

/// A remote file's URL, as the path its errors name, and its size; without a size, an error
/// that says the hub gave none for this `what`.
fn remote_size(
    client: &Client,
    commit: &str,
    name: &str,
    meta: &FileMeta,
    what: &str,
) -> Result<(PathBuf, u64)> {
    let label = PathBuf::from(client.resolve_url(commit, name));
    match meta.size {
        Some(size) => Ok((label, size)),
        None => Err(Error::corrupt(
            &label,
            format!("the hub gave no size for this {what}"),
        )),
    }
}

/// Reads one shard's header with two range requests, never its data. Errors name the shard's
/// URL, since the file is not on disk.
fn remote_header(client: &Client, commit: &str, name: &str) -> Result<SafetensorsFile> {
    let meta = client.head(commit, name)?;
    let (label, size) = remote_size(client, commit, name, &meta, "shard; cannot read its header")?;
    if size < 8 {
        return Err(Error::corrupt(
            &label,
            format!(
                "truncated safetensors file: {size} bytes, shorter than the 8-byte header length"
            ),
        ));
    }
    let len_bytes: [u8; 8] = client
        .read_range(&meta.url, 0, 8)?
        .try_into()
        .map_err(|_| Error::corrupt(&label, "short read of the header length"))?;
    let header_len = u64::from_le_bytes(len_bytes);
    if header_len > MAX_HEADER_BYTES {
        return Err(Error::corrupt(
            &label,
            format!(
                "safetensors header length {header_len} exceeds the {MAX_HEADER_BYTES}-byte limit"
            ),
        ));
    }
    let data_start = 8 + header_len;
    if data_start > size {
        return Err(Error::corrupt(
            &label,
            format!("truncated safetensors file: header claims {header_len} bytes but the file has {size}"),
        ));
    }
    let header = client.read_range(&meta.url, 8, header_len)?;
    SafetensorsFile::parse_header(&label, &header, data_start, size)
}

/// The header of `file` (and of its other parts, when it is the first of a split model), read
/// by range requests; no tensor data is fetched. `meta` is the `HEAD` answer for `file`.
fn remote_gguf(client: &Client, commit: &str, file: &str, meta: FileMeta) -> Result<GgufModel> {
    let first = remote_gguf_header(client, commit, file, &meta, 0)?;
    // The other parts are fetched only when the first says it has them and is named for them;
    // anything else is left to the checks `from_parts` shares with a local open.
    let declared = first.metadata.get(KEY_SPLIT_COUNT).and_then(|v| v.as_u64());
    let named = split::parse_part_path(Path::new(file));
    let mut files = vec![first];
    if let (Some((prefix, 1, count)), Some(declared)) = (named, declared) {
        if declared != count as u64 {
            return GgufModel::from_parts(files);
        }
        for no in 2..=count {
            let part = split::part_path(&prefix, no, count);
            let name = part.to_string_lossy().into_owned();
            let meta = client.head(commit, &name)?;
            files.push(remote_gguf_header(client, commit, &name, &meta, no - 1)?);
        }
    }
    GgufModel::from_parts(files)
}

/// One GGUF file's header region: a first range of [`GGUF_FIRST_READ`] bytes, then ranges that
/// double what is held until the header parses (or fails to), up to
/// [`MAX_REMOTE_GGUF_HEADER`]. Errors name the file's URL, since the file is not on disk.
fn remote_gguf_header(
    client: &Client,
    commit: &str,
    file: &str,
    meta: &FileMeta,
    part: usize,
) -> Result<GgufFile> {
    let (label, size) = remote_size(
        client,
        commit,
        file,
        meta,
        "file; cannot read its GGUF header",
    )?;
    let mut bytes: Vec<u8> = Vec::new();
    let mut want = GGUF_FIRST_READ.min(size);
    loop {
        let have = bytes.len() as u64;
        bytes.extend(client.read_range(&meta.url, have, want - have)?);
        if let Some(f) = GgufFile::from_prefix(&label, &bytes, size, part)? {
            return Ok(f);
        }
        if want >= size {
            // The whole file parses or fails; a prefix of it cannot be short.
            return Err(Error::corrupt(
                &label,
                "the GGUF header does not fit in the file",
            ));
        }
        if want >= MAX_REMOTE_GGUF_HEADER {
            return Err(Error::corrupt(
                &label,
                format!(
                    "the GGUF header is larger than {MAX_REMOTE_GGUF_HEADER} bytes; not read over HTTP (download the file with `prune`)"
                ),
            ));
        }
        want = want.saturating_mul(2).min(size).min(MAX_REMOTE_GGUF_HEADER);
    }
}
