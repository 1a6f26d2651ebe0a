//! Arguments shared by several subcommands, and their validation into library types.

use depthprune::hub::{self, HubConfig, Need, Resolved};
use depthprune::select::{LayerSpec, Removal};
use std::path::Path;

/// `--drop SPEC` or `--keep SPEC`.
#[derive(clap::Args, Debug, Clone)]
#[group(required = true, multiple = false)]
pub struct LayerArgs {
    /// Layers to remove: N, A..B (half-open), A.., ..B, first:K, last:K, joined with commas.
    #[arg(long, value_name = "SPEC", allow_hyphen_values = true)]
    pub drop: Option<String>,
    /// Layers to keep (all others are removed); same grammar as --drop.
    #[arg(long, value_name = "SPEC", allow_hyphen_values = true)]
    pub keep: Option<String>,
    /// Choose the layers with a criterion (angular, bi, minitron, ppl, greedy, last) and
    /// --remove N, --target-params P or --ratio R.
    #[arg(long, value_name = "M")]
    pub strategy: Option<String>,
}

impl LayerArgs {
    /// Resolves against a model with `n_layers` layers, warning about merged duplicates.
    pub fn removal(&self, n_layers: usize) -> depthprune::Result<Removal> {
        let r = match (&self.drop, &self.keep) {
            (Some(d), _) => Removal::drop(&LayerSpec::parse(d)?, n_layers)?,
            (None, Some(k)) => Removal::keep(&LayerSpec::parse(k)?, n_layers)?,
            (None, None) => {
                return Err(depthprune::Error::Unsupported(
                    "--strategy chooses layers by scoring the model, which this command does not do; pass the chosen layers with --drop".into(),
                ))
            }
        };
        let dups = r.duplicates();
        if !dups.is_empty() {
            super::output::warn(format!("layers named more than once were merged: {dups:?}"));
        }
        Ok(r)
    }

    /// How the user chose, for provenance.
    pub fn method(&self) -> serde_json::Value {
        match (&self.drop, &self.keep) {
            (Some(d), _) => serde_json::json!({"kind": "manual", "drop": d}),
            (_, k) => serde_json::json!({"kind": "manual", "keep": k}),
        }
    }

    pub fn describe(&self) -> String {
        match (&self.drop, &self.keep) {
            (Some(d), _) => format!("chosen by hand with `--drop {d}`"),
            (_, Some(k)) => format!("chosen by hand with `--keep {k}`"),
            _ => String::new(),
        }
    }
}

/// Parses a byte size: `5GB`, `500MB`, `2GiB`, `123` (bytes). Decimal units are powers of 1000
/// as in HF's `max_shard_size`; `KiB`/`MiB`/`GiB` are powers of 1024.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size like 5GB or 500MiB"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" | "k" => 1e3,
        "mb" | "m" => 1e6,
        "gb" | "g" => 1e9,
        "tb" | "t" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0f64.powi(4),
        _ => {
            return Err(format!(
                "`{s}`: unknown unit `{unit}` (use B, KB, MB, GB, KiB, MiB, GiB)"
            ))
        }
    };
    let bytes = (value * mult).round();
    if bytes < 1.0 {
        return Err(format!("`{s}` must be at least one byte"));
    }
    Ok(bytes as u64)
}

/// The command line as the user would retype it, with the program named `depthprune`.
pub fn command_line() -> Vec<String> {
    let mut args: Vec<String> = std::env::args().collect();
    if let Some(first) = args.first_mut() {
        *first = "depthprune".into();
    }
    args
}

/// Turns a MODEL argument into something on disk: a local path as is, a hub ID (`org/name`,
/// `org/name@rev`, `org/name:file.gguf`) from the HF cache, downloading what `need` requires.
/// Every command calls this on MODEL before looking at it.
pub fn resolve_model(model: &Path, need: Need) -> anyhow::Result<Resolved> {
    let cfg = HubConfig::from_env();
    Ok(hub::resolve(
        model.as_os_str(),
        need,
        &cfg,
        &super::output::Bar::bytes(),
    )?)
}

/// Whether MODEL names a GGUF file (the library's test, shared by every command).
pub use depthprune::model::is_gguf;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sizes() {
        assert_eq!(parse_size("5GB").unwrap(), 5_000_000_000);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("123").unwrap(), 123);
        assert_eq!(parse_size("1.5MB").unwrap(), 1_500_000);
        assert!(parse_size("5XB").is_err());
        assert!(parse_size("GB").is_err());
        assert!(parse_size("0").is_err());
    }
}
