//! GGUF for the dense families of issue 17. Each family fixture, with the settings llama.cpp
//! fixes (Gemma's attention scale from `head_dim`, Gemma 3's 5:1 pattern and local RoPE base
//! 10000), is converted to GGUF and back: the GGUF runs with the folder's logits, the folder
//! comes back with the same tensors, and GGUF prunes give the logits of skipping those layers.
//! Gemma prunes that break llama.cpp's fixed pattern, and HF models llama.cpp would run
//! differently, are refused before anything is written.

mod common;

use common::golden::max_diff;
use depthprune::model::Model;
use std::path::{Path, PathBuf};

const FAMILIES: &[&str] = &["gemma2", "gemma3", "phi3", "olmo2", "granite"];

fn fixture(arch: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/golden/families")
        .join(arch)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The fixture with the settings llama.cpp fixes, in `dir/arch`.
fn llama_cpp_like(dir: &Path, arch: &str) -> PathBuf {
    let to = dir.join(arch);
    std::fs::create_dir_all(&to).unwrap();
    std::fs::copy(
        fixture(arch).join("model.safetensors"),
        to.join("model.safetensors"),
    )
    .unwrap();
    let text = std::fs::read_to_string(fixture(arch).join("config.json")).unwrap();
    let mut cfg: serde_json::Value = serde_json::from_str(&text).unwrap();
    if arch.starts_with("gemma") {
        cfg["query_pre_attn_scalar"] = cfg["head_dim"].clone();
    }
    if arch == "gemma3" {
        let o = cfg.as_object_mut().unwrap();
        o.remove("sliding_window_pattern");
        o.insert("rope_local_base_freq".into(), 10000.0.into());
    }
    std::fs::write(to.join("config.json"), cfg.to_string()).unwrap();
    to
}

fn ok(args: &[&str]) {
    let o = common::run(args);
    assert!(o.status.success(), "{args:?}: {}", common::stderr(&o));
}

fn tokens() -> Vec<Vec<u32>> {
    (0..2)
        .map(|r| {
            (0..20)
                .map(|i| ((i * 37 + r * 101) % 298 + 2) as u32)
                .collect()
        })
        .collect()
}

fn logits(model: &Path, skip: &[usize]) -> Vec<f32> {
    let m = Model::open(model).unwrap();
    let rows = tokens();
    let rows: Vec<&[u32]> = rows.iter().map(Vec::as_slice).collect();
    let t = m.forward(&m.tokens(&rows).unwrap(), skip, None).unwrap();
    t.flatten_all().unwrap().to_vec1().unwrap()
}

#[test]
fn families_convert_to_gguf_and_back_and_run_the_same() {
    let tmp = tempfile::tempdir().unwrap();
    for arch in FAMILIES {
        let hf = llama_cpp_like(tmp.path(), arch);
        let gguf = tmp.path().join(format!("{arch}.gguf"));
        ok(&["convert", s(&hf), "--to", "gguf", "--out", s(&gguf)]);
        let want = logits(&hf, &[]);
        let e = max_diff(&logits(&gguf, &[]), &want);
        assert!(e < 1e-5, "{arch}: GGUF logits differ by {e}");
        let back = tmp.path().join(format!("{arch}-back"));
        ok(&["convert", s(&gguf), "--to", "hf", "--out", s(&back)]);
        let e_back = max_diff(&logits(&back, &[]), &want);
        assert!(
            e_back < 1e-5,
            "{arch}: converted-back logits differ by {e_back}"
        );
        let a =
            candle_core::safetensors::load(hf.join("model.safetensors"), &candle_core::Device::Cpu)
                .unwrap();
        let b = candle_core::safetensors::load(
            back.join("model.safetensors"),
            &candle_core::Device::Cpu,
        )
        .unwrap();
        let mut names: Vec<&String> = a.keys().collect();
        names.sort();
        let mut back_names: Vec<&String> = b.keys().collect();
        back_names.sort();
        assert_eq!(names, back_names, "{arch}: tensor names");
        for n in names {
            let d = common::golden::max_err(&a[n], &b[n]);
            // Gemma's norms go through `w + 1 - 1` in f32.
            assert!(d <= 1e-7, "{arch}: `{n}` comes back {d} off");
        }
        eprintln!("{arch}: GGUF logits Δ {e:.1e}, back to HF Δ {e_back:.1e}");
    }
}

#[test]
fn gguf_prunes_give_the_logits_of_skipping() {
    let tmp = tempfile::tempdir().unwrap();
    // Gemma 2 loses a sliding/global pair and Gemma 3 its global layer, so llama.cpp's fixed
    // pattern still holds.
    for (arch, drop, skip) in [
        ("gemma2", "2,3", &[2usize, 3][..]),
        ("gemma3", "5", &[5][..]),
        ("phi3", "1,2", &[1, 2][..]),
        ("olmo2", "1,2", &[1, 2][..]),
        ("granite", "1,2", &[1, 2][..]),
    ] {
        let hf = llama_cpp_like(tmp.path(), arch);
        let gguf = tmp.path().join(format!("{arch}.gguf"));
        ok(&["convert", s(&hf), "--to", "gguf", "--out", s(&gguf)]);
        let pruned = tmp.path().join(format!("{arch}-pruned.gguf"));
        ok(&["prune", s(&gguf), "--drop", drop, "--out", s(&pruned)]);
        let e = max_diff(&logits(&pruned, &[]), &logits(&hf, skip));
        assert!(e < 1e-5, "{arch}: pruned GGUF logits differ by {e}");
        eprintln!("{arch}: pruned GGUF vs skipping {skip:?} Δ {e:.1e}");
    }
}

#[test]
fn gemma_gguf_prunes_that_break_the_fixed_pattern_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    for (arch, drop) in [("gemma2", "1"), ("gemma3", "1,2")] {
        let hf = llama_cpp_like(tmp.path(), arch);
        let gguf = tmp.path().join(format!("{arch}.gguf"));
        ok(&["convert", s(&hf), "--to", "gguf", "--out", s(&gguf)]);
        let out = tmp.path().join(format!("{arch}-bad.gguf"));
        let o = common::run(&["prune", s(&gguf), "--drop", drop, "--out", s(&out)]);
        let err = common::stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{arch}: {err}");
        assert!(err.contains("llama.cpp fixes"), "{arch}: {err}");
        common::assert_no_output(&out);
    }
}

#[test]
fn hf_models_llama_cpp_would_run_differently_are_not_converted() {
    let tmp = tempfile::tempdir().unwrap();
    // The fixtures themselves: Gemma 2/3 with `query_pre_attn_scalar` 24 != head_dim 16, and
    // Gemma 3 with a 2:1 pattern.
    for arch in ["gemma2", "gemma3"] {
        let out = tmp.path().join(format!("{arch}.gguf"));
        let o = common::run(&[
            "convert",
            s(&fixture(arch)),
            "--to",
            "gguf",
            "--out",
            s(&out),
        ]);
        let err = common::stderr(&o);
        assert!(!o.status.success(), "{arch}: converted");
        assert!(err.contains("llama.cpp"), "{arch}: {err}");
        common::assert_no_output(&out);
    }
}
