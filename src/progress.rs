//! Progress reporting without printing: library code reports through [`Progress`], and the CLI
//! decides whether to draw a bar (on a terminal) or write lines (when piped into a log). A
//! [`Meter`] decides when a log should hear about a long phase: at every tenth of it, and at
//! least every [`LOG_EVERY`] while it runs, each line with the time spent and an estimate of
//! the time left.

use std::time::{Duration, Instant};

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
    /// A status line for the current phase (a running loss, a fold site's result).
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

/// A log line is written at least this often while a phase advances (issue 35: no stage silent
/// for more than 30 s in a log).
pub const LOG_EVERY: Duration = Duration::from_secs(20);

/// The state of one phase, for log lines: what is done, since when, and when a line was last
/// written. It only decides and formats; the caller writes.
#[derive(Debug, Clone)]
pub struct Meter {
    label: String,
    total: u64,
    done: u64,
    bytes: bool,
    began: Instant,
    last_line: Instant,
    /// The tenths of the phase already announced.
    tenths: u64,
}

impl Meter {
    /// A phase of `total` units (bytes when `bytes`) that begins now.
    pub fn new(label: &str, total: u64, bytes: bool) -> Self {
        Self::new_at(label, total, bytes, Instant::now())
    }

    /// [`Self::new`] at the instant `now`.
    pub fn new_at(label: &str, total: u64, bytes: bool, now: Instant) -> Self {
        Meter {
            label: label.to_string(),
            total,
            done: 0,
            bytes,
            began: now,
            last_line: now,
            tenths: 0,
        }
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// Units done and the phase's total.
    pub fn position(&self) -> (u64, u64) {
        (self.done, self.total)
    }

    pub fn bytes(&self) -> bool {
        self.bytes
    }

    /// Seconds since the phase began.
    pub fn elapsed(&self) -> f64 {
        self.began.elapsed().as_secs_f64()
    }

    /// Seconds left at the pace so far, once something is done and the total is known.
    pub fn left(&self) -> Option<f64> {
        self.left_at(Instant::now())
    }

    fn left_at(&self, now: Instant) -> Option<f64> {
        if self.done == 0 || self.total == 0 {
            return None;
        }
        let spent = now.saturating_duration_since(self.began).as_secs_f64();
        let rest = self.total.saturating_sub(self.done) as f64;
        Some(spent * rest / self.done as f64)
    }

    /// Counts `n` more units done; returns a line when a log should show one: the phase
    /// crossed another tenth of its total, or [`LOG_EVERY`] passed since the last line.
    pub fn advance(&mut self, n: u64) -> Option<String> {
        self.advance_at(n, Instant::now())
    }

    /// [`Self::advance`] at the instant `now`.
    pub fn advance_at(&mut self, n: u64, now: Instant) -> Option<String> {
        self.done = self.done.saturating_add(n);
        let tenths = match self.total {
            0 => 0,
            t => (self.done.min(t) * 10 / t).min(10),
        };
        let crossed = tenths > self.tenths && self.done < self.total;
        let stale = now.saturating_duration_since(self.last_line) >= LOG_EVERY;
        self.tenths = self.tenths.max(tenths);
        (crossed || stale).then(|| {
            self.last_line = now;
            self.line_at(now)
        })
    }

    /// How long since the phase began or a line about it was last written.
    pub fn quiet_for(&self) -> Duration {
        self.last_line.elapsed()
    }

    /// Notes that a line about the phase was just written elsewhere (a step, a message), so the
    /// next timed line waits another [`LOG_EVERY`].
    pub fn touched(&mut self) {
        self.last_line = Instant::now();
    }

    /// `healing 37/120 (31%), 84.2 s, about 2 min 23 s left`.
    pub fn line(&self) -> String {
        self.line_at(Instant::now())
    }

    fn line_at(&self, now: Instant) -> String {
        let spent = now.saturating_duration_since(self.began).as_secs_f64();
        let amount = match (self.bytes, self.total) {
            (true, 0) => format!("{:.1} MB", self.done as f64 / 1e6),
            (true, t) => format!(
                "{:.1}/{:.1} MB ({}%)",
                self.done as f64 / 1e6,
                t as f64 / 1e6,
                self.done.min(t) * 100 / t
            ),
            (false, 0) => format!("{}", self.done),
            (false, t) => format!("{}/{t} ({}%)", self.done, self.done.min(t) * 100 / t),
        };
        let left = match self.left_at(now) {
            Some(s) => format!(", about {} left", duration(s)),
            None => String::new(),
        };
        format!("{} {amount}, {spent:.1} s{left}", self.label)
    }
}

/// `45 s`, `3 min 05 s`, `1 h 02 min`.
pub fn duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {:02} s", s / 60, s % 60),
        _ => format!("{} h {:02} min", s / 3600, s / 60 % 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_at_every_tenth_with_the_time_left() {
        let t0 = Instant::now();
        let mut m = Meter::new_at("healing", 40, false, t0);
        let mut lines = Vec::new();
        for i in 1..=40u64 {
            // One second a unit: far below LOG_EVERY, so only the tenths speak.
            if let Some(l) = m.advance_at(1, t0 + Duration::from_secs(i)) {
                lines.push(l);
            }
        }
        // Tenths 1..=9 (the end is the caller's `finish` line).
        assert_eq!(lines.len(), 9, "{lines:?}");
        assert_eq!(lines[0], "healing 4/40 (10%), 4.0 s, about 36 s left");
        assert_eq!(lines[8], "healing 36/40 (90%), 36.0 s, about 4 s left");
    }

    #[test]
    fn a_slow_phase_speaks_at_least_every_log_every() {
        let t0 = Instant::now();
        let mut m = Meter::new_at("kd: training", 1000, false, t0);
        let step = LOG_EVERY / 2 + Duration::from_millis(1);
        let mut lines = 0;
        for i in 1..=20u32 {
            lines += usize::from(m.advance_at(1, t0 + step * i).is_some());
        }
        // 20 units of 1,000 cross no tenth; every second unit comes after LOG_EVERY.
        assert_eq!(lines, 10);
    }

    #[test]
    fn durations_read_in_minutes_and_hours() {
        assert_eq!(duration(44.6), "45 s");
        assert_eq!(duration(185.0), "3 min 05 s");
        assert_eq!(duration(3720.0), "1 h 02 min");
    }
}
