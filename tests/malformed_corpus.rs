//! A malformed-input corpus, generated here from valid files (no stored blobs): GGUF files and HF
//! folders broken at every section boundary, with lengths just past the file, tensors out of
//! bounds or overlapping, wrong types, shapes that contradict sizes, duplicate names, configs that
//! contradict the tensors and missing shards. Each case is run through `depthprune prune` and
//! must give exit 1, one `error:` line naming the file and the problem, no panic, and no output.
//! The number of cases is printed (`cargo test --test malformed_corpus -- --nocapture`).

mod common;
mod gguf_support;

use common::*;
use depthprune::checkpoint::safetensors::{Dtype, SafetensorsFile};
use gguf_support::{toy_model, Builder, Layout};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// Runs a prune of `model` and checks the failure; `want` holds alternatives, one must appear.
fn check(name: &str, model: &Path, out: &Path, names: &str, want: &[&str]) {
    let o = prune(model, &["--drop", "0"], out);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{name}: {err}");
    assert!(!err.contains("panicked"), "{name}: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "{name}: {err}");
    assert!(
        lines[0].contains(names),
        "{name}: `{names}` not named in {err}"
    );
    assert!(
        want.iter().any(|w| lines[0].contains(w)),
        "{name}: expected one of {want:?} in {err}"
    );
    assert_no_output(out);
}

// ---------------------------------------------------------------------------------------------
// GGUF

type GgufCase = (String, Vec<u8>, &'static [&'static str]);

fn put_u64(b: &mut [u8], at: u64, v: u64) {
    b[at as usize..at as usize + 8].copy_from_slice(&v.to_le_bytes());
}

fn put_u32(b: &mut [u8], at: u64, v: u32) {
    b[at as usize..at as usize + 4].copy_from_slice(&v.to_le_bytes());
}

/// Where tensor `i`'s info fields are: (name length, dims start, type, offset).
fn info_fields(b: &Builder, l: &Layout, i: usize) -> (u64, u64, u64, u64) {
    let t = &b.tensors[i];
    let at = l.info_starts[i];
    let dims = at + 8 + t.name.len() as u64 + 4;
    let ty = dims + 8 * t.dims.len() as u64;
    (at, dims, ty, ty + 4)
}

fn gguf_cases() -> Vec<GgufCase> {
    let b = toy_model(3);
    let (good, l) = b.build();
    let len = l.len;
    let mut cases: Vec<GgufCase> = Vec::new();
    let mut case = |name: String, bytes: Vec<u8>, want: &'static [&'static str]| {
        cases.push((name, bytes, want))
    };
    const CUT: &[&str] = &["truncated", "room for at most", "past the end of the file"];

    // Truncated at every section boundary, and one byte short of the end.
    let mut cuts = vec![0, 4, 8, 16, l.counts_end];
    cuts.extend(&l.kv_starts[1..]);
    cuts.extend(&l.info_starts);
    cuts.extend([l.infos_end, l.data_start]);
    for i in 0..b.tensors.len() {
        let (.., off) = info_fields(&b, &l, i);
        let o = u64::from_le_bytes(good[off as usize..off as usize + 8].try_into().unwrap());
        cuts.push(l.data_start + o);
    }
    cuts.push(len - 1);
    cuts.sort_unstable();
    cuts.dedup();
    for c in cuts {
        case(format!("gguf cut at {c}"), good[..c as usize].to_vec(), CUT);
    }

    // Lengths just past the file.
    let mut x = good.clone();
    put_u64(&mut x, 8, (len - 24) / 25 + 1);
    case(
        "tensor count one past the file".into(),
        x,
        &["room for at most"],
    );
    let mut x = good.clone();
    put_u64(&mut x, 16, (len - 24) / 14 + 1);
    case(
        "key count one past the file".into(),
        x,
        &["room for at most"],
    );
    let value_at = l.kv_starts[0] + 8 + "general.architecture".len() as u64 + 4;
    let mut x = good.clone();
    put_u64(&mut x, value_at, len - value_at - 8 + 1);
    case(
        "string length one past the file".into(),
        x,
        &["room for at most"],
    );
    let tokens = l.kv_starts[6];
    let key_len = "tokenizer.ggml.tokens".len() as u64;
    let len_at = tokens + 8 + key_len + 4 + 4;
    let mut x = good.clone();
    put_u64(&mut x, len_at, (len - len_at - 8) / 8 + 1);
    case(
        "array length one past the file".into(),
        x,
        &["room for at most"],
    );
    let mut x = good.clone();
    put_u64(&mut x, len_at + 8, len);
    case(
        "token length one past the file".into(),
        x,
        &["room for at most"],
    );

    // Tensors out of bounds, overlapping, misaligned.
    let last = b.tensors.len() - 1;
    let (.., off) = info_fields(&b, &l, last);
    let mut x = good.clone();
    put_u64(&mut x, off, (len - l.data_start).next_multiple_of(32));
    case(
        "tensor past the end".into(),
        x,
        &["past the end of the file"],
    );
    let mut x = good.clone();
    put_u64(&mut x, off, u64::MAX - 31);
    case(
        "tensor offset near 2^64".into(),
        x,
        &["past the end of the file"],
    );
    let mut x = good.clone();
    put_u64(&mut x, off, 0);
    case("tensors overlapping".into(), x, &["overlap"]);
    let mut x = good.clone();
    put_u64(&mut x, off, 16);
    case(
        "tensor misaligned".into(),
        x,
        &["not a multiple of the alignment"],
    );

    // Wrong types and shapes that contradict sizes.
    let (_, dims, ty, _) = info_fields(&b, &l, 2); // blk.0.attn_q.weight, Q4_1 [32, 32]
    let mut x = good.clone();
    put_u32(&mut x, ty, 99);
    case("unknown ggml type".into(), x, &["unknown ggml type id 99"]);
    let mut x = good.clone();
    put_u32(&mut x, ty, 0);
    case(
        "type changed to f32".into(),
        x,
        &["past the end", "overlap"],
    );
    let mut x = good.clone();
    put_u64(&mut x, dims, 33);
    case("row not a whole block".into(), x, &["shape [33, 32]"]);
    let mut x = good.clone();
    put_u64(&mut x, dims, 0);
    case("zero dimension".into(), x, &["shape [0, 32]"]);
    let mut x = good.clone();
    put_u64(&mut x, dims + 8, 1 << 40);
    case(
        "shape larger than the file".into(),
        x,
        &["past the end", "overflow"],
    );
    let mut x = good.clone();
    put_u32(&mut x, dims - 4, 5);
    case("five dimensions".into(), x, &["5 dimensions"]);

    // Duplicate names.
    let mut x = good.clone();
    let (at, ..) = info_fields(&b, &l, 2);
    let name = b"blk.0.attn_k.weight";
    x[at as usize + 8..at as usize + 8 + name.len()].copy_from_slice(name);
    case("duplicate tensor name".into(), x, &["appears twice"]);
    let (dup, _) = toy_model(3).u32("llama.block_count", 3).build();
    case("duplicate key".into(), dup, &["appears twice"]);

    // Other header damage.
    let mut x = good.clone();
    x[0] = b'g';
    case("bad magic".into(), x, &["not a GGUF file"]);
    let mut x = good.clone();
    put_u32(&mut x, 4, 1);
    case("version 1".into(), x, &["version 1"]);
    let mut x = good.clone();
    put_u32(&mut x, 4, 3u32.swap_bytes());
    case("big-endian".into(), x, &["big-endian"]);
    let mut x = good.clone();
    put_u32(
        &mut x,
        l.kv_starts[0] + 8 + "general.architecture".len() as u64,
        13,
    );
    case("unknown value type".into(), x, &["unknown value type 13"]);
    let mut x = good.clone();
    put_u64(&mut x, l.counts_end, 0);
    case(
        "empty key".into(),
        x,
        &["is empty", "truncated", "unknown value type"],
    );
    let (bad_align, _) = toy_model(3).alignment(24).build();
    case(
        "alignment not a power of two".into(),
        bad_align,
        &["not a power of two"],
    );

    // Metadata that contradicts the tensors.
    let mut wrong = toy_model(3);
    wrong.kvs.retain(|(k, _, _)| k != "llama.block_count");
    let (x, _) = wrong.u32("llama.block_count", 2).build();
    case(
        "block count below the tensors".into(),
        x,
        &["belongs to layer 2"],
    );
    // The blocks the metadata declares are the blocks the tensors hold (issue 13).
    let mut above = toy_model(3);
    above.kvs.retain(|(k, _, _)| k != "llama.block_count");
    case(
        "block count above the tensors".into(),
        above.u32("llama.block_count", 60).build().0,
        &["`llama.block_count` is 60 but the tensors hold 3 blocks"],
    );
    let renamed = |from: &str, to: &str| {
        let mut b = toy_model(3);
        for t in &mut b.tensors {
            if t.name == from {
                t.name = to.to_string();
            }
        }
        b.build().0
    };
    case(
        "a block with no tensors".into(),
        {
            let mut b = toy_model(3);
            for t in &mut b.tensors {
                if let Some(rest) = t.name.strip_prefix("blk.1.") {
                    t.name = format!("blk.3.{rest}");
                }
            }
            b.kvs.retain(|(k, _, _)| k != "llama.block_count");
            b.u32("llama.block_count", 4).build().0
        },
        &["the tensors hold 3 blocks (block 1 has none)"],
    );
    case(
        "a block lacking a tensor the others have".into(),
        renamed("blk.1.attn_k.weight", "blk.1.attn_kk.weight"),
        &["has no `blk.1.attn_k.weight` tensor, which layer 0 has"],
    );
    case(
        "a block with a tensor the others lack".into(),
        toy_model(3)
            .tensor("blk.2.attn_x.weight", &[32], 0)
            .build()
            .0,
        &["layer 2 has `blk.2.attn_x.weight`, which layer 0 lacks"],
    );
    case(
        "a tensor of block 4000000000".into(),
        renamed("blk.2.attn_k.weight", "blk.4000000000.attn_k.weight"),
        &["belongs to layer 4000000000"],
    );
    let mut none = toy_model(3);
    none.kvs.retain(|(k, _, _)| k != "llama.block_count");
    case(
        "block count missing".into(),
        none.build().0,
        &["is missing"],
    );
    cases
}

#[test]
fn malformed_gguf_files_fail_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("bad.gguf");
    let out = tmp.path().join("out.gguf");
    let cases = gguf_cases();
    for (name, bytes, want) in &cases {
        std::fs::write(&model, bytes).unwrap();
        check(name, &model, &out, "bad.gguf", want);
    }
    eprintln!("{} malformed GGUF cases", cases.len());
    assert!(cases.len() >= 60, "{}", cases.len());
}

// ---------------------------------------------------------------------------------------------
// HF folders

/// Splits a safetensors file into its header (as JSON) and data.
fn split(path: &Path) -> (Map<String, Value>, Vec<u8>) {
    let b = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
    let header = serde_json::from_slice(&b[8..8 + n]).unwrap();
    (header, b[8 + n..].to_vec())
}

fn join(header_text: &str, data: &[u8]) -> Vec<u8> {
    let mut b = (header_text.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header_text.as_bytes());
    b.extend_from_slice(data);
    b
}

/// Rewrites the header of `path` with `edit`; data stay as they are.
fn edit_header(path: &Path, edit: impl FnOnce(&mut Map<String, Value>)) {
    let (mut h, data) = split(path);
    edit(&mut h);
    std::fs::write(path, join(&serde_json::to_string(&h).unwrap(), &data)).unwrap();
}

/// The tensors of a header, sorted by offset: (name, begin, end).
fn by_offset(h: &Map<String, Value>) -> Vec<(String, u64, u64)> {
    let mut v: Vec<(String, u64, u64)> = h
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .map(|(k, v)| {
            let o = &v["data_offsets"];
            (k.clone(), o[0].as_u64().unwrap(), o[1].as_u64().unwrap())
        })
        .collect();
    v.sort_by_key(|t| t.1);
    v
}

type Mutation = Box<dyn Fn(&Path)>;

fn set_config(dir: &Path, key: &str, value: Value) {
    let p = dir.join("config.json");
    let mut c: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    c[key] = value;
    std::fs::write(&p, c.to_string()).unwrap();
}

/// `(name, sharded source?, mutation, text naming the file, alternatives for the problem)`.
fn hf_cases(
    single: &Path,
) -> Vec<(
    String,
    bool,
    Mutation,
    &'static str,
    &'static [&'static str],
)> {
    let st = SafetensorsFile::open(&single.join("model.safetensors")).unwrap();
    let len = st.file_len;
    let mut cuts = vec![0, 4, 8, st.data_start - 1, st.data_start];
    cuts.extend(st.tensors.iter().skip(1).map(|t| t.file_offset));
    cuts.push(len - 1);
    cuts.sort_unstable();
    cuts.dedup();
    let mut cases: Vec<(
        String,
        bool,
        Mutation,
        &'static str,
        &'static [&'static str],
    )> = Vec::new();
    const ST: &str = "model.safetensors";
    for c in cuts {
        cases.push((
            format!("safetensors cut at {c}"),
            false,
            Box::new(move |d: &Path| {
                let p = d.join(ST);
                let b = std::fs::read(&p).unwrap();
                std::fs::write(&p, &b[..c as usize]).unwrap();
            }),
            ST,
            &["truncated", "shorter than the 8-byte"],
        ));
    }
    let mut add = |name: &str, m: Mutation, names: &'static str, want: &'static [&'static str]| {
        cases.push((name.to_string(), false, m, names, want));
    };
    add(
        "header length one past the file",
        Box::new(|d| {
            let p = d.join(ST);
            let mut b = std::fs::read(&p).unwrap();
            let n = b.len() as u64 - 8 + 1;
            b[..8].copy_from_slice(&n.to_le_bytes());
            std::fs::write(&p, b).unwrap();
        }),
        ST,
        &["truncated"],
    );
    add(
        "last tensor one row past the file",
        Box::new(|d| {
            edit_header(&d.join(ST), |h| {
                let (name, b, e) = by_offset(h).pop().unwrap();
                let t = h.get_mut(&name).unwrap();
                let shape: Vec<u64> = serde_json::from_value(t["shape"].clone()).unwrap();
                let row = (e - b) / shape[0];
                let mut s = shape.clone();
                s[0] += 1;
                t["shape"] = serde_json::json!(s);
                t["data_offsets"] = serde_json::json!([b, e + row]);
            })
        }),
        ST,
        &["truncated"],
    );
    add(
        "tensors overlapping",
        Box::new(|d| {
            edit_header(&d.join(ST), |h| {
                let norms: Vec<(String, u64, u64)> = by_offset(h)
                    .into_iter()
                    .filter(|t| t.0.ends_with("input_layernorm.weight"))
                    .collect();
                h.get_mut(&norms[1].0).unwrap()["data_offsets"] =
                    serde_json::json!([norms[0].1, norms[0].2]);
            })
        }),
        ST,
        &["overlaps"],
    );
    add(
        "tensor far out of bounds",
        Box::new(|d| {
            edit_header(&d.join(ST), |h| {
                let (name, b, e) = by_offset(h).pop().unwrap();
                h.get_mut(&name).unwrap()["data_offsets"] =
                    serde_json::json!([b + (1 << 40), e + (1 << 40)]);
            })
        }),
        ST,
        &["gap of"],
    );
    add(
        "offsets overflowing",
        Box::new(|d| {
            edit_header(&d.join(ST), |h| {
                let (name, ..) = by_offset(h).pop().unwrap();
                h.get_mut(&name).unwrap()["data_offsets"] =
                    serde_json::json!([u64::MAX - 1, u64::MAX]);
            })
        }),
        ST,
        &["needs", "overflow"],
    );
    add(
        "unknown dtype",
        Box::new(|d| {
            edit_header(&d.join(ST), |h| {
                let (name, ..) = by_offset(h)[0].clone();
                h.get_mut(&name).unwrap()["dtype"] = "F9X".into();
            })
        }),
        ST,
        &["unsupported dtype `F9X`"],
    );
    add(
        "dtype contradicts size",
        Box::new(|d| {
            edit_header(&d.join(ST), |h| {
                let (name, ..) = by_offset(h)[0].clone();
                h.get_mut(&name).unwrap()["dtype"] = "F16".into();
            })
        }),
        ST,
        &["needs"],
    );
    add(
        "shape contradicts size",
        Box::new(|d| {
            edit_header(&d.join(ST), |h| {
                let (name, ..) = by_offset(h)[0].clone();
                let t = h.get_mut(&name).unwrap();
                let mut s: Vec<u64> = serde_json::from_value(t["shape"].clone()).unwrap();
                s[0] += 1;
                t["shape"] = serde_json::json!(s);
            })
        }),
        ST,
        &["needs"],
    );
    add(
        "negative shape",
        Box::new(|d| {
            edit_header(&d.join(ST), |h| {
                let (name, ..) = by_offset(h)[0].clone();
                h.get_mut(&name).unwrap()["shape"] = serde_json::json!([-1]);
            })
        }),
        ST,
        &["not a non-negative integer"],
    );
    add(
        "duplicate tensor name",
        Box::new(|d| {
            let p = d.join(ST);
            let (h, data) = split(&p);
            let text = serde_json::to_string(&h).unwrap().replacen(
                "\"model.layers.0.input_layernorm.weight\"",
                "\"model.layers.1.input_layernorm.weight\"",
                1,
            );
            std::fs::write(&p, join(&text, &data)).unwrap();
        }),
        ST,
        &["duplicate tensor name"],
    );
    add(
        "trailing bytes",
        Box::new(|d| {
            let p = d.join(ST);
            let mut b = std::fs::read(&p).unwrap();
            b.extend_from_slice(&[0; 4]);
            std::fs::write(&p, b).unwrap();
        }),
        ST,
        &["trailing bytes"],
    );
    add(
        "header not UTF-8",
        Box::new(|d| {
            let p = d.join(ST);
            let mut b = std::fs::read(&p).unwrap();
            b[9] = 0xff;
            std::fs::write(&p, b).unwrap();
        }),
        ST,
        &["not UTF-8"],
    );
    add(
        "metadata not strings",
        Box::new(|d| {
            edit_header(&d.join(ST), |h| {
                h.insert("__metadata__".into(), serde_json::json!({"format": 1}));
            })
        }),
        ST,
        &["expected a string"],
    );
    add(
        "config layer count above the tensors",
        Box::new(|d| set_config(d, "num_hidden_layers", 8.into())),
        "config.json",
        &["`num_hidden_layers` is 8"],
    );
    add(
        "config layer count below the tensors",
        Box::new(|d| set_config(d, "num_hidden_layers", 4.into())),
        "config.json",
        &["`num_hidden_layers` is 4"],
    );
    let rename = |from: &'static str, to: &'static str| -> Mutation {
        Box::new(move |d: &Path| {
            edit_header(&d.join(ST), |h| {
                let v = h.remove(from).unwrap();
                h.insert(to.into(), v);
            })
        })
    };
    add(
        "a layer lacking a tensor the others have",
        rename(
            "model.layers.1.self_attn.q_proj.weight",
            "model.layers.1.self_attn.qq_proj.weight",
        ),
        "config.json",
        &["has no `model.layers.1.self_attn.q_proj.weight` tensor"],
    );
    add(
        "a tensor beyond num_hidden_layers",
        rename(
            "model.layers.2.mlp.down_proj.weight",
            "model.layers.9.mlp.down_proj.weight",
        ),
        "config.json",
        &["`num_hidden_layers` is 6 but the tensors hold 7 layers (numbers up to 9)"],
    );
    add(
        "config vocabulary contradicts the embedding",
        Box::new(|d| set_config(d, "vocab_size", 99.into())),
        "config.json",
        &["vocab_size 99"],
    );
    add(
        "config hidden size of the wrong type",
        Box::new(|d| set_config(d, "hidden_size", "wide".into())),
        "config.json",
        &["hidden_size"],
    );
    add(
        "config not JSON",
        Box::new(|d| std::fs::write(d.join("config.json"), b"{").unwrap()),
        "config.json",
        &["not valid JSON"],
    );

    // Sharded sources.
    let mut sharded =
        |name: &str, m: Mutation, names: &'static str, want: &'static [&'static str]| {
            cases.push((name.to_string(), true, m, names, want));
        };
    const INDEX: &str = "model.safetensors.index.json";
    sharded(
        "missing shard",
        Box::new(|d| std::fs::remove_file(&safetensors_files(d)[1]).unwrap()),
        INDEX,
        &["missing from the folder"],
    );
    let edit_index = |f: fn(&mut Map<String, Value>)| -> Mutation {
        Box::new(move |d: &Path| {
            let p = d.join(INDEX);
            let mut v: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
            f(v["weight_map"].as_object_mut().unwrap());
            std::fs::write(&p, v.to_string()).unwrap();
        })
    };
    sharded(
        "index lists a tensor no shard holds",
        edit_index(|m| {
            let f = m.values().next().unwrap().clone();
            m.insert("model.layers.0.extra.weight".into(), f);
        }),
        INDEX,
        &["that shard does not hold it"],
    );
    sharded(
        "index omits a tensor",
        edit_index(|m| {
            let k = m.keys().next().unwrap().clone();
            m.remove(&k);
        }),
        INDEX,
        &["does not list tensor"],
    );
    sharded(
        "index places a tensor in the wrong shard",
        edit_index(|m| {
            let files: Vec<Value> = m.values().cloned().collect();
            let (k, v) = m.iter_mut().next().unwrap();
            let other = files.iter().find(|f| *f != v).unwrap().clone();
            let _ = k;
            *v = other;
        }),
        INDEX,
        &["places tensor", "that shard does not hold it"],
    );
    sharded(
        "index names a shard outside the folder",
        edit_index(|m| {
            let k = m.keys().next().unwrap().clone();
            m.insert(k, "../x.safetensors".into());
        }),
        INDEX,
        &["plain file name"],
    );
    sharded(
        "tensor in two shards",
        Box::new(|d| {
            let s = safetensors_files(d);
            let (h0, _) = split(&s[0]);
            let first = by_offset(&h0)[0].clone();
            edit_header(&s[1], |h| {
                let (name, ..) = by_offset(h)[0].clone();
                let v = h.remove(&name).unwrap();
                h.insert(first.0.clone(), v);
            });
        }),
        "safetensors",
        &["also appears in"],
    );
    sharded(
        "index not JSON",
        Box::new(|d| std::fs::write(d.join(INDEX), b"[").unwrap()),
        INDEX,
        &["not valid JSON"],
    );
    cases
}

#[test]
fn malformed_hf_folders_fail_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good");
    make_checkpoint(&good, &tiny_config("llama"), Dtype::F32, 5_000_000_000);
    let cases = hf_cases(&good);
    let out = tmp.path().join("out");
    for (name, sharded, mutate, names, want) in &cases {
        let src = tmp.path().join("src");
        if src.exists() {
            std::fs::remove_dir_all(&src).unwrap();
        }
        let max_shard = if *sharded { 30_000 } else { 5_000_000_000 };
        make_checkpoint(&src, &tiny_config("llama"), Dtype::F32, max_shard);
        mutate(&src);
        check(name, &src, &out, names, want);
    }
    eprintln!("{} malformed HF cases", cases.len());
    assert!(cases.len() >= 30, "{}", cases.len());
}

// ---------------------------------------------------------------------------------------------
// MoE folders (issue 17): expert tensors that contradict config.json

/// Rewrites the single-file checkpoint in `dir` with `edit` applied to its tensors.
fn edit_tensors(
    dir: &Path,
    edit: impl FnOnce(&mut std::collections::HashMap<String, candle_core::Tensor>),
) {
    let path = dir.join("model.safetensors");
    let mut t = candle_core::safetensors::load(&path, &candle_core::Device::Cpu).unwrap();
    edit(&mut t);
    candle_core::safetensors::save(&t, &path).unwrap();
}

#[test]
fn malformed_moe_folders_fail_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let mut n = 0;
    for arch in ["qwen2_moe", "qwen3_moe", "mixtral"] {
        let cfg = tiny_config(arch);
        let (block, down, key) = match arch {
            "mixtral" => ("block_sparse_moe", "w2", "num_local_experts"),
            _ => ("mlp", "down_proj", "num_experts"),
        };
        let experts = cfg[key].as_u64().unwrap();
        let p = format!("model.layers.1.{block}");
        type Mutate = Box<dyn Fn(&Path)>;
        let cases: Vec<(&str, Mutate, &[&str])> = vec![
            (
                "an expert's down projection missing",
                Box::new({
                    let name = format!("{p}.experts.1.{down}.weight");
                    move |d: &Path| edit_tensors(d, |t| _ = t.remove(&name))
                }),
                &["has no `model.layers.1."],
            ),
            (
                "router with one row too many",
                Box::new({
                    let name = format!("{p}.gate.weight");
                    move |d: &Path| {
                        edit_tensors(d, |t| {
                            let r = candle_core::Tensor::zeros(
                                (experts as usize + 1, 32),
                                candle_core::DType::F32,
                                &candle_core::Device::Cpu,
                            );
                            t.insert(name.clone(), r.unwrap());
                        })
                    }
                }),
                &["the router"],
            ),
            (
                "config names one expert fewer than the tensors hold",
                Box::new(move |d: &Path| set_config(d, key, (experts - 1).into())),
                &["experts (numbers up to"],
            ),
            (
                "config names one expert more than the tensors hold",
                Box::new(move |d: &Path| set_config(d, key, (experts + 1).into())),
                &["the router", "has no `"],
            ),
        ];
        for (what, mutate, want) in &cases {
            let src = tmp.path().join("src");
            if src.exists() {
                std::fs::remove_dir_all(&src).unwrap();
            }
            make_checkpoint(&src, &cfg, Dtype::F32, 5_000_000_000);
            mutate(&src);
            check(&format!("{arch}: {what}"), &src, &out, "config.json", want);
            // The forward pass refuses the same folder, with the same message.
            let text = tmp.path().join("text.txt");
            std::fs::write(&text, "some text to evaluate").unwrap();
            let o = run(&[
                "eval",
                src.to_str().unwrap(),
                "--text",
                text.to_str().unwrap(),
            ]);
            let err = stderr(&o);
            assert_eq!(o.status.code(), Some(1), "{arch}: {what}: {err}");
            assert!(
                want.iter().any(|w| err.contains(w)),
                "{arch}: {what}: {err}"
            );
            assert!(!err.contains("panicked"), "{err}");
            n += 1;
        }
    }
    eprintln!("{n} malformed MoE cases");
}

/// Tensor names with their GGUF dims, and metadata entries, of a GGUF to write.
type GgufTensors = Vec<(String, Vec<u64>)>;
type GgufKvs = Vec<(String, depthprune::checkpoint::gguf::Value)>;

/// A 2-layer MoE GGUF written from scratch (hidden 8, 2 heads of 4 with 1 KV head, 2 experts of
/// 4, one used, F32 zeros), as llama.cpp's converter lays it out: `qwen3moe`, `qwen2moe` (with a
/// shared expert) or `llama` with experts (Mixtral). `edit` changes the tensor list (name, GGUF
/// dims) and the metadata before writing.
fn moe_gguf(path: &Path, arch: &str, edit: &dyn Fn(&mut GgufTensors, &mut GgufKvs)) {
    use depthprune::checkpoint::gguf::{GgmlType, GgufWriter, Value};
    let mut t: Vec<(String, Vec<u64>)> = vec![
        ("token_embd.weight".into(), vec![8, 6]),
        ("output_norm.weight".into(), vec![8]),
    ];
    for i in 0..2 {
        let b = |n: &str| format!("blk.{i}.{n}.weight");
        t.push((b("attn_norm"), vec![8]));
        t.push((b("attn_q"), vec![8, 8]));
        t.push((b("attn_k"), vec![8, 4]));
        t.push((b("attn_v"), vec![8, 4]));
        t.push((b("attn_output"), vec![8, 8]));
        t.push((b("ffn_norm"), vec![8]));
        t.push((b("ffn_gate_inp"), vec![8, 2]));
        t.push((b("ffn_gate_exps"), vec![8, 4, 2]));
        t.push((b("ffn_up_exps"), vec![8, 4, 2]));
        t.push((b("ffn_down_exps"), vec![4, 8, 2]));
        if arch == "qwen3moe" {
            t.push((b("attn_q_norm"), vec![4]));
            t.push((b("attn_k_norm"), vec![4]));
        }
        if arch == "qwen2moe" {
            for n in ["attn_q", "attn_k", "attn_v"] {
                let rows = if n == "attn_q" { 8 } else { 4 };
                t.push((format!("blk.{i}.{n}.bias"), vec![rows]));
            }
            t.push((b("ffn_gate_shexp"), vec![8, 4]));
            t.push((b("ffn_up_shexp"), vec![8, 4]));
            t.push((b("ffn_down_shexp"), vec![4, 8]));
            t.push((b("ffn_gate_inp_shexp"), vec![8, 1]));
        }
    }
    let k = |s: &str| format!("{arch}.{s}");
    let mut kv: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::string(arch)),
        (k("block_count"), Value::U32(2)),
        (k("embedding_length"), Value::U32(8)),
        (k("feed_forward_length"), Value::U32(4)),
        (k("attention.head_count"), Value::U32(2)),
        (k("attention.head_count_kv"), Value::U32(1)),
        (k("attention.layer_norm_rms_epsilon"), Value::F32(1e-5)),
        (k("expert_count"), Value::U32(2)),
        (k("expert_used_count"), Value::U32(1)),
        (k("expert_feed_forward_length"), Value::U32(4)),
    ];
    if arch == "qwen2moe" {
        kv.push((k("expert_shared_feed_forward_length"), Value::U32(4)));
    }
    edit(&mut t, &mut kv);
    let mut w = GgufWriter::new(Vec::new(), path, 32).unwrap();
    w.header(t.len() as u64, kv.len() as u64).unwrap();
    for (key, v) in &kv {
        w.kv(key, v).unwrap();
    }
    for (name, dims) in &t {
        w.tensor_info(name, dims, GgmlType::F32).unwrap();
    }
    for (_, dims) in &t {
        w.write_tensor(&vec![0u8; 4 * dims.iter().product::<u64>() as usize])
            .unwrap();
    }
    std::fs::write(path, w.finish().unwrap()).unwrap();
}

#[test]
fn malformed_moe_gguf_files_fail_cleanly() {
    use depthprune::checkpoint::gguf::Value;
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.gguf");
    type Edit = Box<dyn Fn(&mut GgufTensors, &mut GgufKvs)>;
    let mut n = 0;
    for arch in ["qwen2moe", "qwen3moe", "llama"] {
        let good = tmp.path().join(format!("good-{arch}.gguf"));
        moe_gguf(&good, arch, &|_, _| {});
        let o = prune(&good, &["--drop", "0"], &out);
        assert!(
            o.status.success(),
            "{arch}: the valid toy fails: {}",
            stderr(&o)
        );
        std::fs::remove_file(&out).unwrap();
        let count = format!("{arch}.expert_count");
        let cases: Vec<(&str, Edit, &[&str])> = vec![
            (
                "stacked up projections missing",
                Box::new(|t, _| t.retain(|(n, _)| n != "blk.1.ffn_up_exps.weight")),
                &["has no `blk.1.ffn_up_exps.weight` (expert 0)"],
            ),
            (
                "router with a row too many",
                Box::new(|t, _| {
                    t.iter_mut()
                        .find(|(n, _)| n == "blk.1.ffn_gate_inp.weight")
                        .unwrap()
                        .1 = vec![8, 3]
                }),
                &["`blk.1.ffn_gate_inp.weight` has shape [3, 8]", "the router"],
            ),
            (
                "expert_count below the stacked experts",
                Box::new(move |_, kv| {
                    kv.iter_mut().find(|(k, _)| *k == count).unwrap().1 = Value::U32(1)
                }),
                &["holds 2 experts"],
            ),
            (
                "stacked experts fewer than expert_count",
                Box::new(|t, _| {
                    for (name, dims) in t.iter_mut().filter(|(n, _)| n.contains("_exps")) {
                        let _ = name;
                        dims[2] = 1;
                    }
                }),
                &["has shape [2, 8]", "has no `"],
            ),
        ];
        for (what, edit, want) in &cases {
            let bad = tmp.path().join(format!("bad-{arch}.gguf"));
            moe_gguf(&bad, arch, edit.as_ref());
            check(
                &format!("{arch}: {what}"),
                &bad,
                &out,
                &format!("bad-{arch}.gguf"),
                want,
            );
            n += 1;
        }
    }
    eprintln!("{n} malformed MoE GGUF cases");
}

// ---------------------------------------------------------------------------------------------
// The dense families of issue 17

fn family_fixture(arch: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/golden/families")
        .join(arch)
}

/// Copies a family fixture's config and weights to `to`, without the tensors whose names end
/// with `drop` (in every layer) and with `config` edits applied.
fn family_case(arch: &str, to: &Path, drop: &str, config: &[(&str, Value)]) {
    if to.exists() {
        std::fs::remove_dir_all(to).unwrap();
    }
    std::fs::create_dir_all(to).unwrap();
    let src = family_fixture(arch);
    std::fs::copy(src.join("config.json"), to.join("config.json")).unwrap();
    let mut tensors =
        candle_core::safetensors::load(src.join("model.safetensors"), &candle_core::Device::Cpu)
            .unwrap();
    if !drop.is_empty() {
        tensors.retain(|name, _| !name.ends_with(drop));
    }
    candle_core::safetensors::save(&tensors, to.join("model.safetensors")).unwrap();
    for (k, v) in config {
        set_config(to, k, v.clone());
    }
}

/// `(name, family fixture, tensor suffix to remove, config edits, alternatives for the problem)`.
type FamilyCase = (
    &'static str,
    &'static str,
    &'static str,
    Vec<(&'static str, Value)>,
    &'static [&'static str],
);

#[test]
fn malformed_family_checkpoints_fail_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let out = tmp.path().join("out");
    let types = |n: usize| Value::from(vec!["sliding_attention"; n]);
    let cases: Vec<FamilyCase> = vec![
        (
            "gemma2 layer_types one short",
            "gemma2",
            "",
            vec![("layer_types", types(5))],
            &["`layer_types` has 5 entries but `num_hidden_layers` is 6"],
        ),
        (
            "gemma3 layer_types one long",
            "gemma3",
            "",
            vec![("layer_types", types(7))],
            &["`layer_types` has 7 entries"],
        ),
        (
            "gemma2 without pre_feedforward_layernorm",
            "gemma2",
            "pre_feedforward_layernorm.weight",
            vec![],
            &["`model.layers.0.pre_feedforward_layernorm.weight`"],
        ),
        (
            "gemma3 without post_feedforward_layernorm",
            "gemma3",
            "post_feedforward_layernorm.weight",
            vec![],
            &["`model.layers.0.post_feedforward_layernorm.weight`"],
        ),
        (
            "phi3 without the fused qkv_proj",
            "phi3",
            "qkv_proj.weight",
            vec![],
            &["`model.layers.0.self_attn.qkv_proj.weight`"],
        ),
        (
            "phi3 without the fused gate_up_proj",
            "phi3",
            "gate_up_proj.weight",
            vec![],
            &["`model.layers.0.mlp.gate_up_proj.weight`"],
        ),
        (
            "olmo2 without its q norm",
            "olmo2",
            "q_norm.weight",
            vec![],
            &["`model.layers.0.self_attn.q_norm.weight`"],
        ),
    ];
    for (name, arch, drop, config, want) in &cases {
        family_case(arch, &src, drop, config);
        check(name, &src, &out, "config.json", want);
    }
    eprintln!("{} malformed family cases", cases.len());
}
