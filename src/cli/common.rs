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
