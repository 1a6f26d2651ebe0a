//! Healing (issues 6 and 18): the flags of `depthprune prune … --heal [METHOD]` and
//! `depthprune heal PRUNED --from DENSE`, and what they print. Both fit the maps on the dense
//! model and write the pruned checkpoint with the healed `down_proj` tensors (F32) in place of
//! the copied ones; for a GGUF model the healed `ffn_down` tensors are F32 (or F16), every
//! other tensor copied byte for byte.

use super::output::{print, print_json, Bar};
use anyhow::{bail, Result};
use depthprune::api::heal::{heal, HealFit, HealMethod, HealRequest, Healed, Output};
use depthprune::api::ModelSource;
use depthprune::checkpoint::gguf::GgmlType;
use depthprune::heal::{self as heal_lib, Maps, Prior};
use std::path::PathBuf;

/// `--heal METHOD` / `--method METHOD`.
pub fn parse_method(s: &str) -> Result<HealMethod, String> {
    HealMethod::parse(s).ok_or_else(|| {
        let names: Vec<&str> = HealMethod::ALL.iter().map(|m| m.name()).collect();
        format!(
            "unknown healing method `{s}`; expected one of {}",
            names.join(", ")
        )
    })
}

fn parse_ridge(s: &str) -> Result<Prior, String> {
    match s {
        "identity" => Ok(Prior::Identity),
        "zero" => Ok(Prior::Zero),
        _ => Err(format!("`{s}`: expected `identity` or `zero`")),
    }
}

fn parse_maps(s: &str) -> Result<Maps, String> {
    match s {
        "per-block" => Ok(Maps::PerBlock),
        "per-layer" => Ok(Maps::PerLayer),
        _ => Err(format!("`{s}`: expected `per-block` or `per-layer`")),
    }
}

fn parse_healed_type(s: &str) -> Result<GgmlType, String> {
    match s {
        "f32" => Ok(GgmlType::F32),
        "f16" => Ok(GgmlType::F16),
        _ => Err(format!("`{s}`: expected f32 or f16")),
    }
}

/// The fit flags of `prune --heal`, which takes its calibration flags (`--calib`, `--ctx`,
/// `--calib-offset`) from the strategy arguments it shares with `score`.
#[derive(clap::Args, Debug, Clone)]
pub struct HealFitArgs {
    /// Ridge weights to try, relative to the mean diagonal of MᵀM (comma-separated); each block
    /// takes the one with the lowest held-out residual. With --holdout 0, give exactly one.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1e-4,1e-3,1e-2,1e-1",
        value_name = "A[,A...]"
    )]
    pub alpha: Vec<f64>,
    /// What the ridge pulls the map towards: `identity` (keep the MLP output) or `zero` (the
    /// ReplaceMe paper's plain ridge).
    #[arg(long, value_parser = parse_ridge, default_value = "identity")]
    pub ridge: Prior,
    /// Calibration tokens to heal on (cut into windows of --ctx), validation windows included.
    #[arg(long, default_value_t = 16384, value_name = "N")]
    pub heal_samples: usize,
    /// Hold out one calibration window in N for validation: each block keeps the map (objective
    /// and ridge weight) with the lowest next-token KL to the dense model there, or none when
    /// leaving it unhealed is better. 0 heals every block without validation.
    #[arg(long, default_value_t = heal_lib::DEFAULT_HOLDOUT, value_name = "N")]
    pub holdout: usize,
    /// Where maps go: `per-block` (one per removed block, into the layer before it) or
    /// `per-layer` (also one per kept layer after the first removed block, each fitted to the
    /// dense output of that layer and validated like the others).
    #[arg(long, value_parser = parse_maps, default_value = "per-block")]
    pub maps: Maps,
    /// With `kd`: training steps, one calibration window each (the fit windows in turn).
    #[arg(long, default_value_t = heal_lib::kd::DEFAULT_STEPS, value_name = "N")]
    pub steps: usize,
    /// With `kd`: Adam's learning rate for the maps.
    #[arg(long, default_value_t = heal_lib::kd::DEFAULT_LR, value_name = "LR")]
    pub lr: f64,
    /// With `kd`: steps between validations on the held-out windows (the best maps are kept).
    #[arg(long, default_value_t = heal_lib::kd::DEFAULT_EVAL_EVERY, value_name = "N")]
    pub kd_eval_every: usize,
    /// With `kd`: validations without improvement before training stops (0: never early).
    #[arg(long, default_value_t = heal_lib::kd::DEFAULT_PATIENCE, value_name = "N")]
    pub patience: usize,
}

/// The calibration and fit flags of `heal`.
#[derive(clap::Args, Debug, Clone)]
pub struct HealArgs {
    /// Calibration text (UTF-8), tokenized with the dense model's tokenizer.
    #[arg(long, value_name = "FILE")]
    pub calib: Option<PathBuf>,
    /// `auto` tries every objective; `lstsq` fits plain least squares; `weighted` weights each
    /// token by the inverse norm of its target (so attention-sink tokens do not dominate);
    /// `scale` fits one scalar per block (magnitude compensation); `cosine` refines the
    /// least-squares map to minimise the cosine distance (slower); `kd` starts from `auto` and
    /// trains only the maps to match the dense model's next-token distribution (--steps, --lr).
    #[arg(long, value_parser = parse_method, default_value = "auto")]
    pub method: HealMethod,
    #[command(flatten)]
    pub fit: HealFitArgs,
    /// Calibration window length in tokens.
    #[arg(long, default_value_t = 512)]
    pub ctx: usize,
    /// Tokens of the calibration text to skip first (to keep calibration and evaluation apart).
    #[arg(long, default_value_t = 0, value_name = "T")]
    pub calib_offset: usize,
}

impl HealFitArgs {
    /// The library's fit options.
    pub fn fit(&self) -> HealFit {
        HealFit {
            alpha: self.alpha.clone(),
            ridge: self.ridge,
            heal_samples: self.heal_samples,
            holdout: self.holdout,
            maps: self.maps,
            steps: self.steps,
            lr: self.lr,
            kd_eval_every: self.kd_eval_every,
            patience: self.patience,
        }
    }
}

impl HealArgs {
    /// The library's request.
    pub fn request(&self) -> HealRequest {
        HealRequest {
            method: self.method,
            calib: self.calib.clone(),
            ctx: self.ctx,
            calib_offset: self.calib_offset,
            fit: self.fit.fit(),
        }
    }
}

/// `depthprune heal PRUNED --from DENSE --calib FILE --out DIR`.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    depthprune heal ./smol-22L --from ./SmolLM2-135M --calib wiki.train.txt --out ./smol-22L-healed\n  \
    depthprune heal smol-22L.gguf --from SmolLM2-135M.Q4_1.gguf --calib wiki.train.txt --out smol-22L-healed.gguf\n\n\
    The removed layers are read from PRUNED's pruning.json (or, for GGUF, its `depthprune.removed_layers`);\n\
    DENSE must be the model it was pruned from.")]
pub struct Args {
    /// A folder or `.gguf` file written by `depthprune prune` (which records the removed layers).
    pub pruned: PathBuf,
    /// The dense model it was pruned from (an HF folder, or the `.gguf` file for a GGUF prune).
    #[arg(long)]
    pub from: PathBuf,
    #[command(flatten)]
    pub heal: HealArgs,
    /// Output folder (HF) or file (GGUF).
    #[arg(long, short)]
    pub out: PathBuf,
    /// Type of the healed tensors in a GGUF output (HF outputs store them as F32).
    #[arg(long, value_parser = parse_healed_type)]
    pub dtype: Option<GgmlType>,
    /// Replace an existing non-empty output.
    #[arg(long)]
    pub force: bool,
    /// Print a JSON summary instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> Result<()> {
    if args.heal.calib.is_none() {
        bail!("healing needs calibration text\nhint: add --calib FILE");
    }
    let out = Output {
        out: args.out.clone(),
        force: args.force,
        max_shard_size: None,
        command: super::common::command_line(),
    };
    let healed = heal(
        &args.pruned,
        &ModelSource::new(&args.from),
        &args.heal.request(),
        args.dtype,
        &out,
        &Bar::items(),
    )?;
    if args.json {
        return print_json(&healed);
    }
    print_healed(&healed)
}

/// What a heal wrote, and one line per healed block.
pub fn print_healed(h: &Healed) -> Result<()> {
    let mut s = String::new();
    match h {
        Healed::Hf { out, .. } => s.push_str(&format!("wrote {}\n", out.display())),
        Healed::Gguf { report, .. } => {
            for o in &report.outputs {
                s.push_str(&format!("wrote {}\n", o.display()));
            }
        }
    }
    s.push_str(&h.block_lines());
    print(&s)
}
