//! The `depthprune` binary: parses arguments and hands them to `cli`.
//!
//! Exit codes: 0 success; 1 an error (bad input, failed run); 2 a usage error (clap). A closed
//! pipe on stdout exits quietly with 0.

mod cli;

fn main() {
    std::process::exit(cli::run());
}
