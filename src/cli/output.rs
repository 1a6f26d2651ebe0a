//! How the CLI talks: data on stdout, progress, warnings and errors on stderr. Errors print as
//! `error: …` on one line, with an optional `hint: …`.

use depthprune::progress::{Meter, Progress, LOG_EVERY};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

/// Prints a warning on stderr.
pub fn warn(msg: impl std::fmt::Display) {
    eprintln!("warning: {}", as_flags(&msg.to_string()));
}

/// The command line's long flags (`calib-offset`, …), for [`as_flags`].
static FLAGS: OnceLock<Vec<String>> = OnceLock::new();

/// Records the long flags of every subcommand.
pub fn set_flags(cmd: &clap::Command) {
    let mut flags = Vec::new();
    for sub in std::iter::once(cmd).chain(cmd.get_subcommands()) {
        flags.extend(
            sub.get_arguments()
                .filter_map(|a| a.get_long())
                .map(String::from),
        );
    }
    flags.sort();
    flags.dedup();
    let _ = FLAGS.set(flags);
}

/// The library names options by their keys in backticks (`` `calib_offset` ``, as the Python
/// package spells them); on the command line they are flags (`--calib-offset`).
pub fn as_flags(msg: &str) -> String {
    let mut out = msg.to_string();
    for f in FLAGS.get().into_iter().flatten() {
        let key = format!("`{}`", f.replace('-', "_"));
        if out.contains(&key) {
            out = out.replace(&key, &format!("--{f}"));
        }
    }
    out
}

/// Prints an error chain on one line and returns the exit code for it.
pub fn report_error(e: &anyhow::Error) -> i32 {
    if is_broken_pipe(e) {
        return 0;
    }
    let mut line = format!("{e}");
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !line.contains(&c) {
            line.push_str(": ");
            line.push_str(&c);
        }
    }
    // A key of a file (`dtype` in `config.json`) is not the flag of the same name.
    let in_file = e.chain().any(|c| {
        matches!(
            c.downcast_ref::<depthprune::error::Error>(),
            Some(depthprune::error::Error::Config { .. })
        )
    });
    let line = if in_file { line } else { as_flags(&line) };
    eprintln!("error: {line}");
    // A job stopped by SIGINT/SIGTERM exits as a shell reports an interrupted command.
    let interrupted = e.chain().any(|c| {
        matches!(
            c.downcast_ref::<depthprune::error::Error>(),
            Some(depthprune::error::Error::Interrupted(_))
        )
    });
    if interrupted {
        130
    } else {
        1
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Writes `text` to stdout; a closed pipe becomes an error that exits quietly.
pub fn print(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// Prints a value as pretty JSON on stdout.
pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut s = serde_json::to_string_pretty(value)?;
    s.push('\n');
    print(&s)
}

/// A progress bar on stderr when stderr is a terminal. When it is not (a log file, a pipe),
/// lines instead, each with the seconds since the command began (issue 26): one per finished
/// step, per message and per finished phase, and while a phase runs one at every tenth of it
/// and at least every [`depthprune::progress::LOG_EVERY`], with the phase's time so far and
/// an estimate of the time left (issue 35), so a log shows where a long run is. A unit of work
/// longer than that (a sweep cell, one large solve) still gets a line every
/// [`depthprune::progress::LOG_EVERY`] from a watcher thread.
pub struct Bar {
    bar: Mutex<Option<ProgressBar>>,
    bytes: bool,
    /// Whether to write log lines: stderr is not a terminal.
    log: bool,
    began: Instant,
    /// The current phase, for log lines.
    phase: Arc<Mutex<Option<Meter>>>,
}

impl Bar {
    fn new(bytes: bool) -> Self {
        let log = !std::io::stderr().is_terminal();
        let phase = Arc::new(Mutex::new(None));
        let began = Instant::now();
        if log {
            watch(Arc::downgrade(&phase), began);
        }
        Bar {
            bar: Mutex::new(None),
            bytes,
            log,
            began,
            phase,
        }
    }

    /// A bar counting bytes.
    pub fn bytes() -> Self {
        Bar::new(true)
    }

    /// A bar counting items (tokens, layers, windows).
    #[allow(dead_code)] // Used by the scoring and evaluation commands.
    pub fn items() -> Self {
        Bar::new(false)
    }

    /// Writes one log line, stamped with the seconds since the command began.
    fn log_line(&self, line: &str) {
        log_line(self.began, line);
    }

    /// Draws a new bar counting bytes or items.
    fn begin(&self, label: &str, total: u64, bytes: bool) {
        if let Ok(mut phase) = self.phase.lock() {
            *phase = Some(Meter::new(label, total, bytes));
        }
        let pb = ProgressBar::new(total);
        let template = if bytes {
            "{msg:>12} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}"
        } else {
            "{msg:>12} [{bar:40}] {pos}/{len} eta {eta}"
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            pb.set_style(style.progress_chars("=> "));
        }
        pb.set_message(label.to_string());
        if let Ok(mut slot) = self.bar.lock() {
            if let Some(old) = slot.replace(pb) {
                old.finish_and_clear();
            }
        }
    }

    /// Counts `n` units in the phase; the log line it calls for, if any.
    fn count(&self, n: u64) -> Option<String> {
        let mut phase = self.phase.lock().ok()?;
        phase.as_mut()?.advance(n)
    }
}

/// Writes one log line, stamped with the seconds since `began`.
fn log_line(began: Instant, line: &str) {
    eprintln!("[{:>7.1} s] {line}", began.elapsed().as_secs_f64());
}

/// Watches the phase of a logging [`Bar`] until the bar is gone: when a phase has been quiet
/// for [`LOG_EVERY`] (one unit of it is long), writes where it stands.
fn watch(phase: Weak<Mutex<Option<Meter>>>, began: Instant) {
    let spawned = std::thread::Builder::new()
        .name("progress-log".into())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_secs(1));
            let Some(phase) = phase.upgrade() else { return };
            let line = phase.lock().ok().and_then(|mut p| {
                let m = p.as_mut()?;
                (m.quiet_for() >= LOG_EVERY).then(|| {
                    m.touched();
                    format!("{} (still working)", m.line())
                })
            });
            if let Some(line) = line {
                log_line(began, &line);
            }
        });
    // Without the thread, logs still get the lines that units of work write.
    drop(spawned);
}

impl Progress for Bar {
    fn start(&self, label: &str, total: u64) {
        self.begin(label, total, self.bytes);
    }

    fn start_bytes(&self, label: &str, total: u64) {
        self.begin(label, total, true);
    }

    fn advance(&self, n: u64) {
        let line = self.count(n);
        if let (true, Some(line)) = (self.log, line) {
            self.log_line(&line);
        }
        if let Ok(slot) = self.bar.lock() {
            if let Some(pb) = slot.as_ref() {
                pb.inc(n);
            }
        }
    }

    fn step_done(&self, what: &str) {
        // The step's own line says where the phase is; no timed line on top of it.
        let _ = self.count(1);
        if let Ok(slot) = self.bar.lock() {
            if let Some(pb) = slot.as_ref() {
                pb.inc(1);
            }
        }
        if !self.log {
            return;
        }
        let line = match self.phase.lock().ok().as_mut().and_then(|p| p.as_mut()) {
            Some(p) => {
                p.touched();
                format!("{}: {what}", p.line())
            }
            None => what.to_string(),
        };
        self.log_line(&line);
    }

    fn message(&self, msg: &str) {
        if self.log {
            if let Some(p) = self.phase.lock().ok().as_mut().and_then(|p| p.as_mut()) {
                p.touched();
            }
            self.log_line(msg);
        }
        if let Ok(slot) = self.bar.lock() {
            if let Some(pb) = slot.as_ref() {
                pb.set_message(msg.to_string());
            }
        }
    }

    fn finish(&self) {
        let phase = self.phase.lock().ok().and_then(|mut p| p.take());
        if let (true, Some(p)) = (self.log, phase) {
            let (done, total) = p.position();
            let amount = if p.bytes() {
                format!("{:.1} MB", done as f64 / 1e6)
            } else {
                format!("{done} of {total}")
            };
            self.log_line(&format!(
                "{}: done, {amount} in {:.1} s",
                p.label(),
                p.elapsed()
            ));
        }
        if let Ok(mut slot) = self.bar.lock() {
            if let Some(pb) = slot.take() {
                pb.finish_and_clear();
            }
        }
    }

    fn warn(&self, msg: &str) {
        let line = format!("warning: {}", as_flags(msg));
        match self.bar.lock().ok().as_ref().and_then(|s| s.as_ref()) {
            Some(pb) => pb.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }
}
