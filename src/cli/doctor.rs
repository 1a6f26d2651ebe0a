//! `depthprune doctor`: the machine report (CPU, features, peak rates per core, the kernels
//! chosen, threads, memory) as a table, JSON, or the one line benchmarks print beside their
//! figures.

use super::output::{print, print_json, Bar};
use anyhow::Result;
use depthprune::api::doctor::{doctor, DoctorRequest};
use std::fmt::Write;

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    depthprune doctor                  # the report to paste into a bug report\n  \
    depthprune doctor --json\n  \
    depthprune doctor --line           # one line, for benchmark logs\n  \
    depthprune doctor --threads 4 --kernel widen\n\n\
    Peak rates are of one core, on independent accumulators: f32 FMA and bf16 dot products in\n\
    GFLOP/s, int8 (u8 x i8) dot products in GOP/s, 2 per multiply-add. Measure on an idle machine.")]
pub struct Args {
    #[command(flatten)]
    pub req: DoctorRequest,
    /// Print JSON instead of a table.
    #[arg(long, conflicts_with = "line")]
    pub json: bool,
    /// Print the one-line summary only.
    #[arg(long)]
    pub line: bool,
}

pub fn run(args: Args) -> Result<()> {
    let r = doctor(&args.req, &Bar::items())?;
    if args.json {
        return print_json(&r);
    }
    if args.line {
        return print(&format!("{}\n", r.line));
    }
    let mut t = String::new();
    let opt = |v: Option<f64>, unit: &str| v.map_or("-".to_string(), |v| format!("{v:.1} {unit}"));
    let _ = writeln!(t, "depthprune {}", r.version);
    let _ = writeln!(t, "cpu          {}", r.cpu.model);
    if let (Some(v), Some(f), Some(m)) = (&r.cpu.vendor, r.cpu.family, r.cpu.model_number) {
        let _ = writeln!(t, "             {v}, family {f} model {m}");
    }
    let _ = writeln!(t, "features     {}", r.cpu.features.join(" "));
    let width = r
        .peak
        .f32_bits
        .map_or(String::new(), |b| format!(" ({b}-bit)"));
    let _ = writeln!(
        t,
        "f32 FMA      {} per core{width}",
        opt(r.peak.f32_gflops, "GFLOP/s")
    );
    let _ = writeln!(
        t,
        "bf16 dot     {} per core",
        opt(r.peak.bf16_gflops, "GFLOP/s")
    );
    let _ = writeln!(
        t,
        "int8 dot     {} per core",
        opt(r.peak.int8_gops, "GOP/s")
    );
    let _ = writeln!(t, "threads      {} of {} cores", r.threads, r.cpu.cores);
    let gib = |b: Option<u64>| {
        b.map_or("-".into(), |b| {
            format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64)
        })
    };
    let _ = writeln!(
        t,
        "memory       {} total, {} available",
        gib(r.memory.total_bytes),
        gib(r.memory.available_bytes)
    );
    if !r.kernels.is_empty() {
        let _ = writeln!(
            t,
            "kernels      weight  rows  shape [rows, in, out]  kernel  by        GFLOP/s"
        );
        for k in &r.kernels {
            let rates: Vec<String> = (k.gflops.iter())
                .map(|(kernel, g)| format!("{} {g:.1}", kernel.name()))
                .collect();
            let shape = format!("{:?}", k.shape);
            let _ = writeln!(
                t,
                "             {:<6}  {:<4}  {shape:<21}  {:<6}  {:<8}  {}",
                k.weight,
                k.rows,
                k.kernel.name(),
                k.by,
                rates.join(", ")
            );
        }
    }
    let _ = writeln!(t, "\n{}", r.line);
    print(&t)
}
