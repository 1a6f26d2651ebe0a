//! `depthprune convert`: a GGUF file into an HF folder (config, safetensors, tokenizer), or an HF
//! folder into a GGUF file (floats, or quantized with `--quant`).

use super::output::{print, print_json, warn, Bar};
use depthprune::api::convert::{convert, ConvertRequest};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    depthprune convert SmolLM2-135M-Instruct.Q4_1.gguf --to hf --out ./smollm2-hf\n  \
    depthprune convert model.gguf --to hf --out ./model-hf --dtype bf16\n  \
    depthprune convert ./model-hf --to gguf --out model.f16.gguf --dtype f16\n  \
    depthprune convert ./model-hf --to gguf --out model.Q4_K_M.gguf --quant q4_k_m\n\n\
    Quantized tensors are dequantized when read; llama files get their Q/K rows back in HF order (and\n\
    permuted again when written as GGUF). GGUF output carries a byte-level BPE tokenizer (others are left out).")]
pub struct Args {
    /// The model to convert: a `.gguf` file (`--to hf`) or an HF folder (`--to gguf`).
    pub model: PathBuf,
    #[command(flatten)]
    pub req: ConvertRequest,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let report = convert(&args.model, &args.req, &Bar::items())?;
    for w in &report.warnings {
        warn(w);
    }
    if args.json {
        return print_json(&report);
    }
    print(&format!(
        "wrote {} ({} tensors, {} bytes of {})\n",
        report.out.display(),
        report.tensors,
        report.bytes,
        args.req.dtype.name()
    ))
}
