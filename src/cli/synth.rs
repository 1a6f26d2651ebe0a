//! `depthprune synth`: write a random-weight HF checkpoint of any supported shape, for tests,
//! benchmarks and experiments where the real model is too large or not at hand.

use super::output::Bar;
use anyhow::Result;
use depthprune::api::prune::FloatType;
use depthprune::fmt::parse_size;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    depthprune synth --config tests/fixtures/seed-qwen3-4b/config.json --dtype bf16 --out /tmp/qwen3-4b-random\n  \
    depthprune synth --config my-config.json --max-shard-size 500MB --out /tmp/tiny")]
pub struct Args {
    /// The config.json describing the shape (llama, mistral, qwen2, qwen3, qwen2_moe, qwen3_moe, mixtral).
    #[arg(long)]
    pub config: PathBuf,
    /// Output folder (replaced if it exists).
    #[arg(long, short)]
    pub out: PathBuf,
    #[arg(long, value_enum, default_value = "bf16")]
    pub dtype: FloatType,
    /// Largest shard to write.
    #[arg(long, value_parser = parse_size, default_value = "5GB", value_name = "SIZE")]
    pub max_shard_size: u64,
    /// Seed of the random weights.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub fn run(args: Args) -> Result<()> {
    depthprune::api::convert::synth(
        &args.config,
        &args.out,
        args.dtype,
        args.max_shard_size,
        args.seed,
        &Bar::bytes(),
    )?;
    eprintln!("wrote {}", args.out.display());
    Ok(())
}
