//! Stand-alone simulator binary (the node exposes the same as `routefabric sim`).

use std::process::ExitCode;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "routefabric-sim",
    about = "Deterministic simulation of the routefabric overlays"
)]
struct Cli {
    #[command(flatten)]
    args: routefabric_sim::SimArgs,
}

fn main() -> anyhow::Result<ExitCode> {
    routefabric_sim::run(Cli::parse().args)
}
