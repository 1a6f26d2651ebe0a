//! A request to stop, checked between the steps of a long job (a sweep's cells, issue 33). The
//! library never exits and installs no signal handler: the command line sets the flag from its
//! SIGINT/SIGTERM handler ([`request`] is async-signal-safe, one atomic store), and a job that
//! sees it saves what it finished and returns [`crate::error::Error::Interrupted`].
//!
//! The flag is process-wide, as signals are.

use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// Asks every running job to stop at its next step.
pub fn request() {
    REQUESTED.store(true, Ordering::SeqCst);
}

/// Whether a stop was asked for.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// Withdraws the request (for a caller that handled it and goes on, such as a test).
pub fn clear() {
    REQUESTED.store(false, Ordering::SeqCst);
}
