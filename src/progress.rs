//! Progress reporting without printing: library code reports through [`Progress`], and the CLI
//! decides whether to draw a bar (on a terminal) or write a line per finished step (when piped
//! into a log).

/// Receives progress from long-running library work.
pub trait Progress: Sync {
    /// A new phase begins, measured in `total` units (bytes, tokens, layers).
    fn start(&self, _label: &str, _total: u64) {}
    /// A new phase begins, measured in bytes (a download, a checkpoint being written).
    fn start_bytes(&self, label: &str, total: u64) {
        self.start(label, total)
    }
    /// `n` more units are done.
    fn advance(&self, _n: u64) {}
    /// A status line for the current phase (a running loss, say).
    fn message(&self, _msg: &str) {}
    /// The current phase is over.
    fn finish(&self) {}
    /// One step a log should show is over (a sweep cell: strategy and count); `what` names it.
    /// Also counts as [`Self::advance`]`(1)`.
    fn step_done(&self, _what: &str) {
        self.advance(1)
    }
    /// Something the user should know that does not stop the work (a slice shorter than asked,
    /// a tokenizer note). By default it goes to stderr as `warning: …`.
    fn warn(&self, msg: &str) {
        eprintln!("warning: {msg}");
    }
}

/// Reports nothing.
pub struct Silent;

impl Progress for Silent {}
