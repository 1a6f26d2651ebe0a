//! What several subcommands share: the command line for provenance, and warnings about a choice.

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

/// Exits as a usage error (status 2) when `choice` names no layers, no strategy and no amount:
/// the layer flags are optional to clap only because `--remove N` alone is enough with `--heal`.
pub fn require_layers(choice: &depthprune::api::LayerChoice) {
    let l = &choice.layers;
    if l.drop.is_none() && l.keep.is_none() && l.strategy.is_none() && choice.amount().is_none() {
        clap::Error::raw(
            clap::error::ErrorKind::MissingRequiredArgument,
            "name the layers: --drop SPEC, --keep SPEC, --strategy M with --remove N, or --remove N with --heal\n",
        )
        .exit()
    }
}
