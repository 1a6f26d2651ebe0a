//! Every numeric option of every command at 0, at its maximum (`u64::MAX`, `f64::MAX`), as NaN
//! and infinity, negative, and as a string (issue 25), on the tiny golden llama. One row per
//! option and value: the command must either succeed (the few values listed in [`SUCCEEDS`],
//! each a documented meaning) or exit 1 with one `error:` line, the option's flag named on
//! stderr, no panic, no hang and no output. The global `--threads`, `--compute` and the
//! calibration `--resamples` have their own tests.
//! `cargo test --test cli_numeric_options -- --nocapture` prints the number of rows.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const U64_MAX: &str = "18446744073709551615";
const F64_MAX: &str = "1.7976931348623157e308";
const INTS: &[&str] = &["0", U64_MAX, "NaN", "-1", "abc"];
const FLOATS: &[&str] = &["0", F64_MAX, "NaN", "inf", "-1", "abc"];
/// The longest a row may run: every row is a tiny model or fails before loading one.
const HANG: Duration = Duration::from_secs(120);

/// `(base, flag, value)` that succeed, each for a reason the flag's help gives.
const SUCCEEDS: &[(&str, &str, &str)] = &[
    // Offsets and seeds of 0 are the defaults; any seed is a seed.
    ("score", "--calib-offset", "0"),
    ("score", "--seed", "0"),
    ("score", "--seed", U64_MAX),
    ("synth", "--seed", "0"),
    ("synth", "--seed", U64_MAX),
    ("generate", "--seed", "0"),
    ("generate", "--seed", U64_MAX),
    ("sweep", "--seed", "0"),
    ("sweep", "--seed", U64_MAX),
    ("sweep", "--eval-offset", "0"),
    ("heal", "--calib-offset", "0"),
    // Upper bounds that clamp to what there is: windows per batch, blocks, questions, tokens
    // of the text, layers in a block, shard size, calibration tokens to heal on (a warning).
    ("score", "--batch", U64_MAX),
    ("score", "--max-block", U64_MAX),
    ("eval", "--batch", U64_MAX),
    ("eval", "--max-tokens", U64_MAX),
    ("eval-tasks", "--batch", U64_MAX),
    ("eval-tasks", "--limit", U64_MAX),
    ("prune", "--max-shard-size", U64_MAX),
    ("synth", "--max-shard-size", U64_MAX),
    ("heal", "--heal-samples", U64_MAX),
    ("greedy", "--steps", U64_MAX),
    ("sweep", "--batch", U64_MAX),
    ("sweep", "--max-block", U64_MAX),
    ("sweep", "--report-k", U64_MAX),
    // A ridge of 0 is plain least squares; any finite ridge ≥ 0 is a ridge.
    ("heal", "--alpha", "0"),
    ("heal", "--alpha", F64_MAX),
    // kd: `--patience 0` never stops early; more steps or validations than needed stop at
    // `--steps`; a huge finite learning rate is refused only if the fit stops being finite.
    ("heal-kd", "--patience", "0"),
    ("heal-kd", "--patience", U64_MAX),
    ("heal-kd", "--steps", U64_MAX),
    ("heal-kd", "--kd-eval-every", U64_MAX),
    // Sampling: 0 is greedy, `--top-k 0` keeps every token (a temperature past f32 is refused).
    ("generate", "--temperature", "0"),
    ("generate", "--top-k", "0"),
    ("generate", "--top-k", U64_MAX),
    ("generate", "--max-new-tokens", "0"),
    // A report for a count the sweep has no row for says so in a warning.
    ("report", "--k", "0"),
    ("report", "--k", U64_MAX),
    ("report", "--max-new-tokens", "0"),
];

struct Setup {
    dir: tempfile::TempDir,
    model: PathBuf,
    text: PathBuf,
    long: PathBuf,
    tasks: PathBuf,
    pruned: PathBuf,
    config: PathBuf,
    sweep: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let model = golden_llama();
    let text = golden_text();
    let long = dir.path().join("long.txt");
    std::fs::write(&long, std::fs::read_to_string(&text).unwrap().repeat(40)).unwrap();
    let tasks = fixture().join("tasks.jsonl");
    let pruned = dir.path().join("pruned");
    ok(&run(&[
        "prune",
        s(&model),
        "--drop",
        "1",
        "--out",
        s(&pruned),
    ]));
    let config = dir.path().join("config.json");
    std::fs::copy(model.join("config.json"), &config).unwrap();
    let sweep = dir.path().join("sweep");
    let mut a = sweep_base(&model, &long);
    a.extend(["--out".into(), sweep.display().to_string()]);
    ok(&run(&a.iter().map(String::as_str).collect::<Vec<_>>()));
    Setup {
        dir,
        model,
        text,
        long,
        tasks,
        pruned,
        config,
        sweep,
    }
}

fn sweep_base(model: &Path, long: &Path) -> Vec<String> {
    let (m, l) = (s(model), s(long));
    [
        "sweep",
        m,
        "--strategies",
        "bi",
        "--remove",
        "0..2",
        "--calib",
        l,
        "--ctx",
        "16",
        "--samples",
        "2",
        "--calib-offset",
        "2000",
        "--eval",
        l,
        "--eval-ctx",
        "16",
        "--eval-samples",
        "2",
        "--ci-resamples",
        "10",
    ]
    .map(String::from)
    .to_vec()
}

/// A row family: its name, base command line, and integer and float flags.
type Family = (
    &'static str,
    Vec<String>,
    &'static [&'static str],
    &'static [&'static str],
);

/// The base command line of each row family (`@OUT` is the row's output path) and its flags,
/// integer and float.
fn families(x: &Setup) -> Vec<Family> {
    let (m, t, l) = (s(&x.model), s(&x.text), s(&x.long));
    let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let calib = ["--calib", l, "--ctx", "16", "--samples", "2"];
    let heal = [
        "--calib",
        l,
        "--ctx",
        "16",
        "--heal-samples",
        "64",
        "--holdout",
        "2",
    ];
    let cat = |a: &[&str], b: &[&str]| v(&[a, b].concat());
    vec![
        (
            "plan",
            cat(&["plan", m, "--strategy", "bi"], &calib),
            &["--remove"][..],
            &["--ratio", "--target-params"][..],
        ),
        (
            "prune",
            v(&["prune", m, "--drop", "1", "--out", "@OUT"]),
            &["--max-shard-size"],
            &[],
        ),
        (
            "synth",
            v(&[
                "synth",
                "--config",
                s(&x.config),
                "--out",
                "@OUT",
                "--dtype",
                "f32",
            ]),
            &["--max-shard-size", "--seed"],
            &[],
        ),
        (
            "eval",
            v(&["eval", m, "--text", t, "--ctx", "16"]),
            &["--ctx", "--stride", "--max-tokens", "--batch"],
            &[],
        ),
        (
            "eval-tasks",
            v(&["eval", m, "--tasks", s(&x.tasks)]),
            &["--limit", "--batch"],
            &[],
        ),
        (
            "score",
            cat(&["score", m, "--metric", "bi"], &calib),
            &[
                "--ctx",
                "--samples",
                "--calib-offset",
                "--max-block",
                "--batch",
                "--seed",
            ],
            &[],
        ),
        (
            "choose",
            cat(&["score", m, "--metric", "bi", "--resamples", "2"], &calib),
            &["--choose"],
            &[],
        ),
        (
            "greedy",
            cat(&["score", m, "--metric", "greedy"], &calib),
            &["--steps"],
            &[],
        ),
        (
            "generate",
            v(&["generate", m, "--prompt", "hi", "--max-new-tokens", "2"]),
            &["--max-new-tokens", "--top-k", "--seed"],
            &["--temperature", "--top-p"],
        ),
        (
            "heal",
            cat(
                &[
                    "heal",
                    s(&x.pruned),
                    "--from",
                    m,
                    "--method",
                    "lstsq",
                    "--out",
                    "@OUT",
                ],
                &heal,
            ),
            &["--ctx", "--calib-offset", "--heal-samples", "--holdout"],
            &["--alpha"],
        ),
        (
            "heal-kd",
            cat(
                &[
                    "heal",
                    s(&x.pruned),
                    "--from",
                    m,
                    "--method",
                    "kd",
                    "--steps",
                    "2",
                    "--out",
                    "@OUT",
                ],
                &heal,
            ),
            &["--steps", "--kd-eval-every", "--patience"],
            &["--lr"],
        ),
        (
            "sweep",
            [sweep_base(&x.model, &x.long), v(&["--out", "@OUT"])].concat(),
            &[
                "--ctx",
                "--samples",
                "--calib-offset",
                "--max-block",
                "--batch",
                "--eval-ctx",
                "--eval-samples",
                "--eval-offset",
                "--select-offset",
                "--select-samples",
                "--ci-resamples",
                "--seed",
                "--report-k",
            ],
            &[],
        ),
        (
            "doctor",
            v(&["doctor", "--no-kernels"]),
            &["--peak-ms"],
            &[],
        ),
        (
            "report",
            v(&["report", s(&x.sweep), "--max-new-tokens", "2"]),
            &["--k", "--max-new-tokens"],
            &[],
        ),
    ]
}

/// Runs the binary, killing it past [`HANG`]; `None` when it hung.
fn run_bounded(args: &[String]) -> Option<std::process::Output> {
    let mut child = Command::new(bin())
        .args(args)
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > HANG {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(child.wait_with_output().unwrap())
}

#[test]
fn every_numeric_option_refuses_nonsense_by_name_or_succeeds_as_documented() {
    let x = setup();
    let mut rows = 0;
    let mut failures = Vec::new();
    for (family, base, ints, floats) in families(&x) {
        let flags = ints
            .iter()
            .map(|f| (f, INTS))
            .chain(floats.iter().map(|f| (f, FLOATS)));
        for (flag, values) in flags {
            for value in values {
                rows += 1;
                let out = x.dir.path().join(format!("out-{rows}"));
                let mut args: Vec<String> = base
                    .iter()
                    .map(|a| {
                        if a == "@OUT" {
                            out.display().to_string()
                        } else {
                            a.clone()
                        }
                    })
                    .collect();
                match args.iter().position(|a| a == flag) {
                    Some(i) => args[i + 1] = value.to_string(),
                    None => args.extend([flag.to_string(), value.to_string()]),
                }
                let row = format!("{family} {flag} {value}");
                let Some(o) = run_bounded(&args) else {
                    failures.push(format!("{row}: still running after {HANG:?}"));
                    continue;
                };
                let err = stderr(&o);
                let code = o.status.code();
                if err.contains("panicked") {
                    failures.push(format!("{row}: panicked: {err}"));
                } else if SUCCEEDS.contains(&(family, flag, value)) {
                    if code != Some(0) {
                        failures.push(format!(
                            "{row}: documented to succeed, exit {code:?}: {err}"
                        ));
                    }
                } else {
                    let errors = err.lines().filter(|l| l.starts_with("error:")).count();
                    if code != Some(1) || errors != 1 || !err.contains(*flag) {
                        failures.push(format!(
                            "{row}: want exit 1 and one `error:` line naming {flag}, got exit {code:?}: {err}"
                        ));
                    } else if out.exists() {
                        failures.push(format!("{row}: failed but wrote `{}`", out.display()));
                    }
                }
            }
        }
    }
    println!("{rows} rows");
    assert!(
        failures.is_empty(),
        "{} of {rows} rows:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
