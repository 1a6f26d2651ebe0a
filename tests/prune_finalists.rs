//! Heal-aware selection with finalists, as one command (issue 23): `prune --remove N --heal`
//! without a strategy chooses heal-aware, heals each finalist, judges them on held-out windows
//! that neither the proxy nor the fits saw, keeps the lowest validation KL, and records it all
//! in the JSON output and `pruning.json`. Without `--heal`, an amount still needs a strategy.

mod common;

use common::{run, stderr, stdout};
use serde_json::Value;

fn prune(out: &std::path::Path, extra: &[&str]) -> std::process::Output {
    let (m, c) = (common::golden_llama(), common::golden_text());
    let mut args = vec![
        "prune",
        m.to_str().unwrap(),
        "--remove",
        "1",
        "--calib",
        c.to_str().unwrap(),
        "--ctx",
        "16",
        "--samples",
        "4",
        "--heal-samples",
        "256",
        "--holdout",
        "4",
        "--json",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend(extra);
    run(&args)
}

#[test]
fn one_command_heals_the_finalists_and_keeps_the_lowest_validation_kl() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("p");
    let o = prune(&out, &["--heal"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let method = &v["method"];
    assert_eq!(method["metric"], "healed", "{method}");
    let finalists = method["finalists"].as_array().expect("finalists");
    // Layers 1, 2 and 3 can each be healed; the beam of 3 keeps them all.
    assert_eq!(finalists.len(), 3, "{method}");
    let kl = |f: &Value| f["validation_kl"].as_f64().unwrap();
    for f in finalists {
        assert!(f["proxy_cost"].as_f64().unwrap().is_finite(), "{f}");
        assert!(kl(f).is_finite() && kl(f) >= 0.0, "{f}");
        assert!(f["unhealed_kl"].as_f64().is_some(), "{f}");
        assert!(!f["sources"].as_array().unwrap().is_empty(), "{f}");
    }
    let chosen: Vec<&Value> = finalists.iter().filter(|f| f["chosen"] == true).collect();
    assert_eq!(chosen.len(), 1, "{method}");
    let best = finalists.iter().map(kl).fold(f64::INFINITY, f64::min);
    assert_eq!(kl(chosen[0]), best, "{method}");
    let prov: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("pruning.json")).unwrap()).unwrap();
    assert_eq!(prov["layers"]["removed"], chosen[0]["removed"], "{prov}");
    assert_eq!(prov["method"]["finalists"], method["finalists"]);
    // The proxy and the judges never share a window.
    let ids = |k: &str| -> Vec<u64> {
        method[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .collect()
    };
    let (proxy, held) = (ids("proxy_windows"), ids("validation_windows"));
    assert_eq!(held, vec![3, 7, 11, 15], "{method}");
    assert_eq!(proxy, vec![0, 1, 2, 4], "{method}");
    // The winner's heal is the one written: its last block's validation ends at the same KL.
    let blocks = prov["healing"]["blocks"].as_array().unwrap();
    let last = &blocks[blocks.len() - 1]["validation"];
    let written = last["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["validation_kl"].as_f64().unwrap())
        .fold(last["kl_unhealed"].as_f64().unwrap(), f64::min);
    assert!((written - best).abs() < 1e-9, "{written} vs {best}");
    assert!(stderr(&o).contains("← chosen"), "{}", stderr(&o));
}

#[test]
fn an_amount_without_heal_or_strategy_is_refused_with_a_hint() {
    let tmp = tempfile::tempdir().unwrap();
    let o = prune(&tmp.path().join("p"), &[]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--heal"), "{}", stderr(&o));
}

#[test]
fn finalists_zero_keeps_the_proxys_first_choice_without_judging() {
    let tmp = tempfile::tempdir().unwrap();
    let o = prune(&tmp.path().join("p"), &["--heal", "--finalists", "0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(v["method"].get("finalists").is_none(), "{v}");
    assert_eq!(v["method"]["metric"], "healed", "{v}");
}

#[test]
fn judging_windows_after_the_heals_tokens_are_pooled_with_the_held_out_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let o = prune(&tmp.path().join("p"), &["--heal", "--judge-windows", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["method"]["judge_windows"], 2, "{v}");
    for f in v["method"]["finalists"].as_array().unwrap() {
        let (all, guard, judge) = (
            f["validation_kl"].as_f64().unwrap(),
            f["guard_kl"].as_f64().unwrap(),
            f["judge_kl"].as_f64().unwrap(),
        );
        // 4 held-out windows and 2 judging windows of 15 scored positions each.
        let pooled = (guard * 60.0 + judge * 30.0) / 90.0;
        assert!((all - pooled).abs() < 1e-9, "{f}");
        assert!(
            judge.is_finite() && judge >= 0.0 && (judge - guard).abs() > 1e-12,
            "{f}"
        );
    }
}

#[test]
fn finalists_heal_on_a_prefix_and_the_winner_is_healed_again_on_all_the_tokens() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("p");
    // 256 heal tokens, finalists on the first 64 (4 windows of 16, one held out).
    let o = prune(&out, &["--heal", "--finalist-samples", "64"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["method"]["validation_windows"], serde_json::json!([3]));
    assert_eq!(v["method"]["proxy_windows"], serde_json::json!([0, 1, 2]));
    let prov: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("pruning.json")).unwrap()).unwrap();
    let h = &prov["healing"];
    let total = h["samples"].as_u64().unwrap() + h["validation_samples"].as_u64().unwrap();
    assert_eq!(total, 256, "{h}");
    // Below one window it is refused, naming the option.
    let o = prune(
        &tmp.path().join("q"),
        &["--heal", "--finalist-samples", "8"],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("finalist-samples"), "{}", stderr(&o));
}
