//! Hostile `config.json` values (issue 25): each case edits one key of a family fixture that
//! transformers would refuse (a wrong type, 0, a negative, a huge value, a string `"NaN"`, a
//! per-layer list of the wrong length or kind, a size that contradicts the tensors). `prune` must
//! exit 1 with one `error:` line naming `config.json` and the key, no panic, and no output; the
//! cases a forward pass would turn into NaN or a wrong model are also run through `eval`.

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

fn fixture_dir(arch: &str) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden");
    match arch {
        "qwen2_moe" | "llama" => root.join(arch),
        _ => root.join("families").join(arch),
    }
}

/// Copies `arch`'s fixture to `to` with `key` set to `value` (`None` removes it).
fn edited(arch: &str, to: &Path, key: &str, value: Option<Value>) {
    if to.exists() {
        std::fs::remove_dir_all(to).unwrap();
    }
    std::fs::create_dir_all(to).unwrap();
    let src = fixture_dir(arch);
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
    let p = to.join("config.json");
    let mut c: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    let obj = c.as_object_mut().unwrap();
    match value {
        Some(v) => {
            obj.insert(key.to_string(), v);
        }
        None => {
            obj.remove(key);
        }
    }
    std::fs::write(&p, c.to_string()).unwrap();
}

/// Checks a refused run: exit 1, one `error:` line naming `config.json` and `want`, no panic,
/// nothing written to `out`.
fn refused(name: &str, o: &std::process::Output, out: &Path, want: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(1), "{name}: {err}");
    assert!(!err.contains("panicked"), "{name}: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "{name}: {err}");
    assert!(lines[0].contains("config.json"), "{name}: {err}");
    assert!(lines[0].contains(want), "{name}: `{want}` not in {err}");
    assert!(stdout(o).is_empty(), "{name}: printed {}", stdout(o));
    assert_no_output(out);
}

/// `(fixture, key, value, text the error must hold)`: the key in backticks unless stated.
fn cases() -> Vec<(&'static str, &'static str, Value, &'static str)> {
    let types = |t: Value| {
        json!([
            t,
            "full_attention",
            "full_attention",
            "full_attention",
            "full_attention",
            "full_attention"
        ])
    };
    vec![
        // The hostile cases of issue 25.
        ("gemma3", "sliding_window", json!(0), "`sliding_window`"),
        (
            "gemma3",
            "layer_types",
            types(json!("chunky_attention")),
            "`layer_types` entry 0",
        ),
        (
            "gemma3",
            "layer_types",
            json!([0, 1, 0, 1, 0, 1]),
            "`layer_types` entry 0",
        ),
        (
            "gemma3",
            "layer_types",
            json!(["full_attention"]),
            "`layer_types` has 1 entries",
        ),
        (
            "gemma3",
            "layer_types",
            json!("sliding_attention"),
            "`layer_types`",
        ),
        (
            "gemma2",
            "attn_logit_softcapping",
            json!("NaN"),
            "`attn_logit_softcapping`",
        ),
        (
            "gemma2",
            "final_logit_softcapping",
            json!("NaN"),
            "`final_logit_softcapping`",
        ),
        (
            "gemma2",
            "final_logit_softcapping",
            json!(0),
            "`final_logit_softcapping`",
        ),
        (
            "gemma2",
            "attn_logit_softcapping",
            json!(-50.0),
            "`attn_logit_softcapping`",
        ),
        (
            "phi3",
            "partial_rotary_factor",
            json!("0.5"),
            "`partial_rotary_factor`",
        ),
        (
            "phi3",
            "partial_rotary_factor",
            json!(0),
            "`partial_rotary_factor`",
        ),
        (
            "phi3",
            "partial_rotary_factor",
            json!(1.5),
            "`partial_rotary_factor`",
        ),
        ("gemma3", "head_dim", json!(0), "`head_dim`"),
        ("gemma3", "head_dim", json!("16"), "`head_dim`"),
        ("olmo2", "head_dim", json!(-8), "`head_dim`"),
        (
            "qwen2_moe",
            "shared_expert_intermediate_size",
            json!(0),
            "`shared_expert_intermediate_size`",
        ),
        (
            "qwen2_moe",
            "shared_expert_intermediate_size",
            json!("24"),
            "`shared_expert_intermediate_size`",
        ),
        (
            "phi3",
            "rope_parameters",
            json!({"rope_type":"longrope","short_factor":[0.0, 0.0],
            "long_factor":[2.0, 5.0],"original_max_position_embeddings":16,"partial_rotary_factor":0.5}),
            "`short_factor`",
        ),
        (
            "phi3",
            "rope_parameters",
            json!({"rope_type":"longrope","short_factor":[1.0, 1.5],
            "long_factor":["NaN", 5.0],"original_max_position_embeddings":16,"partial_rotary_factor":0.5}),
            "`long_factor`",
        ),
        (
            "phi3",
            "rope_parameters",
            json!({"rope_type":"longrope","short_factor":[1.0, 1.5],
            "long_factor":[2.0, 5.0],"original_max_position_embeddings":16,"attention_factor":0}),
            "`attention_factor`",
        ),
        ("olmo2", "rms_norm_eps", json!(-1e-6), "`rms_norm_eps`"),
        ("olmo2", "rms_norm_eps", json!(0), "`rms_norm_eps`"),
        ("olmo2", "rms_norm_eps", json!("NaN"), "`rms_norm_eps`"),
        ("olmo2", "rope_theta", json!(0), "`rope_theta`"),
        ("olmo2", "rope_theta", json!(-10000.0), "`rope_theta`"),
        ("olmo2", "rope_theta", json!("1e4"), "`rope_theta`"),
        // Neighbours: every field with the wrong type, 0, negative or huge.
        (
            "gemma3",
            "num_hidden_layers",
            json!("6"),
            "`num_hidden_layers`",
        ),
        (
            "gemma3",
            "num_hidden_layers",
            json!(0),
            "`num_hidden_layers`",
        ),
        (
            "gemma3",
            "num_hidden_layers",
            json!(1u64 << 40),
            "`num_hidden_layers`",
        ),
        ("gemma3", "hidden_size", json!(-32), "`hidden_size`"),
        ("gemma3", "hidden_size", json!(1u64 << 40), "`hidden_size`"),
        ("gemma3", "hidden_size", json!(32.5), "`hidden_size`"),
        (
            "gemma3",
            "num_attention_heads",
            json!("4"),
            "`num_attention_heads`",
        ),
        (
            "gemma3",
            "num_key_value_heads",
            json!("2"),
            "`num_key_value_heads`",
        ),
        (
            "gemma3",
            "num_key_value_heads",
            json!(0),
            "`num_key_value_heads`",
        ),
        (
            "gemma3",
            "intermediate_size",
            json!(0),
            "`intermediate_size`",
        ),
        (
            "gemma3",
            "intermediate_size",
            json!("64"),
            "`intermediate_size`",
        ),
        ("gemma3", "vocab_size", json!(0), "`vocab_size`"),
        ("gemma3", "vocab_size", json!(u64::MAX), "`vocab_size`"),
        (
            "gemma3",
            "tie_word_embeddings",
            json!("true"),
            "`tie_word_embeddings`",
        ),
        ("gemma3", "attention_bias", json!(0), "`attention_bias`"),
        ("gemma3", "mlp_bias", json!("false"), "`mlp_bias`"),
        (
            "gemma3",
            "max_position_embeddings",
            json!(-1),
            "`max_position_embeddings`",
        ),
        ("gemma3", "dtype", json!(32), "`dtype`"),
        (
            "gemma3",
            "hidden_activation",
            json!(7),
            "`hidden_activation`",
        ),
        (
            "gemma3",
            "architectures",
            json!("Gemma3ForCausalLM"),
            "`architectures`",
        ),
        ("gemma3", "model_type", json!(3), "`model_type`"),
        ("gemma3", "sliding_window", json!("6"), "`sliding_window`"),
        ("gemma3", "sliding_window", json!(-6), "`sliding_window`"),
        (
            "gemma3",
            "sliding_window_pattern",
            json!(0),
            "`sliding_window_pattern`",
        ),
        (
            "gemma3",
            "sliding_window_pattern",
            json!("3"),
            "`sliding_window_pattern`",
        ),
        (
            "gemma3",
            "query_pre_attn_scalar",
            json!(0),
            "`query_pre_attn_scalar`",
        ),
        (
            "gemma3",
            "query_pre_attn_scalar",
            json!("24"),
            "`query_pre_attn_scalar`",
        ),
        (
            "gemma3",
            "rope_local_base_freq",
            json!(-100.0),
            "`rope_local_base_freq`",
        ),
        (
            "gemma3",
            "rope_scaling",
            json!({"rope_type":"linear","factor":0}),
            "`factor`",
        ),
        (
            "gemma3",
            "rope_scaling",
            json!({"rope_type":"linear","factor":"2"}),
            "`factor`",
        ),
        ("gemma3", "rope_scaling", json!("linear"), "`rope_scaling`"),
        (
            "gemma3",
            "rope_scaling",
            json!({"rope_type":7}),
            "`rope_type`",
        ),
        (
            "qwen2_moe",
            "use_sliding_window",
            json!("no"),
            "`use_sliding_window`",
        ),
        (
            "qwen2_moe",
            "num_experts_per_tok",
            json!(0),
            "`num_experts_per_tok`",
        ),
        (
            "qwen2_moe",
            "num_experts_per_tok",
            json!(5),
            "`num_experts_per_tok`",
        ),
        ("qwen2_moe", "num_experts", json!("4"), "`num_experts`"),
        (
            "qwen2_moe",
            "moe_intermediate_size",
            json!(0),
            "`moe_intermediate_size`",
        ),
        (
            "qwen2_moe",
            "decoder_sparse_step",
            json!(0),
            "`decoder_sparse_step`",
        ),
        (
            "qwen2_moe",
            "mlp_only_layers",
            json!([9]),
            "`mlp_only_layers`",
        ),
        (
            "qwen2_moe",
            "mlp_only_layers",
            json!(["0"]),
            "`mlp_only_layers`",
        ),
        (
            "qwen2_moe",
            "norm_topk_prob",
            json!("true"),
            "`norm_topk_prob`",
        ),
        ("qwen2_moe", "qkv_bias", json!(1), "`qkv_bias`"),
        (
            "qwen2_moe",
            "max_window_layers",
            json!("28"),
            "`max_window_layers`",
        ),
        // The registry's new families: SmolLM3's per-layer RoPE switch, Granite's multipliers.
        (
            "smollm3",
            "no_rope_layers",
            json!([1, 1, 1, 0, 1]),
            "`no_rope_layers` has 5 entries",
        ),
        (
            "smollm3",
            "no_rope_layers",
            json!([1, 1, 2, 0, 1, 1]),
            "`no_rope_layers` entry 2",
        ),
        (
            "smollm3",
            "no_rope_layers",
            json!(["1", 1, 1, 0, 1, 1]),
            "`no_rope_layers` entry 0",
        ),
        ("smollm3", "no_rope_layers", json!(true), "`no_rope_layers`"),
        (
            "granite",
            "embedding_multiplier",
            json!("NaN"),
            "`embedding_multiplier`",
        ),
        (
            "granite",
            "attention_multiplier",
            json!(0),
            "`attention_multiplier`",
        ),
        (
            "granite",
            "residual_multiplier",
            json!(-0.5),
            "`residual_multiplier`",
        ),
        ("granite", "logits_scaling", json!(0.0), "`logits_scaling`"),
    ]
}

#[test]
fn hostile_config_values_are_refused_naming_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, out) = (tmp.path().join("src"), tmp.path().join("out"));
    let all = cases();
    for (arch, key, value, want) in &all {
        let name = format!("{arch}: `{key}` = {value}");
        edited(arch, &src, key, Some(value.clone()));
        refused(&name, &prune(&src, &["--drop", "0"], &out), &out, want);
    }
    eprintln!("{} hostile config cases", all.len());
}

/// The cases the forward pass used to run with a NaN or a silently changed setting are refused
/// by `eval` too (it prints nothing, not `perplexity NaN`).
#[test]
fn eval_refuses_what_would_give_nan() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let text = fixture().join("eval.txt");
    let cases = [
        ("rms_norm_eps", json!(-1e-6)),
        ("rms_norm_eps", json!("NaN")),
        ("rope_theta", json!(0)),
        ("head_dim", json!(0)),
        (
            "rope_parameters",
            json!({"rope_type":"llama3","factor":0,"low_freq_factor":1.0,
            "high_freq_factor":4.0,"original_max_position_embeddings":64,"rope_theta":10000.0}),
        ),
    ];
    for (key, value) in cases {
        edited("llama", &src, key, Some(value.clone()));
        let o = run(&["eval", s(&src), "--text", s(&text)]);
        refused(
            &format!("eval `{key}` = {value}"),
            &o,
            &tmp.path().join("none"),
            &format!("`{key}`").replace("`rope_parameters`", "`factor`"),
        );
    }
}

/// Keys that are `null` are absent (transformers writes `null` for unset optional fields), and a
/// `sliding_window` of 0 is accepted where no layer uses a window (qwen configs saved by
/// transformers hold one).
#[test]
fn null_and_unused_fields_are_accepted() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, out) = (tmp.path().join("src"), tmp.path().join("out"));
    for (arch, key, value) in [
        ("gemma3", "attn_logit_softcapping", json!(null)),
        ("gemma2", "final_logit_softcapping", json!(null)),
        ("olmo2", "rope_scaling", json!(null)),
        ("qwen2_moe", "sliding_window", json!(0)),
    ] {
        edited(arch, &src, key, Some(value));
        if out.exists() {
            std::fs::remove_dir_all(&out).unwrap();
        }
        let o = prune(&src, &["--drop", "0"], &out);
        assert_eq!(o.status.code(), Some(0), "{arch} {key}: {}", stderr(&o));
    }
}
