//! Progress reporting without printing: library code reports through [`Progress`], and the CLI
//! decides whether to draw a bar (on a terminal) or stay quiet (when piped).

/// Receives progress from long-running library work.
pub trait Progress: Sync {
    /// A new phase begins, measured in `total` units (bytes, tokens, layers).
    fn start(&self, _label: &str, _total: u64) {}
    /// `n` more units are done.
    fn advance(&self, _n: u64) {}
    /// A status line for the current phase (a running loss, say).
    fn message(&self, _msg: &str) {}
    /// The current phase is over.
    fn finish(&self) {}
}

/// Reports nothing.
pub struct Silent;

impl Progress for Silent {}
