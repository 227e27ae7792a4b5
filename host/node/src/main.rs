//! `routefabric`: the node binary. It is the only crate that knows every layer (core, runtime and,
//! later, the network); each subcommand is a thin driver over them.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench_cmd;
mod console;
mod demo;
mod node_cmd;
mod plugin_cmd;

/// A peer-to-peer node whose routing knowledge comes from WebAssembly plugins.
#[derive(Debug, Parser)]
#[command(name = "routefabric", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a small real network on loopback and show it working (the main job).
    Demo(demo::DemoArgs),
    /// routefabric broadcast against libp2p-gossipsub on loopback: wire bytes and latency.
    BenchBroadcast(bench_cmd::BenchArgs),
    /// Run one node (listen, join, route, deliver) until Ctrl-C.
    Node(node_cmd::NodeArgs),
    /// Inspect, list, export and hot-swap plugins.
    #[command(subcommand)]
    Plugin(plugin_cmd::PluginCommand),
    /// Run the overlay protocols (membership + fanout forest) on a simulated network.
    Sim(routefabric_sim::cli::SimArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::BenchBroadcast(args) => bench_cmd::run(args),
        Command::Node(args) => node_cmd::run(args),
        Command::Plugin(command) => plugin_cmd::run(command),
        Command::Sim(args) => routefabric_sim::cli::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
