//! Running model-written programs (HumanEval), contained: each program runs as `python3
//! program.py` in its own process, in a fresh temporary folder (never the user's working folder)
//! that is removed afterwards, with a cleared environment, a wall-clock time limit (the whole
//! process group is killed when it passes), an address-space limit, a CPU-time limit, a file-size
//! limit, no core files, and, where Linux allows an unprivileged user and network namespace, no
//! network. Callers must have the user's consent: the API refuses without
//! `confirm_run_unsafe_code`.

use crate::error::{Error, Result};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How one program may run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Wall-clock seconds before the process group is killed (lm-eval's `code_eval` uses 3).
    pub timeout: Duration,
    /// Address space in bytes.
    pub memory: u64,
    /// Cut the network off (a new user and network namespace). When the kernel refuses, the
    /// program runs with the network and [`Sandbox::network_note`] says so.
    pub no_network: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_secs(3),
            memory: 2 << 30,
            no_network: true,
        }
    }
}

/// How a program ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Passed,
    Failed,
    TimedOut,
}

/// Runs programs under [`Limits`].
#[derive(Debug, Clone)]
pub struct Sandbox {
    limits: Limits,
    /// Whether the network namespace works here (probed once).
    isolated: bool,
    python: PathBuf,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The limits, set in the child between `fork` and `exec`: only async-signal-safe calls.
fn contain(limits: Limits, isolate: bool) -> std::io::Result<()> {
    // SAFETY: setsid, setrlimit and unshare are async-signal-safe system calls on plain data.
    unsafe {
        if libc::setsid() < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let cpu = limits.timeout.as_secs() + 1;
        for (res, v) in [
            (libc::RLIMIT_AS, limits.memory),
            (libc::RLIMIT_CPU, cpu),
            (libc::RLIMIT_FSIZE, 64 << 20),
            (libc::RLIMIT_CORE, 0),
        ] {
            let lim = libc::rlimit {
                rlim_cur: v as libc::rlim_t,
                rlim_max: v as libc::rlim_t,
            };
            if libc::setrlimit(res, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        if isolate && libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

impl Sandbox {
    /// Finds `python3` and probes whether the network can be cut off.
    pub fn new(limits: Limits) -> Result<Self> {
        let python = find_python().ok_or_else(|| {
            Error::Invalid("running the programs needs `python3` on the PATH".into())
        })?;
        let mut sb = Sandbox {
            limits,
            isolated: limits.no_network,
            python,
        };
        if limits.no_network {
            sb.isolated = matches!(sb.run("pass\n"), Ok(Outcome::Passed));
            if !sb.isolated {
                sb.limits.no_network = false;
                if sb.run("pass\n")? != Outcome::Passed {
                    return Err(Error::Invalid(format!(
                        "`{}` does not run a trivial program under the limits",
                        sb.python.display()
                    )));
                }
            }
        }
        Ok(sb)
    }

    /// A note for the user when the network could not be cut off.
    pub fn network_note(&self) -> Option<String> {
        (!self.isolated).then(|| {
            "the kernel refused a private network namespace, so the programs run with the network (still in their own folder, with time and memory limits)".to_string()
        })
    }

    /// Runs `program` and says how it ended: passed when it exits with status 0 in time.
    pub fn run(&self, program: &str) -> Result<Outcome> {
        let dir = std::env::temp_dir().join(format!(
            "depthprune-exec-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&dir)
            .map_err(|e| Error::Invalid(format!("`{}`: cannot create: {e}", dir.display())))?;
        let out = self.run_in(&dir, program);
        // The folder is ours alone; a program that left files behind loses them.
        let _ = std::fs::remove_dir_all(&dir);
        out
    }

    fn run_in(&self, dir: &std::path::Path, program: &str) -> Result<Outcome> {
        let file = dir.join("program.py");
        std::fs::write(&file, program)
            .map_err(|e| Error::Invalid(format!("`{}`: cannot write: {e}", file.display())))?;
        let limits = self.limits;
        let isolate = limits.no_network;
        let mut cmd = Command::new(&self.python);
        cmd.arg("program.py")
            .current_dir(dir)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", dir)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("PYTHONHASHSEED", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: `contain` makes only async-signal-safe system calls.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(move || contain(limits, isolate));
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| Error::Invalid(format!("cannot start `python3`: {e}")))?;
        let started = Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    return Ok(if status.success() {
                        Outcome::Passed
                    } else {
                        Outcome::Failed
                    })
                }
                Ok(None) if started.elapsed() >= limits.timeout => {
                    // The child leads its own session: kill the whole group.
                    // SAFETY: a signal to a process group we created.
                    unsafe {
                        libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL);
                    }
                    let _ = child.kill();
                    let _ = child.wait();
                    return Ok(Outcome::TimedOut);
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => return Err(Error::Invalid(format!("waiting for `python3`: {e}"))),
            }
        }
    }
}

fn find_python() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("python3"))
        .find(|p| p.is_file())
}

/// The unbiased estimator of pass@k from `n` samples of which `c` passed (Chen et al. 2021):
/// `1 - C(n - c, k) / C(n, k)`.
pub fn pass_at_k(n: usize, c: usize, k: usize) -> f64 {
    if n < k || k == 0 {
        return f64::NAN;
    }
    if n - c < k {
        return 1.0;
    }
    1.0 - ((n - c + 1)..=n)
        .map(|i| 1.0 - k as f64 / i as f64)
        .product::<f64>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pass_at_k_is_the_unbiased_estimator() {
        assert_eq!(pass_at_k(1, 1, 1), 1.0);
        assert_eq!(pass_at_k(1, 0, 1), 0.0);
        // n = 10, c = 3, k = 1: 3/10.
        assert!((pass_at_k(10, 3, 1) - 0.3).abs() < 1e-12);
        // k = 5: 1 - C(7,5)/C(10,5) = 1 - 21/252.
        assert!((pass_at_k(10, 3, 5) - (1.0 - 21.0 / 252.0)).abs() < 1e-12);
        assert_eq!(pass_at_k(10, 6, 5), 1.0);
        assert!(pass_at_k(3, 1, 5).is_nan());
    }

    #[test]
    fn programs_run_contained() {
        let Ok(sb) = Sandbox::new(Limits {
            timeout: Duration::from_millis(1500),
            ..Limits::default()
        }) else {
            panic!("python3 is needed to test code execution");
        };
        assert_eq!(sb.run("assert 1 + 1 == 2\n").unwrap(), Outcome::Passed);
        assert_eq!(sb.run("assert 1 + 1 == 3\n").unwrap(), Outcome::Failed);
        assert_eq!(
            sb.run("while True:\n    pass\n").unwrap(),
            Outcome::TimedOut
        );
        // The address-space limit: 4 GiB cannot be allocated under 2 GiB.
        assert_eq!(sb.run("x = bytearray(4 << 30)\n").unwrap(), Outcome::Failed);
        // Its own folder, not ours, and emptied afterwards.
        let cwd = std::env::current_dir().unwrap();
        let prog = format!(
            "import os\nassert os.getcwd() != {:?}\nassert os.listdir('.') == ['program.py']\nopen('x', 'w').write('y')\n",
            cwd.display().to_string()
        );
        assert_eq!(sb.run(&prog).unwrap(), Outcome::Passed);
        if sb.network_note().is_none() {
            let net =
                "import socket\ns = socket.socket()\ns.settimeout(1)\ns.connect(('1.1.1.1', 53))\n";
            assert_eq!(sb.run(net).unwrap(), Outcome::Failed);
        }
    }
}
