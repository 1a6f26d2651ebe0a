//! Task data by name (`eval --tasks mmlu`) and in parquet, hermetic: a fake hub on 127.0.0.1
//! (`hub_server`) serving dataset repos built from the parquet fixtures of
//! `tests/fixtures/hubdata/` (written by `scripts/make_parquet_fixtures.py` from the JSON Lines
//! fixtures of `tests/fixtures/lmeval/`).

mod hub_server;

use depthprune::api::tasks::{load, DataAt};
use depthprune::eval::data::{as_is, read_records};
use depthprune::eval::docs::{build, Build};
use depthprune::eval::registry::{find, TASKS};
use depthprune::hub::dataset::fetch_dataset;
use depthprune::hub::{HubConfig, HubError};
use depthprune::progress::Silent;
use depthprune::Error;
use hub_server::{FakeHub, Repo};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const C1: &str = "1111111111111111111111111111111111111111";
const C2: &str = "2222222222222222222222222222222222222222";

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The files under `dir`, by their `/`-separated paths relative to it.
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if p.is_dir() {
            for (k, v) in tree(&p) {
                out.insert(format!("{name}/{k}"), v);
            }
        } else {
            out.insert(name, std::fs::read(&p).unwrap());
        }
    }
    out
}

/// A dataset repo at `main` = C1 holding the fixture folder of `task`, with a card declaring
/// `configs` as the hub's conversions write them.
fn dataset(id: &str, task: &str, card: Option<Value>) -> Repo {
    let mut files = tree(&fixtures().join("hubdata").join(task));
    files.retain(|k, _| k.ends_with(".parquet"));
    files.insert("README.md".into(), b"---\n---\n".to_vec());
    Repo {
        id: id.into(),
        refs: BTreeMap::from([("main".to_string(), C1.to_string())]),
        files,
        dataset: true,
        card,
        ..Default::default()
    }
}

fn mmlu_card() -> Value {
    json!({"configs": [{"config_name": "all", "data_files": [
        {"split": "test", "path": "all/test-*"},
        {"split": "dev", "path": "all/dev-*"}]}]})
}

fn cfg(root: &Path, endpoint: &str) -> HubConfig {
    HubConfig::new(root, endpoint)
}

fn hub_err(e: Error) -> HubError {
    match e {
        Error::Hub(h) => *h,
        e => panic!("expected a hub error, got {e}"),
    }
}

/// A closed port on this machine: connecting to it fails at once.
fn dead_endpoint() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", l.local_addr().unwrap())
}

#[test]
fn parquet_fixtures_read_as_the_jsonl_they_came_from_and_give_the_same_prompts() {
    let mut seen = 0;
    for spec in TASKS {
        let jsonl = fixtures().join("lmeval").join(spec.name);
        let mut parquet_dir = None;
        let fx = fixtures().join("hubdata").join(spec.name);
        if !fx.is_dir() {
            continue;
        }
        for (k, _) in tree(&fx) {
            if k.ends_with(".parquet") {
                let dir = Path::new(&k).parent().unwrap().to_path_buf();
                parquet_dir = Some(fixtures().join("hubdata").join(spec.name).join(dir));
            }
        }
        let Some(parquet_dir) = parquet_dir else {
            continue;
        };
        if spec.name == "humaneval" {
            let a = read_records(
                &[parquet_dir.join("test-00000-of-00001.parquet")],
                None,
                as_is,
            );
            let b = read_records(&[parquet_dir.join("../test.jsonl")], None, as_is);
            assert_eq!(a.unwrap(), b.unwrap());
            seen += 1;
            continue;
        }
        // Record for record, the same JSON values.
        for split in [Some(spec.hub.split), spec.hub.fewshot_split]
            .into_iter()
            .flatten()
        {
            let j = jsonl.join(format!("{split}.jsonl"));
            if !j.is_file() {
                continue;
            }
            let p = parquet_dir.join(format!("{split}-00000-of-00001.parquet"));
            let a = read_records(&[p], None, as_is).unwrap();
            let b = read_records(&[j], None, as_is).unwrap();
            assert_eq!(a, b, "{} {split}", spec.name);
        }
        // And the same task items, prompts and gold answers included.
        let shots = if jsonl
            .join(format!("{}.jsonl", spec.hub.fewshot_split.unwrap_or("-")))
            .is_file()
        {
            2
        } else {
            0
        };
        let items = |at: DataAt| {
            let d = load(spec, at, None, Some(shots)).unwrap();
            let b = Build {
                spec,
                num_fewshot: shots,
                fewshot_pool: &d.fewshot,
                chat: None,
            };
            build(&b, &d.records).unwrap()
        };
        assert_eq!(
            items(DataAt::Path(&parquet_dir)),
            items(DataAt::Path(&jsonl)),
            "{}",
            spec.name
        );
        seen += 1;
    }
    assert_eq!(seen, 10, "every fixture task was compared");
}

#[test]
fn a_dataset_by_name_lands_in_the_hf_cache_and_is_then_served_without_requests() {
    let hub = FakeHub::start(vec![dataset("cais/mmlu", "mmlu", Some(mmlu_card()))]);
    let tmp = tempfile::tempdir().unwrap();
    let c = cfg(tmp.path(), &hub.url);
    let got = fetch_dataset(&c, "cais/mmlu", Some("all"), &["test", "dev"], &Silent).unwrap();
    let snap = tmp.path().join("datasets--cais--mmlu/snapshots").join(C1);
    assert_eq!(got.commit, C1);
    assert_eq!(
        got.split("test").unwrap(),
        [snap.join("all/test-00000-of-00001.parquet")]
    );
    assert_eq!(
        got.split("dev").unwrap(),
        [snap.join("all/dev-00000-of-00001.parquet")]
    );
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("datasets--cais--mmlu/refs/main")).unwrap(),
        C1
    );
    assert!(tmp.path().join(".locks/datasets--cais--mmlu").is_dir());
    let paths: Vec<String> = hub.requests().iter().map(|r| r.path.clone()).collect();
    assert!(
        paths.contains(&"/api/datasets/cais/mmlu/revision/main".to_string()),
        "{paths:?}"
    );
    assert!(
        paths
            .iter()
            .any(|p| p
                == &format!("/datasets/cais/mmlu/resolve/{C1}/all/test-00000-of-00001.parquet")),
        "{paths:?}"
    );
    // Nothing but the split's files is fetched.
    assert!(!paths.iter().any(|p| p.ends_with("README.md")), "{paths:?}");

    // Again, online: the cache serves it, with no request at all.
    hub.clear();
    let again = fetch_dataset(&c, "cais/mmlu", Some("all"), &["test", "dev"], &Silent).unwrap();
    assert_eq!(again, got);
    assert!(hub.requests().is_empty(), "{:?}", hub.requests());
    // And offline, with the hub gone.
    let mut off = cfg(tmp.path(), &dead_endpoint());
    off.offline = true;
    assert_eq!(
        fetch_dataset(&off, "cais/mmlu", Some("all"), &["test"], &Silent)
            .unwrap()
            .split("test"),
        got.split("test")
    );
    // The task reads its data by name, zero- and few-shot.
    let spec = find("mmlu").unwrap();
    let d = load(spec, DataAt::Hub(&off, &Silent), None, Some(1)).unwrap();
    assert_eq!((d.records.len(), d.fewshot.len()), (3, 3));
    assert_eq!(d.records[0]["answer"], 1);
}

#[test]
fn offline_a_missing_dataset_or_split_is_one_line_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = cfg(tmp.path(), &dead_endpoint());
    c.offline = true;
    let spec = find("mmlu").unwrap();
    let e = load(spec, DataAt::Hub(&c, &Silent), None, Some(0))
        .err()
        .unwrap();
    let msg = e.to_string();
    assert!(
        matches!(
            hub_err(e),
            HubError::NotCached {
                kind: "dataset",
                ..
            }
        ),
        "{msg}"
    );
    assert!(
        msg.contains("`cais/mmlu`")
            && msg.contains("the `test` split of config `all`")
            && msg.contains("HF_HUB_OFFLINE")
            && msg.contains("fetch the dataset once")
            && !msg.contains('\n'),
        "{msg}"
    );
    // The test split cached, not the dev split that 5-shot needs.
    let hub = FakeHub::start(vec![dataset("cais/mmlu", "mmlu", Some(mmlu_card()))]);
    let on = cfg(tmp.path(), &hub.url);
    fetch_dataset(&on, "cais/mmlu", Some("all"), &["test"], &Silent).unwrap();
    let e = load(spec, DataAt::Hub(&c, &Silent), None, Some(0));
    assert_eq!(e.unwrap().records.len(), 3);
    let msg = load(spec, DataAt::Hub(&c, &Silent), None, Some(5))
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("the `dev` split of config `all`"), "{msg}");
}

#[test]
fn a_split_the_dataset_lacks_is_named_and_the_parquet_export_is_the_fallback() {
    // No `dev` files on `main`, and no parquet export.
    let mut repo = dataset("cais/mmlu", "mmlu", Some(mmlu_card()));
    repo.files.retain(|k, _| !k.contains("dev-"));
    // A repo whose `main` holds a loading script only: its parquet export serves it.
    let mut script = dataset("Rowan/hellaswag", "hellaswag", None);
    let export = std::mem::take(&mut script.files)
        .into_iter()
        .map(|(k, v)| {
            (
                k.replace("data/validation-00000-of-00001", "default/validation/0000"),
                v,
            )
        })
        .collect();
    script.files = BTreeMap::from([("hellaswag.py".to_string(), b"# a script".to_vec())]);
    script.refs.insert("refs/convert/parquet".into(), C2.into());
    script.commit_files.insert(C2.into(), export);
    let hub = FakeHub::start(vec![repo, script]);
    let tmp = tempfile::tempdir().unwrap();
    let c = cfg(tmp.path(), &hub.url);
    let e = fetch_dataset(&c, "cais/mmlu", Some("all"), &["test", "dev"], &Silent).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(hub_err(e), HubError::NoSplit { .. }), "{msg}");
    assert!(
        msg.contains("`cais/mmlu` (config `all`): no `dev` split"),
        "{msg}"
    );

    let spec = find("hellaswag").unwrap();
    let d = load(spec, DataAt::Hub(&c, &Silent), None, Some(0)).unwrap();
    assert_eq!(d.records.len(), 2);
    let snap = tmp
        .path()
        .join("datasets--Rowan--hellaswag/snapshots")
        .join(C2);
    assert!(snap.join("default/validation/0000.parquet").is_file());
    assert_eq!(
        std::fs::read_to_string(
            tmp.path()
                .join("datasets--Rowan--hellaswag/refs/refs/convert/parquet")
        )
        .unwrap(),
        C2
    );
    // Cached: offline it is found in the export's snapshot.
    let mut off = cfg(tmp.path(), &dead_endpoint());
    off.offline = true;
    assert_eq!(
        load(spec, DataAt::Hub(&off, &Silent), None, Some(0))
            .unwrap()
            .records,
        d.records
    );
}

#[test]
fn a_bad_parquet_file_is_one_line_naming_it() {
    let mut repo = dataset("cais/mmlu", "mmlu", Some(mmlu_card()));
    repo.files.insert(
        "all/test-00000-of-00001.parquet".into(),
        b"PAR1 not really parquet PAR1".to_vec(),
    );
    let hub = FakeHub::start(vec![repo]);
    let tmp = tempfile::tempdir().unwrap();
    let c = cfg(tmp.path(), &hub.url);
    let e = load(
        find("mmlu").unwrap(),
        DataAt::Hub(&c, &Silent),
        None,
        Some(0),
    )
    .err()
    .unwrap();
    let msg = e.to_string();
    assert!(matches!(e, Error::Corrupt { .. }), "{msg}");
    assert!(
        msg.contains("all/test-00000-of-00001.parquet`: not a readable parquet file")
            && !msg.contains('\n'),
        "{msg}"
    );
}

#[test]
fn humaneval_takes_the_cards_default_config() {
    let card = json!({"configs": [{"config_name": "openai_humaneval", "default": true,
        "data_files": [{"split": "test", "path": "openai_humaneval/test-*"}]}]});
    let hub = FakeHub::start(vec![dataset(
        "openai/openai_humaneval",
        "humaneval",
        Some(card),
    )]);
    let tmp = tempfile::tempdir().unwrap();
    let c = cfg(tmp.path(), &hub.url);
    let spec = find("humaneval").unwrap();
    let d = load(spec, DataAt::Hub(&c, &Silent), None, None).unwrap();
    assert_eq!(d.records.len(), 2);
    assert_eq!(d.records[0]["task_id"], "HumanEval/0");
    // Cached, found again without the card.
    hub.clear();
    let mut off = cfg(tmp.path(), &dead_endpoint());
    off.offline = true;
    assert_eq!(
        load(spec, DataAt::Hub(&off, &Silent), None, None)
            .unwrap()
            .records,
        d.records
    );
}

/// `eval --tasks mmlu` through `HF_ENDPOINT` and `HF_HUB_CACHE` scores exactly as the JSON Lines
/// of the same questions do.
#[test]
fn eval_by_name_follows_hf_endpoint_and_scores_as_the_jsonl() {
    let hub = FakeHub::start(vec![dataset("cais/mmlu", "mmlu", Some(mmlu_card()))]);
    let tmp = tempfile::tempdir().unwrap();
    let model = fixtures().join("golden/llama");
    let run = |tasks: &str, envs: &[(&str, &str)]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_depthprune"));
        cmd.args(["eval", model.to_str().unwrap(), "--tasks", tasks, "--json"])
            .env_remove("HF_HUB_OFFLINE")
            .env_remove("HF_TOKEN")
            .env("HF_HUB_CACHE", tmp.path());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["tasks"][0].as_object_mut().unwrap().remove("seconds");
        v["tasks"][0].clone()
    };
    let by_name = run("mmlu", &[("HF_ENDPOINT", &hub.url)]);
    assert!(!hub.requests().is_empty());
    let jsonl = fixtures().join("lmeval/mmlu");
    let local = run(&format!("mmlu={}", jsonl.display()), &[]);
    assert_eq!(by_name, local);
    assert_eq!(by_name["n"], 3, "{by_name}");
    assert!(by_name["metrics"]["acc"].as_f64().is_some(), "{by_name}");
    // A second run offline uses the cache.
    let again = run(
        "mmlu",
        &[("HF_ENDPOINT", &dead_endpoint()), ("HF_HUB_OFFLINE", "1")],
    );
    assert_eq!(again, by_name);
}

#[test]
fn a_gated_dataset_takes_the_token_as_a_gated_model_does() {
    let mut repo = dataset("cais/mmlu", "mmlu", Some(mmlu_card()));
    repo.gated_token = Some("hf_secret".into());
    let hub = FakeHub::start(vec![repo]);
    let tmp = tempfile::tempdir().unwrap();
    let mut c = cfg(tmp.path(), &hub.url);
    let e = fetch_dataset(&c, "cais/mmlu", Some("all"), &["test"], &Silent).unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(
            hub_err(e),
            HubError::Unauthorized {
                has_token: false,
                ..
            }
        ),
        "{msg}"
    );
    c.token = Some("hf_secret".into());
    fetch_dataset(&c, "cais/mmlu", Some("all"), &["test"], &Silent).unwrap();
    assert!(hub
        .requests()
        .iter()
        .any(|r| r.auth.as_deref() == Some("Bearer hf_secret")));
    // A model of the same name is another repo.
    let e = depthprune::hub::resolve(
        std::ffi::OsStr::new("cais/mmlu"),
        depthprune::hub::Need::Config,
        &c,
        &Silent,
    )
    .unwrap_err();
    assert!(e.to_string().contains("no such model"), "{e}");
}

#[test]
fn a_sweep_takes_a_multiple_choice_task_by_name() {
    use depthprune::api::tasks::{sweep_tasks, SuiteOpts, SweepTasks};
    let o = SuiteOpts {
        limit: None,
        num_fewshot: None,
        chat_template: false,
        confirm_run_unsafe_code: false,
        opts: depthprune::eval::TaskOpts {
            max_len: 256,
            batch: 1,
        },
        samples: 1,
        pass_k: 1,
        sampling: depthprune::model::Sampling::greedy(),
        max_gen_toks: None,
        code_timeout: 3.0,
    };
    let card = json!({"configs": [{"config_name": "ARC-Easy", "data_files": [
        {"split": "test", "path": "ARC-Easy/test-*"}]}]});
    let hub = FakeHub::start(vec![dataset("allenai/ai2_arc", "arc_easy", Some(card))]);
    let tmp = tempfile::tempdir().unwrap();
    let c = cfg(tmp.path(), &hub.url);
    let SweepTasks::Named(by_name) = sweep_tasks("arc_easy", &o, &c, &Silent).unwrap() else {
        panic!("not a named task")
    };
    let local = format!("arc_easy={}", fixtures().join("lmeval/arc_easy").display());
    let SweepTasks::Named(from_file) = sweep_tasks(&local, &o, &c, &Silent).unwrap() else {
        panic!("not a named task")
    };
    assert_eq!(by_name.len(), 1);
    assert_eq!(by_name[0].records.len(), 3);
    assert_eq!(by_name[0].records, from_file[0].records);
}
