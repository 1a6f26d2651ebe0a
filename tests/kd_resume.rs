//! A distillation that is cut off continues from its best state (issue 33): on the golden llama
//! fixture (layer 2 removed), a run of 8 steps saves its best maps and low-rank factors at every
//! validation; a run asked to resume to 24 steps trains only steps 9 to 24, from those maps, and
//! ends no worse; a changed setting is refused by name.

mod common;

use common::{golden_llama, golden_tokens, heal_golden};
use depthprune::heal::{self, KdCheckpoint, KdOptions};
use depthprune::progress::Progress;
use std::sync::Mutex;

use common::guarded as opts;

fn kd(steps: usize) -> KdOptions {
    KdOptions {
        steps,
        lr: 1e-2,
        eval_every: 4,
        patience: 0,
        rank: 2,
        ..KdOptions::default()
    }
}

/// Counts training steps and keeps the messages.
#[derive(Default)]
struct Steps {
    phase: Mutex<String>,
    trained: Mutex<usize>,
    messages: Mutex<Vec<String>>,
}

impl Progress for Steps {
    fn start(&self, label: &str, _: u64) {
        *self.phase.lock().unwrap() = label.to_string();
    }
    fn advance(&self, n: u64) {
        if *self.phase.lock().unwrap() == "kd: training" {
            *self.trained.lock().unwrap() += n as usize;
        }
    }
    fn message(&self, msg: &str) {
        self.messages.lock().unwrap().push(msg.to_string());
    }
    fn warn(&self, _: &str) {}
}

#[test]
fn a_cut_off_distillation_resumes_from_its_best_state() {
    let t = golden_tokens(common::GUARD_SAMPLES);
    let start = heal_golden(&t, &opts()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let saved = KdCheckpoint {
        path: dir.path().join(".out.depthprune-kd.safetensors"),
        resume: false,
    };
    let cut = heal::distil_with(
        &golden_llama(),
        &t,
        &start,
        &kd(8),
        Some(&saved),
        &Steps::default(),
    )
    .unwrap();
    let cut = cut.distillation.unwrap();
    let state = dir.path().join(".out.depthprune-kd.safetensors.json");
    assert!(
        state.is_file(),
        "the best state is saved at each validation"
    );
    let files = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(files, 2, "one state: the JSON and the tensors it names");
    assert!(cut.kept() && cut.best_kl < cut.start_kl, "{cut:?}");

    let resume = KdCheckpoint {
        resume: true,
        ..saved.clone()
    };
    let p = Steps::default();
    let out = heal::distil_with(&golden_llama(), &t, &start, &kd(24), Some(&resume), &p).unwrap();
    let d = out.distillation.unwrap();
    assert_eq!(
        *p.trained.lock().unwrap(),
        16,
        "only steps 9 to 24 are trained"
    );
    let messages = p.messages.lock().unwrap().join("\n");
    assert!(messages.contains("kd: resuming after step 8"), "{messages}");
    assert_eq!(d.start_kl, cut.start_kl);
    assert!(d.best_kl <= cut.best_kl, "{d:?} after {cut:?}");
    assert_eq!(d.steps, 24);
    assert_eq!(d.curve[1].step, 12);

    // Without `resume` the run starts over; with other settings it is refused by name.
    let p = Steps::default();
    heal::distil_with(&golden_llama(), &t, &start, &kd(4), Some(&saved), &p).unwrap();
    assert_eq!(*p.trained.lock().unwrap(), 4);
    let other = KdOptions { lr: 5e-3, ..kd(24) };
    let e = heal::distil_with(
        &golden_llama(),
        &t,
        &start,
        &other,
        Some(&resume),
        &Steps::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("`lr` was 0.01 there, now 0.005"), "{e}");
}

/// `prune --heal kd` killed while it trains leaves its best state beside the output, and the
/// same command with `--resume` continues from it, writes the output and removes the state.
#[test]
fn prune_heal_kd_killed_then_resumed() {
    use common::s;
    use std::process::{Command, Stdio};
    let tmp = tempfile::tempdir().unwrap();
    let (model, calib) = (golden_llama(), common::golden_text());
    let args = |steps: &'static str| {
        let a = common::guarded_flags(&[
            "prune",
            s(&model),
            "--drop",
            "2..3",
            "--heal",
            "kd",
            "--calib",
            s(&calib),
            "--steps",
            steps,
            "--kd-eval-every",
            "4",
            "--patience",
            "0",
            "--rank",
            "2",
            "--out",
            "out",
        ]);
        a.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let state = tmp.path().join(".out.depthprune-kd.safetensors.json");
    let mut child = Command::new(common::bin())
        .args(args("1000000"))
        .current_dir(tmp.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while !state.is_file() {
        assert!(t0.elapsed().as_secs() < 120, "no state was saved");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!tmp.path().join("out").exists());

    let mut resumed = args("16");
    resumed.push("--resume".into());
    let o = Command::new(common::bin())
        .args(&resumed)
        .current_dir(tmp.path())
        .output()
        .unwrap();
    let err = common::stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("kd: resuming after step"), "{err}");
    assert!(tmp.path().join("out/pruning.json").is_file());
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("depthprune"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
