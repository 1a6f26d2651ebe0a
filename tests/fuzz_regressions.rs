//! Replays the fuzzers' corpus and every crash input found so far (`fuzz/corpus/TARGET/`,
//! `fuzz/regressions/TARGET/`) through the same entry points the fuzzers use. A panic fails.

use std::path::Path;

/// A fuzz target: its name and entry point.
type Target = (&'static str, fn(&[u8]));

fn replay(target: &str, f: fn(&[u8])) -> usize {
    let mut n = 0;
    for dir in ["fuzz/corpus", "fuzz/regressions"] {
        let d = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir).join(target);
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_file() {
                f(&std::fs::read(&p).unwrap());
                n += 1;
            }
        }
    }
    n
}

#[test]
fn fuzz_corpus_replays_without_panics() {
    use depthprune::fuzz_targets as t;
    let targets: &[Target] = &[
        ("safetensors_file", t::safetensors_file),
        ("hf_index", t::hf_index),
        ("config_json", t::config_json),
        ("layer_spec", t::layer_spec),
        ("gguf_header", t::gguf_header),
    ];
    let mut total = 0;
    for (name, f) in targets {
        let n = replay(name, *f);
        eprintln!("{name}: {n} inputs replayed");
        total += n;
    }
    assert!(total > 0, "no fuzz corpus found under fuzz/corpus");
}
