//! File patterns as the hub's file system (and so `datasets`) matches them against a repo's
//! paths: a dataset card's `data_files` (`all/test-*`, `data/train-[0-9]*.parquet`).

/// `fnmatch`-style matching as the hub's file system globs: `*` and `?` within one path segment,
/// `**` across segments, `[abc]` and `[0-9]` sets.
pub fn glob(pattern: &str, path: &str) -> bool {
    fn go(p: &[u8], s: &[u8]) -> bool {
        match p.first() {
            None => s.is_empty(),
            Some(b'*') if p.get(1) == Some(&b'*') => {
                let rest = &p[2..];
                let rest = rest.strip_prefix(b"/").unwrap_or(rest);
                (0..=s.len()).any(|i| go(rest, &s[i..]) || go(&p[2..], &s[i..]))
            }
            Some(b'*') => {
                let mut i = 0;
                loop {
                    if go(&p[1..], &s[i..]) {
                        return true;
                    }
                    if i == s.len() || s[i] == b'/' {
                        return false;
                    }
                    i += 1;
                }
            }
            Some(b'?') => s.first().is_some_and(|&c| c != b'/') && go(&p[1..], &s[1..]),
            Some(b'[') => {
                let Some(end) = p.iter().position(|&c| c == b']') else {
                    return s.first() == Some(&b'[') && go(&p[1..], &s[1..]);
                };
                let Some(&c) = s.first() else {
                    return false;
                };
                let set = &p[1..end];
                let (negate, set) = match set.first() {
                    Some(b'!') | Some(b'^') => (true, &set[1..]),
                    _ => (false, set),
                };
                let mut hit = false;
                let mut i = 0;
                while i < set.len() {
                    if i + 2 < set.len() && set[i + 1] == b'-' {
                        hit |= set[i] <= c && c <= set[i + 2];
                        i += 3;
                    } else {
                        hit |= set[i] == c;
                        i += 1;
                    }
                }
                hit != negate && go(&p[end + 1..], &s[1..])
            }
            Some(&c) => s.first() == Some(&c) && go(&p[1..], &s[1..]),
        }
    }
    go(pattern.as_bytes(), path.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_as_the_hub_file_system_does() {
        assert!(glob("all/test-*", "all/test-00000-of-00001.parquet"));
        assert!(!glob("all/test-*", "all/sub/test-0.parquet"));
        assert!(!glob("all/test-*", "all/dev-00000-of-00001.parquet"));
        assert!(glob("**/test-*", "a/b/test-1.parquet"));
        assert!(glob("**/test-*", "test-1.parquet"));
        assert!(glob("data/test-[0-9]*.parquet", "data/test-3.parquet"));
        assert!(!glob("data/test-[0-9]*.parquet", "data/test-x.parquet"));
        assert!(glob("t?st.jsonl", "test.jsonl") && !glob("t?st.jsonl", "t/st.jsonl"));
    }
}
