//! Multiple-choice task files: JSON Lines, one question per line, read into [`TaskItem`]s.
//!
//! Our own record is `{"context": str, "choices": [str, ...], "gold": int}` with an optional
//! `"id"` (string or number). `gold` is the 0-based index of the right choice and may also be
//! a string of digits. Blank lines are skipped. The public exports of four common benchmarks are
//! read as they come, mapped the way lm-evaluation-harness's zero-shot tasks build their prompts:
//!
//! | format    | recognised by        | context                                   | choices          | gold |
//! |-----------|----------------------|-------------------------------------------|------------------|------|
//! | HellaSwag | `endings`            | `activity_label: ctx_a Ctx_b` (or `ctx`), cleaned as lm-eval's `preprocess` | `endings`, cleaned | `label` (int or digit string) |
//! | PIQA      | `goal`, `sol1`       | `Question: {goal}\nAnswer:`               | `[sol1, sol2]`   | `label` |
//! | BoolQ     | `passage`, `answer`  | `{passage}\nQuestion: {question}?\nAnswer:` | `["no", "yes"]` | `answer` (bool) |
//! | ARC       | `answerKey`          | `Question: {question}\nAnswer:` (`question` a string or `{"stem": ...}`) | `choices.text` | index of `answerKey` in `choices.label` |
//!
//! ARC's `choices` may be `{"text": [...], "label": [...]}` or `[{"text", "label"}, ...]`;
//! without labels, `answerKey` is read as a letter (`A` = 0) or a 1-based digit.
//! HellaSwag's cleaning: trim, ` [title]` becomes `. `, `[...]` spans are removed, double spaces
//! become single; `ctx_b` is capitalised (first letter upper, the rest lower) as Python's
//! `str.capitalize` does.
//!
//! Every problem is an [`Error::Task`] naming the file and the 1-based line.

use crate::error::{Error, IoContext, Result};
use serde_json::{Map, Value};
use std::path::Path;

/// One multiple-choice question.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TaskItem {
    /// The record's `id`, or its line number when it has none.
    pub id: String,
    pub context: String,
    /// The answers, each scored as the continuation `" " + choice`.
    pub choices: Vec<String>,
    /// Index of the right answer in `choices`.
    pub gold: usize,
}

/// Reads a task file, keeping at most `limit` items.
pub fn read_tasks(path: &Path, limit: Option<usize>) -> Result<Vec<TaskItem>> {
    let bytes = std::fs::read(path).at(path)?;
    let text = String::from_utf8(bytes).map_err(|e| {
        Error::corrupt(
            path,
            format!(
                "not UTF-8 text: invalid byte at offset {}",
                e.utf8_error().valid_up_to()
            ),
        )
    })?;
    let items = parse_tasks(&text, limit).map_err(|(line, msg)| Error::Task {
        path: path.to_path_buf(),
        line,
        msg,
    })?;
    if items.is_empty() {
        return Err(Error::corrupt(path, "no task records in this file"));
    }
    Ok(items)
}

/// Parses JSONL text; an error carries its 1-based line number.
pub fn parse_tasks(
    text: &str,
    limit: Option<usize>,
) -> std::result::Result<Vec<TaskItem>, (usize, String)> {
    let mut items = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if limit.is_some_and(|n| items.len() >= n) {
            break;
        }
        if line.trim().is_empty() {
            continue;
        }
        items.push(parse_line(line, i + 1).map_err(|m| (i + 1, m))?);
    }
    Ok(items)
}

/// Parses one record; `line` is the fallback id.
pub fn parse_line(line: &str, line_no: usize) -> std::result::Result<TaskItem, String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("not valid JSON: {e}"))?;
    let Value::Object(o) = v else {
        return Err("expected a JSON object".into());
    };
    let (context, choices, gold) = if o.contains_key("context") {
        own(&o)?
    } else if o.contains_key("endings") {
        hellaswag(&o)?
    } else if o.contains_key("goal") {
        piqa(&o)?
    } else if o.contains_key("passage") {
        boolq(&o)?
    } else if o.contains_key("answerKey") {
        arc(&o)?
    } else {
        return Err(
            "unrecognised record: expected `context`, `choices` and `gold` \
             (or a HellaSwag, PIQA, ARC or BoolQ record)"
                .into(),
        );
    };
    if choices.len() < 2 {
        return Err(format!("needs at least 2 choices, found {}", choices.len()));
    }
    if gold >= choices.len() {
        return Err(format!(
            "gold {gold} is out of range for {} choices",
            choices.len()
        ));
    }
    let id = match o.get("id") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => line_no.to_string(),
    };
    Ok(TaskItem {
        id,
        context,
        choices,
        gold,
    })
}

type Parsed = (String, Vec<String>, usize);

fn field<'a>(o: &'a Map<String, Value>, key: &str) -> std::result::Result<&'a Value, String> {
    o.get(key).ok_or_else(|| format!("missing field `{key}`"))
}

fn string(o: &Map<String, Value>, key: &str) -> std::result::Result<String, String> {
    field(o, key)?
        .as_str()
        .map(String::from)
        .ok_or_else(|| format!("field `{key}` must be a string"))
}

fn strings(v: &Value, key: &str) -> std::result::Result<Vec<String>, String> {
    let list = v
        .as_array()
        .ok_or_else(|| format!("field `{key}` must be a list of strings"))?;
    list.iter()
        .map(|c| {
            c.as_str()
                .map(String::from)
                .ok_or_else(|| format!("field `{key}` must be a list of strings"))
        })
        .collect()
}

/// A gold index given as a non-negative integer or a string of digits.
fn index(o: &Map<String, Value>, key: &str) -> std::result::Result<usize, String> {
    let v = field(o, key)?;
    let n = match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse::<u64>().ok(),
        _ => None,
    };
    n.map(|n| n as usize).ok_or_else(|| {
        format!("field `{key}` must be a non-negative integer (or a string of digits), found {v}")
    })
}

fn own(o: &Map<String, Value>) -> std::result::Result<Parsed, String> {
    let context = string(o, "context")?;
    let choices = strings(field(o, "choices")?, "choices")?;
    Ok((context, choices, index(o, "gold")?))
}

/// lm-eval's HellaSwag `preprocess`.
pub(crate) fn clean(text: &str) -> String {
    let text = text.trim().replace(" [title]", ". ");
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find([']', '\n']) {
            Some(close) if after.as_bytes()[close] == b']' => rest = &after[close + 1..],
            _ => {
                out.push('[');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out.replace("  ", " ")
}

/// Python's `str.capitalize`: the first character upper case, the rest lower case.
pub(crate) fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first
            .to_uppercase()
            .chain(chars.flat_map(char::to_lowercase))
            .collect(),
        None => String::new(),
    }
}

fn hellaswag(o: &Map<String, Value>) -> std::result::Result<Parsed, String> {
    let ctx = if o.contains_key("ctx_a") {
        format!(
            "{} {}",
            string(o, "ctx_a")?,
            capitalize(&string(o, "ctx_b")?)
        )
    } else {
        string(o, "ctx")?
    };
    let query = match o.get("activity_label").and_then(Value::as_str) {
        Some(label) => format!("{label}: {ctx}"),
        None => ctx,
    };
    let choices = strings(field(o, "endings")?, "endings")?;
    Ok((
        clean(&query),
        choices.iter().map(|c| clean(c)).collect(),
        index(o, "label")?,
    ))
}

fn piqa(o: &Map<String, Value>) -> std::result::Result<Parsed, String> {
    let context = format!("Question: {}\nAnswer:", string(o, "goal")?);
    let choices = vec![string(o, "sol1")?, string(o, "sol2")?];
    Ok((context, choices, index(o, "label")?))
}

fn boolq(o: &Map<String, Value>) -> std::result::Result<Parsed, String> {
    let context = format!(
        "{}\nQuestion: {}?\nAnswer:",
        string(o, "passage")?,
        string(o, "question")?
    );
    let gold = field(o, "answer")?
        .as_bool()
        .ok_or("field `answer` must be true or false")?;
    Ok((context, vec!["no".into(), "yes".into()], usize::from(gold)))
}

fn arc(o: &Map<String, Value>) -> std::result::Result<Parsed, String> {
    let question = match field(o, "question")? {
        Value::String(s) => s.clone(),
        Value::Object(q) => string(q, "stem")?,
        _ => return Err("field `question` must be a string or an object with `stem`".into()),
    };
    let (texts, labels) = match field(o, "choices")? {
        Value::Object(c) => {
            let texts = strings(field(c, "text").map_err(|e| format!("choices: {e}"))?, "text")?;
            let labels = match c.get("label") {
                Some(l) => strings(l, "label")?,
                None => Vec::new(),
            };
            (texts, labels)
        }
        Value::Array(list) => {
            let mut texts = Vec::new();
            let mut labels = Vec::new();
            for c in list {
                let c = c
                    .as_object()
                    .ok_or("field `choices` must hold objects with `text` and `label`")?;
                texts.push(string(c, "text").map_err(|e| format!("choices: {e}"))?);
                if let Some(l) = c.get("label").and_then(Value::as_str) {
                    labels.push(l.to_string());
                }
            }
            (texts, labels)
        }
        _ => return Err("field `choices` must be `{\"text\": [...], \"label\": [...]}` or a list of `{\"text\", \"label\"}`".into()),
    };
    let key = match field(o, "answerKey")? {
        Value::String(s) => s.trim().to_string(),
        Value::Number(n) => n.to_string(),
        v => {
            return Err(format!(
                "field `answerKey` must be a letter or a digit, found {v}"
            ))
        }
    };
    let gold = if labels.is_empty() {
        key_index(&key).ok_or_else(|| format!("answerKey `{key}` is not a letter or a digit"))?
    } else {
        labels.iter().position(|l| *l == key).ok_or_else(|| {
            format!("answerKey `{key}` is not one of the choice labels {labels:?}")
        })?
    };
    Ok((format!("Question: {question}\nAnswer:"), texts, gold))
}

/// `A` → 0, `B` → 1, ...; `1` → 0, `2` → 1, ...
fn key_index(key: &str) -> Option<usize> {
    let mut chars = key.chars();
    let (c, None) = (chars.next()?, chars.next()) else {
        return None;
    };
    match c {
        'A'..='Z' => Some(c as usize - 'A' as usize),
        '1'..='9' => Some(c as usize - '1' as usize),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(line: &str) -> TaskItem {
        parse_line(line, 7).unwrap()
    }

    fn err(line: &str) -> String {
        parse_line(line, 7).unwrap_err()
    }

    #[test]
    fn own_format_with_and_without_id() {
        let t = one(r#"{"context": "2+2 =", "choices": ["3", "4"], "gold": 1, "id": "q1"}"#);
        assert_eq!(t.context, "2+2 =");
        assert_eq!(t.choices, ["3", "4"]);
        assert_eq!((t.gold, t.id.as_str()), (1, "q1"));
        let t = one(r#"{"context": "c", "choices": ["a", "b", "c"], "gold": "2", "id": 12}"#);
        assert_eq!((t.gold, t.id.as_str()), (2, "12"));
        assert_eq!(
            one(r#"{"context": "c", "choices": ["a", "b"], "gold": 0}"#).id,
            "7"
        );
    }

    #[test]
    fn hellaswag_is_cleaned_as_lm_eval_does() {
        let t = one(
            r#"{"activity_label": "Removing ice from car", "ctx_a": "Then, the man writes over the snow.", "ctx_b": "then [header] he", "ctx": "ignored", "endings": [", the man [step] wipes.", "Wipe. [title] Clean  it."], "label": "1"}"#,
        );
        assert_eq!(
            t.context,
            "Removing ice from car: Then, the man writes over the snow. Then he"
        );
        assert_eq!(t.choices, [", the man wipes.", "Wipe.. Clean it."]);
        assert_eq!(t.gold, 1);
        let t = one(r#"{"ctx": "A [b", "endings": ["x", "y"], "label": 0}"#);
        assert_eq!(t.context, "A [b");
        assert_eq!(capitalize("hELLO wORLD"), "Hello world");
    }

    #[test]
    fn piqa_boolq_and_arc_prompts() {
        let t = one(r#"{"goal": "Open a jar", "sol1": "twist", "sol2": "pull", "label": 0}"#);
        assert_eq!(t.context, "Question: Open a jar\nAnswer:");
        assert_eq!((t.choices.len(), t.gold), (2, 0));
        let t = one(r#"{"question": "is it wet", "passage": "Water is wet.", "answer": true}"#);
        assert_eq!(t.context, "Water is wet.\nQuestion: is it wet?\nAnswer:");
        assert_eq!((t.choices, t.gold), (vec!["no".into(), "yes".into()], 1));
        let t = one(
            r#"{"id": "Mercury_1", "question": "Which?", "choices": {"text": ["a", "b", "c"], "label": ["A", "B", "C"]}, "answerKey": "C"}"#,
        );
        assert_eq!(
            (t.context.as_str(), t.gold),
            ("Question: Which?\nAnswer:", 2)
        );
        assert_eq!(t.id, "Mercury_1");
        let t = one(
            r#"{"question": {"stem": "Why?"}, "choices": [{"text": "x", "label": "1"}, {"text": "y", "label": "2"}], "answerKey": "2"}"#,
        );
        assert_eq!((t.context.as_str(), t.gold), ("Question: Why?\nAnswer:", 1));
        assert_eq!(t.choices, ["x", "y"]);
        let t = one(r#"{"question": "Q", "choices": {"text": ["x", "y"]}, "answerKey": "B"}"#);
        assert_eq!(t.gold, 1);
    }

    #[test]
    fn each_bad_record_says_what_is_wrong() {
        assert!(err("{not json").contains("not valid JSON"));
        assert!(err("[1, 2]").contains("JSON object"));
        assert!(err(r#"{"context": "c", "gold": 0}"#).contains("missing field `choices`"));
        assert!(err(r#"{"context": "c", "choices": ["a", "b"]}"#).contains("`gold`"));
        let e = err(r#"{"context": "c", "choices": ["a", "b"], "gold": 2}"#);
        assert!(e.contains("gold 2 is out of range for 2 choices"), "{e}");
        let e = err(r#"{"context": "c", "choices": ["a"], "gold": 0}"#);
        assert!(e.contains("at least 2 choices"), "{e}");
        assert!(
            err(r#"{"context": "c", "choices": ["a", 3], "gold": 0}"#).contains("list of strings")
        );
        assert!(
            err(r#"{"context": "c", "choices": ["a", "b"], "gold": -1}"#).contains("non-negative")
        );
        assert!(err(r#"{"endings": ["a", "b"], "ctx": "c", "label": ""}"#).contains("`label`"));
        assert!(
            err(r#"{"passage": "p", "question": "q", "answer": "yes"}"#).contains("true or false")
        );
        let e = err(
            r#"{"question": "Q", "choices": {"text": ["x", "y"], "label": ["A", "B"]}, "answerKey": "E"}"#,
        );
        assert!(e.contains("answerKey `E`"), "{e}");
        assert!(err(r#"{"text": "x"}"#).contains("unrecognised record"));
    }

    #[test]
    fn lines_are_numbered_from_one_and_limit_stops_early() {
        let text =
            "{\"context\": \"a\", \"choices\": [\"x\", \"y\"], \"gold\": 0}\n\n{\"context\": 1}\n";
        assert_eq!(parse_tasks(text, None).unwrap_err().0, 3);
        assert_eq!(parse_tasks(text, Some(1)).unwrap().len(), 1);
    }

    fn value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let text = "[a-zA-Z \\[\\]\n]{0,12}";
        let leaf = prop_oneof![
            text.prop_map(Value::from),
            (-3i64..6).prop_map(Value::from),
            any::<bool>().prop_map(Value::from),
            Just(Value::Null),
            proptest::collection::vec(text, 0..4).prop_map(Value::from),
        ];
        leaf.prop_recursive(2, 12, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                proptest::collection::vec(
                    (
                        proptest::sample::select(vec!["text", "label", "stem"]),
                        inner
                    ),
                    0..3
                )
                .prop_map(|kv| Value::Object(
                    kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
                )),
            ]
        })
    }

    proptest::proptest! {
        /// Any object built from the known field names parses or fails with a message; what
        /// parses has at least two choices and a gold among them.
        #[test]
        fn records_never_panic_and_parsed_ones_are_valid(
            fields in proptest::collection::vec((proptest::sample::select(vec![
                "context", "choices", "gold", "id", "endings", "ctx", "ctx_a", "ctx_b",
                "activity_label", "label", "goal", "sol1", "sol2", "passage", "question",
                "answer", "answerKey",
            ]), value()), 0..8),
        ) {
            let o: Map<String, Value> =
                fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
            if let Ok(t) = parse_line(&Value::Object(o).to_string(), 1) {
                proptest::prop_assert!(t.choices.len() >= 2 && t.gold < t.choices.len());
            }
        }
    }

    #[test]
    fn read_tasks_names_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.jsonl");
        std::fs::write(
            &p,
            "{\"context\": \"a\", \"choices\": [\"x\", \"y\"], \"gold\": 0}\n{bad\n",
        )
        .unwrap();
        let e = read_tasks(&p, None).unwrap_err();
        assert!(matches!(e, Error::Task { line: 2, .. }), "{e}");
        assert!(
            e.to_string().contains("t.jsonl` line 2: not valid JSON"),
            "{e}"
        );
        std::fs::write(&p, "\n\n").unwrap();
        assert!(read_tasks(&p, None)
            .unwrap_err()
            .to_string()
            .contains("no task records"));
    }
}
