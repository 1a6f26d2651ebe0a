//! Heal-aware selection end to end (issue 18): `score --metric healed` gives a greedy order with
//! a cost per step, layer 0 (which no map can heal) last, and `prune --strategy healed` removes the
//! head of that order.

mod common;

use common::{run, stdout};

#[test]
fn healed_order_is_greedy_by_cost_and_prune_follows_it() {
    let (m, c) = (common::golden_llama(), common::golden_text());
    let args = [
        "--calib",
        c.to_str().unwrap(),
        "--ctx",
        "16",
        "--samples",
        "4",
    ];
    let mut score = vec!["score", m.to_str().unwrap(), "--metric", "healed", "--json"];
    score.extend(args);
    let o = run(&score);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let steps = v["healed"].as_array().expect("a heal-aware order");
    assert_eq!(steps.len(), 3, "{v}");
    let costs: Vec<f64> = steps.iter().map(|s| s["cost"].as_f64().unwrap()).collect();
    assert!(costs.windows(2).all(|w| w[0] <= w[1]), "{costs:?}");
    assert!(
        costs.iter().all(|c| c.is_finite() && *c >= 0.0),
        "{costs:?}"
    );
    let order: Vec<u64> = steps.iter().map(|s| s["layer"].as_u64().unwrap()).collect();
    assert!(!order.contains(&0), "layer 0 cannot be healed: {order:?}");

    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("p");
    let mut prune = vec![
        "prune",
        m.to_str().unwrap(),
        "--strategy",
        "healed",
        "--remove",
        "2",
        "--json",
        "--out",
        out.to_str().unwrap(),
    ];
    prune.extend(args);
    let o = run(&prune);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let prov: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("pruning.json")).unwrap()).unwrap();
    let mut removed: Vec<u64> = prov["layers"]["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect();
    removed.sort_unstable();
    let mut head = order[..2].to_vec();
    head.sort_unstable();
    assert_eq!(removed, head, "{prov}");
}
