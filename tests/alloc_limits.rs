//! The memory caps of `depthprune::checkpoint::limits`, measured: a counting global allocator
//! records the peak heap while headers are read, and every file, hostile or dense, must stay
//! under `HEADER_ALLOC_FACTOR` × its size + `HEADER_ALLOC_SLACK`. Files claiming counts and
//! lengths far beyond their bytes must also fail with an error naming the file and the count.
//!
//! One test function, so no other test thread allocates while a peak is measured.

mod counting_alloc;
mod gguf_support;

use depthprune::checkpoint::gguf::GgufFile;
use depthprune::checkpoint::limits::{HEADER_ALLOC_FACTOR, HEADER_ALLOC_SLACK};
use depthprune::checkpoint::safetensors::SafetensorsFile;
use gguf_support::{s, Builder};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

/// The largest peak seen over a file that read, in hundredths of its size (for the report).
static WORST: AtomicUsize = AtomicUsize::new(0);

#[global_allocator]
static A: counting_alloc::Counting = counting_alloc::Counting;

/// Peak heap growth while `f` runs.
fn peak_of<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let (out, peak) = counting_alloc::peak_of(f);
    (out, peak as u64)
}

fn bound(len: u64) -> u64 {
    HEADER_ALLOC_FACTOR * len + HEADER_ALLOC_SLACK
}

fn header(n_tensors: u64, n_kv: u64) -> Vec<u8> {
    let mut b = b"GGUF\x03\0\0\0".to_vec();
    b.extend_from_slice(&n_tensors.to_le_bytes());
    b.extend_from_slice(&n_kv.to_le_bytes());
    b
}

fn kv(b: &mut Vec<u8>, key: &str, ty: u32, payload: &[u8]) {
    b.extend_from_slice(&s(key));
    b.extend_from_slice(&ty.to_le_bytes());
    b.extend_from_slice(payload);
}

fn array_head(elem: u32, len: u64) -> Vec<u8> {
    let mut p = elem.to_le_bytes().to_vec();
    p.extend_from_slice(&len.to_le_bytes());
    p
}

/// `(name, bytes, Some(expected error text) or None for a file that must read)`.
fn gguf_cases() -> Vec<(&'static str, Vec<u8>, Option<&'static str>)> {
    let mut cases = Vec::new();
    let pad = |mut b: Vec<u8>, n: usize| {
        b.resize(b.len() + n, 0);
        b
    };
    cases.push((
        "tensor count 2^64-1",
        pad(header(u64::MAX, 0), 64),
        Some("tensors"),
    ));
    cases.push((
        "tensor count 2^19",
        pad(header(1 << 19, 0), 4096),
        Some("tensors"),
    ));
    cases.push((
        "key count 2^40",
        pad(header(0, 1 << 40), 4096),
        Some("metadata keys"),
    ));
    let mut b = header(0, 1);
    b.extend_from_slice(&(1u64 << 40).to_le_bytes());
    cases.push(("key length 2^40", pad(b, 4096), Some("key")));
    let mut b = header(0, 1);
    kv(&mut b, "k", 8, &(u64::MAX - 7).to_le_bytes());
    cases.push(("string length 2^64-8", pad(b, 4096), Some("string")));
    for (what, elem) in [("u64", 10u32), ("string", 8), ("array", 9), ("bool", 7)] {
        let mut b = header(0, 1);
        kv(&mut b, "k", 9, &array_head(elem, 1 << 27));
        let name: &'static str = Box::leak(format!("{what} array of 2^27").into_boxed_str());
        cases.push((name, pad(b, 4096), Some("array")));
    }
    let mut b = header(0, 1);
    let mut p = Vec::new();
    for _ in 0..9 {
        p.extend_from_slice(&array_head(9, 1));
    }
    kv(&mut b, "k", 9, &p);
    cases.push(("arrays nested 9 deep", pad(b, 64), Some("array")));
    let mut b = header(1, 0);
    b.extend_from_slice(&s("t"));
    b.extend_from_slice(&4u32.to_le_bytes());
    for _ in 0..4 {
        b.extend_from_slice(&(1u64 << 40).to_le_bytes());
    }
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&0u64.to_le_bytes());
    cases.push(("tensor of 2^160 elements", pad(b, 64), Some("`t`")));

    // Dense files: as many entries as the bytes allow, each as small as the format permits.
    let n = 100_000u64;
    let mut b = header(0, n);
    for i in 0..n {
        kv(&mut b, &format!("{i:x}"), 0, &[0]);
    }
    cases.push(("100k one-byte metadata entries", b, None));
    let mut b = header(0, 1);
    let mut p = array_head(8, n);
    (0..n).for_each(|_| p.extend_from_slice(&0u64.to_le_bytes()));
    kv(&mut b, "k", 9, &p);
    cases.push(("100k empty strings", b, None));
    let mut b = header(0, 1);
    let mut p = array_head(9, n);
    (0..n).for_each(|_| p.extend_from_slice(&array_head(0, 0)));
    kv(&mut b, "k", 9, &p);
    cases.push(("100k empty arrays", b, None));
    let mut dense = Builder::new();
    for i in 0..20_000 {
        dense = dense.tensor(&format!("{i:x}"), &[1], gguf_support::F32);
    }
    cases.push(("20k one-element tensors", dense.build().0, None));
    cases
}

fn st_file(header: &str, data: usize) -> Vec<u8> {
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header.as_bytes());
    b.resize(b.len() + data, 0);
    b
}

fn st_cases() -> Vec<(&'static str, Vec<u8>, Option<&'static str>)> {
    let mut cases = Vec::new();
    let mut b = u64::MAX.to_le_bytes().to_vec();
    b.extend_from_slice(b"{}");
    cases.push(("header length 2^64-1", b, Some("exceeds")));
    let mut b = 99_999_999u64.to_le_bytes().to_vec();
    b.extend_from_slice(b"{}");
    cases.push(("header length past the file", b, Some("truncated")));
    let zeros = vec!["0"; 200_000].join(",");
    cases.push((
        "shape of 200k zeros",
        st_file(
            &format!(r#"{{"a":{{"dtype":"F32","shape":[{zeros}],"data_offsets":[0,0]}}}}"#),
            0,
        ),
        Some("more than 16 entries"),
    ));
    let meta: Vec<String> = (0..100_000).map(|i| format!(r#""{i:x}":"""#)).collect();
    cases.push((
        "100k metadata entries",
        st_file(&format!(r#"{{"__metadata__":{{{}}}}}"#, meta.join(",")), 0),
        Some("`__metadata__` entries"),
    ));
    let nested = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    cases.push((
        "100k nested arrays",
        st_file(&format!(r#"{{"a":{nested}}}"#), 0),
        Some("safetensors header"),
    ));
    let tensors: Vec<String> = (0..50_000)
        .map(|i| {
            format!(
                r#""{i:x}":{{"dtype":"U8","shape":[],"data_offsets":[{i},{}]}}"#,
                i + 1
            )
        })
        .collect();
    cases.push((
        "50k one-byte tensors",
        st_file(&format!("{{{}}}", tensors.join(",")), 50_000),
        None,
    ));
    cases
}

#[test]
fn headers_allocate_a_bounded_multiple_of_their_size() {
    let dir = tempfile::tempdir().unwrap();
    let mut count = 0;
    for (name, bytes, want) in gguf_cases() {
        let path = dir.path().join("case.gguf");
        std::fs::write(&path, &bytes).unwrap();
        let len = bytes.len() as u64;
        for (how, (r, peak)) in [
            (
                "from_bytes",
                peak_of(|| GgufFile::from_bytes(&path, &bytes)),
            ),
            ("read", peak_of(|| GgufFile::read(&path, 0))),
        ] {
            check(name, how, r.map(|_| ()), peak, len, want, &path);
            count += 1;
        }
    }
    for (name, bytes, want) in st_cases() {
        let path = dir.path().join("case.safetensors");
        std::fs::write(&path, &bytes).unwrap();
        let (r, peak) = peak_of(|| SafetensorsFile::open(&path));
        check(
            name,
            "open",
            r.map(|_| ()),
            peak,
            bytes.len() as u64,
            want,
            &path,
        );
        count += 1;
    }
    let worst = WORST.load(SeqCst);
    eprintln!(
        "{count} allocation-limit cases; dense valid headers peaked at {}.{:02}x their size",
        worst / 100,
        worst % 100
    );
}

fn check(
    name: &str,
    how: &str,
    r: depthprune::Result<()>,
    peak: u64,
    len: u64,
    want: Option<&str>,
    path: &Path,
) {
    assert!(
        peak <= bound(len),
        "{name} ({how}): peak {peak} bytes for a {len}-byte file, over {}",
        bound(len)
    );
    match (r, want) {
        (Ok(()), None) => {
            WORST.fetch_max((peak * 100 / len) as usize, SeqCst);
        }
        (Err(e), Some(w)) => {
            let e = e.to_string();
            assert!(e.contains(w), "{name} ({how}): expected `{w}` in `{e}`");
            assert!(
                e.contains(&path.display().to_string()),
                "{name} ({how}): the error must name the file: {e}"
            );
        }
        (Ok(()), Some(w)) => panic!("{name} ({how}): read, but expected an error with `{w}`"),
        (Err(e), None) => panic!("{name} ({how}): {e}"),
    }
}
