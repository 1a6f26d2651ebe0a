//! The registry's `doc_to_text`, `doc_to_target` and `doc_to_choice` functions, one set per task,
//! each written from the lm-eval task file its row cites, and gsm8k's answer extraction. A
//! function reads a record in the Hub dataset's own schema and fails with a message naming the
//! field when the record does not fit.

use super::registry::{DocTarget, DocText, Record};
use super::tasks::{capitalize, clean};
use serde_json::Value;

type R<T> = Result<T, String>;

fn field<'a>(o: &'a Record, key: &str) -> R<&'a Value> {
    o.get(key).ok_or_else(|| format!("missing field `{key}`"))
}

fn string<'a>(o: &'a Record, key: &str) -> R<&'a str> {
    field(o, key)?
        .as_str()
        .ok_or_else(|| format!("field `{key}` must be a string"))
}

fn strings(v: &Value, key: &str) -> R<Vec<String>> {
    let bad = || format!("field `{key}` must be a list of strings");
    v.as_array()
        .ok_or_else(bad)?
        .iter()
        .map(|c| c.as_str().map(String::from).ok_or_else(bad))
        .collect()
}

/// A class label: a non-negative integer, or a string of digits.
fn label(o: &Record, key: &str) -> R<usize> {
    let v = field(o, key)?;
    let n = match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse::<u64>().ok(),
        Value::Bool(b) => Some(u64::from(*b)),
        _ => None,
    };
    n.map(|n| n as usize)
        .ok_or_else(|| format!("field `{key}` must be a non-negative integer, found {v}"))
}

/// `{"text": [...], "label": [...]}`: the texts and the labels.
fn labelled_choices(o: &Record) -> R<(Vec<String>, Vec<String>)> {
    let c = field(o, "choices")?
        .as_object()
        .ok_or("field `choices` must be `{\"text\": [...], \"label\": [...]}`")?;
    let text = strings(field(c, "text")?, "choices.text")?;
    let labels = strings(field(c, "label")?, "choices.label")?;
    if text.len() != labels.len() {
        return Err(format!(
            "`choices` has {} texts and {} labels",
            text.len(),
            labels.len()
        ));
    }
    Ok((text, labels))
}

fn label_index(o: &Record, key: &str) -> R<DocTarget> {
    let (_, labels) = labelled_choices(o)?;
    labels
        .iter()
        .position(|l| l == key)
        .map(DocTarget::Index)
        .ok_or_else(|| format!("answerKey `{key}` is not one of the labels {labels:?}"))
}

// --- MMLU: lm_eval/tasks/mmlu/default/_default_template_yaml -------------------------------

/// `{{question.strip()}}\nA. {{choices[0]}}\nB. ...\nD. {{choices[3]}}\nAnswer:`
pub fn mmlu_text(o: &Record) -> R<DocText> {
    let q = string(o, "question")?;
    let c = strings(field(o, "choices")?, "choices")?;
    if c.len() != 4 {
        return Err(format!("needs 4 choices, found {}", c.len()));
    }
    Ok(DocText::Text(format!(
        "{}\nA. {}\nB. {}\nC. {}\nD. {}\nAnswer:",
        q.trim(),
        c[0],
        c[1],
        c[2],
        c[3]
    )))
}

pub fn mmlu_target(o: &Record) -> R<DocTarget> {
    Ok(DocTarget::Index(label(o, "answer")?))
}

pub fn mmlu_choices(_: &Record) -> R<Vec<String>> {
    Ok(["A", "B", "C", "D"].map(String::from).to_vec())
}

pub fn mmlu_subject(o: &Record) -> R<String> {
    Ok(string(o, "subject")?.to_string())
}

/// `lm_eval/tasks/mmlu/_generate_configs.py`: the subject's words joined by spaces.
pub fn mmlu_description(subject: &str) -> String {
    format!(
        "The following are multiple choice questions (with answers) about {}.\n\n",
        subject.split('_').collect::<Vec<_>>().join(" ")
    )
}

// --- ARC: lm_eval/tasks/arc/arc_easy.yaml; OpenBookQA: lm_eval/tasks/openbookqa/openbookqa.yaml --

pub fn arc_text(o: &Record) -> R<DocText> {
    Ok(DocText::Text(format!(
        "Question: {}\nAnswer:",
        string(o, "question")?
    )))
}

/// `{{choices.label.index(answerKey)}}`
pub fn arc_target(o: &Record) -> R<DocTarget> {
    label_index(o, string(o, "answerKey")?)
}

/// `{{choices.text}}`
pub fn arc_choices(o: &Record) -> R<Vec<String>> {
    Ok(labelled_choices(o)?.0)
}

pub fn openbookqa_text(o: &Record) -> R<DocText> {
    Ok(DocText::Text(string(o, "question_stem")?.to_string()))
}

/// `{{choices.label.index(answerKey.lstrip())}}`
pub fn openbookqa_target(o: &Record) -> R<DocTarget> {
    label_index(o, string(o, "answerKey")?.trim_start())
}

// --- HellaSwag: lm_eval/tasks/hellaswag/hellaswag.yaml and utils.py --------------------------

/// `preprocess(activity_label + ": " + ctx_a + " " + ctx_b.capitalize())`
pub fn hellaswag_text(o: &Record) -> R<DocText> {
    let ctx = format!(
        "{} {}",
        string(o, "ctx_a")?,
        capitalize(string(o, "ctx_b")?)
    );
    Ok(DocText::Text(clean(&format!(
        "{}: {ctx}",
        string(o, "activity_label")?
    ))))
}

pub fn hellaswag_target(o: &Record) -> R<DocTarget> {
    Ok(DocTarget::Index(label(o, "label")?))
}

pub fn hellaswag_choices(o: &Record) -> R<Vec<String>> {
    Ok(strings(field(o, "endings")?, "endings")?
        .iter()
        .map(|e| clean(e))
        .collect())
}

// --- WinoGrande: lm_eval/tasks/winogrande/default.yaml and preprocess_winogrande.py -----------

fn blank(o: &Record) -> R<(&str, usize)> {
    let s = string(o, "sentence")?;
    let idx = s.find('_').ok_or("field `sentence` has no `_` blank")?;
    Ok((s, idx))
}

/// The right option's index: the choices are the contexts here.
pub fn winogrande_text(o: &Record) -> R<DocText> {
    match string(o, "answer")? {
        "1" => Ok(DocText::Index(0)),
        "2" => Ok(DocText::Index(1)),
        a => Err(format!(
            "field `answer` must be \"1\" or \"2\", found {a:?}"
        )),
    }
}

/// The sentence after the blank, stripped: the continuation both options share.
pub fn winogrande_target(o: &Record) -> R<DocTarget> {
    let (s, idx) = blank(o)?;
    Ok(DocTarget::Text(s[idx + 1..].trim().to_string()))
}

/// The sentence up to the blank with each option put in.
pub fn winogrande_choices(o: &Record) -> R<Vec<String>> {
    let (s, idx) = blank(o)?;
    Ok(vec![
        format!("{}{}", &s[..idx], string(o, "option1")?),
        format!("{}{}", &s[..idx], string(o, "option2")?),
    ])
}

// --- PIQA: lm_eval/tasks/piqa/piqa.yaml; BoolQ: lm_eval/tasks/super_glue/boolq/default.yaml ---

pub fn piqa_text(o: &Record) -> R<DocText> {
    Ok(DocText::Text(format!(
        "Question: {}\nAnswer:",
        string(o, "goal")?
    )))
}

pub fn piqa_choices(o: &Record) -> R<Vec<String>> {
    Ok(vec![
        string(o, "sol1")?.to_string(),
        string(o, "sol2")?.to_string(),
    ])
}

pub fn label_target(o: &Record) -> R<DocTarget> {
    Ok(DocTarget::Index(label(o, "label")?))
}

pub fn boolq_text(o: &Record) -> R<DocText> {
    Ok(DocText::Text(format!(
        "{}\nQuestion: {}?\nAnswer:",
        string(o, "passage")?,
        string(o, "question")?
    )))
}

pub fn boolq_choices(_: &Record) -> R<Vec<String>> {
    Ok(vec!["no".into(), "yes".into()])
}

// --- LAMBADA: lm_eval/tasks/lambada/lambada_openai.yaml ----------------------------------------

/// `{{text.split(' ')[:-1]|join(' ')}}`
pub fn lambada_text(o: &Record) -> R<DocText> {
    let t = string(o, "text")?;
    Ok(DocText::Text(match t.rfind(' ') {
        Some(i) => t[..i].to_string(),
        None => String::new(),
    }))
}

/// `{{' '+text.split(' ')[-1]}}`
pub fn lambada_target(o: &Record) -> R<DocTarget> {
    let t = string(o, "text")?;
    Ok(DocTarget::Text(format!(
        " {}",
        t.rsplit(' ').next().unwrap_or(t)
    )))
}

pub fn no_choices(_: &Record) -> R<Vec<String>> {
    Ok(Vec::new())
}

// --- HumanEval: lm_eval/tasks/humaneval/humaneval.yaml ------------------------------------------

pub fn humaneval_text(o: &Record) -> R<DocText> {
    Ok(DocText::Text(string(o, "prompt")?.to_string()))
}

/// `{{test}}\ncheck({{entry_point}})`
pub fn humaneval_target(o: &Record) -> R<DocTarget> {
    Ok(DocTarget::Text(format!(
        "{}\ncheck({})",
        string(o, "test")?,
        string(o, "entry_point")?
    )))
}

// --- GSM8K: lm_eval/tasks/gsm8k/gsm8k.yaml -----------------------------------------------------

pub fn gsm8k_text(o: &Record) -> R<DocText> {
    Ok(DocText::Text(format!(
        "Question: {}\nAnswer:",
        string(o, "question")?
    )))
}

pub fn gsm8k_target(o: &Record) -> R<DocTarget> {
    Ok(DocTarget::Text(string(o, "answer")?.to_string()))
}

/// One of lm-eval's `regex` filters: `findall`, then the match at `group_select` (negative from
/// the end); of a match with several groups, the first non-empty one; stripped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Filter {
    pub name: &'static str,
    pub pattern: &'static str,
    pub group_select: i32,
}

/// How an exact-match task compares an answer with the reference: each filter extracts an
/// answer (`[invalid]` when nothing matches), then both sides lose the `ignore` patterns and,
/// with `ignore_case`, their case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatchRule {
    pub filters: &'static [Filter],
    pub ignore: &'static [&'static str],
    pub ignore_case: bool,
}

pub const GSM8K_MATCH: MatchRule = MatchRule {
    filters: &[
        Filter {
            name: "strict-match",
            pattern: r"#### (\-?[0-9\.\,]+)",
            group_select: 0,
        },
        Filter {
            name: "flexible-extract",
            pattern: r"(-?[$0-9.,]{2,})|(-?[0-9]+)",
            group_select: -1,
        },
    ],
    ignore: &[",", r"\$", "(?s).*#### ", r"\.$"],
    ignore_case: true,
};

/// What `filter` extracts from `text`.
pub fn extract(filter: &Filter, text: &str) -> String {
    const FALLBACK: &str = "[invalid]";
    // The patterns are constants of this file; a test compiles each.
    let Ok(re) = regex::Regex::new(filter.pattern) else {
        return FALLBACK.into();
    };
    let groups = re.captures_len() - 1;
    let found: Vec<String> = re
        .captures_iter(text)
        .map(|c| match groups {
            0 => c[0].to_string(),
            1 => c.get(1).map_or("", |m| m.as_str()).to_string(),
            _ => (1..=groups)
                .filter_map(|g| c.get(g).map(|m| m.as_str()))
                .find(|s| !s.is_empty())
                .unwrap_or(FALLBACK)
                .to_string(),
        })
        .collect();
    let at = if filter.group_select < 0 {
        found
            .len()
            .checked_sub(filter.group_select.unsigned_abs() as usize)
    } else {
        Some(filter.group_select as usize)
    };
    match at.and_then(|i| found.get(i)) {
        Some(m) => m.trim().to_string(),
        None => FALLBACK.into(),
    }
}

/// `text` with the rule's `ignore` patterns removed and, under `ignore_case`, lower-cased.
pub fn normalise(rule: &MatchRule, text: &str) -> String {
    let mut s = text.to_string();
    for pat in rule.ignore {
        if let Ok(re) = regex::Regex::new(pat) {
            s = re.replace_all(&s, "").into_owned();
        }
    }
    if rule.ignore_case {
        s = s.to_lowercase();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rec(v: Value) -> Record {
        v.as_object().unwrap().clone()
    }

    fn text(t: DocText) -> String {
        match t {
            DocText::Text(s) => s,
            DocText::Index(i) => panic!("index {i}"),
        }
    }

    #[test]
    fn mmlu_prompt_is_lm_evals_letter_format() {
        let r = rec(
            json!({"question": "  What is 2+2? ", "subject": "college_mathematics",
            "choices": ["1", "2", "3", "4"], "answer": 3}),
        );
        assert_eq!(
            text(mmlu_text(&r).unwrap()),
            "What is 2+2?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer:"
        );
        assert_eq!(mmlu_target(&r).unwrap(), DocTarget::Index(3));
        assert_eq!(
            mmlu_description(&mmlu_subject(&r).unwrap()),
            "The following are multiple choice questions (with answers) about college mathematics.\n\n"
        );
        let bad = rec(json!({"question": "q", "choices": ["1"], "answer": 0}));
        assert!(mmlu_text(&bad).unwrap_err().contains("4 choices"));
    }

    #[test]
    fn winogrande_puts_each_option_into_the_context() {
        let r = rec(
            json!({"sentence": "Sarah was a much better surgeon than Maria so _ always got the harder cases.",
            "option1": "Sarah", "option2": "Maria", "answer": "1"}),
        );
        assert_eq!(winogrande_text(&r).unwrap(), DocText::Index(0));
        assert_eq!(
            winogrande_choices(&r).unwrap(),
            [
                "Sarah was a much better surgeon than Maria so Sarah",
                "Sarah was a much better surgeon than Maria so Maria"
            ]
        );
        assert_eq!(
            winogrande_target(&r).unwrap(),
            DocTarget::Text("always got the harder cases.".into())
        );
    }

    #[test]
    fn lambada_splits_off_the_last_word_on_single_spaces() {
        let r = rec(json!({"text": "he said  hello world"}));
        assert_eq!(text(lambada_text(&r).unwrap()), "he said  hello");
        assert_eq!(
            lambada_target(&r).unwrap(),
            DocTarget::Text(" world".into())
        );
    }

    #[test]
    fn openbookqa_and_arc_find_the_label() {
        let r = rec(json!({"question_stem": "Why?", "answerKey": " B",
            "choices": {"text": ["x", "y"], "label": ["A", "B"]}}));
        assert_eq!(text(openbookqa_text(&r).unwrap()), "Why?");
        assert_eq!(openbookqa_target(&r).unwrap(), DocTarget::Index(1));
        let e = arc_target(&rec(json!({"answerKey": "C",
            "choices": {"text": ["x", "y"], "label": ["A", "B"]}})))
        .unwrap_err();
        assert!(e.contains("answerKey `C`"), "{e}");
    }

    #[test]
    fn gsm8k_filters_extract_as_lm_eval_does() {
        let [strict, flexible] = GSM8K_MATCH.filters else {
            panic!()
        };
        let out = "She pays $1,200 a month.\n#### 1,200\n\nQuestion";
        assert_eq!(extract(strict, out), "1,200");
        assert_eq!(extract(flexible, "3 apples and 12 pears, so 15."), "15.");
        assert_eq!(extract(flexible, "it is 7"), "7");
        assert_eq!(extract(strict, "no marker 42"), "[invalid]");
        assert_eq!(extract(flexible, "none"), "[invalid]");
        let gold = "Natalia sold 48/2 = <<48/2=24>>24 clips.\n#### 72";
        assert_eq!(normalise(&GSM8K_MATCH, gold), "72");
        assert_eq!(normalise(&GSM8K_MATCH, "$1,200."), "1200");
        for pat in GSM8K_MATCH.ignore {
            regex::Regex::new(pat).unwrap();
        }
    }
}
