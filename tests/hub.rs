//! Hub references, end to end and hermetic: a fake HF cache built by hand in a temporary folder,
//! and a fake hub on 127.0.0.1 (`hub_server`) that serves a tiny random checkpoint. Nothing here
//! reaches any other address.

mod common;
mod gguf_support;
mod hub_server;

use common::*;
use depthprune::checkpoint::safetensors::Dtype;
use depthprune::hub::{self, HubConfig, HubError, Need, Resolved};
use depthprune::progress::Silent;
use depthprune::Error;
use hub_server::{sha256_hex, FakeHub, Repo, Req};
use serde_json::Value;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const C1: &str = "1111111111111111111111111111111111111111";
const C2: &str = "2222222222222222222222222222222222222222";
const ID: &str = "org/tiny";

fn resolve(arg: &str, need: Need, cfg: &HubConfig) -> depthprune::Result<Resolved> {
    hub::resolve(OsStr::new(arg), need, cfg, &Silent)
}

fn hub_err(r: depthprune::Result<Resolved>) -> HubError {
    match r {
        Err(Error::Hub(h)) => *h,
        Err(e) => panic!("expected a hub error, got {e}"),
        Ok(r) => panic!("expected a hub error, got {r:?}"),
    }
}

/// A closed port on this machine: connecting to it fails at once.
fn dead_endpoint() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", l.local_addr().unwrap())
}

// ---------------------------------------------------------------------------------------------
// A cache written by hand, as `huggingface_hub` lays it out.

fn config_with_layers(n: usize) -> Vec<u8> {
    let mut c = tiny_config("qwen3");
    c["num_hidden_layers"] = n.into();
    c["layer_types"] = Value::Array(vec!["full_attention".into(); n]);
    c["max_window_layers"] = n.into();
    serde_json::to_vec(&c).unwrap()
}

/// Puts `bytes` in `blobs/<sha256>` and links `snapshots/<commit>/<file>` to it.
fn put(repo: &Path, commit: &str, file: &str, bytes: &[u8]) {
    let etag = sha256_hex(bytes);
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    std::fs::write(repo.join("blobs").join(&etag), bytes).unwrap();
    let link = repo.join("snapshots").join(commit).join(file);
    std::fs::create_dir_all(link.parent().unwrap()).unwrap();
    let up = "../".repeat(file.split('/').count() + 1);
    std::os::unix::fs::symlink(format!("{up}blobs/{etag}"), &link).unwrap();
}

/// `main` → C1 (6 layers, a GGUF file), tag `v1.0` → C2 (4 layers).
fn fake_cache(root: &Path) {
    let repo = root.join("models--org--tiny");
    put(&repo, C1, "config.json", &config_with_layers(6));
    put(&repo, C1, "quant/tiny-Q4.gguf", b"GGUF fake");
    put(&repo, C2, "config.json", &config_with_layers(4));
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), C1).unwrap();
    std::fs::write(repo.join("refs/v1.0"), format!("{C2}\n")).unwrap();
}

fn layers_of(path: &Path) -> u64 {
    let p = if path.is_dir() {
        path.join("config.json")
    } else {
        path.to_path_buf()
    };
    let v: Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
    v["num_hidden_layers"].as_u64().unwrap()
}

#[test]
fn cache_resolves_branches_tags_commits_and_files_without_requests() {
    let tmp = tempfile::tempdir().unwrap();
    fake_cache(tmp.path());
    // Online, but the hub is unreachable: everything must come from the cache.
    let cfg = HubConfig::new(tmp.path(), &dead_endpoint());
    let snaps = tmp.path().join("models--org--tiny/snapshots");

    let r = resolve(ID, Need::Config, &cfg).unwrap();
    assert_eq!(r.path, snaps.join(C1).join("config.json"));
    assert_eq!(layers_of(&r.path), 6);
    let h = r.hub.as_ref().unwrap();
    assert_eq!(
        (h.repo.as_str(), h.revision.as_str(), h.commit.as_str()),
        (ID, "main", C1)
    );
    assert_eq!(r.name(), ID);

    let r = resolve("org/tiny@v1.0", Need::Config, &cfg).unwrap();
    assert_eq!(layers_of(&r.path), 4);
    assert_eq!(r.hub.as_ref().unwrap().commit, C2);
    assert_eq!(r.name(), "org/tiny@v1.0");

    let r = resolve(&format!("org/tiny@{C2}"), Need::Config, &cfg).unwrap();
    assert_eq!(r.path, snaps.join(C2).join("config.json"));

    let r = resolve("org/tiny:quant/tiny-Q4.gguf", Need::Snapshot, &cfg).unwrap();
    assert_eq!(r.path, snaps.join(C1).join("quant/tiny-Q4.gguf"));
    assert_eq!(std::fs::read(&r.path).unwrap(), b"GGUF fake");
    assert_eq!(r.hub.unwrap().file.as_deref(), Some("quant/tiny-Q4.gguf"));
}

#[test]
fn offline_mode_names_what_the_cache_lacks() {
    let tmp = tempfile::tempdir().unwrap();
    fake_cache(tmp.path());
    let mut cfg = HubConfig::new(tmp.path(), &dead_endpoint());
    cfg.offline = true;
    assert!(resolve(ID, Need::Config, &cfg).is_ok());

    let e = hub_err(resolve("org/tiny@v2", Need::Config, &cfg));
    assert!(matches!(e, HubError::NotCached { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("revision `v2`") && msg.contains("HF_HUB_OFFLINE"),
        "{msg}"
    );

    let e = hub_err(resolve(
        "org/tiny@v1.0:quant/tiny-Q4.gguf",
        Need::Config,
        &cfg,
    ));
    assert!(e.to_string().contains("`quant/tiny-Q4.gguf`"), "{e}");

    let e = hub_err(resolve(ID, Need::Snapshot, &cfg));
    assert!(e.to_string().contains("`model.safetensors`"), "{e}");

    let e = hub_err(resolve("other/model", Need::Config, &cfg));
    assert!(matches!(e, HubError::NotCached { .. }), "{e}");
}

#[test]
fn a_ref_file_that_is_not_a_commit_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    fake_cache(tmp.path());
    std::fs::write(tmp.path().join("models--org--tiny/refs/main"), "garbage").unwrap();
    let cfg = HubConfig::new(tmp.path(), &dead_endpoint());
    let e = resolve(ID, Need::Config, &cfg).unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    assert!(e.to_string().contains("refs/main"), "{e}");
}

#[test]
fn unreachable_hub_suggests_offline_mode_only_when_cached() {
    let tmp = tempfile::tempdir().unwrap();
    fake_cache(tmp.path());
    let cfg = HubConfig::new(tmp.path(), &dead_endpoint());
    // The cache has config.json but no weights: exact counts need the hub.
    let e = hub_err(resolve(ID, Need::Headers, &cfg));
    assert!(matches!(e, HubError::Network { cached: true, .. }), "{e}");
    assert!(e.to_string().contains("HF_HUB_OFFLINE=1"), "{e}");
    let e = hub_err(resolve("other/model", Need::Config, &cfg));
    assert!(matches!(e, HubError::Network { cached: false, .. }), "{e}");
    assert!(e.to_string().contains("HF_ENDPOINT"), "{e}");
    assert!(!e.to_string().contains("HF_HUB_OFFLINE"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// A fake hub serving a tiny random checkpoint.

/// A tiny qwen3 checkpoint with tokenizer and generation config, in `dir`; its shard names.
fn tiny_source(dir: &Path, max_shard: u64) -> Vec<String> {
    make_checkpoint(dir, &tiny_config("qwen3"), Dtype::F32, max_shard);
    if dir.join("model.safetensors").is_file() {
        return vec!["model.safetensors".into()];
    }
    let index: Value =
        serde_json::from_slice(&std::fs::read(dir.join("model.safetensors.index.json")).unwrap())
            .unwrap();
    let mut shards: Vec<String> = index["weight_map"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    shards.sort();
    shards.dedup();
    assert!(shards.len() >= 3, "want a sharded source: {shards:?}");
    shards
}

struct Setup {
    tmp: tempfile::TempDir,
    src: PathBuf,
    shards: Vec<String>,
    hub: FakeHub,
}

impl Setup {
    fn new(edit: impl FnOnce(&mut Repo)) -> Self {
        Self::with_shards(20_000, edit)
    }

    fn with_shards(max_shard: u64, edit: impl FnOnce(&mut Repo)) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        let shards = tiny_source(&src, max_shard);
        let mut repo = Repo::from_dir(ID, C1, &src);
        repo.refs.insert("v1.0".into(), C2.into());
        edit(&mut repo);
        let hub = FakeHub::start(vec![repo]);
        Setup {
            tmp,
            src,
            shards,
            hub,
        }
    }

    fn cfg(&self) -> HubConfig {
        HubConfig::new(self.cache(), &self.hub.url)
    }

    fn cache(&self) -> PathBuf {
        self.tmp.path().join("cache")
    }

    fn repo_dir(&self) -> PathBuf {
        self.cache().join("models--org--tiny")
    }

    /// Runs the binary with the hub and cache pointed here and every other HF or proxy setting
    /// cleared.
    fn cli(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = self.command(args);
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    }

    /// The command [`Setup::cli`] runs, to spawn several at once.
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.args(args).current_dir(self.tmp.path());
        for k in [
            "HF_TOKEN",
            "HF_TOKEN_PATH",
            "HF_HUB_OFFLINE",
            "HF_HUB_CACHE",
            "HF_HOME",
            "HF_ENDPOINT",
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "http_proxy",
            "https_proxy",
            "all_proxy",
        ] {
            c.env_remove(k);
        }
        c.env("HF_HOME", self.tmp.path().join("home"))
            .env("HF_HUB_CACHE", self.cache())
            .env("HF_ENDPOINT", &self.hub.url);
        c
    }

    fn file_len(&self, name: &str) -> u64 {
        std::fs::metadata(self.src.join(name)).unwrap().len()
    }
}

fn cdn_path(bytes: &[u8]) -> String {
    format!("/cdn/{}", sha256_hex(bytes))
}

/// The requests `hub` has had for the blob of `bytes`.
fn blob_requests(hub: &FakeHub, bytes: &[u8]) -> Vec<Req> {
    let path = cdn_path(bytes);
    hub.requests()
        .into_iter()
        .filter(|r| r.path == path)
        .collect()
}

fn bytes_to(reqs: &[Req], path: &str) -> u64 {
    reqs.iter()
        .filter(|r| r.path == path)
        .map(|r| r.body_bytes)
        .sum()
}

#[test]
fn snapshot_downloads_into_the_hf_layout_then_serves_from_cache_with_zero_requests() {
    let s = Setup::new(|_| {});
    let r = resolve(ID, Need::Snapshot, &s.cfg()).unwrap();
    let snap = s.repo_dir().join("snapshots").join(C1);
    assert_eq!(r.path, snap);
    assert_eq!(
        std::fs::read_to_string(s.repo_dir().join("refs/main")).unwrap(),
        C1
    );
    for e in std::fs::read_dir(&s.src).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        let link = snap.join(&name);
        let target = std::fs::read_link(&link).unwrap();
        assert!(target.starts_with("../../blobs"), "{name}: {target:?}");
        let want = std::fs::read(s.src.join(&name)).unwrap();
        assert_eq!(std::fs::read(&link).unwrap(), want, "{name}");
        if name.ends_with(".safetensors") {
            // LFS files are stored under their SHA-256.
            assert_eq!(
                target.file_name().unwrap().to_str().unwrap(),
                sha256_hex(&want)
            );
        }
    }
    // The snapshot opens as a checkpoint, through the links.
    depthprune::checkpoint::hf::HfCheckpoint::open(&r.path).unwrap();
    assert!(!s.hub.requests().is_empty());

    s.hub.clear();
    for need in [Need::Snapshot, Need::Headers, Need::Config] {
        let again = resolve(ID, need, &s.cfg()).unwrap();
        assert_eq!(again.path, snap);
    }
    let again = resolve(&format!("org/tiny@{C1}"), Need::Snapshot, &s.cfg()).unwrap();
    assert_eq!(again.path, snap);
    assert!(s.hub.requests().is_empty(), "{:?}", s.hub.requests());
}

#[test]
fn a_dropped_connection_is_resumed_with_a_range_request() {
    let setup = Setup::new(|_| {});
    let shard = setup.shards[0].clone();
    let len = setup.file_len(&shard);
    assert!(len > 4000, "shard too small to cut: {len}");
    setup
        .hub
        .edit(ID, |r| r.drops = Some((shard.clone(), 1500, 1)));
    resolve(ID, Need::Snapshot, &setup.cfg()).unwrap();
    let bytes = std::fs::read(setup.src.join(&shard)).unwrap();
    let path = cdn_path(&bytes);
    let reqs: Vec<Req> = setup
        .hub
        .requests()
        .into_iter()
        .filter(|r| r.path == path)
        .collect();
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert_eq!(reqs[0].range, None);
    assert_eq!(reqs[0].body_bytes, 1500);
    assert_eq!(reqs[1].range.as_deref(), Some("bytes=1500-"));
    // Continued, not restarted: every byte crossed the wire once.
    assert_eq!(bytes_to(&reqs, &path), len);
    let got = std::fs::read(setup.repo_dir().join("snapshots").join(C1).join(&shard)).unwrap();
    assert_eq!(got, bytes);
    assert!(!setup
        .repo_dir()
        .join("blobs")
        .join(format!("{}.incomplete", sha256_hex(&bytes)))
        .exists());
}

/// Leaves `partial(bytes)` in the cache as the `.incomplete` blob of the second shard's `bytes`,
/// as an interrupted download would; returns the bytes, their sha256 and the blobs folder.
fn incomplete_blob(
    setup: &Setup,
    partial: impl Fn(&[u8]) -> Vec<u8>,
) -> (Vec<u8>, String, PathBuf) {
    let bytes = std::fs::read(setup.src.join(&setup.shards[1])).unwrap();
    let sha = sha256_hex(&bytes);
    let blobs = setup.repo_dir().join("blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::write(blobs.join(format!("{sha}.incomplete")), partial(&bytes)).unwrap();
    (bytes, sha, blobs)
}

#[test]
fn an_incomplete_blob_from_an_earlier_run_is_continued() {
    let setup = Setup::new(|_| {});
    let (bytes, sha, blobs) = incomplete_blob(&setup, |b| b[..1000].to_vec());
    resolve(ID, Need::Snapshot, &setup.cfg()).unwrap();
    let reqs = blob_requests(&setup.hub, &bytes);
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(reqs[0].range.as_deref(), Some("bytes=1000-"));
    assert_eq!(reqs[0].body_bytes, bytes.len() as u64 - 1000);
    assert_eq!(std::fs::read(blobs.join(&sha)).unwrap(), bytes);
}

#[test]
fn a_corrupt_incomplete_blob_fails_the_checksum() {
    let setup = Setup::new(|_| {});
    let (bytes, sha, blobs) = incomplete_blob(&setup, |_| vec![0xAB; 1000]);
    let e = hub_err(resolve(ID, Need::Snapshot, &setup.cfg()));
    assert!(matches!(e, HubError::Checksum { .. }), "{e}");
    assert!(!blobs.join(format!("{sha}.incomplete")).exists());
    assert!(!blobs.join(&sha).exists());
    // The next run starts over and succeeds.
    resolve(ID, Need::Snapshot, &setup.cfg()).unwrap();
    assert_eq!(std::fs::read(blobs.join(&sha)).unwrap(), bytes);
}

#[test]
fn a_sha256_mismatch_is_refused_and_leaves_no_blob() {
    let setup = Setup::new(|_| {});
    let shard = setup.shards[0].clone();
    setup.hub.edit(ID, |r| r.bad_sha = vec![shard.clone()]);
    let e = hub_err(resolve(ID, Need::Snapshot, &setup.cfg()));
    assert!(matches!(e, HubError::Checksum { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains(&shard) && msg.contains("sha256") && msg.contains("run the command again"),
        "{msg}"
    );
    let blobs: Vec<String> = std::fs::read_dir(setup.repo_dir().join("blobs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let bad = sha256_hex(b"something else");
    assert!(!blobs.iter().any(|b| b.starts_with(&bad)), "{blobs:?}");
    assert!(
        !blobs.iter().any(|b| b.ends_with(".incomplete")),
        "{blobs:?}"
    );
    assert!(!setup
        .repo_dir()
        .join("snapshots")
        .join(C1)
        .join(&shard)
        .exists());
}

#[test]
fn a_gguf_file_ref_downloads_only_that_file() {
    let setup = Setup::new(|r| {
        r.files.insert(
            "gguf/tiny-Q8_0.gguf".into(),
            b"GGUF and some bytes".to_vec(),
        );
    });
    let r = resolve(
        "org/tiny@v1.0:gguf/tiny-Q8_0.gguf",
        Need::Snapshot,
        &setup.cfg(),
    )
    .unwrap();
    assert_eq!(std::fs::read(&r.path).unwrap(), b"GGUF and some bytes");
    assert_eq!(r.hub.as_ref().unwrap().commit, C2);
    assert_eq!(
        std::fs::read_to_string(setup.repo_dir().join("refs/v1.0")).unwrap(),
        C2
    );
    let reqs = setup.hub.requests();
    assert!(
        reqs.iter()
            .all(|q| q.path.ends_with(".gguf") || q.path.starts_with("/cdn/")),
        "{reqs:?}"
    );

    let e = hub_err(resolve(
        "org/tiny:gguf/other.gguf",
        Need::Config,
        &setup.cfg(),
    ));
    assert!(matches!(e, HubError::FileNotFound { .. }), "{e}");
    assert!(e.to_string().contains("`gguf/other.gguf`"), "{e}");
}

#[test]
fn plan_and_inspect_on_an_id_fetch_config_and_headers_never_weights() {
    let s = Setup::new(|_| {});
    let o = s.cli(&["plan", ID, "--drop", "1..3"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("model: org/tiny (parameters counted from config.json)"),
        "{out}"
    );
    assert!(
        out.contains("depthprune prune org/tiny --drop 1..3"),
        "{out}"
    );
    let reqs = s.hub.requests();
    assert!(!reqs.is_empty());
    assert!(
        reqs.iter()
            .all(|r| r.path == "/org/tiny/resolve/main/config.json"
                || r.path == format!("/org/tiny/resolve/{C1}/config.json")),
        "{reqs:?}"
    );
    s.hub.clear();
    let o = s.cli(&["plan", ID, "--drop", "1..3"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        s.hub.requests().is_empty(),
        "second plan must use the cache"
    );

    // Exact counts from the shard headers, equal to the local checkpoint's.
    let o = s.cli(&["inspect", ID, "--exact", "--json"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let remote: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let o = s.cli(&["inspect", s.src.to_str().unwrap(), "--json"], &[]);
    let local: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(remote["counted_from"], "tensor headers on the hub");
    assert_eq!(remote["params"], local["params"]);
    assert_eq!(remote["dtypes"], local["dtypes"]);
    assert_eq!(remote["bytes_on_disk"], local["bytes_on_disk"]);
    assert_eq!(remote["hub"]["commit"], C1);

    let reqs = s.hub.requests();
    let mut header_bytes = 0;
    for shard in &s.shards {
        let bytes = std::fs::read(s.src.join(shard)).unwrap();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap());
        header_bytes += 8 + n;
        let path = cdn_path(&bytes);
        let gets: Vec<&Req> = reqs.iter().filter(|r| r.path == path).collect();
        assert_eq!(gets.len(), 2, "{shard}: {gets:?}");
        assert_eq!(gets[0].range.as_deref(), Some("bytes=0-7"));
        assert_eq!(
            gets[1].range.as_deref(),
            Some(format!("bytes=8-{}", 7 + n).as_str())
        );
    }
    let cdn: u64 = reqs
        .iter()
        .filter(|r| r.path.starts_with("/cdn/"))
        .map(|r| r.body_bytes)
        .sum();
    assert_eq!(cdn, header_bytes, "only the headers may be read: {reqs:?}");
    assert!(reqs
        .iter()
        .all(|r| r.range.is_some() || !r.path.starts_with("/cdn/")));
}

#[test]
fn prune_from_an_id_records_the_repo_and_commit() {
    let s = Setup::new(|_| {});
    let out = s.tmp.path().join("out");
    let o = s.cli(
        &[
            "prune",
            "org/tiny@v1.0",
            "--drop",
            "1..3",
            "--out",
            out.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let prov: Value =
        serde_json::from_slice(&std::fs::read(out.join("pruning.json")).unwrap()).unwrap();
    let hub = &prov["source"]["hub"];
    assert_eq!(hub["repo"], ID);
    assert_eq!(hub["revision"], "v1.0");
    assert_eq!(hub["commit"], C2);
    let card = std::fs::read_to_string(out.join("README.md")).unwrap();
    assert!(card.contains("base_model: org/tiny\n"), "{card}");
    assert!(out.join("tokenizer.json").is_file());
    // The weights equal a prune of the local source.
    let local = s.tmp.path().join("local");
    let o = run(&[
        "prune",
        s.src.to_str().unwrap(),
        "--drop",
        "1..3",
        "--out",
        local.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(tensor_bytes(&out), tensor_bytes(&local));
}

#[test]
fn unknown_repos_revisions_and_gated_repos_say_what_to_do() {
    let s = Setup::new(|r| r.gated_token = None);
    let o = s.cli(&["plan", "nobody/nothing", "--drop", "1"], &[]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.starts_with("error: `nobody/nothing`: no such model"),
        "{e}"
    );
    assert!(e.contains("check the ID") && e.contains("HF_TOKEN"), "{e}");
    assert_eq!(e.lines().count(), 1, "{e}");

    let o = s.cli(&["plan", "org/tiny@nope", "--drop", "1"], &[]);
    let e = stderr(&o);
    assert!(e.contains("revision `nope` not found"), "{e}");

    let o = s.cli(
        &["prune", "org/tiny@nope", "--drop", "1", "--out", "x"],
        &[],
    );
    assert!(
        stderr(&o).contains("revision `nope` not found"),
        "{}",
        stderr(&o)
    );

    s.hub.edit(ID, |r| r.gated_token = Some("hf_good".into()));
    let o = s.cli(&["plan", ID, "--drop", "1"], &[]);
    let e = stderr(&o);
    assert!(
        e.contains("HTTP 401")
            && e.contains("set `HF_TOKEN`")
            && e.contains("huggingface-cli login"),
        "{e}"
    );
    let o = s.cli(&["plan", ID, "--drop", "1"], &[("HF_TOKEN", "hf_bad")]);
    assert!(stderr(&o).contains("was not accepted"), "{}", stderr(&o));

    // The token file under HF_HOME works like HF_TOKEN, and is sent as a bearer token.
    std::fs::create_dir_all(s.tmp.path().join("home")).unwrap();
    std::fs::write(s.tmp.path().join("home/token"), "hf_good\n").unwrap();
    s.hub.clear();
    let o = s.cli(&["plan", ID, "--drop", "1"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let reqs = s.hub.requests();
    assert!(
        reqs.iter()
            .all(|r| r.auth.as_deref() == Some("Bearer hf_good")),
        "{reqs:?}"
    );
}

#[test]
fn offline_mode_never_touches_the_network() {
    let s = Setup::new(|_| {});
    let o = s.cli(&["plan", ID, "--drop", "1"], &[("HF_HUB_OFFLINE", "1")]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains("HF_HUB_OFFLINE") && e.contains("revision `main`"),
        "{e}"
    );
    assert!(s.hub.requests().is_empty());
    // Once cached, offline mode serves it.
    assert!(s.cli(&["plan", ID, "--drop", "1"], &[]).status.success());
    s.hub.clear();
    let o = s.cli(&["plan", ID, "--drop", "1"], &[("HF_HUB_OFFLINE", "true")]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = s.cli(&["inspect", ID, "--exact"], &[("HF_HUB_OFFLINE", "yes")]);
    assert!(
        stderr(&o).contains("needed for exact counts"),
        "{}",
        stderr(&o)
    );
    assert!(s.hub.requests().is_empty());
}

#[test]
fn an_existing_local_folder_wins_over_a_hub_id() {
    let s = Setup::new(|_| {});
    let local = s.tmp.path().join("org/tiny");
    std::fs::create_dir_all(&local).unwrap();
    std::fs::write(local.join("config.json"), config_with_layers(4)).unwrap();
    let o = s.cli(&["plan", ID, "--drop", "1", "--json"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["layers"]["layers_before"], 4);
    assert_eq!(v["hub"], Value::Null);
    assert!(s.hub.requests().is_empty());
}

#[test]
fn hub_answers_map_to_their_error_variants() {
    let s = Setup::new(|_| {});
    let mut cfg = s.cfg();
    let e = hub_err(resolve("nobody/nothing", Need::Config, &cfg));
    assert!(
        matches!(
            e,
            HubError::RepoNotFound {
                has_token: false,
                ..
            }
        ),
        "{e}"
    );
    let e = hub_err(resolve("org/tiny@nope", Need::Snapshot, &cfg));
    assert!(matches!(e, HubError::RevisionNotFound { .. }), "{e}");
    let e = hub_err(resolve(
        &format!("org/tiny@{C2}"),
        Need::Config,
        &HubConfig {
            cache: None,
            ..cfg.clone()
        },
    ));
    assert!(matches!(e, HubError::NoCache), "{e}");

    s.hub.edit(ID, |r| r.gated_token = Some("hf_good".into()));
    let e = hub_err(resolve(ID, Need::Config, &cfg));
    assert!(
        matches!(
            e,
            HubError::Unauthorized {
                status: 401,
                has_token: false,
                ..
            }
        ),
        "{e}"
    );
    cfg.token = Some("hf_bad".into());
    let e = hub_err(resolve(ID, Need::Config, &cfg));
    assert!(
        matches!(
            e,
            HubError::Unauthorized {
                has_token: true,
                ..
            }
        ),
        "{e}"
    );
    cfg.token = Some("hf_good".into());
    resolve(ID, Need::Config, &cfg).unwrap();

    s.hub.edit(ID, |r| r.strip_commit = true);
    let e = hub_err(resolve("org/tiny@v1.0", Need::Config, &cfg));
    assert!(matches!(e, HubError::BadResponse { .. }), "{e}");
    assert!(e.to_string().contains("X-Repo-Commit"), "{e}");
}

#[test]
fn a_download_that_keeps_failing_stops_and_the_next_run_resumes_it() {
    let setup = Setup::new(|_| {});
    let (shard, len) = setup
        .shards
        .iter()
        .map(|s| (s.clone(), setup.file_len(s)))
        .max_by_key(|(_, l)| *l)
        .unwrap();
    assert!(len > 6000, "shard too small to cut five times: {len}");
    setup
        .hub
        .edit(ID, |r| r.drops = Some((shard.clone(), 1000, 5)));
    let e = hub_err(resolve(ID, Need::Snapshot, &setup.cfg()));
    assert!(
        matches!(
            e,
            HubError::Interrupted {
                got: 5000,
                attempts: 5,
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string().contains("run the command again to resume"),
        "{e}"
    );
    let bytes = std::fs::read(setup.src.join(&shard)).unwrap();
    let part = setup
        .repo_dir()
        .join("blobs")
        .join(format!("{}.incomplete", sha256_hex(&bytes)));
    assert_eq!(std::fs::read(&part).unwrap(), bytes[..5000]);

    setup.hub.clear();
    resolve(ID, Need::Snapshot, &setup.cfg()).unwrap();
    let reqs = blob_requests(&setup.hub, &bytes);
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(reqs[0].range.as_deref(), Some("bytes=5000-"));
}

#[test]
fn a_renamed_repo_is_followed_through_its_relative_redirect() {
    let s = Setup::new(|r| r.renamed_from = Some("old/tiny".into()));
    let r = resolve("old/tiny", Need::Config, &s.cfg()).unwrap();
    assert_eq!(layers_of(&r.path), 6);
    assert_eq!(r.hub.unwrap().commit, C1);
    let reqs = s.hub.requests();
    assert!(reqs.iter().any(|q| q.status == 307), "{reqs:?}");
    assert!(s.cache().join("models--old--tiny/refs/main").is_file());
}

#[test]
fn exact_counts_of_a_single_file_repo_come_from_its_header() {
    let s = Setup::with_shards(1 << 40, |_| {});
    assert_eq!(s.shards, ["model.safetensors"]);
    let r = resolve(ID, Need::Headers, &s.cfg()).unwrap();
    let remote = r.remote.expect("headers read over HTTP");
    let local = depthprune::checkpoint::hf::HfCheckpoint::open(&s.src).unwrap();
    assert_eq!(remote.param_counts(), local.param_counts());
    assert_eq!(remote.dtypes(), local.dtypes());
    let reqs = s.hub.requests();
    assert!(
        reqs.iter()
            .filter(|q| q.path.starts_with("/cdn/"))
            .all(|q| q.range.is_some()),
        "{reqs:?}"
    );
    // The index was asked for and found missing; nothing else of the repo was fetched.
    assert!(reqs
        .iter()
        .any(|q| q.path.ends_with("model.safetensors.index.json") && q.status == 404));
    assert!(!reqs.iter().any(|q| q.path.ends_with("tokenizer.json")));
}

#[test]
fn a_second_revision_sharing_blobs_downloads_nothing_new() {
    let s = Setup::new(|_| {});
    resolve(ID, Need::Snapshot, &s.cfg()).unwrap();
    s.hub.clear();
    let r = resolve("org/tiny@v1.0", Need::Snapshot, &s.cfg()).unwrap();
    assert_eq!(r.path, s.repo_dir().join("snapshots").join(C2));
    let reqs = s.hub.requests();
    assert!(
        reqs.iter()
            .all(|q| q.method == "HEAD" || q.path.starts_with("/api/")),
        "only metadata may be asked for: {reqs:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Several processes on one cache (issue 13).

/// The blobs folder holds no `.incomplete`, and every blob named by a SHA-256 has that hash.
fn assert_blobs_whole(blobs: &Path) {
    for e in std::fs::read_dir(blobs).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        assert!(!name.ends_with(".incomplete"), "`{name}` left behind");
        if name.len() == 64 {
            assert_eq!(sha256_hex(&std::fs::read(&p).unwrap()), name);
        }
    }
}

#[test]
fn two_prunes_at_once_download_each_blob_once_and_both_succeed() {
    // Slow downloads, so that the two runs overlap.
    let s = Setup::new(|r| r.pace = Some(std::time::Duration::from_millis(15)));
    let children: Vec<_> = ["a", "b"]
        .iter()
        .map(|out| {
            s.command(&["prune", ID, "--drop", "1", "--out", out])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
    }
    assert_blobs_whole(&s.repo_dir().join("blobs"));
    assert_eq!(
        std::fs::read_to_string(s.repo_dir().join("refs/main")).unwrap(),
        C1
    );
    let reqs = s.hub.requests();
    for shard in &s.shards {
        let bytes = std::fs::read(s.src.join(shard)).unwrap();
        assert!(s
            .repo_dir()
            .join("blobs")
            .join(sha256_hex(&bytes))
            .is_file());
        // One run downloaded it; the other waited for the lock and found it complete.
        assert_eq!(
            bytes_to(&reqs, &cdn_path(&bytes)),
            bytes.len() as u64,
            "{shard}: {reqs:?}"
        );
    }
    assert_eq!(
        tensor_bytes(&s.tmp.path().join("a")),
        tensor_bytes(&s.tmp.path().join("b"))
    );
}

#[test]
fn a_blob_locked_as_huggingface_hub_locks_it_is_waited_for() {
    let s = Setup::new(|_| {});
    // Another process (huggingface_hub, say) holds the lock of every weight blob.
    let locks_dir = s.cache().join(".locks").join("models--org--tiny");
    std::fs::create_dir_all(&locks_dir).unwrap();
    let shas: Vec<String> = s
        .shards
        .iter()
        .map(|f| sha256_hex(&std::fs::read(s.src.join(f)).unwrap()))
        .collect();
    let locks: Vec<std::fs::File> = shas
        .iter()
        .map(|sha| {
            let f = std::fs::File::create(locks_dir.join(format!("{sha}.lock"))).unwrap();
            f.lock().unwrap();
            f
        })
        .collect();
    let mut child = s
        .command(&["prune", ID, "--drop", "1", "--out", "out"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2000));
    assert!(
        child.try_wait().unwrap().is_none(),
        "prune must wait for the lock"
    );
    let blobs = s.repo_dir().join("blobs");
    for sha in &shas {
        assert!(
            !blobs.join(sha).exists(),
            "blob written under another's lock"
        );
        assert!(!blobs.join(format!("{sha}.incomplete")).exists());
    }
    drop(locks);
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_blobs_whole(&blobs);
    for sha in &shas {
        assert!(blobs.join(sha).is_file());
    }
}

// ---------------------------------------------------------------------------------------------
// A GGUF file on the hub: `plan` and `inspect` read its header by range requests (issue 13).

/// A 4-layer toy GGUF with a header longer than the first range read (a long merge list) and
/// a few MB of tensor data.
fn toy_gguf() -> Vec<u8> {
    let merges: Vec<String> = (0..6000).map(|i| format!("m{i:05} x{i:05}")).collect();
    let merges: Vec<&str> = merges.iter().map(String::as_str).collect();
    gguf_support::toy_model(4)
        .strs("tokenizer.ggml.merges", &merges)
        .tensor("rope_freqs.weight", &[512, 1024], gguf_support::F32)
        .build()
        .0
}

#[test]
fn plan_and_inspect_on_a_gguf_file_read_only_its_header_by_ranges() {
    let gguf = toy_gguf();
    let len = gguf.len() as u64;
    let s = Setup::new(|r| {
        r.files.insert("gguf/toy.gguf".into(), gguf.clone());
    });
    let id = "org/tiny:gguf/toy.gguf";
    let o = s.cli(&["plan", id, "--drop", "1..3"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("remove        2 layers: 1..3"), "{out}");
    assert!(out.contains("`llama.block_count` = 2"), "{out}");

    let check_ranges = |what: &str| {
        let reqs = s.hub.requests();
        let cdn: Vec<&Req> = reqs.iter().filter(|r| r.path == cdn_path(&gguf)).collect();
        assert!(
            cdn.len() >= 2,
            "{what}: the header needs a second range: {reqs:?}"
        );
        assert!(cdn.iter().all(|r| r.range.is_some()), "{what}: {reqs:?}");
        let read: u64 = cdn.iter().map(|r| r.body_bytes).sum();
        assert!(read * 8 < len, "{what}: read {read} of {len} bytes");
        assert!(!s.repo_dir().join("blobs").join(sha256_hex(&gguf)).exists());
    };
    check_ranges("plan");

    s.hub.clear();
    let o = s.cli(&["plan", id, "--keep", "0,3", "--json"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["removal"]["removed"], serde_json::json!([1, 2]));
    check_ranges("plan --json");

    s.hub.clear();
    let o = s.cli(&["inspect", id, "--json"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["block_count"], 4);
    check_ranges("inspect");
}

/// What an error line must say.
type LineCheck = fn(&str) -> bool;

#[test]
fn a_broken_gguf_header_on_the_hub_is_one_error_naming_the_file() {
    let gguf = toy_gguf();
    let mut bad_version = gguf.clone();
    bad_version[4..8].copy_from_slice(&99u32.to_le_bytes());
    let s = Setup::new(|r| {
        // Cut inside the tensor infos: the file ends before its header does.
        r.files
            .insert("gguf/cut.gguf".into(), gguf[..100_000].to_vec());
        r.files.insert("gguf/v99.gguf".into(), bad_version);
    });
    // The cut falls inside the merge list or after it: either way the file is too short.
    let cases: [(&str, LineCheck); 2] = [
        ("cut.gguf", |l| {
            l.contains("truncated") || l.contains("rest of the file")
        }),
        ("v99.gguf", |l| l.contains("GGUF version 99")),
    ];
    for (file, problem) in cases {
        let id = format!("org/tiny:gguf/{file}");
        let o = s.cli(&["plan", &id, "--drop", "1"], &[]);
        assert_eq!(o.status.code(), Some(1), "{file}: {}", stderr(&o));
        assert!(o.stdout.is_empty(), "{file}: {}", stdout(&o));
        let err = stderr(&o);
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 1, "{file}: {err}");
        assert!(
            lines[0].starts_with("error: ") && lines[0].contains(file) && problem(lines[0]),
            "{file}: {err}"
        );
    }
}

#[test]
fn plan_on_a_split_gguf_reads_every_part_header_by_ranges() {
    // A split model made by `prune --max-shard-size`, served from a subfolder of the repo.
    let tmp = tempfile::tempdir().unwrap();
    let toy = tmp.path().join("toy.gguf");
    std::fs::write(&toy, toy_gguf()).unwrap();
    let parts = split_gguf(&toy, "1MB", &tmp.path().join("x.gguf"));
    assert!(parts.len() >= 2, "{parts:?}");
    let bytes: Vec<Vec<u8>> = parts.iter().map(|p| std::fs::read(p).unwrap()).collect();
    let names: Vec<String> = parts
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let s = Setup::new(|r| {
        for (n, b) in names.iter().zip(&bytes) {
            r.files.insert(format!("Q8/{n}"), b.clone());
        }
    });
    let o = s.cli(
        &[
            "plan",
            &format!("org/tiny:Q8/{}", names[0]),
            "--drop",
            "1",
            "--json",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let plan: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(plan["removal"]["removed"], serde_json::json!([1]));
    assert_eq!(plan["tensors_before"], 3 + 3 * 4 + 1);
    let reqs = s.hub.requests();
    let total: u64 = bytes.iter().map(|b| b.len() as u64).sum();
    let mut read = 0;
    for b in &bytes {
        let cdn: Vec<&Req> = reqs.iter().filter(|r| r.path == cdn_path(b)).collect();
        assert!(!cdn.is_empty(), "every part's header is read: {reqs:?}");
        assert!(cdn.iter().all(|r| r.range.is_some()), "{reqs:?}");
        read += cdn.iter().map(|r| r.body_bytes).sum::<u64>();
    }
    assert!(read * 4 < total, "read {read} of {total} bytes");
}
