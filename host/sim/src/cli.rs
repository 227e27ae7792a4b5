//! The `sim` command: arguments and the entry point the node binary calls.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Args;

use crate::engine::Sim;
use crate::report::Report;
use crate::scenario::Scenario;

/// Arguments of `routefabric sim`.
#[derive(Debug, Clone, Args)]
pub struct SimArgs {
    /// Scenario: a built-in name (million, failure-90, churn-loss, many-writers, scale-curve,
    /// smoke), `scenarios/<name>.toml` under the current directory, or a path.
    #[arg(long, short, default_value = "smoke")]
    pub scenario: String,
    /// Override the scenario's seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Override the number of readers (also replaces a sweep with this one size).
    #[arg(long)]
    pub nodes: Option<usize>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Runs the scenario; exit code 0 when every target of the scenario is met, 1 otherwise.
pub fn run(args: SimArgs) -> anyhow::Result<ExitCode> {
    let mut sc = Scenario::load(&args.scenario)?;
    if let Some(seed) = args.seed {
        sc.seed = seed;
    }
    let sizes = match args.nodes {
        Some(n) => vec![n],
        None if !sc.sweep.is_empty() => sc.sweep.clone(),
        None => vec![sc.nodes],
    };
    let show_progress = std::io::stderr().is_terminal();
    let mut reports = Vec::new();
    let mut missed = Vec::new();
    let count = sizes.len();
    for (k, n) in sizes.into_iter().enumerate() {
        let mut run_sc = sc.clone();
        run_sc.nodes = n;
        let report = run_one(run_sc, show_progress, k + 1 == count);
        missed.extend(
            report
                .check(&sc.targets)
                .into_iter()
                .map(|m| format!("{n} readers: {m}")),
        );
        if !args.json {
            println!("{}", report.table());
        }
        reports.push(report);
    }
    if args.json {
        let value = if reports.len() == 1 {
            serde_json::to_value(&reports[0])?
        } else {
            serde_json::json!({ "scenario": sc.name, "runs": reports })
        };
        println!("{value}");
    } else if reports.len() > 1 {
        println!("{}", scale_table(&reports));
    }
    for m in &missed {
        eprintln!("target missed: {m}");
    }
    Ok(if missed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Runs one scenario size, with a progress bar on stderr when `show_progress`. With
/// `exiting_after`, the simulator's memory is left for the process exit to reclaim.
pub fn run_one(sc: Scenario, show_progress: bool, exiting_after: bool) -> Report {
    let bar = show_progress.then(|| {
        let bar = indicatif::ProgressBar::new(100);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {pos}% {elapsed}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_message(format!("{} ({} readers)", sc.name, sc.nodes));
        bar
    });
    let mut sim = Sim::new(sc);
    let report = sim.run(|now: u64, end: u64| {
        if let Some(b) = &bar {
            b.set_position(now * 100 / end.max(1));
        }
    });
    if exiting_after {
        // Freeing a million nodes one allocation at a time takes seconds; the process is about
        // to print and exit, which hands the memory back in one piece.
        std::mem::forget(sim);
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    report
}

fn scale_table(reports: &[Report]) -> String {
    let mut s = format!(
        "{:>10}  {:>8}  {:>8}  {:>10}  {:>9}  {:>8}  {:>10}\n",
        "readers", "ldh_max", "ldh_p99", "delivered", "rmr", "wall_s", "rss_MiB"
    );
    for r in reports {
        s += &format!(
            "{:>10}  {:>8}  {:>8}  {:>10.6}  {:>9.4}  {:>8.2}  {:>10.1}\n",
            r.nodes,
            r.ldh_max,
            r.ldh_p99,
            r.delivered_ratio,
            r.rmr,
            r.wall_s,
            r.peak_rss_bytes as f64 / (1024.0 * 1024.0)
        );
    }
    s
}
