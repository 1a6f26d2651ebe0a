//! End-to-end pruning of tiny random HF checkpoints of every supported architecture, run through
//! the real binary.

mod common;

use common::*;
use depthprune::arch::naming::hf_layer;
use depthprune::arch::{ArchConfig, ParamCounts};
use depthprune::checkpoint::safetensors::Dtype;
use depthprune::select::{LayerSpec, Removal};
use serde_json::Value;

/// Prunes `arch` with `spec` and checks tensors, config, index and counts exactly.
fn check_prune(arch: &str, spec: &str, max_shard: u64) {
    let (_tmp, src, out) = tiny_checkpoint(arch, Dtype::F32, max_shard);
    let config = tiny_config(arch);
    let shard_arg = max_shard.to_string();
    let o = prune(
        &src,
        &["--drop", spec, "--max-shard-size", &shard_arg],
        &out,
    );
    assert!(o.status.success(), "{arch}: {}", stderr(&o));

    let cfg = ArchConfig::from_value(&config).unwrap();
    let removal = Removal::drop(&LayerSpec::parse(spec).unwrap(), cfg.num_hidden_layers).unwrap();
    let before = tensor_bytes(&src);
    let after = tensor_bytes(&out);

    // Every kept tensor byte-identical under its new name; nothing removed survives.
    let mut expected = std::collections::BTreeMap::new();
    for (name, v) in &before {
        let new_name = match hf_layer(name) {
            Some(l) => match removal.new_index(l.layer) {
                Some(n) => l.renumbered(n),
                None => continue,
            },
            None => name.clone(),
        };
        expected.insert(new_name, v.clone());
    }
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "{arch}: tensor names"
    );
    for (name, v) in &after {
        assert!(
            expected[name] == *v,
            "{arch}: `{name}` differs from its source"
        );
    }
    if cfg.tie_word_embeddings {
        assert!(
            !after.contains_key("lm_head.weight"),
            "{arch}: tied head must stay tied"
        );
    }

    // Config.
    let new_cfg = read_json(&out.join("config.json"));
    assert_eq!(new_cfg["num_hidden_layers"], removal.n_kept());
    if let Some(lt) = config.get("layer_types").and_then(Value::as_array) {
        let want: Vec<&Value> = removal.kept().iter().map(|&i| &lt[i]).collect();
        assert_eq!(
            new_cfg["layer_types"]
                .as_array()
                .unwrap()
                .iter()
                .collect::<Vec<_>>(),
            want
        );
    }
    let new_arch = ArchConfig::from_value(&new_cfg).unwrap();
    for (j, &old) in removal.kept().iter().enumerate() {
        assert_eq!(
            new_arch.layer_is_sparse(j),
            cfg.layer_is_sparse(old),
            "{arch}: MoE layout of new layer {j}"
        );
    }
    let src_keys: Vec<&String> = config.as_object().unwrap().keys().collect();
    let out_keys: Vec<&String> = new_cfg
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| src_keys.contains(k))
        .collect();
    assert_eq!(src_keys, out_keys, "{arch}: key order");

    // Parameter counts exact: config formula, tensors and pruning.json agree.
    let numel = |m: &std::collections::BTreeMap<String, (Dtype, Vec<u64>, Vec<u8>)>| -> u64 {
        m.values().map(|(_, s, _)| s.iter().product::<u64>()).sum()
    };
    assert_eq!(
        ParamCounts::from_config(&cfg).total(),
        numel(&before),
        "{arch}: formula vs tensors (source)"
    );
    assert_eq!(
        ParamCounts::from_config(&new_arch).total(),
        numel(&after),
        "{arch}: formula vs tensors (pruned)"
    );
    let prov = read_json(&out.join("pruning.json"));
    assert_eq!(prov["params"]["before"], numel(&before));
    assert_eq!(prov["params"]["after"], numel(&after));
    assert_eq!(
        prov["layers"]["removed"],
        serde_json::json!(removal.removed())
    );

    // Index, when sharded.
    let index_path = out.join("model.safetensors.index.json");
    if index_path.exists() {
        let index = read_json(&index_path);
        let map = index["weight_map"].as_object().unwrap();
        assert_eq!(map.len(), after.len());
        let total: u64 = after.values().map(|(_, _, b)| b.len() as u64).sum();
        assert_eq!(index["metadata"]["total_size"], total);
        for (name, file) in map {
            let st = depthprune::checkpoint::safetensors::SafetensorsFile::open(
                &out.join(file.as_str().unwrap()),
            )
            .unwrap();
            assert!(
                st.tensor(name).is_some(),
                "{arch}: index places `{name}` wrongly"
            );
        }
    } else {
        assert!(out.join("model.safetensors").exists());
    }
    for f in [
        "tokenizer.json",
        "generation_config.json",
        "README.md",
        "pruning.json",
    ] {
        assert!(out.join(f).exists(), "{arch}: `{f}` missing");
    }
}

#[test]
fn prunes_every_architecture_unsharded() {
    for arch in ARCHS {
        check_prune(arch, "1..3", 5_000_000_000);
    }
}

#[test]
fn prunes_every_architecture_sharded() {
    for arch in ARCHS {
        check_prune(arch, "0,4", 20_000);
    }
}

#[test]
fn provenance_hashes_match_the_files() {
    let (_tmp, src, out) = tiny_checkpoint("qwen3", Dtype::BF16, 30_000);
    let o = prune(
        &src,
        &["--keep", "0..2,5", "--max-shard-size", "30KB"],
        &out,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let prov = read_json(&out.join("pruning.json"));
    for (side, dir) in [("output", &out), ("source", &src)] {
        let files = if side == "output" {
            &prov["output"]
        } else {
            &prov["source"]["files"]
        };
        for f in files.as_array().unwrap() {
            let h = depthprune::checkpoint::provenance::hash_file(
                &dir.join(f["name"].as_str().unwrap()),
            )
            .unwrap();
            assert_eq!(f["sha256"], h.sha256, "{side} {}", f["name"]);
            assert_eq!(f["bytes"], h.bytes);
        }
    }
    let listed: Vec<&str> = prov["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    for e in std::fs::read_dir(&out).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            name == "pruning.json" || listed.contains(&name.as_str()),
            "`{name}` not listed in pruning.json"
        );
    }
    let card = std::fs::read_to_string(out.join("README.md")).unwrap();
    assert!(card.starts_with("---\nbase_model: "));
    assert!(card.contains("- pruned\n- depth-pruning\n"));
    assert!(card.contains("library_name: transformers"));
    assert!(card.contains("Removed ranges: `2..5`"));
}

#[test]
fn dtype_conversion_rewrites_floats_only() {
    let (_tmp, src, out) = tiny_checkpoint("llama", Dtype::F32, 5_000_000_000);
    let o = prune(&src, &["--drop", "5", "--dtype", "bf16"], &out);
    assert!(o.status.success(), "{}", stderr(&o));
    let before = tensor_bytes(&src);
    let after = tensor_bytes(&out);
    let (dt, shape, bytes) = &after["model.layers.0.mlp.down_proj.weight"];
    assert_eq!(*dt, Dtype::BF16);
    let (_, src_shape, src_bytes) = &before["model.layers.0.mlp.down_proj.weight"];
    assert_eq!(shape, src_shape);
    for (a, b) in src_bytes.chunks_exact(4).zip(bytes.chunks_exact(2)) {
        let x = f32::from_le_bytes([a[0], a[1], a[2], a[3]]);
        let y = half::bf16::from_le_bytes([b[0], b[1]]).to_f32();
        assert!((x - y).abs() <= x.abs() / 128.0, "{x} vs {y}");
    }
    assert_eq!(
        read_json(&out.join("config.json"))["torch_dtype"],
        "bfloat16"
    );
}

#[test]
fn seed_card_plan_prints_the_cards_figures() {
    let o = run(&[
        "plan",
        "tests/fixtures/seed-qwen3-4b/config.json",
        "--drop",
        "3..29",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let s = stdout(&o);
    assert!(
        s.contains("layers: 36 → 10 (26 removed, 72.22% layer reduction)"),
        "{s}"
    );
    assert!(
        s.contains("parameters: 4,007,937,536 → 1,383,736,320 (65.48% parameter reduction)"),
        "{s}"
    );
    assert!(s.contains("removed ranges: 3..29"));
    assert!(s.contains("kept ranges: 0..3, 29..36"));
    assert!(s.contains(" 29 → 3"));
    let o = run(&[
        "plan",
        "tests/fixtures/seed-qwen3-4b",
        "--keep",
        "0..3,29..",
        "--json",
    ]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["params"]["before"], 4_007_937_536u64);
    assert_eq!(v["params"]["after"], 1_383_736_320u64);
    assert_eq!(v["layers"]["removed_ranges"], serde_json::json!(["3..29"]));
    assert_eq!(
        v["layers"]["mapping"][3],
        serde_json::json!({"old": 29, "new": 3})
    );
}

#[test]
fn inspect_reports_components_and_json() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("m");
    make_checkpoint(&src, &tiny_config("qwen2"), Dtype::BF16, 5_000_000_000);
    let o = run(&["inspect", src.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let cfg = ArchConfig::from_value(&tiny_config("qwen2")).unwrap();
    assert_eq!(v["total_params"], ParamCounts::from_config(&cfg).total());
    assert_eq!(
        v["dtypes"]["BF16"].as_u64().unwrap() as usize,
        tensor_bytes(&src).len()
    );
    assert_eq!(v["params"]["layers"].as_array().unwrap().len(), 6);
    // q/k/v biases are attention parameters.
    let h = 32u64;
    let attn = h * 32 + 2 * h * 16 + 32 * h + 32 + 2 * 16;
    assert_eq!(v["params"]["layers"][0]["attention"], attn);
    let text = stdout(&run(&["inspect", src.to_str().unwrap()]));
    assert!(text.contains("architecture     qwen2"), "{text}");
    assert!(text.contains("bytes on disk"));
}
