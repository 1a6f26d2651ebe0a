//! `sweep --tasks` with a list of benchmarks (issue 32) on the golden llama fixture: each cell's
//! headline metric of each task equals what `eval --tasks … --skip DROP` gives for the same
//! removal, retention is the share of dense, a resumed study keeps the figures and refuses
//! changed task settings by name, and the report's first table is the papers' table (tasks ×
//! layers removed: dense, unhealed and each healing method). `prune --heal --tasks` states what
//! the heal did to each task, before and after, as `eval --tasks` scores them.

mod common;

use common::{fixture, run_in, s, stderr};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;

/// The fixture's evaluation text, repeated to be long enough.
fn text(dir: &Path) -> PathBuf {
    let base = std::fs::read_to_string(fixture().join("eval.txt")).unwrap();
    let p = dir.join("text.txt");
    std::fs::write(&p, base.repeat(8)).unwrap();
    p
}

/// Twelve ARC-Easy questions in the hub's schema (more than the fixture's three, so removals
/// move the accuracy).
fn arc(dir: &Path) -> PathBuf {
    let d = dir.join("arc");
    std::fs::create_dir_all(&d).unwrap();
    let words = [
        "water", "stone", "light", "heat", "plant", "cloud", "metal", "sound", "ice", "sand",
        "wind", "seed",
    ];
    let mut lines = String::new();
    for (i, w) in words.iter().enumerate() {
        let choices: Vec<&str> = (0..4).map(|j| words[(i + j * 5) % words.len()]).collect();
        let key = ["A", "B", "C", "D"][i % 4];
        let v = serde_json::json!({
            "id": format!("q{i}"),
            "question": format!("Which one is {w} most like?"),
            "choices": {"text": choices, "label": ["A", "B", "C", "D"]},
            "answerKey": key,
        });
        lines.push_str(&format!("{v}\n"));
    }
    std::fs::write(d.join("test.jsonl"), lines).unwrap();
    d
}

/// The `--tasks` list: two log-likelihood tasks and one generation task.
fn tasks(dir: &Path) -> String {
    let lm = fixture().parent().unwrap().join("lmeval");
    format!(
        "arc_easy={},mmlu={},gsm8k={}",
        arc(dir).display(),
        lm.join("mmlu").display(),
        lm.join("gsm8k").display()
    )
}

/// Flags both `sweep` and `eval` take for the tasks.
const TASK_FLAGS: [&str; 4] = ["--num-fewshot", "0", "--max-gen-toks", "12"];

/// `sweep` of `bi` and `last` at 0..3 layers removed, healed two ways, on `tasks`, into `out`.
fn sweep(dir: &Path, tasks: &str, out: &str, extra: &[&str]) -> Output {
    let t = text(dir);
    let model = fixture().join("llama");
    let mut a = vec![
        "sweep",
        s(&model),
        "--calib",
        s(&t),
        "--ctx",
        "16",
        "--calib-offset",
        "64",
        "--samples",
        "4",
        "--eval",
        s(&t),
        "--eval-samples",
        "2",
        "--strategies",
        "bi,last",
        "--remove",
        "0..3",
        "--protect",
        "first:1",
        "--heal",
        "lstsq,scale",
        "--heal-samples",
        "1024",
        "--tasks",
        tasks,
        "--out",
        out,
    ];
    a.extend_from_slice(&TASK_FLAGS);
    a.extend_from_slice(extra);
    run_in(&a, dir)
}

fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

/// `prune --drop DROP --heal lstsq` of the fixture, healed on the calibration tokens the sweep
/// heals on, with `extra` flags; returns the checkpoint and the run.
fn prune_healed_with(dir: &Path, drop: &str, extra: &[&str]) -> (PathBuf, Output) {
    let (t, out) = (text(dir), dir.join(format!("healed-{drop}")));
    let model = fixture().join("llama");
    let mut a = vec![
        "prune",
        s(&model),
        "--drop",
        drop,
        "--heal",
        "lstsq",
        "--calib",
        s(&t),
        "--ctx",
        "16",
        "--calib-offset",
        "64",
        "--heal-samples",
        "1024",
        "--out",
        s(&out),
    ];
    a.extend_from_slice(extra);
    let o = run_in(&a, dir);
    assert!(o.status.success(), "{}", stderr(&o));
    (out, o)
}

fn prune_healed(dir: &Path, drop: &str) -> PathBuf {
    prune_healed_with(dir, drop, &[]).0
}

/// `eval --tasks` of `model` (the fixture when empty) with `skip` (empty: none), each task's
/// metrics by name.
fn eval_tasks(dir: &Path, tasks: &str, skip: &str, model: &Path) -> Vec<(String, Value)> {
    let model = match model.as_os_str().is_empty() {
        true => fixture().join("llama"),
        false => model.to_path_buf(),
    };
    eval_tasks_with(dir, tasks, skip, &model, &TASK_FLAGS)
}

/// `eval --tasks` of `model` with `skip` (empty: none) and `flags`, each task by name.
fn eval_tasks_with(
    dir: &Path,
    tasks: &str,
    skip: &str,
    model: &Path,
    flags: &[&str],
) -> Vec<(String, Value)> {
    let mut a = vec!["eval", s(model), "--tasks", tasks, "--json"];
    a.extend_from_slice(flags);
    if !skip.is_empty() {
        a.extend_from_slice(&["--skip", skip]);
    }
    let o = run_in(&a, dir);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    v["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["task"].as_str().unwrap().to_string(), t.clone()))
        .collect()
}

#[test]
fn every_cell_scores_each_task_as_eval_does_and_the_report_leads_with_the_papers_table() {
    let tmp = tempfile::tempdir().unwrap();
    let tasks = tasks(tmp.path());
    let o = sweep(tmp.path(), &tasks, "out", &["--report"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v = read_json(&tmp.path().join("out/sweep.json"));
    let list = v["task_list"].as_array().unwrap();
    let names: Vec<&str> = list.iter().map(|t| t["task"].as_str().unwrap()).collect();
    assert_eq!(names, ["arc_easy", "mmlu", "gsm8k"]);
    let headline: Vec<&str> = list.iter().map(|t| t["metric"].as_str().unwrap()).collect();
    assert_eq!(headline, ["acc_norm", "acc", "exact_match"]);

    // The dense model's figures are `eval --tasks` without skipping.
    let dense = eval_tasks(tmp.path(), &tasks, "", Path::new(""));
    for (t, (name, e)) in list.iter().zip(&dense) {
        assert_eq!(t["task"], name.as_str());
        let want = e["metrics"][e["headline"].as_str().unwrap()]
            .as_f64()
            .unwrap();
        assert_eq!(t["dense"]["value"].as_f64().unwrap(), want, "{t}");
        assert_eq!(t["n"], e["n"], "{t}");
    }
    let dense_value = |task: &str| {
        list.iter().find(|t| t["task"] == task).unwrap()["dense"]["value"]
            .as_f64()
            .unwrap()
    };

    // Each removal's figures are `eval --tasks --skip DROP`, every metric of every task.
    let mut checked = 0;
    let mut moved = false;
    for r in v["rows"].as_array().unwrap() {
        let drop = r["drop"].as_str().unwrap();
        let got = r["task_metrics"].as_array().unwrap();
        assert_eq!(got.len(), 3, "{r}");
        if r["k"] == 0 {
            continue;
        }
        let want = eval_tasks(tmp.path(), &tasks, drop, Path::new(""));
        for (m, (name, e)) in got.iter().zip(&want) {
            assert_eq!(m["task"], name.as_str(), "{r}");
            for (metric, x) in e["metrics"].as_object().unwrap() {
                assert_eq!(m["metrics"][metric].as_f64(), x.as_f64(), "{drop} {metric}");
            }
            let value = m["value"].as_f64().unwrap();
            assert_eq!(
                Some(value),
                e["metrics"][m["metric"].as_str().unwrap()].as_f64()
            );
            let ci = m["ci"].as_array().unwrap();
            let (lo, hi) = (ci[0].as_f64().unwrap(), ci[1].as_f64().unwrap());
            assert!(lo <= value && value <= hi, "{m}");
            let d = dense_value(name);
            match m["retention"].as_f64() {
                Some(kept) => assert!((kept - value / d).abs() < 1e-12, "{m}"),
                None => assert_eq!(d, 0.0, "{m}"),
            }
            moved |= value != d;
        }
        // Healed by each method: figures of the same shape, for every task; healed by the first,
        // those of the checkpoint `prune --heal` writes for the same removal.
        let healed = r["healed_task_metrics"].as_array().unwrap();
        if r["strategy"] == "bi" {
            let written = prune_healed(tmp.path(), drop);
            let want = eval_tasks(tmp.path(), &tasks, "", &written);
            for (m, (_, e)) in healed.iter().zip(&want) {
                for (metric, x) in e["metrics"].as_object().unwrap() {
                    assert_eq!(
                        m["metrics"][metric].as_f64(),
                        x.as_f64(),
                        "healed {drop} {metric}"
                    );
                }
            }
        }
        let scaled = r["healed_by_task_metrics"]["scale"].as_array().unwrap();
        for h in [healed, scaled] {
            let tasks: Vec<&str> = h.iter().map(|m| m["task"].as_str().unwrap()).collect();
            assert_eq!(tasks, names, "{r}");
        }
        checked += 1;
    }
    assert_eq!(checked, 4);
    assert!(
        moved,
        "no removal changed any task: the comparison proves little"
    );

    // The report's first table is the papers' table, one row per count and model.
    let md = std::fs::read_to_string(tmp.path().join("out/report.md")).unwrap();
    let table: Vec<&str> = md
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .collect();
    assert_eq!(
        table[0],
        "| layers removed | removed (`--drop`) | model | arc_easy acc_norm | mmlu acc | gsm8k exact_match | perplexity |",
        "{md}"
    );
    let cells = |l: &str| -> Vec<String> {
        l.trim_matches('|')
            .split(" | ")
            .map(|c| c.trim().to_string())
            .collect()
    };
    let rows: Vec<Vec<String>> = table[2..].iter().map(|l| cells(l)).collect();
    let labels: Vec<(String, String)> = rows.iter().map(|c| (c[0].clone(), c[2].clone())).collect();
    let want: Vec<(String, String)> = [
        ("0", "dense"),
        ("1", "unhealed"),
        ("1", "healed (lstsq)"),
        ("1", "healed (scale)"),
        ("2", "unhealed"),
        ("2", "healed (lstsq)"),
        ("2", "healed (scale)"),
    ]
    .iter()
    .map(|(k, m)| (k.to_string(), m.to_string()))
    .collect();
    assert_eq!(labels, want, "{md}");
    // Each figure is the chosen row's, as sweep.json has it.
    let best = &v["best"];
    for c in &rows[1..] {
        let b = &best[c[0].as_str()];
        let r = v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| {
                r["strategy"] == b["strategy"]
                    && r["k"].as_u64().map(|k| k.to_string()).as_deref() == Some(c[0].as_str())
            })
            .unwrap();
        assert_eq!(
            c[1],
            format!(
                "`{}` ({})",
                r["drop"].as_str().unwrap(),
                r["strategy"].as_str().unwrap()
            )
        );
        let (metrics, ppl) = match c[2].as_str() {
            "unhealed" => (&r["task_metrics"], r["perplexity"].as_f64()),
            "healed (lstsq)" => (
                &r["healed_task_metrics"],
                r["healed"]["perplexity"].as_f64(),
            ),
            _ => (
                &r["healed_by_task_metrics"]["scale"],
                r["healed_by"]["scale"]["perplexity"].as_f64(),
            ),
        };
        for (i, m) in metrics.as_array().unwrap().iter().enumerate() {
            let want = format!("{:.3}", m["value"].as_f64().unwrap());
            assert!(c[3 + i].starts_with(&want), "{c:?} vs {m}");
        }
        assert!(c[6].starts_with(&format!("{:.3}", ppl.unwrap())), "{c:?}");
    }
    assert!(
        md.find("## Benchmarks").unwrap() < md.find("## Method").unwrap(),
        "{md}"
    );
    // The CSV carries each task's headline, healed and not.
    let csv = std::fs::read_to_string(tmp.path().join("out/sweep.csv")).unwrap();
    for col in [
        "arc_easy_acc_norm_retention",
        "healed_gsm8k_exact_match",
        "healed_scale_mmlu_acc_lo",
    ] {
        assert!(
            csv.lines().next().unwrap().split(',').any(|c| c == col),
            "{col}"
        );
    }
}

#[test]
fn a_resumed_sweep_keeps_task_figures_and_refuses_changed_tasks() {
    let tmp = tempfile::tempdir().unwrap();
    let tasks = tasks(tmp.path());
    let o = sweep(tmp.path(), &tasks, "full", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let full = read_json(&tmp.path().join("full/sweep.json"));

    // A study stopped after three cells: its journal cut there.
    let o = sweep(tmp.path(), &tasks, "part", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let journal = tmp.path().join("part/cells.jsonl");
    let lines: Vec<String> = std::fs::read_to_string(&journal)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(lines.len(), 6);
    std::fs::write(&journal, lines[..3].join("\n") + "\n").unwrap();
    std::fs::remove_file(tmp.path().join("part/sweep.json")).unwrap();

    // Changed task settings are refused by name.
    let o = sweep(tmp.path(), &tasks, "part", &["--resume", "--limit", "2"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("--limit was null there, now 2"),
        "{}",
        stderr(&o)
    );
    let fewer = tasks.split(',').take(2).collect::<Vec<_>>().join(",");
    let o = sweep(tmp.path(), &fewer, "part", &["--resume"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--tasks was"), "{}", stderr(&o));
    // So is changed data in a task's folder (the same path, another question).
    let file = tmp.path().join("arc/test.jsonl");
    let kept = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, kept.replacen("most like", "least like", 1)).unwrap();
    let o = sweep(tmp.path(), &tasks, "part", &["--resume"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("tasks_sha256"), "{}", stderr(&o));
    std::fs::write(&file, kept).unwrap();

    // Resumed, the saved cells are kept and the study is the uninterrupted one.
    let o = sweep(tmp.path(), &tasks, "part", &["--resume"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("resuming: 3 of 6 cells"),
        "{}",
        stderr(&o)
    );
    let part = read_json(&tmp.path().join("part/sweep.json"));
    for key in ["rows", "task_list", "best"] {
        assert!(
            part[key] == full[key],
            "`{key}` differs from the uninterrupted study"
        );
    }
}

#[test]
fn a_healed_prune_states_what_the_heal_did_to_each_task() {
    let tmp = tempfile::tempdir().unwrap();
    let lm = fixture().parent().unwrap().join("lmeval");
    let tasks = format!(
        "arc_easy={},mmlu={}",
        arc(tmp.path()).display(),
        lm.join("mmlu").display()
    );
    let (out, o) = prune_healed_with(tmp.path(), "3..4", &["--tasks", &tasks]);
    let record = read_json(&out.join("pruning.json"))["healing"]["tasks"].clone();
    let before = eval_tasks_plain(tmp.path(), &tasks, "3..4", &fixture().join("llama"));
    let after = eval_tasks_plain(tmp.path(), &tasks, "", &out);
    let effects = record.as_array().unwrap();
    assert_eq!(effects.len(), 2, "{record}");
    let mut moved = false;
    for (i, e) in effects.iter().enumerate() {
        for (side, want) in [("unhealed", &before[i]), ("healed", &after[i])] {
            assert_eq!(e["task"], want.0.as_str());
            for (metric, x) in want.1["metrics"].as_object().unwrap() {
                assert_eq!(
                    e[side]["metrics"][metric].as_f64(),
                    x.as_f64(),
                    "{side} {metric}"
                );
            }
        }
        moved |= e["unhealed"]["value"] != e["healed"]["value"];
    }
    assert!(
        moved,
        "the heal changed no task: the comparison proves little"
    );
    // The note in the model card and the terminal say it too.
    let card = std::fs::read_to_string(out.join("README.md")).unwrap();
    let arc = &effects[0];
    let sentence = format!(
        "before → after healing: `arc_easy` acc_norm {:.3} → {:.3} (12 questions)",
        arc["unhealed"]["value"].as_f64().unwrap(),
        arc["healed"]["value"].as_f64().unwrap()
    );
    assert!(card.contains(&sentence), "{sentence}\n{card}");
    let printed = String::from_utf8_lossy(&o.stdout);
    assert!(printed.contains("task arc_easy: acc_norm "), "{printed}");
    // Without a heal there is nothing to state: refused.
    let model = fixture().join("llama");
    let o = run_in(
        &[
            "prune",
            s(&model),
            "--drop",
            "3..4",
            "--tasks",
            &tasks,
            "--out",
            "x",
        ],
        tmp.path(),
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("pass --heal"), "{}", stderr(&o));
}

/// `eval --tasks` of `model` with `skip`, without the sweep's task flags.
fn eval_tasks_plain(dir: &Path, tasks: &str, skip: &str, model: &Path) -> Vec<(String, Value)> {
    eval_tasks_with(dir, tasks, skip, model, &[])
}

/// The same for a GGUF model: an F32 GGUF of the fixture, healed into F32 tensors, so the file
/// written scores what the in-memory healed model scored; the record is in `--json`'s healing
/// and in the file's metadata.
#[test]
fn a_healed_gguf_prune_states_what_the_heal_did_to_each_task() {
    use depthprune::checkpoint::atomic::Overwrite;
    use depthprune::checkpoint::gguf::{GgmlType, GgufModel};
    let tmp = tempfile::tempdir().unwrap();
    // The fixture without its llama3 RoPE scaling, which GGUF conversion does not write: both
    // sides of every comparison below read the same GGUF.
    let plain = tmp.path().join("llama-plain");
    std::fs::create_dir(&plain).unwrap();
    for e in std::fs::read_dir(fixture().join("llama")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), plain.join(e.file_name())).unwrap();
    }
    let mut cfg: Value = read_json(&plain.join("config.json"));
    cfg["rope_parameters"] = serde_json::json!({"rope_theta": 10000.0, "rope_type": "default"});
    std::fs::write(plain.join("config.json"), cfg.to_string()).unwrap();
    let gguf = tmp.path().join("llama.gguf");
    depthprune::convert::to_gguf::hf_to_gguf(&plain, &gguf, GgmlType::F32, Overwrite::Refuse)
        .unwrap();
    let lm = fixture().parent().unwrap().join("lmeval");
    let tasks = format!(
        "arc_easy={},mmlu={}",
        arc(tmp.path()).display(),
        lm.join("mmlu").display()
    );
    let out = tmp.path().join("healed.gguf");
    let t = text(tmp.path());
    let o = run_in(
        &[
            "prune",
            s(&gguf),
            "--drop",
            "1..3",
            "--heal",
            "lstsq",
            "--calib",
            s(&t),
            "--ctx",
            "16",
            "--calib-offset",
            "64",
            "--heal-samples",
            "1024",
            "--tasks",
            &tasks,
            "--out",
            s(&out),
            "--json",
        ],
        tmp.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let effects = v["healing"]["tasks"]
        .as_array()
        .unwrap_or_else(|| panic!("no healing.tasks in {v}"))
        .clone();
    let before = eval_tasks_plain(tmp.path(), &tasks, "1..3", &gguf);
    let after = eval_tasks_plain(tmp.path(), &tasks, "", &out);
    assert_eq!(effects.len(), 2);
    let mut moved = false;
    for (i, e) in effects.iter().enumerate() {
        for (side, want) in [("unhealed", &before[i]), ("healed", &after[i])] {
            assert_eq!(e["task"], want.0.as_str());
            for (metric, x) in want.1["metrics"].as_object().unwrap() {
                let got = e[side]["metrics"][metric].as_f64().unwrap();
                let x = x.as_f64().unwrap();
                assert!((got - x).abs() < 1e-9, "{side} {metric}: {got} vs {x}");
            }
        }
        moved |= e["unhealed"]["value"] != e["healed"]["value"];
    }
    assert!(
        moved,
        "the heal changed no task: the comparison proves little"
    );
    let m = GgufModel::open(&out).unwrap();
    let note = m
        .metadata()
        .get_str("depthprune.healing.tasks")
        .unwrap_or_default();
    assert!(note.contains("`arc_easy` acc_norm"), "{note}");
}
