//! Healing (issues 6 and 18): `depthprune prune … --heal [METHOD]` and
//! `depthprune heal PRUNED --from DENSE`. Both fit the maps on the dense model and write the
//! pruned checkpoint with the healed `down_proj` tensors (F32) in place of the copied ones. For a
//! GGUF model the output is a GGUF whose healed `ffn_down` tensors are F32 (or F16), every other
//! tensor copied byte for byte.

use super::common::resolve_model;
use super::output::{print, print_json, warn, Bar};
use anyhow::{bail, Result};
use depthprune::checkpoint::atomic::Overwrite;
use depthprune::checkpoint::gguf::{GgmlType, GgufModel, Value};
use depthprune::checkpoint::hf::HfCheckpoint;
use depthprune::checkpoint::hf_prune::{prune_hf, PruneOptions, DEFAULT_MAX_SHARD};
use depthprune::checkpoint::verify::read_provenance;
use depthprune::eval;
use depthprune::heal::gguf::{write_healed_gguf, GgufHealOptions};
use depthprune::heal::{self, HealOptions, Healing, KdOptions, Maps, Objective, Prior};
use depthprune::hub::Need;
use depthprune::model::is_gguf;
use depthprune::select::{format_ranges, Removal};
use depthprune::tokenizer::{gguf_tokenizer, HfTokenizer};
use std::path::{Path, PathBuf};

/// The healing methods: `auto` tries the closed-form objectives, `lstsq`, `weighted`, `scale` and
/// `cosine` fix one, and `kd` distils the maps of `auto` on the dense model's next-token
/// distribution. All are
/// validated on held-out windows unless `--holdout 0` (which `kd` refuses).
pub const HEAL_METHODS: [&str; 6] = ["auto", "lstsq", "weighted", "scale", "cosine", "kd"];

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
    #[arg(long, value_parser = ["identity", "zero"], default_value = "identity")]
    pub ridge: String,
    /// Calibration tokens to heal on (cut into windows of --ctx), validation windows included.
    #[arg(long, default_value_t = 16384, value_name = "N")]
    pub heal_samples: usize,
    /// Hold out one calibration window in N for validation: each block keeps the map (objective
    /// and ridge weight) with the lowest next-token KL to the dense model there, or none when
    /// leaving it unhealed is better. 0 heals every block without validation.
    #[arg(long, default_value_t = heal::DEFAULT_HOLDOUT, value_name = "N")]
    pub holdout: usize,
    /// Where maps go: `per-block` (one per removed block, into the layer before it) or
    /// `per-layer` (also one per kept layer after the first removed block, each fitted to the
    /// dense output of that layer and validated like the others).
    #[arg(long, value_parser = ["per-block", "per-layer"], default_value = "per-block")]
    pub maps: String,
    /// With `kd`: training steps, one calibration window each (the fit windows in turn).
    #[arg(long, default_value_t = heal::kd::DEFAULT_STEPS, value_name = "N")]
    pub steps: usize,
    /// With `kd`: Adam's learning rate for the maps.
    #[arg(long, default_value_t = heal::kd::DEFAULT_LR, value_name = "LR")]
    pub lr: f64,
    /// With `kd`: steps between validations on the held-out windows (the best maps are kept).
    #[arg(long, default_value_t = heal::kd::DEFAULT_EVAL_EVERY, value_name = "N")]
    pub kd_eval_every: usize,
    /// With `kd`: validations without improvement before training stops (0: never early).
    #[arg(long, default_value_t = heal::kd::DEFAULT_PATIENCE, value_name = "N")]
    pub patience: usize,
}

impl HealFitArgs {
    /// The full heal flags for `method`, with the calibration set given elsewhere.
    pub fn with_calib(
        &self,
        method: &str,
        calib: Option<PathBuf>,
        ctx: usize,
        calib_offset: usize,
    ) -> HealArgs {
        HealArgs {
            calib,
            method: method.to_string(),
            fit: self.clone(),
            ctx,
            calib_offset,
        }
    }

    /// The library options for `method` and windows of `ctx` tokens.
    pub fn options(&self, method: &str, ctx: usize) -> Result<HealOptions> {
        self.with_calib(method, None, ctx, 0).options()
    }

    /// The distillation options of `kd`.
    pub fn kd(&self) -> KdOptions {
        KdOptions {
            steps: self.steps,
            lr: self.lr,
            eval_every: self.kd_eval_every,
            patience: self.patience,
        }
    }
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
    #[arg(long, value_parser = HEAL_METHODS, default_value = "auto")]
    pub method: String,
    #[command(flatten)]
    pub fit: HealFitArgs,
    /// Calibration window length in tokens.
    #[arg(long, default_value_t = 512)]
    pub ctx: usize,
    /// Tokens of the calibration text to skip first (to keep calibration and evaluation apart).
    #[arg(long, default_value_t = 0, value_name = "T")]
    pub calib_offset: usize,
}

impl HealArgs {
    /// The library options these flags ask for.
    pub fn options(&self) -> Result<HealOptions> {
        let prior = if self.fit.ridge == "zero" {
            Prior::Zero
        } else {
            Prior::Identity
        };
        let objectives = match self.method.as_str() {
            "auto" | "kd" => Objective::AUTO.to_vec(),
            m => vec![Objective::parse(m)
                .ok_or_else(|| anyhow::anyhow!("unknown healing method `{m}`"))?],
        };
        if self.fit.holdout == 0 && self.fit.alpha.len() != 1 {
            bail!(
                "--holdout 0 heals without validation, so it takes exactly one --alpha (e.g. --alpha 1e-3), not {}",
                self.fit.alpha.len()
            );
        }
        if self.fit.holdout == 0 && self.method == "kd" {
            bail!("--heal kd stops training on held-out windows, so it needs --holdout 2 or more, not 0");
        }
        if self.fit.holdout == 0 && objectives.len() != 1 {
            bail!("--holdout 0 heals without validation, so it needs one method: --heal lstsq or --heal weighted, not `auto`");
        }
        if self.fit.holdout == 1 {
            bail!("--holdout 1 would hold out every window; use 2 or more, or 0 for no validation");
        }
        Ok(HealOptions {
            alphas: self.fit.alpha.clone(),
            prior,
            ctx: self.ctx,
            objectives,
            holdout: self.fit.holdout,
            maps: if self.fit.maps == "per-layer" {
                Maps::PerLayer
            } else {
                Maps::PerBlock
            },
        })
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
    #[arg(long, value_parser = ["f32", "f16"])]
    pub dtype: Option<String>,
    /// Replace an existing non-empty output.
    #[arg(long)]
    pub force: bool,
    /// Print a JSON summary instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let dense = resolve_model(&args.from, Need::Snapshot)?.path;
    if is_gguf(&args.pruned) || is_gguf(&dense) {
        return run_gguf(&args, &dense);
    }
    if args.dtype.is_some() {
        bail!("--dtype applies to GGUF outputs; healed HF tensors are written as F32");
    }
    let prov = read_provenance(&args.pruned)?;
    let ckpt = HfCheckpoint::open(&dense)?;
    if prov.layers.layers_before != ckpt.arch.num_hidden_layers {
        bail!(
            "`{}` was pruned from a {}-layer model, but `{}` has {} layers\nhint: --from must name the dense model it was pruned from",
            args.pruned.display(),
            prov.layers.layers_before,
            dense.display(),
            ckpt.arch.num_hidden_layers
        );
    }
    let removal = Removal::from_layers(
        ckpt.arch.num_hidden_layers,
        prov.layers.removed.iter().copied(),
    )?;
    let how = format!(
        "removed as in `{}` ({})",
        args.pruned.display(),
        format_ranges(&removal.removed_ranges())
    );
    heal_and_write(
        &ckpt,
        &removal,
        &args.heal,
        &args.out,
        args.force,
        None,
        prov.method.clone(),
        how,
        args.json,
    )
}

/// `heal PRUNED.gguf --from DENSE.gguf`: the removal comes from PRUNED's `depthprune.*` metadata.
fn run_gguf(args: &Args, dense: &Path) -> Result<()> {
    if !(is_gguf(&args.pruned) && is_gguf(dense)) {
        bail!(
            "`{}` and `{}`: heal a GGUF prune from the GGUF it was pruned from, or an HF prune from its HF folder",
            args.pruned.display(),
            dense.display()
        );
    }
    let pruned = GgufModel::open(&args.pruned)?;
    let md = pruned.metadata();
    let not_ours = || {
        anyhow::anyhow!(
            "`{}` has no `depthprune.removed_layers` / `depthprune.layers_before` metadata\nhint: PRUNED must be a file written by `depthprune prune`",
            args.pruned.display()
        )
    };
    let before = md
        .get("depthprune.layers_before")
        .and_then(Value::as_u64)
        .ok_or_else(not_ours)? as usize;
    let removed: Vec<usize> = match md
        .get("depthprune.removed_layers")
        .and_then(Value::as_array)
    {
        Some(a) => (0..a.len())
            .map(|i| a.get(i).and_then(|v| v.as_u64()).map(|x| x as usize))
            .collect::<Option<_>>()
            .ok_or_else(not_ours)?,
        None => return Err(not_ours()),
    };
    let model = GgufModel::open(dense)?;
    let n = model.block_count()?;
    if before != n {
        bail!(
            "`{}` was pruned from a {before}-layer model, but `{}` has {n} layers\nhint: --from must name the dense model it was pruned from",
            args.pruned.display(),
            dense.display()
        );
    }
    let removal = Removal::from_layers(n, removed)?;
    heal_and_write_gguf(
        &model,
        &removal,
        &args.heal,
        &args.out,
        args.force,
        None,
        args.dtype.as_deref(),
        Vec::new(),
        args.json,
    )
}

/// Tokenizes the calibration text and fits the maps for `removal` on the dense model at `dense`.
fn fit(tok: &HfTokenizer, dense: &Path, removal: &Removal, h: &HealArgs) -> Result<Healing> {
    let Some(calib) = &h.calib else {
        bail!("healing needs calibration text\nhint: add --calib FILE");
    };
    if h.fit.heal_samples < h.ctx {
        bail!(
            "--heal-samples {} is less than one window of --ctx {}",
            h.fit.heal_samples,
            h.ctx
        );
    }
    let opts = h.options()?;
    let text = eval::read_text(calib)?;
    let want = h.calib_offset.saturating_add(h.fit.heal_samples);
    let tokens = eval::tokenize(tok, &text, Some(want))?;
    let tokens = tokens.get(h.calib_offset..).unwrap_or(&[]);
    if tokens.len() < h.fit.heal_samples {
        warn(format!(
            "`{}` gives {} calibration tokens after --calib-offset {}, fewer than --heal-samples {}",
            calib.display(),
            tokens.len(),
            h.calib_offset,
            h.fit.heal_samples
        ));
    }
    let healing = heal::heal(dense, &removal.removed(), tokens, &opts, &Bar::items())?;
    if h.method != "kd" {
        return Ok(healing);
    }
    Ok(heal::distil(
        dense,
        tokens,
        &healing,
        &h.fit.kd(),
        &Bar::items(),
    )?)
}

/// The per-block lines printed after healing.
fn block_lines(healing: &Healing) -> String {
    let mut s: String = healing.sites().map(|b| b.describe() + "\n").collect();
    if let Some(d) = &healing.distillation {
        s.push_str(&d.describe());
        s.push('\n');
    }
    s
}

/// Fits the maps for `removal` on the GGUF `model` and writes the healed, pruned GGUF to `out`,
/// the healed tensors as `dtype` (`f32` unless `f16`), with `extra` metadata (how the layers
/// were chosen) after the healing's own.
#[allow(clippy::too_many_arguments)]
pub fn heal_and_write_gguf(
    model: &GgufModel,
    removal: &Removal,
    h: &HealArgs,
    out: &Path,
    force: bool,
    split_max_bytes: Option<u64>,
    dtype: Option<&str>,
    extra: Vec<(String, Value)>,
    json: bool,
) -> Result<()> {
    let ty = match dtype {
        None | Some("f32") => GgmlType::F32,
        Some("f16") => GgmlType::F16,
        Some(other) => bail!("--dtype {other}: healed GGUF tensors are written as f32 or f16"),
    };
    let (tok, warnings) = gguf_tokenizer(model)?;
    for w in warnings {
        warn(w);
    }
    let healing = fit(&tok, model.path(), removal, h)?;
    let mut metadata = Vec::new();
    if let Some(c) = &h.calib {
        metadata.push((
            "depthprune.healing.calib".to_string(),
            Value::string(&c.display().to_string()),
        ));
        metadata.push((
            "depthprune.healing.calib_offset".to_string(),
            Value::U64(h.calib_offset as u64),
        ));
    }
    metadata.extend(extra);
    let opts = GgufHealOptions {
        overwrite: if force {
            Overwrite::Force
        } else {
            Overwrite::Refuse
        },
        split_max_bytes,
        ty,
        metadata,
    };
    let report = write_healed_gguf(model, removal, &healing, out, &opts, &Bar::bytes())?;
    if json {
        return print_json(&serde_json::json!({
            "report": report,
            "healing": healing.provenance(&|n: &str| {
                // The healed tensor's name in the written GGUF.
                let g = depthprune::arch::naming::hf_to_gguf(n).unwrap_or_else(|| n.to_string());
                match depthprune::arch::naming::gguf_layer(&g) {
                    Some(l) => removal
                        .new_index(l.layer)
                        .map_or_else(|| g.clone(), |i| l.renumbered(i)),
                    None => g.clone(),
                }
            }),
        }));
    }
    let mut s = String::new();
    for o in &report.outputs {
        s.push_str(&format!("wrote {}\n", o.display()));
    }
    s.push_str(&block_lines(&healing));
    print(&s)
}

/// Fits the maps for `removal` on `ckpt` and writes the healed, pruned checkpoint to `out`.
#[allow(clippy::too_many_arguments)]
pub fn heal_and_write(
    ckpt: &HfCheckpoint,
    removal: &Removal,
    h: &HealArgs,
    out: &Path,
    force: bool,
    max_shard_size: Option<u64>,
    method: serde_json::Value,
    how_chosen: String,
    json: bool,
) -> Result<()> {
    let Some(calib) = &h.calib else {
        bail!("healing needs calibration text\nhint: add --calib FILE");
    };
    let tok = HfTokenizer::open(&ckpt.dir)?;
    let healing = fit(&tok, &ckpt.dir, removal, h)?;
    let renamed = |name: &str| -> String {
        match depthprune::arch::naming::hf_layer(name) {
            Some(l) => removal
                .new_index(l.layer)
                .map_or_else(|| name.to_string(), |n| l.renumbered(n)),
            None => name.to_string(),
        }
    };
    let mut record = healing.provenance(&renamed);
    if let Some(o) = record.as_object_mut() {
        o.insert("calib".into(), calib.display().to_string().into());
        o.insert("calib_offset".into(), h.calib_offset.into());
    }
    let how = healing.headline();
    let note = format!(
        "{how} ({}): a linear map per healed block was folded into the `down_proj` \
         before it, so these tensors differ from the original and are stored as F32: {}.",
        healing.summary(),
        healing
            .tensors
            .keys()
            .map(|k| format!("`{}`", renamed(k)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let opts = PruneOptions {
        dtype: None,
        max_shard_size: max_shard_size.unwrap_or(DEFAULT_MAX_SHARD),
        overwrite: if force {
            Overwrite::Force
        } else {
            Overwrite::Refuse
        },
        command: super::common::command_line(),
        method,
        how_chosen,
        base_model: None,
        hub: None,
        replace: healing.tensors.clone(),
        healing: Some((record, note)),
    };
    let result = prune_hf(ckpt, removal, out, &opts, &Bar::bytes())?;
    for w in &result.warnings {
        warn(w);
    }
    if json {
        return print_json(&result.provenance);
    }
    let mut s = format!("wrote {}\n", result.out.display());
    s.push_str(&block_lines(&healing));
    print(&s)
}
