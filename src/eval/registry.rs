//! The task registry: one row per lm-evaluation-harness task, as `arch/registry.rs` holds one row
//! per architecture. A row says where the task's data lives on the Hub, which fields a record
//! has, how a record becomes a prompt (`doc_to_text`, `doc_to_target`, `doc_to_choice`, in
//! [`super::prompts`]), the target and few-shot delimiters, where few-shot examples come from,
//! and which metrics score it. Each row names the lm-eval task file it follows; the prompts are
//! that file's to the character. The scorers ([`super::choice`], [`super::generate_until`]) never
//! know a task by name: they read its row.

use super::{data, prompts};
use serde_json::{Map, Value};

/// One record of a dataset, in the Hub dataset's own schema.
pub type Record = Map<String, Value>;

/// A row's `doc_to_choice`.
pub type ChoiceFn = fn(&Record) -> Result<Vec<String>, String>;
/// A row's `doc_to_text`.
pub type TextFn = fn(&Record) -> Result<DocText, String>;
/// A row's `doc_to_target`.
pub type TargetFn = fn(&Record) -> Result<DocTarget, String>;
/// A row's subtask of a record.
pub type SubtaskFn = fn(&Record) -> Result<String, String>;

/// What lm-eval's `doc_to_text` returns: the context, or (for tasks whose choices are contexts,
/// as WinoGrande's) the index of the right choice.
#[derive(Debug, Clone, PartialEq)]
pub enum DocText {
    Text(String),
    Index(usize),
}

/// What lm-eval's `doc_to_target` returns: an index into the choices, or text.
#[derive(Debug, Clone, PartialEq)]
pub enum DocTarget {
    Index(usize),
    Text(String),
}

/// The kind of requests a task makes (lm-eval's `output_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// One `loglikelihood` request per choice; the best one is the answer.
    MultipleChoice,
    /// One `loglikelihood` request: the target's log-likelihood and whether greedy decoding
    /// would have produced it.
    Loglikelihood,
    /// `generate_until`: free text, cut at the first stop sequence, then scored.
    GenerateUntil,
}

/// Where the task's data lives on the Hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubData {
    /// The dataset repository (`datasets/{repo}` on the Hub).
    pub repo: &'static str,
    /// The dataset config (`dataset_name`), if any.
    pub config: Option<&'static str>,
    /// The split that is scored.
    pub split: &'static str,
    /// The split few-shot examples come from, if any.
    pub fewshot_split: Option<&'static str>,
}

/// How few-shot examples are drawn from the few-shot split (lm-eval's samplers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sampler {
    /// The first n records (`first_n`, MMLU), of the same subtask.
    FirstN,
    /// `random.Random(seed).sample(pool, n)` for each question in turn, the generator shared
    /// across questions (lm-eval's default sampler, seed 1234).
    Random { seed: u64 },
}

/// How a generation task's output is scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GenScore {
    /// Run `prompt + completion + "\n" + target` with `python3` and count passes (`pass@k`).
    Execute,
    /// Extract an answer with each filter and compare it with the reference (`exact_match`).
    ExactMatch(&'static prompts::MatchRule),
}

/// How a generation task generates and is scored.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Generation {
    /// Stop sequences (`until`); the tokenizer's EOS text is added as lm-eval's HF model does.
    pub until: &'static [&'static str],
    /// New tokens at most (`max_gen_toks`).
    pub max_gen_toks: usize,
    pub score: GenScore,
}

/// A metric a task reports, under lm-eval's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    Acc,
    AccNorm,
    Perplexity,
    ExactMatch,
    PassAtK,
}

impl Metric {
    pub fn name(self) -> &'static str {
        match self {
            Metric::Acc => "acc",
            Metric::AccNorm => "acc_norm",
            Metric::Perplexity => "perplexity",
            Metric::ExactMatch => "exact_match",
            Metric::PassAtK => "pass@k",
        }
    }
}

/// One task, as an lm-eval task YAML declares it.
#[derive(Debug, Clone, Copy)]
pub struct TaskSpec {
    /// The lm-eval task name (`--tasks NAME`).
    pub name: &'static str,
    /// The lm-eval file this row follows, relative to the harness's repository.
    pub follows: &'static str,
    pub hub: HubData,
    /// The fields a record must have (checked before anything else, to name what is missing).
    pub fields: &'static [&'static str],
    /// Turns a record of another known export into the Hub schema (`None` skips it).
    pub adapt: fn(Record) -> Result<Option<Record>, String>,
    pub output: Output,
    pub doc_to_text: TextFn,
    pub doc_to_target: TargetFn,
    pub doc_to_choice: Option<ChoiceFn>,
    /// A record's subtask (MMLU's subject): few-shot examples come from the same subtask.
    pub subtask: Option<SubtaskFn>,
    /// Text before the examples (lm-eval's `description`), from the record's subtask.
    pub description: Option<fn(&str) -> String>,
    /// Between a question and its answer (lm-eval's `target_delimiter`).
    pub target_delimiter: &'static str,
    /// After each few-shot example (lm-eval's `fewshot_delimiter`).
    pub fewshot_delimiter: &'static str,
    /// Few-shot examples unless told otherwise (lm-eval's `num_fewshot`).
    pub num_fewshot: usize,
    pub sampler: Sampler,
    pub generation: Option<Generation>,
    pub metrics: &'static [Metric],
    /// Whether it runs model-written code (lm-eval's `unsafe_code`).
    pub unsafe_code: bool,
}

/// Rows are the same task when their names are.
impl PartialEq for TaskSpec {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

const DEFAULT_SAMPLER: Sampler = Sampler::Random { seed: 1234 };

/// A multiple-choice row with lm-eval's defaults; other kinds override fields.
#[allow(clippy::too_many_arguments)]
const fn choice_task(
    name: &'static str,
    follows: &'static str,
    hub: HubData,
    fields: &'static [&'static str],
    doc_to_text: TextFn,
    doc_to_target: TargetFn,
    doc_to_choice: ChoiceFn,
    metrics: &'static [Metric],
) -> TaskSpec {
    TaskSpec {
        name,
        follows,
        hub,
        fields,
        adapt: data::as_is,
        output: Output::MultipleChoice,
        doc_to_text,
        doc_to_target,
        doc_to_choice: Some(doc_to_choice),
        subtask: None,
        description: None,
        target_delimiter: " ",
        fewshot_delimiter: "\n\n",
        num_fewshot: 0,
        sampler: DEFAULT_SAMPLER,
        generation: None,
        metrics,
        unsafe_code: false,
    }
}

const fn hub(
    repo: &'static str,
    config: Option<&'static str>,
    split: &'static str,
    fewshot_split: Option<&'static str>,
) -> HubData {
    HubData {
        repo,
        config,
        split,
        fewshot_split,
    }
}

const ACC: &[Metric] = &[Metric::Acc];
const ACC_NORM: &[Metric] = &[Metric::Acc, Metric::AccNorm];
const ARC_FIELDS: &[&str] = &["question", "choices", "answerKey"];

/// Every task, in the order `--help` lists them.
pub const TASKS: &[TaskSpec] = &[
    TaskSpec {
        subtask: Some(prompts::mmlu_subject),
        description: Some(prompts::mmlu_description),
        sampler: Sampler::FirstN,
        adapt: data::mmlu,
        ..choice_task(
            "mmlu",
            "lm_eval/tasks/mmlu/default/_default_template_yaml",
            hub("cais/mmlu", Some("all"), "test", Some("dev")),
            &["question", "subject", "choices", "answer"],
            prompts::mmlu_text,
            prompts::mmlu_target,
            prompts::mmlu_choices,
            ACC,
        )
    },
    choice_task(
        "arc_easy",
        "lm_eval/tasks/arc/arc_easy.yaml",
        hub("allenai/ai2_arc", Some("ARC-Easy"), "test", Some("train")),
        ARC_FIELDS,
        prompts::arc_text,
        prompts::arc_target,
        prompts::arc_choices,
        ACC_NORM,
    ),
    choice_task(
        "arc_challenge",
        "lm_eval/tasks/arc/arc_challenge.yaml",
        hub(
            "allenai/ai2_arc",
            Some("ARC-Challenge"),
            "test",
            Some("train"),
        ),
        ARC_FIELDS,
        prompts::arc_text,
        prompts::arc_target,
        prompts::arc_choices,
        ACC_NORM,
    ),
    choice_task(
        "hellaswag",
        "lm_eval/tasks/hellaswag/hellaswag.yaml",
        hub("Rowan/hellaswag", None, "validation", Some("train")),
        &["activity_label", "ctx_a", "ctx_b", "endings", "label"],
        prompts::hellaswag_text,
        prompts::hellaswag_target,
        prompts::hellaswag_choices,
        ACC_NORM,
    ),
    choice_task(
        "winogrande",
        "lm_eval/tasks/winogrande/default.yaml",
        hub(
            "allenai/winogrande",
            Some("winogrande_xl"),
            "validation",
            Some("train"),
        ),
        &["sentence", "option1", "option2", "answer"],
        prompts::winogrande_text,
        prompts::winogrande_target,
        prompts::winogrande_choices,
        ACC,
    ),
    choice_task(
        "piqa",
        "lm_eval/tasks/piqa/piqa.yaml",
        hub("baber/piqa", None, "validation", Some("train")),
        &["goal", "sol1", "sol2", "label"],
        prompts::piqa_text,
        prompts::label_target,
        prompts::piqa_choices,
        ACC_NORM,
    ),
    choice_task(
        "boolq",
        "lm_eval/tasks/super_glue/boolq/default.yaml",
        hub("aps/super_glue", Some("boolq"), "validation", Some("train")),
        &["passage", "question", "label"],
        prompts::boolq_text,
        prompts::label_target,
        prompts::boolq_choices,
        ACC,
    ),
    choice_task(
        "openbookqa",
        "lm_eval/tasks/openbookqa/openbookqa.yaml",
        hub("allenai/openbookqa", Some("main"), "test", Some("train")),
        &["question_stem", "choices", "answerKey"],
        prompts::openbookqa_text,
        prompts::openbookqa_target,
        prompts::arc_choices,
        ACC_NORM,
    ),
    TaskSpec {
        output: Output::Loglikelihood,
        doc_to_choice: None,
        ..choice_task(
            "lambada_openai",
            "lm_eval/tasks/lambada/lambada_openai.yaml",
            hub("EleutherAI/lambada_openai", Some("default"), "test", None),
            &["text"],
            prompts::lambada_text,
            prompts::lambada_target,
            prompts::no_choices,
            &[Metric::Perplexity, Metric::Acc],
        )
    },
    TaskSpec {
        output: Output::GenerateUntil,
        doc_to_choice: None,
        generation: Some(Generation {
            until: &["\nclass", "\ndef", "\n#", "\nif", "\nprint"],
            max_gen_toks: 1024,
            score: GenScore::Execute,
        }),
        unsafe_code: true,
        ..choice_task(
            "humaneval",
            "lm_eval/tasks/humaneval/humaneval.yaml",
            hub("openai/openai_humaneval", None, "test", None),
            &["task_id", "prompt", "test", "entry_point"],
            prompts::humaneval_text,
            prompts::humaneval_target,
            prompts::no_choices,
            &[Metric::PassAtK],
        )
    },
    TaskSpec {
        output: Output::GenerateUntil,
        doc_to_choice: None,
        num_fewshot: 5,
        generation: Some(Generation {
            until: &["Question:", "</s>", "<|im_end|>"],
            max_gen_toks: 256,
            score: GenScore::ExactMatch(&prompts::GSM8K_MATCH),
        }),
        ..choice_task(
            "gsm8k",
            "lm_eval/tasks/gsm8k/gsm8k.yaml",
            hub("openai/gsm8k", Some("main"), "test", Some("train")),
            &["question", "answer"],
            prompts::gsm8k_text,
            prompts::gsm8k_target,
            prompts::no_choices,
            &[Metric::ExactMatch],
        )
    },
];

/// The row of task `name`.
pub fn find(name: &str) -> Option<&'static TaskSpec> {
    TASKS.iter().find(|t| t.name == name)
}

/// The task names, comma-separated, for messages.
pub fn names() -> String {
    TASKS.iter().map(|t| t.name).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_rows_are_consistent() {
        for (i, t) in TASKS.iter().enumerate() {
            assert!(TASKS[..i].iter().all(|u| u.name != t.name), "{}", t.name);
            assert!(t.follows.starts_with("lm_eval/tasks/"), "{}", t.name);
            assert_eq!(
                t.output == Output::MultipleChoice,
                t.doc_to_choice.is_some(),
                "{}",
                t.name
            );
            assert_eq!(
                t.output == Output::GenerateUntil,
                t.generation.is_some(),
                "{}",
                t.name
            );
            if t.num_fewshot > 0 || t.sampler == Sampler::FirstN {
                assert!(t.hub.fewshot_split.is_some(), "{}", t.name);
            }
        }
        assert!(find("mmlu").is_some() && find("MMLU").is_none());
        assert!(names().starts_with("mmlu, arc_easy"));
    }
}
