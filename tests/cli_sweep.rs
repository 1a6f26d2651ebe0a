//! `depthprune sweep` and `depthprune report` on the golden llama fixture (4 layers, with a
//! tokenizer): the CSV has one row per strategy and count, every cell agrees with an independent
//! `depthprune eval --skip … --reference …` run, and the report holds the table and generations.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden")
}

fn depthprune(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_depthprune"))
        .args(args)
        .current_dir(cwd)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A long enough text: the fixture's evaluation text, repeated.
fn text(dir: &Path) -> PathBuf {
    let base = std::fs::read_to_string(fixture().join("eval.txt")).unwrap();
    let p = dir.join("text.txt");
    std::fs::write(&p, base.repeat(8)).unwrap();
    p
}

fn sweep(dir: &Path, model: &Path, text: &Path, remove: &str, extra: &[&str]) -> Output {
    let mut a = vec![
        "sweep",
        s(model),
        "--strategies",
        "angular,bi,ppl,greedy,last",
        "--remove",
        remove,
        "--calib",
        s(text),
        "--ctx",
        "16",
        "--samples",
        "2",
        "--calib-offset",
        "64",
        "--eval",
        s(text),
        "--eval-samples",
        "2",
        "--out",
        "out",
    ];
    a.extend_from_slice(extra);
    depthprune(&a, dir)
}

#[test]
fn sweep_rows_match_independent_eval_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let model = fixture().join("llama");
    let t = text(tmp.path());
    let o = sweep(tmp.path(), &model, &t, "0..3", &[]);
    assert!(o.status.success(), "{}", err(&o));
    let table = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(table.contains("best by perplexity"), "{table}");

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
        let o = depthprune(
            &[
                "eval",
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
                "--json",
            ],
            tmp.path(),
        );
        assert!(o.status.success(), "{}", err(&o));
        let e: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
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
    let best = &v["best"]["2"];
    let best_row = rows
        .iter()
        .filter(|r| r["k"] == 2)
        .min_by(|a, b| {
            let p = |r: &serde_json::Value| r["perplexity"].as_f64().unwrap();
            p(a).total_cmp(&p(b))
        })
        .unwrap();
    assert_eq!(best["drop"], best_row["drop"]);

    // The report: table, plots and generations side by side.
    let o = depthprune(
        &["report", "out", "--k", "2", "--max-new-tokens", "4"],
        tmp.path(),
    );
    assert!(o.status.success(), "{}", err(&o));
    let md = std::fs::read_to_string(tmp.path().join("out/report.md")).unwrap();
    for want in [
        "## Results",
        "## Generations",
        "![perplexity by layers removed](plots/ppl_vs_removed.png)",
        "| dense |",
        "removed by",
    ] {
        assert!(md.contains(want), "{want} not in report:\n{md}");
    }
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
    let model = fixture().join("llama");
    let o = depthprune(
        &[
            "sweep",
            s(&model),
            "--strategies",
            "bi,last",
            "--remove",
            "0..3",
            "--protect",
            "first:1",
            "--calib",
            s(&t),
            "--ctx",
            "16",
            "--samples",
            "4",
            "--calib-offset",
            "64",
            "--eval",
            s(&t),
            "--eval-samples",
            "2",
            "--heal",
            "lstsq",
            "--out",
            "out",
            "--json",
        ],
        tmp.path(),
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
    let healed_cells = csv.lines().skip(1).filter(|l| !l.ends_with(",,")).count();
    assert_eq!(healed_cells, 4, "{csv}");
}
