//! Split GGUF models as llama.cpp's `gguf-split` lays them out: parts named
//! `NAME-00001-of-00003.gguf` (numbered from 1 in the name, from 0 in `split.no`), all metadata
//! in the first part, tensors in order across the parts.

use std::path::{Path, PathBuf};

/// The most parts a split model can have (`split.count` is a u16).
pub const MAX_SPLITS: usize = u16::MAX as usize;

/// The path of part `no` (1-based) of `count`, for `prefix` = `dir/NAME`.
pub fn part_path(prefix: &Path, no: usize, count: usize) -> PathBuf {
    let mut name = prefix.as_os_str().to_os_string();
    name.push(format!("-{no:05}-of-{count:05}.gguf"));
    PathBuf::from(name)
}

/// Splits `dir/NAME-00002-of-00005.gguf` into (`dir/NAME`, 2, 5); `None` if not named so.
pub fn parse_part_path(path: &Path) -> Option<(PathBuf, usize, usize)> {
    let name = path.file_name()?.to_str()?;
    let stem = name.strip_suffix(".gguf")?;
    let (rest, count) = stem.rsplit_once("-of-")?;
    let (prefix, no) = rest.rsplit_once('-')?;
    let num = |s: &str| {
        (s.len() == 5 && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<usize>().ok())
            .flatten()
    };
    let (no, count) = (num(no)?, num(count)?);
    if prefix.is_empty() || no == 0 || no > count {
        return None;
    }
    Some((path.with_file_name(prefix), no, count))
}

/// The prefix for split outputs written in place of `out`: `dir/NAME.gguf` → `dir/NAME`.
pub fn output_prefix(out: &Path) -> PathBuf {
    match out
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".gguf"))
    {
        Some(stem) if !stem.is_empty() => out.with_file_name(stem),
        _ => out.to_path_buf(),
    }
}

/// Groups consecutive items into parts of at most `max_bytes` each. `first_overhead` is the
/// header size of the first part (all the metadata), `overhead` that of the others; `item_len`
/// gives each item's cost (its tensor info plus its padded data). Every part gets at least one
/// item, so a single item larger than `max_bytes` makes a part of its own. Returns the index
/// ranges of the parts.
pub fn plan_parts(
    item_lens: &[u64],
    max_bytes: u64,
    first_overhead: u64,
    overhead: u64,
) -> Vec<std::ops::Range<usize>> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut size = first_overhead;
    for (i, &len) in item_lens.iter().enumerate() {
        if i > start && size.saturating_add(len) > max_bytes {
            parts.push(start..i);
            start = i;
            size = overhead;
        }
        size = size.saturating_add(len);
    }
    if start < item_lens.len() || parts.is_empty() {
        parts.push(start..item_lens.len());
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let p = part_path(Path::new("out/model"), 2, 3);
        assert_eq!(p, Path::new("out/model-00002-of-00003.gguf"));
        assert_eq!(
            parse_part_path(&p),
            Some((PathBuf::from("out/model"), 2, 3))
        );
        assert_eq!(parse_part_path(Path::new("a-1-of-3.gguf")), None);
        assert_eq!(parse_part_path(Path::new("a-00004-of-00003.gguf")), None);
        assert_eq!(parse_part_path(Path::new("model.gguf")), None);
        assert_eq!(output_prefix(Path::new("d/x.gguf")), Path::new("d/x"));
    }

    #[test]
    fn parts_respect_the_limit() {
        assert_eq!(plan_parts(&[10, 10, 10, 10], 25, 5, 1), vec![0..2, 2..4]);
        assert_eq!(
            plan_parts(&[10, 10, 10, 10], 25, 16, 1),
            vec![0..1, 1..3, 3..4]
        );
        assert_eq!(plan_parts(&[100, 1], 10, 0, 0), vec![0..1, 1..2]);
        assert_eq!(plan_parts(&[1, 1], 1000, 0, 0), vec![0..2]);
        assert_eq!(plan_parts(&[], 10, 0, 0), vec![0..0]);
    }
}
