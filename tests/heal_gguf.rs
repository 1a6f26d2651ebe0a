//! Healing from and to GGUF (issue 6): the maps fitted on a GGUF model equal those fitted on the
//! HF folder it came from, and the healed GGUF, reloaded from disk, gives the logits of the
//! in-memory healed model (the dense GGUF with the new `down_proj` and the block skipped), with
//! every other tensor byte-identical to the source. A Q8_0 input healed into F16 tensors is
//! compared with the in-memory model built from the same dequantized weights. SmolLM2 (Q4_1),
//! when `DEPTHPRUNE_SMOLLM2_GGUF` is set, is checked the same way.

mod common;

use depthprune::checkpoint::atomic::Overwrite;
use depthprune::checkpoint::gguf::{GgmlType, GgufModel, GgufWriter, Value};
use depthprune::convert::to_gguf::hf_to_gguf;
use depthprune::eval;
use depthprune::heal::gguf::{write_healed_gguf, GgufHealOptions};
use depthprune::heal::{self, HealOptions, Healing, Objective, Prior};
use depthprune::model::Model;
use depthprune::progress::Silent;
use depthprune::quant::{quantize, QuantFormat};
use depthprune::select::Removal;
use depthprune::tokenizer::open_tokenizer;
use std::collections::BTreeMap;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use common::golden::{flat_logits as logits, max_diff};
use common::{ok, run_in as depthprune};

const CTX: usize = 32;
const REMOVED: &[usize] = &[2];
/// The tensor that takes the map of the removed block.
const HEALED: &str = "blk.1.ffn_down.weight";

fn golden(name: &str) -> PathBuf {
    common::fixture().join(name)
}

/// The golden fixture `arch` converted to an F32 GGUF at `path`; returns `path`.
fn to_gguf(arch: &str, path: &Path) -> PathBuf {
    hf_to_gguf(&golden(arch), path, GgmlType::F32, Overwrite::Refuse).unwrap();
    path.to_path_buf()
}

/// Deterministic pseudo-random token ids below `vocab`.
fn tokens(n: usize, vocab: u32) -> Vec<u32> {
    common::pseudo_tokens(n, vocab)
}

fn opts(ctx: usize) -> HealOptions {
    HealOptions::fixed(Objective::Lstsq, 1e-3, Prior::Identity, ctx)
}

/// Raw bytes of every tensor of a GGUF file, by name, with its type and dims.
fn tensor_bytes(path: &Path) -> BTreeMap<String, (GgmlType, Vec<u64>, Vec<u8>)> {
    let model = GgufModel::open(path).unwrap();
    let file = std::fs::read(path).unwrap();
    model
        .tensors()
        .iter()
        .map(|t| {
            let start = t.file_offset() as usize;
            let bytes = file[start..start + t.n_bytes() as usize].to_vec();
            (
                t.name().to_string(),
                (t.ggml_type(), t.dims().to_vec(), bytes),
            )
        })
        .collect()
}

/// Rewrites a float GGUF with its 2-D tensors quantized to Q8_0.
fn quantize_q8_0(src: &Path, out: &Path) {
    let model = GgufModel::open(src).unwrap();
    let data = tensor_bytes(src);
    let file = std::fs::File::create(out).unwrap();
    let mut w = GgufWriter::new(BufWriter::new(file), out, model.alignment()).unwrap();
    w.header(model.tensors().len() as u64, model.metadata().len() as u64)
        .unwrap();
    for (k, v) in model.metadata().iter() {
        w.kv(k, v).unwrap();
    }
    let mut encoded = Vec::new();
    for t in model.tensors() {
        let (ty, dims, bytes) = &data[t.name()];
        assert_eq!(*ty, GgmlType::F32);
        if dims.len() == 2 {
            let xs: Vec<f32> = bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            let mut q = Vec::new();
            quantize(QuantFormat::Q8_0, &xs, &mut q).unwrap();
            w.tensor_info(t.name(), dims, GgmlType::Q8_0).unwrap();
            encoded.push(q);
        } else {
            w.tensor_info(t.name(), dims, GgmlType::F32).unwrap();
            encoded.push(bytes.clone());
        }
    }
    for e in &encoded {
        w.write_tensor(e).unwrap();
    }
    w.finish().unwrap();
}

/// Writes `h`, fitted on `model` with `removed` skipped, to `out` with the healed tensor `healed`
/// stored as `ty`, and checks the bytes of every tensor of `out` against `model`.
fn write(model: &Path, h: &Healing, removed: &[usize], healed: &str, out: &Path, ty: GgmlType) {
    let m = GgufModel::open(model).unwrap();
    let removal = Removal::from_layers(m.block_count().unwrap(), h.removed()).unwrap();
    let opts = GgufHealOptions {
        overwrite: Overwrite::Refuse,
        split_max_bytes: None,
        ty,
        keep_types: false,
        metadata: Vec::new(),
    };
    write_healed_gguf(&m, &removal, h, out, &opts, &Silent).unwrap();
    check_bytes(model, out, removed, &[healed], ty);
}

/// The layer count of the healed file `out` reloaded from disk, and the largest difference of its
/// logits on `window` from those of the in-memory healed model (`model` with `h` folded in and
/// `removed` skipped).
fn reload_diff(
    model: &Path,
    h: &Healing,
    removed: &[usize],
    out: &Path,
    window: &[u32],
) -> (usize, f32) {
    let mem = heal::open_healed(model, &h.tensors).unwrap();
    let reloaded = Model::open(out).unwrap();
    let d = max_diff(
        &logits(&mem, removed, window),
        &logits(&reloaded, &[], window),
    );
    (reloaded.n_layers(), d)
}

/// Every tensor of `out` but `healed` is byte-identical to its source (under the pruned name);
/// `healed` has the source dims and type `ty`.
fn check_bytes(src: &Path, out: &Path, removed: &[usize], healed: &[&str], ty: GgmlType) {
    let a = tensor_bytes(src);
    let b = tensor_bytes(out);
    let n = GgufModel::open(src).unwrap().block_count().unwrap();
    let removal = Removal::from_layers(n, removed.iter().copied()).unwrap();
    let mut seen = 0;
    for (name, (t, dims, bytes)) in &a {
        let new = match depthprune::arch::naming::gguf_layer(name) {
            Some(l) => match removal.new_index(l.layer) {
                Some(i) => l.renumbered(i),
                None => continue,
            },
            None => name.clone(),
        };
        let (t2, dims2, bytes2) = &b[&new];
        assert_eq!(dims, dims2, "{name}");
        if healed.contains(&new.as_str()) {
            assert_eq!(*t2, ty, "{new}");
            assert_ne!(bytes, bytes2, "{new} was not healed");
        } else {
            assert_eq!((t, bytes), (t2, bytes2), "{name} → {new} changed");
        }
        seen += 1;
    }
    assert_eq!(seen, b.len());
}

#[test]
fn gguf_heal_matches_hf_and_reloads_with_the_in_memory_logits() {
    for arch in ["qwen2", "qwen3"] {
        let tmp = tempfile::tempdir().unwrap();
        let dense = to_gguf(arch, &tmp.path().join("dense.gguf"));
        let toks = tokens(8 * CTX, 300);
        let h = heal::heal(&dense, REMOVED, &toks, &opts(CTX), &Silent).unwrap();
        let from_hf = heal::heal(&golden(arch), REMOVED, &toks, &opts(CTX), &Silent).unwrap();
        let name = "model.layers.1.mlp.down_proj.weight";
        assert_eq!(h.tensors.keys().collect::<Vec<_>>(), vec![name]);
        let d = max_diff(&h.tensors[name], &from_hf.tensors[name]);
        assert!(d < 1e-6, "{arch}: GGUF and HF fits differ by {d}");

        let out = tmp.path().join("healed.gguf");
        write(&dense, &h, REMOVED, HEALED, &out, GgmlType::F32);
        let (n, d) = reload_diff(&dense, &h, REMOVED, &out, &toks[..CTX]);
        assert_eq!(n, 3);
        eprintln!("{arch}: healed GGUF reloaded vs in memory: max |Δlogit| = {d:e}");
        assert!(d < 1e-5, "{arch}: reloaded logits differ by {d}");

        let md = GgufModel::open(&out).unwrap().metadata().clone();
        assert_eq!(md.get_str("depthprune.healing.method"), Some("lstsq"));
        assert_eq!(
            md.get("depthprune.healing.samples").and_then(Value::as_u64),
            Some((8 * CTX) as u64)
        );
        assert_eq!(md.get("depthprune.healing.alpha"), Some(&Value::F64(1e-3)));
        let rr = md
            .get("depthprune.healing.relative_residual")
            .and_then(Value::as_array)
            .unwrap();
        assert_eq!(rr.len(), 1);
        let note = md.get_str("depthprune.note").unwrap();
        assert!(
            note.contains("`blk.1.ffn_down.weight` (was F32)") && note.contains("stored as F32"),
            "{note}"
        );
    }
}

#[test]
fn quantized_gguf_heals_into_f16_tensors() {
    let tmp = tempfile::tempdir().unwrap();
    let f32_path = to_gguf("qwen3", &tmp.path().join("dense.f32.gguf"));
    let dense = tmp.path().join("dense.q8_0.gguf");
    quantize_q8_0(&f32_path, &dense);
    let toks = tokens(8 * CTX, 300);
    let h = heal::heal(&dense, REMOVED, &toks, &opts(CTX), &Silent).unwrap();
    let out = tmp.path().join("healed.gguf");
    write(&dense, &h, REMOVED, HEALED, &out, GgmlType::F16);
    let note = GgufModel::open(&out)
        .unwrap()
        .metadata()
        .get_str("depthprune.note")
        .unwrap()
        .to_string();
    assert!(
        note.contains("`blk.1.ffn_down.weight` (dequantized from Q8_0)")
            && note.contains("stored as F16"),
        "{note}"
    );

    let reloaded = Model::open(&out).unwrap();
    let window = &toks[..CTX];
    let on_disk = logits(&reloaded, &[], window);
    // The in-memory model on the same dequantized weights: with the healed tensor in f32 the
    // only difference is F16 rounding; rounded to f16 first, none.
    let mem = heal::open_healed(&dense, &h.tensors).unwrap();
    let d32 = max_diff(&logits(&mem, REMOVED, window), &on_disk);
    let rounded: BTreeMap<String, Vec<f32>> = h
        .tensors
        .iter()
        .map(|(k, v)| {
            let r = v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect();
            (k.clone(), r)
        })
        .collect();
    let mem16 = heal::open_healed(&dense, &rounded).unwrap();
    let d16 = max_diff(&logits(&mem16, REMOVED, window), &on_disk);
    eprintln!("Q8_0 → F16 healed: max |Δlogit| vs f32 in memory {d32:e}, vs f16-rounded {d16:e}");
    assert!(
        d16 < 1e-5,
        "reloaded logits differ from the f16-rounded model by {d16}"
    );
    assert!(d32 < 1e-2, "F16 rounding moved the logits by {d32}");
}

#[test]
fn replacing_a_removed_or_unknown_tensor_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dense = to_gguf("qwen3", &tmp.path().join("dense.gguf"));
    let toks = tokens(4 * CTX, 300);
    let mut h = heal::heal(&dense, REMOVED, &toks, &opts(CTX), &Silent).unwrap();
    let v = h.tensors.values().next().unwrap().clone();
    h.tensors
        .insert("model.layers.2.mlp.down_proj.weight".into(), v);
    let m = GgufModel::open(&dense).unwrap();
    let removal = Removal::from_layers(4, [2]).unwrap();
    let out = tmp.path().join("x.gguf");
    let o = GgufHealOptions {
        overwrite: Overwrite::Refuse,
        split_max_bytes: None,
        ty: GgmlType::F32,
        keep_types: false,
        metadata: Vec::new(),
    };
    let err = write_healed_gguf(&m, &removal, &h, &out, &o, &Silent)
        .unwrap_err()
        .to_string();
    assert!(err.contains("removed layer"), "{err}");
    assert!(!out.exists());
}

#[test]
fn smollm2_q4_1_heal_reloads_with_the_in_memory_logits() {
    let Ok(gguf) = std::env::var("DEPTHPRUNE_SMOLLM2_GGUF") else {
        eprintln!("SKIPPED: set DEPTHPRUNE_SMOLLM2_GGUF to the SmolLM2-135M-Instruct .gguf");
        return;
    };
    let Some(text) = common::wikitext("smollm2_q4_1_heal_reloads_with_the_in_memory_logits") else {
        return;
    };
    let gguf = PathBuf::from(gguf);
    let started = std::time::Instant::now();
    let (tok, _) = open_tokenizer(&gguf).unwrap();
    let text = eval::read_text(&text).unwrap();
    let toks = eval::tokenize(&tok, &text, Some(2 * 64)).unwrap();
    let removed: Vec<usize> = (20..24).collect();
    let h = heal::heal(&gguf, &removed, &toks, &opts(64), &Silent).unwrap();
    assert_eq!(
        h.tensors.keys().collect::<Vec<_>>(),
        vec!["model.layers.19.mlp.down_proj.weight"]
    );
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("healed.gguf");
    write(
        &gguf,
        &h,
        &removed,
        "blk.19.ffn_down.weight",
        &out,
        GgmlType::F32,
    );
    let (n, d) = reload_diff(&gguf, &h, &removed, &out, &toks[..32]);
    assert_eq!(n, 26);
    eprintln!(
        "SmolLM2 Q4_1 healed (20..24): reloaded vs in memory max |Δlogit| = {d:e} ({:.1} s)",
        started.elapsed().as_secs_f64()
    );
    assert!(d < 1e-4, "reloaded logits differ by {d}");
}

#[test]
fn prune_heal_and_heal_subcommand_write_the_same_gguf() {
    let tmp = tempfile::tempdir().unwrap();
    let dense = common::dense_qwen2_gguf(tmp.path());
    let run = |args: &[&str]| common::run_healing(args, tmp.path());
    // `prune dense.gguf --drop 2..3 --heal lstsq` and the fit flags, then `more`.
    let heal_prune = |more: &[&str]| {
        let mut all = vec!["prune", "dense.gguf", "--drop", "2..3", "--heal", "lstsq"];
        all.extend_from_slice(more);
        run(&all)
    };
    ok(&heal_prune(&["--out", "one.gguf"]));
    ok(&depthprune(
        &[
            "prune",
            "dense.gguf",
            "--drop",
            "2..3",
            "--out",
            "plain.gguf",
        ],
        tmp.path(),
    ));
    ok(&run(&[
        "heal",
        "plain.gguf",
        "--from",
        "dense.gguf",
        "--method",
        "lstsq",
        "--out",
        "two.gguf",
    ]));
    let one = std::fs::read(tmp.path().join("one.gguf")).unwrap();
    let two = std::fs::read(tmp.path().join("two.gguf")).unwrap();
    assert!(
        one == two,
        "`heal` and `prune --heal` wrote different files"
    );
    let healed = tmp.path().join("one.gguf");
    check_bytes(&dense, &healed, REMOVED, &[HEALED], GgmlType::F32);

    ok(&heal_prune(&["--dtype", "f16", "--out", "half.gguf"]));
    let half = tmp.path().join("half.gguf");
    check_bytes(&dense, &half, REMOVED, &[HEALED], GgmlType::F16);

    let o = heal_prune(&["--dtype", "bf16", "--out", "bad.gguf"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("f32 or f16"), "{err}");
    assert!(!tmp.path().join("bad.gguf").exists());

    let o = run(&[
        "heal",
        "dense.gguf",
        "--from",
        "dense.gguf",
        "--out",
        "x.gguf",
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("depthprune.removed_layers"), "{err}");
    assert!(!tmp.path().join("x.gguf").exists());
}

#[test]
fn distilled_gguf_heal_reloads_with_the_in_memory_logits_and_records_the_training() {
    let tmp = tempfile::tempdir().unwrap();
    let dense = to_gguf("qwen3", &tmp.path().join("dense.gguf"));
    let toks = tokens(8 * CTX, 300);
    let validated = HealOptions {
        holdout: 4,
        ..HealOptions::validated(CTX)
    };
    let start = heal::heal(&dense, REMOVED, &toks, &validated, &Silent).unwrap();
    let kd = heal::KdOptions {
        steps: 12,
        lr: 1e-2,
        eval_every: 4,
        patience: 0,
        rank: 0,
        ..heal::KdOptions::default()
    };
    let h = heal::distil(&dense, &toks, &start, &kd, &Silent).unwrap();
    let d = h.distillation.clone().unwrap();
    assert!(d.kept(), "{d:?}");
    let out = tmp.path().join("kd.gguf");
    write(&dense, &h, REMOVED, HEALED, &out, GgmlType::F32);
    let (_, diff) = reload_diff(&dense, &h, REMOVED, &out, &toks[..CTX]);
    assert!(diff < 1e-5, "reloaded logits differ by {diff}");
    let md = GgufModel::open(&out).unwrap().metadata().clone();
    assert_eq!(md.get_str("depthprune.healing.method"), Some("kd"));
    assert_eq!(
        md.get("depthprune.healing.kd_validation_kl"),
        Some(&Value::F64(d.best_kl))
    );
    assert_eq!(
        md.get("depthprune.healing.kd_best_step")
            .and_then(Value::as_u64),
        Some(d.best_step as u64)
    );
    let note = md.get_str("depthprune.note").unwrap();
    assert!(
        note.starts_with("Healed by map-only distillation"),
        "{note}"
    );
}

#[test]
fn low_rank_gguf_heal_is_requantized_to_the_source_type_within_its_rounding() {
    let tmp = tempfile::tempdir().unwrap();
    let f32_path = to_gguf("qwen3", &tmp.path().join("dense.f32.gguf"));
    let dense = tmp.path().join("dense.q8_0.gguf");
    quantize_q8_0(&f32_path, &dense);
    let toks = tokens(8 * CTX, 300);
    let validated = HealOptions {
        holdout: 4,
        ..HealOptions::validated(CTX)
    };
    let start = heal::heal(&dense, REMOVED, &toks, &validated, &Silent).unwrap();
    let kd = heal::KdOptions {
        steps: 12,
        lr: 1e-2,
        eval_every: 4,
        patience: 0,
        rank: 4,
        lowrank_lr: 1e-2,
        time_limit: None,
    };
    let h = heal::distil(&dense, &toks, &start, &kd, &Silent).unwrap();
    let d = h.distillation.clone().unwrap();
    assert!(d.kept() && d.lowrank_tensors.len() == 14, "{d:?}");
    let m = GgufModel::open(&dense).unwrap();
    let removal = Removal::from_layers(m.block_count().unwrap(), h.removed()).unwrap();
    let out = tmp.path().join("lr.gguf");
    let opts = GgufHealOptions {
        overwrite: Overwrite::Refuse,
        split_max_bytes: None,
        ty: GgmlType::F32,
        keep_types: true,
        metadata: Vec::new(),
    };
    write_healed_gguf(&m, &removal, &h, &out, &opts, &Silent).unwrap();
    // Every tensor keeps its source type (so the file keeps its size class).
    let (src, dst) = (tensor_bytes(&dense), tensor_bytes(&out));
    let changed: Vec<&String> = dst
        .iter()
        .filter(|(n, (_, _, b))| src.get(*n).is_some_and(|(_, _, a)| a != b))
        .map(|(n, _)| n)
        .collect();
    assert!(changed.len() >= 7, "{changed:?}");
    for (n, (t, _, _)) in &dst {
        if let Some((ts, _, _)) = src.get(n) {
            assert_eq!(t, ts, "`{n}`");
        }
    }
    let note = GgufModel::open(&out)
        .unwrap()
        .metadata()
        .get_str("depthprune.note")
        .unwrap()
        .to_string();
    assert!(note.contains("(requantized to Q8_0)"), "{note}");
    // The reloaded file is the in-memory heal with each changed tensor rounded through Q8_0.
    let rounded: BTreeMap<String, Vec<f32>> = h
        .tensors
        .iter()
        .map(|(k, v)| {
            let mut bytes = Vec::new();
            quantize(QuantFormat::Q8_0, v, &mut bytes).unwrap();
            let mut back = Vec::new();
            depthprune::quant::dequantize(GgmlType::Q8_0.id(), &bytes, v.len(), &mut back).unwrap();
            (k.clone(), back)
        })
        .collect();
    let window = &toks[..CTX];
    let reloaded = Model::open(&out).unwrap();
    let on_disk = logits(&reloaded, &[], window);
    let exact = heal::open_healed(&dense, &h.tensors).unwrap();
    let requant = heal::open_healed(&dense, &rounded).unwrap();
    let d_exact = max_diff(&logits(&exact, REMOVED, window), &on_disk);
    let d_round = max_diff(&logits(&requant, REMOVED, window), &on_disk);
    eprintln!(
        "Q8_0 requantized heal: max |Δlogit| vs f32 in memory {d_exact:e}, vs rounded {d_round:e}"
    );
    assert!(
        d_round < 1e-5,
        "reloaded logits differ from the rounded model by {d_round}"
    );
    // On this tiny random model Q8_0 rounding of 14 weights moves the logits by about 0.27.
    assert!(d_exact < 1.0, "requantizing moved the logits by {d_exact}");
}
