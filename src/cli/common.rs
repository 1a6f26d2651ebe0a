//! Arguments shared by several subcommands, and how they become the library's options.

use depthprune::api::choose::LayerChoice;
use depthprune::score::Metric;

/// `--drop SPEC`, `--keep SPEC` or `--strategy M`.
#[derive(clap::Args, Debug, Clone)]
#[group(required = true, multiple = false)]
pub struct LayerArgs {
    /// Layers to remove: N, A..B (half-open), A.., ..B, first:K, last:K, joined with commas.
    #[arg(long, value_name = "SPEC", allow_hyphen_values = true)]
    pub drop: Option<String>,
    /// Layers to keep (all others are removed); same grammar as --drop.
    #[arg(long, value_name = "SPEC", allow_hyphen_values = true)]
    pub keep: Option<String>,
    /// Choose the layers with a criterion (angular, bi, minitron, ppl, greedy, healed, last) and
    /// --remove N, --target-params P or --ratio R.
    #[arg(long, value_name = "M", value_parser = parse_metric)]
    pub strategy: Option<Metric>,
}

impl LayerArgs {
    /// The library's choice, with the strategy's amount and calibration from `strategy`.
    pub fn choice(&self, strategy: &super::strategy::StrategyArgs) -> LayerChoice {
        let mut c = strategy.choice();
        c.drop = self.drop.clone();
        c.keep = self.keep.clone();
        c.strategy = self.strategy;
        c
    }
}

/// Parses a metric name into a clear error listing the choices.
pub fn parse_metric(s: &str) -> Result<Metric, String> {
    Metric::parse(s).ok_or_else(|| {
        let names: Vec<&str> = Metric::ALL.iter().map(|m| m.name()).collect();
        format!("unknown metric `{s}`; expected one of {}", names.join(", "))
    })
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

/// Warns about layers named more than once.
pub fn warn_duplicates(dups: &[usize]) {
    if !dups.is_empty() {
        super::output::warn(format!("layers named more than once were merged: {dups:?}"));
    }
}

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
