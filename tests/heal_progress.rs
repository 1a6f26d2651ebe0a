//! Healing tells a log what it is doing (issue 35): a heal on the golden llama reports its
//! phase in many small steps that add up to the phase's total, and one step per fold site; run
//! from the command line with stderr in a log, each fold site gets a line and the phase a line
//! at every tenth, with the time spent and the time left.

mod common;

use common::{golden_llama, golden_tokens, guarded, guarded_flags, prune_golden, stderr};
use depthprune::heal::{self, HealOptions, Maps};
use depthprune::progress::Progress;
use std::sync::Mutex;

#[derive(Debug, Clone, PartialEq)]
enum Event {
    Start(String, u64),
    Advance(u64),
    Step(String),
    Finish,
}

/// Records every event.
#[derive(Default)]
struct Recorder(Mutex<Vec<Event>>);

impl Progress for Recorder {
    fn start(&self, label: &str, total: u64) {
        self.0
            .lock()
            .unwrap()
            .push(Event::Start(label.into(), total));
    }
    fn advance(&self, n: u64) {
        self.0.lock().unwrap().push(Event::Advance(n));
    }
    fn step_done(&self, what: &str) {
        self.0.lock().unwrap().push(Event::Step(what.into()));
    }
    fn finish(&self) {
        self.0.lock().unwrap().push(Event::Finish);
    }
}

#[test]
fn a_heal_reports_each_fold_site_and_many_steps_that_add_up_to_its_total() {
    let t = golden_tokens(common::GUARD_SAMPLES);
    // Per-layer maps: the block 2..3 into layer 1, and layer 3's own map: two fold sites.
    let opts = HealOptions {
        maps: Maps::PerLayer,
        ..guarded()
    };
    let rec = Recorder::default();
    let h = heal::heal(&golden_llama(), &[2], &t, &opts, &rec).unwrap();
    let sites = h.blocks.len() + h.layers.len();
    assert_eq!(sites, 2);
    let events = rec.0.into_inner().unwrap();
    let Some(Event::Start(label, total)) = events.first().cloned() else {
        panic!("no phase started: {events:?}");
    };
    assert_eq!(label, "healing");
    assert_eq!(events.last(), Some(&Event::Finish));
    let updates = events
        .iter()
        .filter(|e| matches!(e, Event::Advance(_) | Event::Step(_)))
        .count();
    // 16 windows, 2 sites: a silent stretch would show as few, coarse updates.
    assert!(updates >= 20, "{updates} updates: {events:?}");
    let done: u64 = events
        .iter()
        .map(|e| match e {
            Event::Advance(n) => *n,
            Event::Step(_) => 1,
            _ => 0,
        })
        .sum();
    assert_eq!(done, total, "the units done must reach the total");
    let steps: Vec<&String> = events
        .iter()
        .filter_map(|e| match e {
            Event::Step(s) => Some(s),
            _ => None,
        })
        .collect();
    assert_eq!(steps.len(), sites, "{steps:?}");
    assert!(steps[0].starts_with("fold site 1/2: block 2..3 into layer 1: "));
    assert!(steps[1].starts_with("fold site 2/2: layer 3 (per-layer map): "));
}

#[test]
fn a_logged_prune_heal_prints_each_fold_site_and_the_time_left() {
    let dir = tempfile::tempdir().unwrap();
    let flags = guarded_flags(&["--heal", "auto", "--maps", "per-layer"]);
    let o = prune_golden(dir.path(), &[flags.as_slice(), &["--out", "x"]].concat());
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    // stderr is a pipe here, so the log lines are written.
    for site in [
        "fold site 1/2: block 2..3 into layer 1",
        "fold site 2/2: layer 3",
    ] {
        let line = err
            .lines()
            .find(|l| l.contains(site))
            .unwrap_or_else(|| panic!("no line for `{site}`:\n{err}"));
        assert!(
            line.contains(" s, about ") && line.contains(" left"),
            "{line}"
        );
    }
    let tenths = err
        .lines()
        .filter(|l| l.contains("] healing ") && l.contains("%), ") && l.contains(" left"))
        .count();
    assert!(tenths >= 9, "{tenths} timed lines:\n{err}");
}
