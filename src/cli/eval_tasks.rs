//! `depthprune eval MODEL --tasks FILE.jsonl`: zero-shot multiple-choice accuracy, optionally
//! with layers skipped. The file format and the scoring are documented in
//! `depthprune::eval::tasks` and `depthprune::eval::choice`.

use super::eval::Args;
use super::output::{print, print_json, Bar};
use depthprune::api::eval::{eval_tasks, TaskResult};
use depthprune::api::ModelSource;

pub fn run(args: &Args) -> anyhow::Result<()> {
    let r = eval_tasks(&ModelSource::new(&args.model), &args.req, &Bar::items())?;
    if args.json {
        print_json(&r)
    } else {
        print(&table(args, &r))
    }
}

fn pm(p: f64, se: Option<f64>) -> String {
    match se {
        Some(se) => format!("{p:.4} ± {se:.4}"),
        None => format!("{p:.4}"),
    }
}

fn table(args: &Args, res: &TaskResult) -> String {
    let (skip, n_layers, r) = (&res.skip, res.n_layers, &res.report);
    let mut s = String::new();
    let mut row = |k: &str, v: String| s.push_str(&format!("{k:<14} {v}\n"));
    row("model", args.model.display().to_string());
    if let Some(spec) = &args.req.skip {
        row(
            "skipped",
            format!("{spec} ({} of {n_layers} layers)", skip.len()),
        );
    }
    row("tasks", format!("{} ({} questions)", res.tasks, r.n));
    row("acc", pm(r.acc, r.acc_stderr));
    row("acc_norm", pm(r.acc_norm, r.acc_norm_stderr));
    row(
        "speed",
        format!(
            "{:.1} tokens/s ({} tokens, {:.2} s)",
            r.tokens_forwarded as f64 / r.seconds.max(1e-9),
            r.tokens_forwarded,
            r.seconds
        ),
    );
    s
}
