//! `depthprune eval MODEL --tasks FILE.jsonl`: zero-shot multiple-choice accuracy, optionally
//! with layers skipped. The file format and the scoring are documented in
//! `depthprune::eval::tasks` and `depthprune::eval::choice`.

use super::eval::{skip_list, Args};
use super::output::{print, print_json, warn, Bar};
use depthprune::eval::choice::max_len;
use depthprune::eval::{self, TaskOpts, TaskReport};
use depthprune::model::{open_checkpoint, Model};
use depthprune::tokenizer::open_tokenizer;
use std::path::Path;

pub fn run(args: &Args, file: &Path) -> anyhow::Result<()> {
    if args.limit == Some(0) {
        anyhow::bail!("--limit must be at least 1");
    }
    if args.batch == 0 {
        anyhow::bail!("--batch must be at least 1");
    }
    // Read the questions first: a bad file fails before the model loads.
    let items = eval::read_tasks(file, args.limit)?;
    let (cfg, source) = open_checkpoint(&args.model)?;
    let n_layers = cfg.n_layers();
    let skip = skip_list(args.skip.as_deref(), n_layers)?;
    let model = Model::from_source(cfg, source, &|i| !skip.contains(&i))?;
    let (tok, notes) = open_tokenizer(&args.model)?;
    for note in &notes {
        warn(note);
    }
    let bar = Bar::items();
    let encoded = items
        .iter()
        .map(|i| eval::encode_item(&tok, i))
        .collect::<Result<Vec<_>, _>>()?;
    let opts = TaskOpts {
        max_len: max_len(&model),
        batch: args.batch,
    };
    let report = eval::score_encoded(&model, &skip, &encoded, opts, &bar)?;
    if report.truncated > 0 {
        warn(format!(
            "{} of the question × choice inputs were longer than {} tokens and lost their start",
            report.truncated, report.max_len
        ));
    }
    if args.json {
        let mut v = serde_json::to_value(&report)?;
        if !args.per_item {
            if let Some(o) = v.as_object_mut() {
                o.remove("items");
            }
        }
        v["model"] = args.model.display().to_string().into();
        v["tasks"] = file.display().to_string().into();
        v["skip"] = serde_json::to_value(&skip)?;
        print_json(&v)
    } else {
        print(&table(args, file, &skip, n_layers, &report))
    }
}

fn pm(p: f64, se: Option<f64>) -> String {
    match se {
        Some(se) => format!("{p:.4} ± {se:.4}"),
        None => format!("{p:.4}"),
    }
}

fn table(args: &Args, file: &Path, skip: &[usize], n_layers: usize, r: &TaskReport) -> String {
    let mut s = String::new();
    let mut row = |k: &str, v: String| s.push_str(&format!("{k:<14} {v}\n"));
    row("model", args.model.display().to_string());
    if let Some(spec) = &args.skip {
        row(
            "skipped",
            format!("{spec} ({} of {n_layers} layers)", skip.len()),
        );
    }
    row("tasks", format!("{} ({} questions)", file.display(), r.n));
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
