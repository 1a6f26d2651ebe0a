//! `doctor`: the machine report a bug report carries and every speed figure is quoted with
//! (issue 34): the CPU and its features, each core's measured peak rates, the kernels chosen on
//! representative products, the threads and the memory, and a one-line summary of them.

use crate::error::{Error, Result};
use crate::model::kernel::KernelRecord;
use crate::model::machine::{self, Cpu, Memory, Peaks};
use crate::progress::Progress;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The longest a peak rate may be measured for, in milliseconds.
pub const MAX_PEAK_MS: u64 = 10_000;

/// What `doctor` measures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
#[serde(default)]
pub struct DoctorRequest {
    /// Milliseconds each peak rate is measured for (one core each: f32, bf16, int8), 1 to 10000.
    #[cfg_attr(feature = "cli", arg(long, value_name = "MS", default_value_t = 150))]
    pub peak_ms: u64,
    /// Leave out the kernel choice on representative products (a second or less).
    #[cfg_attr(feature = "cli", arg(long))]
    pub no_kernels: bool,
    /// How the call runs: threads and kernel (the CLI's global flags).
    #[serde(flatten)]
    #[cfg_attr(feature = "cli", arg(skip))]
    pub run: crate::api::RunOptions,
}

impl Default for DoctorRequest {
    fn default() -> Self {
        DoctorRequest {
            peak_ms: 150,
            no_kernels: false,
            run: Default::default(),
        }
    }
}

/// The machine, as `doctor --json` prints it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MachineReport {
    /// depthprune's version.
    pub version: String,
    pub cpu: Cpu,
    /// Peak rates of one core.
    pub peak: Peaks,
    /// The threads the model's commands run on (`threads`, else every core).
    pub threads: usize,
    pub memory: Memory,
    /// The kernel chosen for each kind of product, with each candidate's measured rate.
    pub kernels: Vec<KernelRecord>,
    /// The report in one line (`machine: …`), to print beside speed figures.
    pub line: String,
}

/// Measures this machine: about three times `peak_ms` on one core, then a few representative
/// products on the call's threads.
pub fn doctor(req: &DoctorRequest, progress: &dyn Progress) -> Result<MachineReport> {
    if !(1..=MAX_PEAK_MS).contains(&req.peak_ms) {
        return Err(Error::Invalid(format!(
            "`peak_ms` is {}; give 1 to {MAX_PEAK_MS} milliseconds",
            req.peak_ms
        )));
    }
    req.run.install(progress, || {
        let cpu = machine::cpu();
        progress.message("measuring the peak rates of one core");
        let peak = machine::peaks(Duration::from_millis(req.peak_ms));
        let kernels = if req.no_kernels {
            Vec::new()
        } else {
            progress.message("choosing kernels on representative products");
            machine::representative_kernels()?
        };
        let threads = rayon::current_num_threads();
        let memory = machine::memory();
        let line = summary(&cpu, &peak, threads, &memory);
        Ok(MachineReport {
            version: env!("CARGO_PKG_VERSION").to_string(),
            cpu,
            peak,
            threads,
            memory,
            kernels,
            line,
        })
    })
}

/// `machine: CPU (family F model M) · f32 X · bf16 Y · int8 Z G/s/core · threads N · memory A/T GiB`.
fn summary(cpu: &Cpu, p: &Peaks, threads: usize, mem: &Memory) -> String {
    let mut s = format!("machine: {}", cpu.model);
    if let (Some(f), Some(m)) = (cpu.family, cpu.model_number) {
        s += &format!(" (family {f} model {m})");
    }
    let rate = |name: &str, r: Option<f64>| match r {
        Some(r) => format!(" · {name} {r:.0}"),
        None => format!(" · {name} -"),
    };
    s += &rate("f32", p.f32_gflops);
    s += &rate("bf16", p.bf16_gflops);
    s += &rate("int8", p.int8_gops);
    s += &format!(" G/s/core · threads {threads}/{}", cpu.cores);
    if let (Some(a), Some(t)) = (mem.available_bytes, mem.total_bytes) {
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        s += &format!(" · memory {:.0}/{:.0} GiB free", gib(a), gib(t));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::Silent;

    #[test]
    fn the_report_has_every_field_and_its_line_quotes_them() {
        let req = DoctorRequest {
            peak_ms: 2,
            ..Default::default()
        };
        let r = doctor(&req, &Silent).unwrap();
        let v = serde_json::to_value(&r).unwrap();
        for key in [
            "version", "cpu", "peak", "threads", "memory", "kernels", "line",
        ] {
            assert!(v.get(key).is_some(), "no `{key}` in {v}");
        }
        for key in ["f32_gflops", "bf16_gflops", "int8_gops"] {
            assert!(v["peak"].get(key).is_some(), "no `peak.{key}`");
        }
        let kinds: Vec<(String, String)> = (r.kernels.iter())
            .map(|k| (k.weight.clone(), k.rows.clone()))
            .collect();
        for kind in [
            ("bf16", "many"),
            ("bf16", "few"),
            ("f16", "many"),
            ("q4_k", "many"),
        ] {
            let kind = (kind.0.to_string(), kind.1.to_string());
            assert!(kinds.contains(&kind), "{kind:?} not in {kinds:?}");
        }
        assert!(r.line.starts_with("machine: ") && r.line.contains(&r.cpu.model));
        assert!(
            r.line.contains(&format!("threads {}", r.threads)),
            "{}",
            r.line
        );
        if let Some(f) = r.peak.f32_gflops {
            assert!(r.line.contains(&format!("f32 {f:.0}")), "{}", r.line);
        }
    }
}
