//! A sweep that is interrupted keeps every cell it finished and resumes to the study an
//! uninterrupted run writes, cell for cell and bit for bit (issue 33): stopped between cells by
//! a request (as SIGINT asks, in-process here), by SIGINT and by SIGKILL (the binary), a torn
//! last journal line included. The cells finished before the interruption are not measured
//! again nor the strategies scored again, a changed setting is refused by name, and `report`
//! names the missing cells.
//!
//! The stop request is process-wide, so this file holds the only in-process sweep test.

mod common;

use common::{fixture, run_in, s, stderr};
use depthprune::api::sweep::{sweep, SweepRequest};
use depthprune::api::ModelSource;
use depthprune::error::Error;
use depthprune::progress::Progress;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A long enough text: the fixture's evaluation text, repeated.
fn text(dir: &Path) -> PathBuf {
    let base = std::fs::read_to_string(fixture().join("eval.txt")).unwrap();
    let p = dir.join("text.txt");
    std::fs::write(&p, base.repeat(8)).unwrap();
    p
}

const STRATEGIES: &str = "angular,bi,ppl,greedy,last";
/// 5 strategies × 4 counts.
const CELLS: usize = 20;

/// The sweep's flags: every strategy at 0..4 layers removed, healed two ways, with the task file.
fn flags(text: &Path, out: &str) -> Vec<String> {
    let tasks = fixture().join("tasks.jsonl");
    [
        "--strategies",
        STRATEGIES,
        "--remove",
        "0..4",
        "--protect",
        "first:1",
        "--calib",
        s(text),
        "--ctx",
        "16",
        "--calib-offset",
        "64",
        "--samples",
        "4",
        "--eval",
        s(text),
        "--eval-samples",
        "2",
        "--heal",
        "lstsq,scale",
        "--heal-samples",
        "1024",
        "--tasks",
        s(&tasks),
        "--out",
        out,
    ]
    .iter()
    .map(|a| a.to_string())
    .collect()
}

/// The request the flags above make, as Python would pass it.
fn request(text: &Path, out: &Path) -> SweepRequest {
    let v = serde_json::json!({
        "strategies": STRATEGIES.split(',').collect::<Vec<_>>(), "remove": "0..4",
        "protect": "first:1", "calib": text, "ctx": 16, "calib_offset": 64, "samples": 4,
        "eval": text, "eval_samples": 2, "heal": ["lstsq", "scale"], "heal_samples": 1024,
        "tasks": fixture().join("tasks.jsonl"), "out": out,
    });
    serde_json::from_value(v).unwrap()
}

/// Counts cells measured and cells read back, and asks to stop after `stop_after` measured.
struct Cells {
    stop_after: usize,
    measured: AtomicUsize,
    saved: AtomicUsize,
    scored: AtomicUsize,
}

impl Cells {
    fn new(stop_after: usize) -> Self {
        Cells {
            stop_after,
            measured: AtomicUsize::new(0),
            saved: AtomicUsize::new(0),
            scored: AtomicUsize::new(0),
        }
    }
}

impl Progress for Cells {
    fn step_done(&self, what: &str) {
        if what.ends_with("(saved)") {
            self.saved.fetch_add(1, Ordering::SeqCst);
        } else if self.measured.fetch_add(1, Ordering::SeqCst) + 1 == self.stop_after {
            depthprune::base::cancel::request();
        }
    }
    fn message(&self, msg: &str) {
        if msg.starts_with("scoring: ") {
            self.scored.fetch_add(1, Ordering::SeqCst);
        }
    }
    fn warn(&self, _: &str) {}
}

/// The study's figures, as written: every row, the best choice at each count and the scores.
fn study(dir: &Path) -> [String; 3] {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("sweep.json")).unwrap()).unwrap();
    ["rows", "best", "scores"].map(|k| v[k].to_string())
}

fn journal(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("cells.jsonl"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn an_interrupted_sweep_resumes_to_the_uninterrupted_study() {
    let tmp = tempfile::tempdir().unwrap();
    let t = text(tmp.path());
    let model = ModelSource::new(fixture().join("llama"));
    let (whole, part) = (tmp.path().join("whole"), tmp.path().join("part"));
    sweep(&model, &request(&t, &whole), &Cells::new(0)).unwrap();
    assert_eq!(journal(&whole).len(), CELLS);

    let stop = Cells::new(7);
    let e = sweep(&model, &request(&t, &part), &stop).unwrap_err();
    assert_eq!(stop.scored.load(Ordering::SeqCst), 5);
    depthprune::base::cancel::clear();
    assert!(matches!(e, Error::Interrupted(_)), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("7 of 20 cells") && msg.contains("`resume`"),
        "{msg}"
    );
    assert_eq!(
        journal(&part).len(),
        7,
        "each finished cell is saved as it finishes"
    );
    assert!(!part.join("sweep.json").exists());
    assert_eq!(journal(&part)[..], journal(&whole)[..7]);

    // `report` on the partial study names what is missing.
    let req = depthprune::api::report::ReportRequest::default();
    let e = depthprune::api::report::report(&part, &req, &Cells::new(0)).unwrap_err();
    assert!(e.to_string().contains("13 cells are missing"), "{e}");

    // A changed setting is refused by name; a folder with saved cells needs `resume`.
    let mut changed = request(&t, &part);
    changed.resume = true;
    changed.eval_samples = 3;
    let e = sweep(&model, &changed, &Cells::new(0))
        .unwrap_err()
        .to_string();
    assert!(e.contains("`eval_samples` was 2 there, now 3"), "{e}");
    let e = sweep(&model, &request(&t, &part), &Cells::new(0))
        .unwrap_err()
        .to_string();
    assert!(e.contains("`resume`"), "{e}");
    assert_eq!(
        journal(&part).len(),
        7,
        "a refused run leaves the journal as it was"
    );

    let mut resume = request(&t, &part);
    resume.resume = true;
    let cells = Cells::new(0);
    sweep(&model, &resume, &cells).unwrap();
    assert_eq!(
        cells.saved.load(Ordering::SeqCst),
        7,
        "the saved cells are read back"
    );
    assert_eq!(
        cells.measured.load(Ordering::SeqCst),
        13,
        "only the missing cells are measured"
    );
    assert_eq!(
        cells.scored.load(Ordering::SeqCst),
        0,
        "the saved scores are read back"
    );
    assert_eq!(journal(&part), journal(&whole));
    assert_eq!(study(&part), study(&whole));
}

/// Runs the binary's sweep into `out` in `dir`, interrupts it with `signal` once its journal
/// holds two cells, and returns its exit code and stderr.
fn interrupt(dir: &Path, args: &[String], out: &Path, signal: i32) -> (Option<i32>, String) {
    let child = Command::new(common::bin())
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while std::fs::read_to_string(out.join("cells.jsonl")).map_or(0, |t| t.lines().count()) < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no cell was saved"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, signal) };
    let o = child.wait_with_output().unwrap();
    (o.status.code(), stderr(&o))
}

#[test]
fn sigint_and_sigkill_then_resume_equal_the_uninterrupted_study() {
    let tmp = tempfile::tempdir().unwrap();
    let t = text(tmp.path());
    let sweep_args = |out: &str| {
        let mut a = vec!["sweep".to_string(), s(&fixture().join("llama")).to_string()];
        a.extend(flags(&t, out));
        a
    };
    let whole = tmp.path().join("whole");
    let o = Command::new(common::bin())
        .args(sweep_args("whole"))
        .current_dir(tmp.path())
        .output();
    let o = o.unwrap();
    assert!(o.status.success(), "{}", stderr(&o));

    for (signal, name) in [(libc::SIGINT, "int"), (libc::SIGKILL, "kill")] {
        let out = tmp.path().join(name);
        let (code, err) = interrupt(tmp.path(), &sweep_args(name), &out, signal);
        let saved = journal(&out);
        if signal == libc::SIGINT {
            assert_eq!(code, Some(130), "{err}");
            let line = common::one_error_line(&err);
            assert!(
                line.contains("--resume") || err.contains("--resume"),
                "{err}"
            );
            assert!(
                line.contains(&format!("{} of {CELLS} cells", saved.len())),
                "{err}"
            );
        } else {
            assert_eq!(code, None, "killed: {err}");
            // A kill during a write leaves a torn last line; it is cut off on resume.
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(out.join("cells.jsonl"));
            std::io::Write::write_all(f.as_mut().unwrap(), b"{\"strategy\":\"ang").unwrap();
        }
        eprintln!("{name}: {} of {CELLS} cells saved", saved.len());
        assert!(
            saved.len() >= 2 && saved.len() < CELLS,
            "{} cells saved",
            saved.len()
        );
        assert_eq!(saved[..], journal(&whole)[..saved.len()]);
        let r = run_in(&["report", name], tmp.path());
        let e = common::one_error_line(&stderr(&r)).to_string();
        assert!(
            e.contains(&format!("{} cells are missing", CELLS - saved.len())),
            "{e}"
        );

        let mut args = sweep_args(name);
        args.push("--resume".into());
        let o = Command::new(common::bin())
            .args(&args)
            .current_dir(tmp.path())
            .output();
        let o = o.unwrap();
        let err = stderr(&o);
        assert!(o.status.success(), "{err}");
        let want = format!("resuming: {} of {CELLS} cells saved", saved.len());
        assert!(err.contains(&want), "{err}");
        assert_eq!(journal(&out), journal(&whole), "{name}: cell for cell");
        assert_eq!(study(&out), study(&whole), "{name}");
    }
}

#[test]
fn a_study_with_saved_cells_is_continued_or_started_over_never_overwritten() {
    let tmp = tempfile::tempdir().unwrap();
    let t = text(tmp.path());
    let model = fixture().join("llama");
    let args = |extra: &[&str]| {
        let mut a = vec![
            "sweep",
            s(&model),
            "--strategies",
            "last",
            "--remove",
            "0..2",
            "--eval",
            s(&t),
            "--eval-ctx",
            "16",
            "--eval-samples",
            "2",
            "--out",
            "study",
        ];
        a.extend_from_slice(extra);
        run_in(&a, tmp.path())
    };
    let o = args(&[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let saved = journal(&tmp.path().join("study"));
    let o = args(&[]);
    let e = common::one_error_line(&stderr(&o)).to_string();
    assert!(e.contains("--resume") && e.contains("--force"), "{e}");
    assert_eq!(journal(&tmp.path().join("study")), saved);
    let o = args(&["--resume", "--force"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = args(&["--force", "--eval-offset", "100"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(journal(&tmp.path().join("study")).len(), 2);
    assert_ne!(journal(&tmp.path().join("study")), saved, "started over");
}
