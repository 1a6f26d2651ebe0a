//! `depthprune score`, `prune --strategy` and `plan --strategy` run as a user runs them, on the
//! golden llama fixture (4 layers, with a tokenizer), each test in a fresh temporary folder.

mod common;

use common::{fixture, read_json, run_in as depthprune, s, stderr as err, stdout as out};

/// The calibration flags of the runs here: 2 windows of 16 tokens of `text`.
fn calib(text: &str) -> [&str; 6] {
    ["--calib", text, "--ctx", "16", "--samples", "2"]
}

/// Score arguments on the llama fixture: 2 windows of 16 tokens from eval.txt.
fn score_args<'a>(model: &'a str, text: &'a str, metric: &'a str) -> Vec<&'a str> {
    let mut a = vec!["score", model, "--metric", metric];
    a.extend(calib(text));
    a
}

/// `COMMAND MODEL --strategy bi --remove N` followed by `more`.
fn by_bi<'a>(command: &'a str, model: &'a str, n: &'a str, more: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec![command, model, "--strategy", "bi", "--remove", n];
    a.extend_from_slice(more);
    a
}

#[test]
fn score_prints_a_table_json_and_csv() {
    let tmp = tempfile::tempdir().unwrap();
    let (m, t) = (fixture().join("llama"), fixture().join("eval.txt"));
    let o = depthprune(&score_args(s(&m), s(&t), "bi"), tmp.path());
    assert!(o.status.success(), "{}", err(&o));
    let table = out(&o);
    assert!(table.contains("layer") && table.contains("rank"), "{table}");
    assert!(
        table.contains("2 windows of 16 tokens from token 0"),
        "{table}"
    );
    assert_eq!(
        table
            .lines()
            .filter(|l| l.trim_start().starts_with(char::is_numeric))
            .count(),
        4,
        "{table}"
    );

    let mut a = score_args(s(&m), s(&t), "bi");
    a.push("--json");
    let o = depthprune(&a, tmp.path());
    assert!(o.status.success(), "{}", err(&o));
    let v: serde_json::Value = serde_json::from_str(&out(&o)).unwrap();
    assert_eq!(v["metric"], "bi");
    assert_eq!(v["importance"].as_array().unwrap().len(), 4);
    assert_eq!(v["calibration"]["ctx"], 16);
    let mut ranks: Vec<u64> = v["rank"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_u64().unwrap())
        .collect();
    ranks.sort();
    assert_eq!(ranks, vec![1, 2, 3, 4]);

    let mut a = score_args(s(&m), s(&t), "bi");
    a.push("--csv");
    let o = depthprune(&a, tmp.path());
    let csv = out(&o);
    assert!(csv.starts_with("layer,score,rank\n"), "{csv}");
    assert_eq!(csv.lines().count(), 5, "{csv}");
}

#[test]
fn score_writes_plots_and_a_score_file() {
    let tmp = tempfile::tempdir().unwrap();
    let (m, t) = (fixture().join("llama"), fixture().join("eval.txt"));
    let plots = tmp.path().join("plots");
    for metric in ["angular", "greedy"] {
        let mut a = score_args(s(&m), s(&t), metric);
        a.extend(["--plot", s(&plots), "--out", "scores.json"]);
        let o = depthprune(&a, tmp.path());
        assert!(o.status.success(), "{metric}: {}", err(&o));
    }
    for f in [
        "angular_scores.png",
        "angular_scores.svg",
        "angular_heatmap.png",
        "greedy_scores.png",
        "greedy_curve.png",
        "greedy_curve.svg",
    ] {
        let p = plots.join(f);
        assert!(
            p.is_file() && std::fs::metadata(&p).unwrap().len() > 1000,
            "{f}"
        );
    }
    let v = read_json(&tmp.path().join("scores.json"));
    assert_eq!(v["metric"], "greedy");
    assert_eq!(v["greedy"].as_array().unwrap().len(), 3);
}

#[test]
fn prune_by_strategy_records_metric_and_scores() {
    let tmp = tempfile::tempdir().unwrap();
    let (m, t) = (fixture().join("llama"), fixture().join("eval.txt"));
    let mut a = by_bi("prune", s(&m), "2", &calib(s(&t)));
    a.extend(["--out", "pruned"]);
    let o = depthprune(&a, tmp.path());
    assert!(o.status.success(), "{}", err(&o));
    let e = err(&o);
    assert!(e.contains("reproduce with: --drop "), "{e}");
    let p = read_json(&tmp.path().join("pruned/pruning.json"));
    let text = p.to_string();
    assert!(text.contains("\"metric\":\"bi\""), "{text}");
    assert!(text.contains("\"samples\":2"), "{text}");
    let cfg = read_json(&tmp.path().join("pruned/config.json"));
    assert_eq!(cfg["num_hidden_layers"], 2);

    // The same choice from `plan`, reading the saved scores instead of running the model.
    let mut a = score_args(s(&m), s(&t), "bi");
    a.extend(["--out", "bi.json"]);
    assert!(depthprune(&a, tmp.path()).status.success());
    let o = depthprune(
        &by_bi("plan", s(&m), "2", &["--scores", "bi.json"]),
        tmp.path(),
    );
    assert!(o.status.success(), "{}", err(&o));
    let drop_line = e
        .lines()
        .find(|l| l.contains("reproduce with"))
        .unwrap()
        .to_string();
    assert!(out(&o).contains(&drop_line), "{}\nvs {drop_line}", out(&o));
}

#[test]
fn errors_name_the_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let (m, t) = (fixture().join("llama"), fixture().join("eval.txt"));
    let o = depthprune(&score_args(s(&m), s(&t), "cosine"), tmp.path());
    assert!(!o.status.success());
    assert!(err(&o).contains("unknown metric `cosine`"), "{}", err(&o));

    let mut a = by_bi("plan", s(&m), "3", &["--protect", "first:1,last:1"]);
    a.extend(calib(s(&t)));
    let o = depthprune(&a, tmp.path());
    assert!(!o.status.success());
    assert!(
        err(&o).contains("cannot remove 3 layers: 2 of 4 are not protected"),
        "{}",
        err(&o)
    );

    let o = depthprune(
        &[
            "score",
            s(&m),
            "--calib",
            s(&t),
            "--metric",
            "bi",
            "--ctx",
            "512",
            "--samples",
            "16",
        ],
        tmp.path(),
    );
    assert!(!o.status.success());
    let e = err(&o);
    assert!(
        e.contains("calibration text too short") && e.contains("eval.txt"),
        "{e}"
    );
    assert_eq!(
        e.lines().filter(|l| l.starts_with("error")).count(),
        1,
        "{e}"
    );
}

#[test]
fn score_resamples_report_mean_sd_and_selection_frequency() {
    let tmp = tempfile::tempdir().unwrap();
    let (m, t) = (fixture().join("llama"), fixture().join("eval.txt"));
    let mut a = score_args(s(&m), s(&t), "bi");
    // Four calibration windows instead of two.
    *a.last_mut().unwrap() = "4";
    a.extend_from_slice(&["--resamples", "5", "--choose", "2", "--json"]);
    a.extend_from_slice(&["--plot", "plots"]);
    let o = depthprune(&a, tmp.path());
    assert!(o.status.success(), "{}", err(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let st = &v["stability"];
    assert_eq!(st["resamples"], 5);
    assert_eq!(st["k"], 2);
    let chosen = st["chosen"].as_array().unwrap();
    assert_eq!(chosen.len(), 5);
    let freq: Vec<f64> = st["frequency"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    // Each resample chooses 2 of 4 layers, so the frequencies add up to 2.
    assert!((freq.iter().sum::<f64>() - 2.0).abs() < 1e-9, "{freq:?}");
    for (l, f) in freq.iter().enumerate() {
        let n = chosen
            .iter()
            .filter(|c| c.as_array().unwrap().contains(&serde_json::json!(l)))
            .count();
        assert!((f - n as f64 / 5.0).abs() < 1e-12);
    }
    let sd = st["sd"].as_array().unwrap();
    assert!(sd.iter().all(|x| x.as_f64().unwrap() >= 0.0));
    let overlap = st["mean_pairwise_overlap"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&overlap));
    assert!(tmp.path().join("plots/stability_bi.png").is_file());
    // Seeded: the same command gives the same resamples.
    let o2 = depthprune(&a, tmp.path());
    let v2: serde_json::Value = serde_json::from_slice(&o2.stdout).unwrap();
    assert_eq!(v2["stability"], v["stability"]);
    let o = depthprune(
        &[&score_args(s(&m), s(&t), "bi")[..], &["--resamples", "0"]].concat(),
        tmp.path(),
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("at least 1"), "{}", err(&o));
    // A count past the limit is one error line naming the flag, not a capacity-overflow panic.
    let o = depthprune(
        &[
            &score_args(s(&m), s(&t), "bi")[..],
            &["--resamples", "18446744073709551615"],
        ]
        .concat(),
        tmp.path(),
    );
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    let e = err(&o);
    assert!(
        e.trim().lines().count() == 1 && e.contains("--resamples") && e.contains("at most 10000"),
        "{e}"
    );
}
