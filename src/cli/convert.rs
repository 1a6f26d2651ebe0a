//! `depthprune convert`: a GGUF file into an HF folder (config, safetensors, tokenizer), or an HF
//! folder into an unquantized GGUF file.

use super::output::{print, print_json, warn};
use depthprune::checkpoint::atomic::Overwrite;
use depthprune::checkpoint::convert::gguf_to_hf;
use depthprune::checkpoint::convert_gguf::hf_to_gguf;
use depthprune::checkpoint::gguf::GgmlType;
use depthprune::checkpoint::safetensors::Dtype;
use depthprune::model::is_gguf;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    depthprune convert SmolLM2-135M-Instruct.Q4_1.gguf --to hf --out ./smollm2-hf\n  \
    depthprune convert model.gguf --to hf --out ./model-hf --dtype bf16\n  \
    depthprune convert ./model-hf --to gguf --out model.f16.gguf --dtype f16\n\n\
    Quantized tensors are dequantized; llama files get their Q/K rows back in HF order (and\n\
    permuted again when written as GGUF). GGUF output carries a byte-level BPE tokenizer (others are left out).")]
pub struct Args {
    /// The model to convert: a `.gguf` file (`--to hf`) or an HF folder (`--to gguf`).
    pub model: PathBuf,
    /// The output format.
    #[arg(long, value_parser = ["hf", "gguf"], value_name = "FORMAT")]
    pub to: String,
    /// The output folder (`--to hf`) or file (`--to gguf`).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Tensor type of the output.
    #[arg(long, default_value = "f32", value_parser = ["f32", "f16", "bf16"])]
    pub dtype: String,
    /// Replace an existing output.
    #[arg(long)]
    pub force: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let overwrite = if args.force {
        Overwrite::Force
    } else {
        Overwrite::Refuse
    };
    let report = if args.to == "gguf" {
        if is_gguf(&args.model) {
            anyhow::bail!(
                "`{}` is already a GGUF file\nhint: `convert --to gguf` reads an HF folder",
                args.model.display()
            );
        }
        let ty = match args.dtype.as_str() {
            "f16" => GgmlType::F16,
            "bf16" => GgmlType::BF16,
            _ => GgmlType::F32,
        };
        hf_to_gguf(&args.model, &args.out, ty, overwrite)?
    } else {
        if !is_gguf(&args.model) {
            anyhow::bail!(
                "`{}`: `convert --to hf` reads a `.gguf` file\nhint: HF folders are already in HF format",
                args.model.display()
            );
        }
        let dtype = match args.dtype.as_str() {
            "f16" => Dtype::F16,
            "bf16" => Dtype::BF16,
            _ => Dtype::F32,
        };
        gguf_to_hf(&args.model, &args.out, dtype, overwrite)?
    };
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
        args.dtype
    ))
}
