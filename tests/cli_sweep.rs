//! `depthprune sweep` and `depthprune report` on the golden llama fixture (4 layers, with a
//! tokenizer): the CSV has one row per strategy and count, every cell agrees with an independent
//! `depthprune eval --skip … --reference …` run, and the report holds the table and generations.

mod common;

use common::{fixture, run_in as depthprune, s, stderr as err};

use std::path::{Path, PathBuf};
use std::process::Output;

/// A long enough text: the fixture's evaluation text, repeated.
fn text(dir: &Path) -> PathBuf {
    let base = std::fs::read_to_string(fixture().join("eval.txt")).unwrap();
    let p = dir.join("text.txt");
    std::fs::write(&p, base.repeat(8)).unwrap();
    p
}

/// `sweep MODEL` on `text` (calibration from token 64 in windows of 16, evaluation on two
/// windows from token 0) with `args`: the strategies, counts, samples and output.
fn sweep_with(dir: &Path, model: &Path, text: &Path, args: &[&str]) -> Output {
    let mut a = vec![
        "sweep",
        s(model),
        "--calib",
        s(text),
        "--ctx",
        "16",
        "--calib-offset",
        "64",
        "--eval",
        s(text),
        "--eval-samples",
        "2",
    ];
    a.extend_from_slice(args);
    depthprune(&a, dir)
}

fn sweep(dir: &Path, model: &Path, text: &Path, remove: &str, extra: &[&str]) -> Output {
    let mut a = vec![
        "--strategies",
        "angular,bi,ppl,greedy,last",
        "--remove",
        remove,
        "--samples",
        "2",
        "--out",
        "out",
    ];
    a.extend_from_slice(extra);
    sweep_with(dir, model, text, &a)
}

/// A healing sweep (`heal`: the `--heal` flags) into `out`, layer 0 protected, reported as JSON.
fn heal_sweep(
    dir: &Path,
    text: &Path,
    strategies: &str,
    remove: &str,
    heal: &[&str],
    out: &str,
) -> Output {
    let mut a = vec![
        "--strategies",
        strategies,
        "--remove",
        remove,
        "--protect",
        "first:1",
        "--samples",
        "4",
        "--heal-samples",
        "1024",
        "--out",
        out,
        "--json",
    ];
    a.extend_from_slice(heal);
    sweep_with(dir, &fixture().join("llama"), text, &a)
}

/// Asserts that `out/report.md` in `dir` holds each of `wants`.
fn report_holds(dir: &Path, wants: &[&str]) {
    let md = std::fs::read_to_string(dir.join("out/report.md")).unwrap();
    for want in wants {
        assert!(md.contains(want), "{want} not in report:\n{md}");
    }
}

/// `depthprune eval ARGS… --json` in `dir`, which must succeed, parsed.
fn eval_json(dir: &Path, args: &[&str]) -> serde_json::Value {
    let mut a = vec!["eval"];
    a.extend_from_slice(args);
    a.push("--json");
    let o = depthprune(&a, dir);
    assert!(o.status.success(), "{}", err(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn sweep_rows_match_independent_eval_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let model = fixture().join("llama");
    let t = text(tmp.path());
    let o = sweep(tmp.path(), &model, &t, "0..3", &[]);
    assert!(o.status.success(), "{}", err(&o));
    let table = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(table.contains("best by validation perplexity"), "{table}");

    let csv = std::fs::read_to_string(tmp.path().join("out/sweep.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[0].starts_with("strategy,k,drop,params"), "{csv}");
    assert_eq!(lines.len(), 1 + 5 * 3, "{csv}");
    for strategy in ["angular", "bi", "ppl", "greedy", "last"] {
        for k in 0..=2 {
            let prefix = format!("{strategy},{k},");
            assert_eq!(
                lines.iter().filter(|l| l.starts_with(&prefix)).count(),
                1,
                "{prefix} in {csv}"
            );
        }
    }
    for f in [
        "sweep.json",
        "plots/ppl_vs_removed.png",
        "plots/ppl_vs_removed.svg",
        "plots/ppl_vs_params.png",
        "plots/kl_vs_removed.svg",
        "plots/angular_heatmap.png",
        "plots/greedy_curve.png",
    ] {
        assert!(tmp.path().join("out").join(f).is_file(), "{f} missing");
    }

    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("out/sweep.json")).unwrap()).unwrap();
    let dense = v["dense_perplexity"].as_f64().unwrap();
    let rows = v["rows"].as_array().unwrap();
    let mut checked = 0;
    for r in rows {
        let k = r["k"].as_u64().unwrap();
        let ppl = r["perplexity"].as_f64().unwrap();
        if k == 0 {
            assert!((ppl - dense).abs() < 1e-9 && r["mean_kl"] == 0.0);
            continue;
        }
        assert_eq!(r["removed"].as_array().unwrap().len() as u64, k, "{r}");
        if r["strategy"] != "angular" && r["strategy"] != "last" {
            continue;
        }
        // The same removal through `eval`, which runs every window from the embedding.
        let drop = r["drop"].as_str().unwrap();
        let e = eval_json(
            tmp.path(),
            &[
                s(&model),
                "--text",
                s(&t),
                "--ctx",
                "16",
                "--max-tokens",
                "32",
                "--skip",
                drop,
                "--reference",
                s(&model),
            ],
        );
        let ep = e["perplexity"].as_f64().unwrap();
        let ekl = e["divergence"]["mean_kl"].as_f64().unwrap();
        assert!(
            (ppl - ep).abs() / ep < 1e-4,
            "{drop}: sweep {ppl} vs eval {ep}"
        );
        let kl = r["mean_kl"].as_f64().unwrap();
        assert!(
            (kl - ekl).abs() < 1e-4,
            "{drop}: sweep KL {kl} vs eval {ekl}"
        );
        let top1 = r["top1_agreement"].as_f64().unwrap();
        let etop1 = e["divergence"]["top1_agreement"].as_f64().unwrap();
        assert!((top1 - etop1).abs() < 1e-9, "{drop}: {top1} vs {etop1}");
        checked += 1;
    }
    assert_eq!(checked, 4);
    // The best choice is made on the validation slice (by default the calibration file's next
    // tokens, 96..128 here) and reported with its evaluation figures.
    assert_eq!(v["select"]["offset_tokens"], 96, "{}", v["select"]);
    assert_eq!(v["select"]["windows"], 2);
    let best = &v["best"]["2"];
    let best_row = rows
        .iter()
        .filter(|r| r["k"] == 2)
        .min_by(|a, b| {
            let p = |r: &serde_json::Value| r["select_perplexity"].as_f64().unwrap();
            p(a).total_cmp(&p(b))
        })
        .unwrap();
    assert_eq!(best["drop"], best_row["drop"]);
    assert_eq!(best["perplexity"], best_row["perplexity"]);
    assert_eq!(best["select_perplexity"], best_row["select_perplexity"]);
    // Every figure carries an interval that holds it; differences are paired against dense.
    for r in rows.iter().filter(|r| r["k"].as_u64().unwrap() > 0) {
        for (f, ci) in [
            ("perplexity", "perplexity_ci"),
            ("mean_kl", "mean_kl_ci"),
            ("top1_agreement", "top1_agreement_ci"),
        ] {
            let x = r[f].as_f64().unwrap();
            let c: Vec<f64> = r[ci]
                .as_array()
                .unwrap_or_else(|| panic!("{ci} missing in {r}"))
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            assert!(
                c[0] <= x + 1e-9 && x <= c[1] + 1e-9,
                "{f} {x} outside {c:?}"
            );
        }
        let d = &r["ppl_vs_dense"];
        let est = d["estimate"].as_f64().unwrap();
        assert!((est - (r["perplexity"].as_f64().unwrap() - dense)).abs() < 1e-6 * dense.max(1.0));
    }
    let header = csv.lines().next().unwrap();
    for col in [
        "perplexity_lo",
        "perplexity_hi",
        "mean_kl_lo",
        "top1_agreement_hi",
        "select_perplexity",
        "ppl_vs_dense_lo",
        "acc",
        "stability_same",
    ] {
        assert!(header.split(',').any(|c| c == col), "{col} not in {header}");
    }
    assert!(header.starts_with("strategy,k,drop,params,params_kept,perplexity,mean_kl,top1_agreement,heal_choices,healed_perplexity"));

    // The report: table, plots and generations side by side.
    let o = depthprune(
        &["report", "out", "--k", "2", "--max-new-tokens", "4"],
        tmp.path(),
    );
    assert!(o.status.success(), "{}", err(&o));
    report_holds(
        tmp.path(),
        &[
            "## Results",
            "## Generations",
            "- Validation (chooses the best removal at each count): ",
            "from token 96",
            "95% percentile intervals",
            "runner-up",
            "![perplexity by layers removed](plots/ppl_vs_removed.png)",
            "| dense |",
            "removed by",
        ],
    );
}

#[test]
fn sweep_refuses_overlapping_calibration_and_evaluation() {
    let tmp = tempfile::tempdir().unwrap();
    let t = text(tmp.path());
    let o = sweep(
        tmp.path(),
        &fixture().join("llama"),
        &t,
        "0..3",
        &["--eval-offset", "70"],
    );
    assert_eq!(o.status.code(), Some(1));
    let e = err(&o);
    assert!(e.contains("overlap") && e.contains("--eval-offset"), "{e}");
    assert!(!tmp.path().join("out").exists());
}

#[test]
fn sweep_refuses_bad_counts_and_strategies() {
    let tmp = tempfile::tempdir().unwrap();
    let t = text(tmp.path());
    let model = fixture().join("llama");
    let o = sweep(tmp.path(), &model, &t, "0..5", &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("at least one must stay"), "{}", err(&o));
    let o = depthprune(
        &[
            "sweep",
            s(&model),
            "--strategies",
            "angular,wat",
            "--eval",
            s(&t),
            "--out",
            "out",
        ],
        tmp.path(),
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("unknown strategy `wat`"), "{}", err(&o));
    assert!(!tmp.path().join("out").exists());
}

#[test]
fn sweep_heals_each_removal_not_touching_layer_0() {
    let tmp = tempfile::tempdir().unwrap();
    let t = text(tmp.path());
    let o = heal_sweep(
        tmp.path(),
        &t,
        "bi,last",
        "0..3",
        &["--heal", "lstsq"],
        "out",
    );
    assert!(o.status.success(), "{}", err(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["heal"]["method"], "lstsq");
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 6);
    for r in rows.iter().filter(|r| r["k"].as_u64().unwrap() > 0) {
        let h = &r["healed"];
        assert!(h["perplexity"].as_f64().unwrap().is_finite(), "{r}");
        let res = r["heal_residuals"].as_array().unwrap();
        assert!(!res.is_empty());
        for x in res {
            let x = x.as_f64().unwrap();
            assert!((0.0..1.0).contains(&x), "relative residual {x} in {r}");
        }
    }
    let csv = std::fs::read_to_string(tmp.path().join("out/sweep.csv")).unwrap();
    let col = column(&csv, "healed_perplexity");
    let healed_cells = csv
        .lines()
        .skip(1)
        .filter(|l| !cells(l)[col].is_empty())
        .count();
    assert_eq!(healed_cells, 4, "{csv}");
}

/// The cells of a CSV line (quoted cells hold no commas in a sweep's `drop` here).
fn cells(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// The index of a CSV column by its header.
fn column(csv: &str, name: &str) -> usize {
    let header = cells(csv.lines().next().unwrap());
    header
        .iter()
        .position(|c| c == name)
        .unwrap_or_else(|| panic!("no column {name} in {header:?}"))
}

#[test]
fn sweep_refuses_a_validation_slice_that_overlaps_another() {
    let tmp = tempfile::tempdir().unwrap();
    let t = text(tmp.path());
    let model = fixture().join("llama");
    // Evaluation is tokens 0..32 and calibration 64..96 of the same file.
    for (offset, other) in [("16", "evaluation"), ("80", "calibration")] {
        let o = sweep(tmp.path(), &model, &t, "0..3", &["--select-offset", offset]);
        assert_eq!(o.status.code(), Some(1), "{offset}");
        let e = err(&o);
        assert!(
            e.contains("validation tokens") && e.contains(other) && e.contains("overlap"),
            "{e}"
        );
        assert!(e.contains("--select-offset"), "{e}");
        assert!(!tmp.path().join("out").exists());
    }
    // A validation file too short for its windows is refused, naming the file and the slice.
    let short = tmp.path().join("short.txt");
    std::fs::write(&short, "a few words").unwrap();
    let o = sweep(tmp.path(), &model, &t, "0..3", &["--select-on", s(&short)]);
    assert_eq!(o.status.code(), Some(1));
    let e = err(&o);
    assert!(e.contains("short.txt") && e.contains("validation"), "{e}");
    assert!(e.lines().count() <= 3, "{e}");
    for bad in [
        ["--resamples", "0"],
        ["--ci-resamples", "0"],
        ["--select-samples", "0"],
    ] {
        let o = sweep(tmp.path(), &model, &t, "0..3", &bad);
        assert_eq!(o.status.code(), Some(1), "{bad:?}");
        assert!(err(&o).contains("at least 1"), "{bad:?}: {}", err(&o));
    }
    // Past the limit: one error line naming the flag, not a capacity-overflow panic.
    let o = sweep(
        tmp.path(),
        &model,
        &t,
        "0..3",
        &["--resamples", "18446744073709551615"],
    );
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    let e = err(&o);
    assert!(
        e.trim().lines().count() == 1 && e.contains("--resamples") && e.contains("at most 10000"),
        "{e}"
    );
    // A broken task file fails before anything is written.
    let tasks = tmp.path().join("tasks.jsonl");
    std::fs::write(&tasks, "{\"context\": \"x\"}\n").unwrap();
    let o = sweep(tmp.path(), &model, &t, "0..3", &["--tasks", s(&tasks)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("tasks.jsonl"), "{}", err(&o));
    assert!(!tmp.path().join("out").exists());
}

#[test]
fn sweep_adds_accuracy_and_stability_columns_that_match_eval() {
    let tmp = tempfile::tempdir().unwrap();
    let t = text(tmp.path());
    let model = fixture().join("llama");
    let tasks = fixture().join("tasks.jsonl");
    let o = sweep(
        tmp.path(),
        &model,
        &t,
        "0..3",
        &[
            "--tasks",
            s(&tasks),
            "--limit",
            "6",
            "--resamples",
            "3",
            "--report",
            "--report-k",
            "2",
        ],
    );
    assert!(o.status.success(), "{}", err(&o));
    let csv = std::fs::read_to_string(tmp.path().join("out/sweep.csv")).unwrap();
    let (acc, lo, hi) = (
        column(&csv, "acc"),
        column(&csv, "acc_lo"),
        column(&csv, "acc_hi"),
    );
    let (same, overlap) = (
        column(&csv, "stability_same"),
        column(&csv, "stability_overlap"),
    );
    let drop = column(&csv, "drop");
    let mut checked = 0;
    for line in csv.lines().skip(1) {
        let c = cells(line);
        if c[1] == "0" {
            continue;
        }
        let a: f64 = c[acc].parse().unwrap();
        let (l, h): (f64, f64) = (c[lo].parse().unwrap(), c[hi].parse().unwrap());
        assert!(l <= a && a <= h, "{line}");
        let st: f64 = c[same].parse().unwrap();
        let ov: f64 = c[overlap].parse().unwrap();
        assert!(
            (0.0..=1.0).contains(&st) && (st..=1.0).contains(&ov),
            "{line}"
        );
        if c[0] == "last" {
            // `last` reads no text: every resample chooses the same layers.
            assert_eq!(st, 1.0, "{line}");
        }
        if c[0] != "bi" {
            continue;
        }
        let e = eval_json(
            tmp.path(),
            &[
                s(&model),
                "--tasks",
                s(&tasks),
                "--limit",
                "6",
                "--skip",
                &c[drop],
            ],
        );
        assert!(
            (e["acc"].as_f64().unwrap() - a).abs() < 1e-12,
            "{line} vs {e}"
        );
        checked += 1;
    }
    assert_eq!(checked, 2);
    for f in [
        "plots/acc_vs_removed.png",
        "plots/stability_bi.png",
        "plots/stability_angular.svg",
        "report.md",
    ] {
        assert!(tmp.path().join("out").join(f).is_file(), "{f} missing");
    }
    report_holds(
        tmp.path(),
        &[
            "| tasks acc |",
            "same choice",
            "bootstrap resamples of the calibration",
            "plots/stability_bi.png",
            "plots/acc_vs_removed.png",
        ],
    );
}

#[test]
fn several_heal_methods_each_get_their_own_healed_columns() {
    let tmp = tempfile::tempdir().unwrap();
    let t = text(tmp.path());
    let run = |heal: &str, out: &str| {
        let flags = ["--heal", heal, "--holdout", "0", "--alpha", "1e-3"];
        heal_sweep(tmp.path(), &t, "bi", "1,2", &flags, out)
    };
    let o = run("lstsq,scale", "both");
    assert!(o.status.success(), "{}", err(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["heal"]["also"][0]["name"], "scale");
    // Each extra method's figures equal a sweep healed by that method alone.
    let alone = run("scale", "alone");
    assert!(alone.status.success(), "{}", err(&alone));
    let w: serde_json::Value = serde_json::from_slice(&alone.stdout).unwrap();
    for (r, a) in v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .zip(w["rows"].as_array().unwrap())
    {
        assert_eq!(r["removed"], a["removed"]);
        assert_eq!(
            r["healed_by"]["scale"]["perplexity"], a["healed"]["perplexity"],
            "{r}"
        );
        assert_ne!(
            r["healed"]["perplexity"], r["healed_by"]["scale"]["perplexity"],
            "{r}"
        );
    }
    let csv = std::fs::read_to_string(tmp.path().join("both/sweep.csv")).unwrap();
    let (p, s_p) = (
        column(&csv, "healed_perplexity"),
        column(&csv, "healed_scale_perplexity"),
    );
    column(&csv, "healed_scale_mean_kl");
    column(&csv, "healed_scale_top1_agreement");
    for l in csv.lines().skip(1) {
        let c = cells(l);
        assert!(!c[p].is_empty() && !c[s_p].is_empty(), "{l}");
    }
    // A method named twice, or kd, is refused before any work.
    for (heal, want) in [
        ("lstsq,lstsq", "twice"),
        ("lstsq,kd", "not available in sweep"),
    ] {
        let o = run(heal, "refused");
        assert_eq!(o.status.code(), Some(1), "{heal}");
        assert!(err(&o).contains(want), "{}", err(&o));
        assert!(!tmp.path().join("refused").exists());
    }
}

#[test]
fn sweep_finalists_measure_the_set_with_the_lowest_held_out_kl() {
    let tmp = tempfile::tempdir().unwrap();
    let t = text(tmp.path());
    let o = heal_sweep(
        tmp.path(),
        &t,
        "healed",
        "0..3",
        &["--heal", "lstsq", "--finalists", "2"],
        "out",
    );
    assert!(o.status.success(), "{}", err(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows = v["rows"].as_array().unwrap();
    let mut judged = 0;
    for r in rows.iter().filter(|r| r["k"].as_u64().unwrap() > 0) {
        let f = r["finalists"]
            .as_array()
            .expect("finalists per healed cell");
        let chosen: Vec<_> = f.iter().filter(|x| x["chosen"] == true).collect();
        assert_eq!(chosen.len(), 1, "{r}");
        assert_eq!(chosen[0]["removed"], r["removed"], "{r}");
        let kl = |x: &serde_json::Value| x["validation_kl"].as_f64().unwrap();
        let best = f.iter().map(kl).fold(f64::INFINITY, f64::min);
        assert_eq!(kl(chosen[0]), best, "{r}");
        assert!(f
            .iter()
            .all(|x| !x["removed"].as_array().unwrap().contains(&0.into())));
        assert!(
            r["healed"]["perplexity"].as_f64().unwrap().is_finite(),
            "{r}"
        );
        judged += 1;
    }
    assert_eq!(judged, 2);
}

#[test]
fn sweep_measures_a_registry_task_by_name_as_eval_does() {
    let tmp = tempfile::tempdir().unwrap();
    let t = text(tmp.path());
    let model = fixture().join("llama");
    let data = fixture().parent().unwrap().join("lmeval/arc_easy");
    let task = format!("arc_easy={}", data.display());
    let o = sweep_with(
        tmp.path(),
        &model,
        &t,
        &[
            "--strategies",
            "bi",
            "--remove",
            "0..2",
            "--tasks",
            &task,
            "--out",
            "out",
        ],
    );
    assert!(o.status.success(), "{}", err(&o));
    let csv = std::fs::read_to_string(tmp.path().join("out/sweep.csv")).unwrap();
    let (acc, drop) = (column(&csv, "acc"), column(&csv, "drop"));
    let mut checked = 0;
    for line in csv.lines().skip(1) {
        let c = cells(line);
        if c[1] == "0" {
            continue;
        }
        let a: f64 = c[acc].parse().unwrap();
        let e = eval_json(
            tmp.path(),
            &[s(&model), "--tasks", &task, "--skip", &c[drop]],
        );
        let want = e["tasks"][0]["metrics"]["acc"].as_f64().unwrap();
        assert!((want - a).abs() < 1e-12, "{line} vs {e}");
        checked += 1;
    }
    assert_eq!(checked, 1);
    let o = sweep_with(
        tmp.path(),
        &model,
        &t,
        &[
            "--strategies",
            "bi",
            "--remove",
            "0..2",
            "--tasks",
            "humaneval=x",
            "--out",
            "out2",
        ],
    );
    // Code runs only with consent, asked for before the model loads.
    assert!(!o.status.success());
    assert!(err(&o).contains("--confirm-run-unsafe-code"), "{}", err(&o));
    assert!(!tmp.path().join("out2").exists());
}
