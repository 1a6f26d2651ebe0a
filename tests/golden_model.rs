//! The forward pass against transformers: tiny random llama, mistral, qwen2 and qwen3 models and
//! the tensors transformers computed for them (made by `scripts/make_golden.py`). Logits and every
//! layer's taps must agree within 1e-4; skipping layers must equal deleting them in transformers;
//! greedy generation must give transformers' tokens, with and without the KV cache.

mod common;

use candle_core::{DType, Tensor};
use common::golden::{self, check_head, check_taps, dir, ids, load as golden};
use depthprune::eval::{self, Convention, Run};
use depthprune::model::{generate, open_folder, GenerateOpts, Model, Sampler, Sampling};
use depthprune::progress::Silent;
use depthprune::tokenizer::{HfTokenizer, Message};

const TOL: f32 = 1e-4;
const ARCHS: &[&str] = &["llama", "mistral", "qwen2", "qwen3"];
const SKIP: &[usize] = &[1, 2];

fn check(arch: &str, what: &str, got: &Tensor, want: &Tensor) -> f32 {
    golden::check(arch, what, got, want, TOL)
}

#[test]
fn logits_and_every_layer_tap_match_transformers() {
    for arch in ARCHS {
        let g = golden(arch);
        let model = Model::open(&dir(arch)).unwrap();
        let rows = ids(&g["tokens"]);
        let tokens = model
            .tokens(&rows.iter().map(Vec::as_slice).collect::<Vec<_>>())
            .unwrap();
        check(arch, "embed", &model.embed(&tokens).unwrap(), &g["embed"]);
        let mut seen = Vec::new();
        let n = model.n_layers();
        let (hidden, worst) = check_taps(arch, &model, &g, TOL, &mut |i, output| {
            seen.push(i);
            // transformers' hidden_states[i + 1] is layer i's output, except the last, which is
            // after the final norm.
            if i + 1 < n {
                check(
                    arch,
                    "hidden state",
                    output,
                    &g[&format!("hidden{}", i + 1)],
                );
            }
        });
        assert_eq!(seen, (0..n).collect::<Vec<_>>());
        let e = check_head(arch, &model, &g, &hidden, (TOL, TOL));
        eprintln!("{arch}: max abs error logits {e:.2e}, layer taps {worst:.2e}");
    }
}

#[test]
fn skipping_layers_equals_deleting_them_in_transformers() {
    for arch in ARCHS {
        golden::check_skip(arch, arch, SKIP, TOL);
    }
}

#[test]
fn layers_loaded_on_demand_give_the_same_logits() {
    let g = golden("qwen3");
    let (cfg, source) = open_folder(&dir("qwen3")).unwrap();
    let model = Model::from_source(cfg, source, &|_| false).unwrap();
    let rows = ids(&g["tokens"]);
    let rows: Vec<&[u32]> = rows.iter().map(Vec::as_slice).collect();
    let got = model
        .forward(&model.tokens(&rows).unwrap(), &[], None)
        .unwrap();
    check("qwen3", "logits (one layer at a time)", &got, &g["logits"]);
}

#[test]
fn greedy_generation_matches_transformers_with_and_without_cache() {
    golden::check_generations("", ARCHS);
}

#[test]
fn generation_stops_at_eos_and_on_request() {
    let g = golden("llama");
    let prompt: Vec<u32> = g["generate.prompt"]
        .to_dtype(DType::U32)
        .unwrap()
        .to_vec1()
        .unwrap();
    let want: Vec<u32> = g["generate.tokens"]
        .to_dtype(DType::U32)
        .unwrap()
        .to_vec1()
        .unwrap();
    let model = Model::open(&dir("llama")).unwrap();
    let mut s = Sampler::new(Sampling::greedy()).unwrap();
    let eos = [want[3]];
    let mut opts = GenerateOpts {
        max_new: 50,
        skip: &[],
        eos: &eos,
        use_cache: true,
    };
    let out = generate(&model, &prompt, &opts, &mut s, &mut |_| Ok(true)).unwrap();
    let first = want.iter().position(|&t| t == want[3]).unwrap();
    assert_eq!(out.tokens, want[..=first]);
    assert!(out.stopped_at_eos);
    let mut n = 0;
    opts.eos = &[];
    let out = generate(&model, &prompt, &opts, &mut s, &mut |_| {
        n += 1;
        Ok(n < 2)
    })
    .unwrap();
    assert_eq!(out.tokens.len(), 2);
}

fn expected() -> serde_json::Value {
    let text = std::fs::read_to_string(dir("llama").join("eval_expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn close(got: f64, want: &serde_json::Value, rel: f64, what: &str) {
    let want = want.as_f64().unwrap();
    assert!(
        (got - want).abs() <= rel * want.abs().max(1e-3),
        "{what}: got {got}, transformers {want}"
    );
}

fn eval_tokens() -> (HfTokenizer, Vec<u32>) {
    let tok = HfTokenizer::open(&dir("llama")).unwrap();
    let text = eval::read_text(&dir("").join("eval.txt")).unwrap();
    let ids = eval::tokenize(&tok, &text, None).unwrap();
    (tok, ids)
}

#[test]
fn tokenizer_matches_transformers() {
    let exp = expected();
    let (tok, ids) = eval_tokens();
    let want: Vec<u32> = serde_json::from_value(exp["ids"].clone()).unwrap();
    assert_eq!(ids, want);
    assert_eq!(ids[0], tok.bos_id().unwrap());
    let text = eval::read_text(&dir("").join("eval.txt")).unwrap();
    let prefix = eval::tokenize(&tok, &text, Some(100)).unwrap();
    assert_eq!(prefix, want[..100]);
    let chat = &exp["chat"];
    let rendered = tok
        .render_chat(&[Message {
            role: "user".into(),
            content: chat["prompt"].as_str().unwrap().into(),
        }])
        .unwrap();
    assert_eq!(rendered, chat["rendered"].as_str().unwrap());
    let chat_ids: Vec<u32> = serde_json::from_value(chat["ids"].clone()).unwrap();
    assert_eq!(tok.encode(&rendered, false).unwrap(), chat_ids);
    let head = tok.decode(&ids[..12]).unwrap();
    assert!(head.len() > 12 && text.starts_with(&head), "{head:?}");
}

#[test]
fn perplexity_and_divergence_match_transformers() {
    let exp = expected();
    let (_, ids) = eval_tokens();
    let model = Model::open(&dir("llama")).unwrap();
    // The model with `skip`ped layers in windows of 16 tokens strided by `stride`, against the
    // dense model when `reference`; the windows and tokens scored must be transformers' (`want`).
    let evaluate = |skip: &[usize], reference: bool, stride, batch, want: &serde_json::Value| {
        let conv = Convention::new(16, stride).unwrap();
        let windows = eval::plan(ids.len(), conv).unwrap();
        let run = |skip| Run {
            model: &model,
            skip,
        };
        let dense = reference.then(|| run(&[]));
        let r = eval::evaluate(run(skip), dense, &ids, &windows, conv, batch, &Silent).unwrap();
        assert_eq!(r.windows as u64, want["windows"].as_u64().unwrap());
        assert_eq!(r.tokens_evaluated as u64, want["tokens"].as_u64().unwrap());
        r
    };
    let c = &exp["chunks"];
    for batch in [1, 4] {
        let r = evaluate(SKIP, true, None, batch, c);
        close(r.perplexity, &c["skip_perplexity"], 1e-5, "skip perplexity");
        let d = r.divergence.unwrap();
        close(
            d.reference_perplexity,
            &c["dense_perplexity"],
            1e-5,
            "dense perplexity",
        );
        close(d.mean_kl, &c["mean_kl"], 1e-4, "mean KL");
        let n = r.tokens_evaluated as f64;
        assert!(
            (d.top1_agreement - c["top1_agreement"].as_f64().unwrap()).abs() <= 1.0 / n + 1e-12
        );
    }
    let s = &exp["sliding"];
    let r = evaluate(&[], false, Some(6), 3, s);
    close(r.perplexity, &s["perplexity"], 1e-5, "sliding perplexity");
    assert!(r.divergence.is_none());
}

#[test]
fn bad_token_ids_and_skip_lists_are_errors() {
    let model = Model::open(&dir("qwen2")).unwrap();
    let err = model.tokens(&[&[1, 300]]).unwrap_err().to_string();
    assert!(err.contains("300") && err.contains("vocabulary"), "{err}");
    let ids = model.tokens(&[&[1, 2]]).unwrap();
    assert!(model
        .forward(&ids, &[0, 1, 2, 3], None)
        .unwrap_err()
        .to_string()
        .contains("all 4 layers"));
    assert!(model
        .forward(&ids, &[4], None)
        .unwrap_err()
        .to_string()
        .contains("layer 4"));
}
