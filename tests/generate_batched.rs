//! Prompts generating as one left-padded batch give the texts each gives alone: on families with
//! full attention, sliding windows with a second RoPE (Gemma 3), layers without RoPE (SmolLM3),
//! with generations that stop at different steps and leave the batch, and with skipped layers;
//! Phi-3's LongRoPE, which padding would change, runs one prompt at a time.

use depthprune::eval::generate_until::{generate_batched, generate_until, GenOpts};
use depthprune::model::{Model, Sampling};
use depthprune::tokenizer::open_tokenizer;
use std::path::PathBuf;

fn golden(name: &str) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden");
    match name {
        "llama" | "qwen3" => root.join(name),
        _ => root.join("families").join(name),
    }
}

const PROMPTS: [&str; 5] = [
    "def add(a, b):\n    \"\"\"Return the sum of a and b.\"\"\"\n",
    "The capital of France is",
    "x",
    "Once upon a time, in a land far away, there lived a king who had three daughters and",
    "import os\nimport sys\n\nfor line in sys.stdin:",
];

#[test]
fn batched_generation_equals_one_prompt_at_a_time() {
    for family in ["llama", "qwen3", "gemma3", "phi3", "smollm3"] {
        let dir = golden(family);
        let model = Model::open(&dir).unwrap();
        // The tiny models share one 300-token vocabulary; only the llama folder has its tokenizer.
        let (tok, _) = open_tokenizer(&golden("llama")).unwrap();
        let prompts: Vec<Vec<u32>> = PROMPTS
            .iter()
            .map(|p| tok.encode(p, true).unwrap())
            .collect();
        // Stop strings a random model writes often, so generations end at different steps.
        let until: Vec<String> = ["e", "a", "o"].map(String::from).to_vec();
        for skip in [vec![], vec![1]] {
            let opts = GenOpts {
                until: &until,
                max_gen_toks: 12,
                max_len: 256,
                n: 1,
                sampling: Sampling::greedy(),
                skip: &skip,
            };
            let alone: Vec<String> = (prompts.iter())
                .map(|p| generate_until(&model, &tok, p, &opts).unwrap().remove(0))
                .collect();
            let mut order = Vec::new();
            let together =
                generate_batched(&model, &tok, &prompts, &opts, 3, &mut |i| order.push(i)).unwrap();
            assert_eq!(together, alone, "{family}, skipping {skip:?}");
            order.sort_unstable();
            assert_eq!(
                order,
                [0, 1, 2, 3, 4],
                "{family}: each prompt finishes once"
            );
            let lens: std::collections::BTreeSet<usize> = alone.iter().map(String::len).collect();
            assert!(
                lens.len() > 1,
                "{family}: generations should end at different steps"
            );
        }
    }
}

/// The logits of `rows` of `tokens` after a prefill and one step, alone or left-padded together.
fn step_logits(model: &Model, prompts: &[Vec<u32>], padded: bool) -> Vec<Vec<f32>> {
    use depthprune::model::KvCache;
    let last = |h: &candle_core::Tensor| -> Vec<Vec<f32>> {
        let t = h.dim(1).unwrap();
        let l = model.logits(&h.narrow(1, t - 1, 1).unwrap()).unwrap();
        l.squeeze(1).unwrap().to_vec2().unwrap()
    };
    let run = |rows: &[Vec<u32>], pad: Vec<usize>| -> Vec<Vec<f32>> {
        let mut cache = KvCache::left_padded(model.n_layers(), pad);
        let refs: Vec<&[u32]> = rows.iter().map(Vec::as_slice).collect();
        let h = model
            .forward_hidden(
                &model.tokens(&refs).unwrap(),
                &[],
                Some(&mut cache),
                &mut |_| Ok(()),
            )
            .unwrap();
        let mut out = last(&h);
        let next: Vec<[u32; 1]> = (0..rows.len()).map(|i| [7 + i as u32]).collect();
        let next: Vec<&[u32]> = next.iter().map(|r| r.as_slice()).collect();
        let h = model
            .forward_hidden(
                &model.tokens(&next).unwrap(),
                &[],
                Some(&mut cache),
                &mut |_| Ok(()),
            )
            .unwrap();
        out.extend(last(&h));
        out
    };
    if !padded {
        let mut firsts = Vec::new();
        let mut seconds = Vec::new();
        for (i, p) in prompts.iter().enumerate() {
            let mut one = run(std::slice::from_ref(p), vec![0]);
            // Row 0's step token is 7; row i's is 7 + i: run it alone with that token.
            let mut cache = depthprune::model::KvCache::new(model.n_layers());
            let h = model
                .forward_hidden(
                    &model.tokens(&[p.as_slice()]).unwrap(),
                    &[],
                    Some(&mut cache),
                    &mut |_| Ok(()),
                )
                .unwrap();
            let tok = [7 + i as u32];
            let h2 = model
                .forward_hidden(
                    &model.tokens(&[&tok[..]]).unwrap(),
                    &[],
                    Some(&mut cache),
                    &mut |_| Ok(()),
                )
                .unwrap();
            let _ = h;
            firsts.push(one.remove(0));
            seconds.push(last(&h2).remove(0));
        }
        firsts.extend(seconds);
        return firsts;
    }
    let width = prompts.iter().map(Vec::len).max().unwrap();
    let pad: Vec<usize> = prompts.iter().map(|p| width - p.len()).collect();
    let rows: Vec<Vec<u32>> = (prompts.iter().zip(&pad))
        .map(|(p, &n)| [vec![0; n], p.clone()].concat())
        .collect();
    run(&rows, pad)
}

#[test]
fn left_padded_logits_equal_the_prompt_alone() {
    let (tok, _) = open_tokenizer(&golden("llama")).unwrap();
    let prompts: Vec<Vec<u32>> = PROMPTS
        .iter()
        .map(|p| tok.encode(p, true).unwrap())
        .collect();
    for family in [
        "llama", "qwen3", "gemma2", "gemma3", "phi3", "smollm3", "olmo2", "granite",
    ] {
        let model = Model::open(&golden(family)).unwrap();
        // LongRoPE's frequencies depend on the last position: generation runs such a model one
        // prompt at a time, and padding must show here.
        if !model.left_padding_exact() {
            assert_eq!(family, "phi3");
            let alone = step_logits(&model, &prompts, false);
            let together = step_logits(&model, &prompts, true);
            assert_ne!(alone, together, "{family}");
            continue;
        }
        let alone = step_logits(&model, &prompts, false);
        let together = step_logits(&model, &prompts, true);
        let mut worst = 0f32;
        for (a, b) in alone.iter().zip(&together) {
            for (x, y) in a.iter().zip(b) {
                worst = worst.max((x - y).abs());
            }
        }
        assert!(worst < 1e-4, "{family}: logits differ by {worst}");
    }
}
