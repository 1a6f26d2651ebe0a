//! `depthprune score MODEL --calib FILE --metric M`: layer importance on calibration text, as a
//! table, JSON or CSV, with optional plots and a saved score file for `plan`/`prune --scores`.
//! Also the calibration arguments that `prune`/`plan --strategy` and `sweep` share.

use super::output::{print, print_json, Bar};
use anyhow::{bail, Result};
use depthprune::api::score::{describe_calibration, score, shown_values, ScoreRequest};
use depthprune::api::ModelSource;
use depthprune::score::Metric;
use std::fmt::Write;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    depthprune score ./SmolLM2-135M --calib wiki.train.raw --metric bi\n  \
    depthprune score ./SmolLM2-135M --calib wiki.train.raw --metric angular --max-block 8 --plot plots/\n  \
    depthprune score ./SmolLM2-135M --calib wiki.train.raw --metric greedy --samples 4 --out scores.json\n\n\
    Metrics: angular (Gromov et al.), bi (ShortGPT), minitron (ModelOpt), ppl (Shortened LLaMA),\n\
    greedy (SLEB), last (baseline). Higher scores mean more important (removed last).")]
pub struct Args {
    /// An HF folder (config.json, tokenizer.json, safetensors).
    pub model: PathBuf,
    #[command(flatten)]
    pub req: ScoreRequest,
    /// Print JSON instead of a table.
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// Print CSV instead of a table.
    #[arg(long)]
    pub csv: bool,
    /// Write the bar chart, angular heatmap and greedy curve (PNG and SVG) into this folder.
    #[arg(long, value_name = "DIR")]
    pub plot: Option<PathBuf>,
    /// Save the scores as JSON (for `plan`/`prune --scores`).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    let req = &args.req;
    if req.metric != Metric::Last && req.calib.text.calib.is_none() {
        bail!(
            "--metric {} needs calibration text\nhint: pass --calib FILE",
            req.metric.name()
        );
    }
    // The score file and the plots never land on, over or inside an input (issue 33).
    let inputs = [Some(&args.model), req.calib.text.calib.as_ref()];
    for out in args.out.iter().chain(&args.plot) {
        depthprune::base::guard::check_output(out, &inputs.iter().flatten().collect::<Vec<_>>())?;
    }
    let report = score(&ModelSource::new(&args.model), req, &Bar::items())?;
    let s = &report.scores;
    let stable = &report.stability;
    if let Some(path) = &args.out {
        depthprune::api::score::save(s, path)?;
    }
    if let Some(dir) = &args.plot {
        depthprune::report::score_plots::plot(dir, s)?;
        if let Some(st) = stable {
            depthprune::report::score_plots::plot_stability(dir, s, st)?;
        }
    }
    if args.json {
        return print_json(&report);
    }
    let rank = &report.rank;
    if args.csv {
        let mut t = String::from("layer,score,rank");
        t.push_str(if stable.is_some() {
            ",mean,sd,chosen\n"
        } else {
            "\n"
        });
        for (l, (v, r)) in s.importance.iter().zip(rank).enumerate() {
            write!(t, "{l},{v},{r}")?;
            if let Some(st) = stable {
                write!(t, ",{},{},{}", st.mean[l], st.sd[l], st.frequency[l])?;
            }
            t.push('\n');
        }
        return print(&t);
    }
    let mut t = String::new();
    writeln!(t, "model        {}", args.model.display())?;
    writeln!(
        t,
        "metric       {}: {}",
        s.metric.name(),
        s.metric.describe()
    )?;
    writeln!(t, "calibration  {}", describe_calibration(&s.calibration))?;
    if let Some(b) = s.baseline_ppl {
        writeln!(t, "baseline ppl {b:.4}")?;
    }
    match stable {
        Some(st) => {
            writeln!(
                t,
                "stability    {} bootstrap resamples of the calibration windows (seed {}); chosen sets of {} layers overlap {:.2} on average (Jaccard)",
                st.resamples, req.seed, st.k, st.mean_pairwise_overlap
            )?;
            let label = shown_values(s).1;
            writeln!(
                t,
                "\n{:>5}  {:>14}  {:>4}  {:>22}  {:>6}   (mean ± sd: {label})",
                "layer", "score", "rank", "mean ± sd", "chosen"
            )?;
            for (l, (v, r)) in s.importance.iter().zip(rank).enumerate() {
                let ms = format!("{:.4} ± {:.4}", st.mean[l], st.sd[l]);
                writeln!(
                    t,
                    "{l:>5}  {v:>14.6}  {r:>4}  {ms:>22}  {:>5.0}%",
                    100.0 * st.frequency[l]
                )?;
            }
        }
        None => {
            writeln!(t, "\n{:>5}  {:>14}  {:>4}", "layer", "score", "rank")?;
            for (l, (v, r)) in s.importance.iter().zip(rank).enumerate() {
                writeln!(t, "{l:>5}  {v:>14.6}  {r:>4}")?;
            }
        }
    }
    if let Some(g) = &s.greedy {
        writeln!(t, "\ngreedy order (ppl after each removal):")?;
        for (k, step) in g.iter().enumerate() {
            writeln!(
                t,
                "  {:>3}. layer {:>3}  ppl {:.4}",
                k + 1,
                step.layer,
                step.ppl
            )?;
        }
    }
    if let Some(g) = &s.healed {
        writeln!(
            t,
            "\nheal-aware order (relative stream error left after healing, summed over blocks):"
        )?;
        for (k, step) in g.iter().enumerate() {
            writeln!(
                t,
                "  {:>3}. layer {:>3}  cost {:.6}",
                k + 1,
                step.layer,
                step.cost
            )?;
        }
    }
    writeln!(t, "\nrank 1 is removed first.")?;
    print(&t)
}
