//! `routefabric bench-broadcast`: routefabric's fanout trees against libp2p-gossipsub, side by
//! side, on the same loopback TCP stack and the same workload.
//!
//! Workload (both systems): N nodes in one process, all subscribed; 2 publishers × 100 messages
//! of 1 KiB at 30 msg/s each. Measured: every byte written on the TCP sockets from the first
//! publication until the last delivery (noise, yamux, envelopes, signatures and control
//! included) divided by delivered messages × payload size, and delivery latency from the origin's
//! timestamp. Both runs happen in one process, one after the other, so their ratio is comparable
//! on a shared machine.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use routefabric_net::baseline::{BroadcastReport, BroadcastSpec, run_gossipsub};
use routefabric_node::actor::AppEvent;
use routefabric_node::engine::{Command, Plane};

use crate::demo::{CHANNEL, Cluster};

/// Options of `routefabric bench-broadcast`.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// Network sizes to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [16usize, 32, 64])]
    nodes: Vec<usize>,
    /// Messages per publisher.
    #[arg(long, default_value_t = 100)]
    messages: usize,
    /// Payload bytes per message.
    #[arg(long, default_value_t = 1024)]
    payload: usize,
    /// Messages per second per publisher.
    #[arg(long, default_value_t = 30.0)]
    rate: f64,
    /// Seed of the overlays.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print one JSON object per size instead of the table.
    #[arg(long)]
    json: bool,
}

const PUBLISHERS: usize = 2;
const DRAIN: Duration = Duration::from_secs(10);

pub(crate) fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    if args.nodes.iter().any(|&n| n < 3) {
        anyhow::bail!("every size needs at least 3 nodes");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(bench(args))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

async fn routefabric(spec: &BroadcastSpec, seed: u64) -> anyhow::Result<BroadcastReport> {
    let n = spec.nodes;
    let cluster = Cluster::start(n, seed, true).await?;
    let publishers: Vec<usize> = (0..spec.publishers).collect();
    cluster.subscribe_all(&publishers).await?;
    let Cluster {
        nodes, mut events, ..
    } = cluster;
    let wire_before = sum_written(&nodes).await?;
    let started = Instant::now();
    let period = Duration::from_secs_f64(1.0 / spec.rate_per_sec.max(0.001));
    let mut tick = tokio::time::interval(period);
    let expected = (spec.publishers * spec.messages_per_publisher * (n - 1)) as u64;
    // One latency per delivered publication.
    let mut latencies: Vec<f64> = Vec::with_capacity(expected as usize);
    for k in 0..spec.messages_per_publisher {
        tick.tick().await;
        for &p in &publishers {
            let mut payload = vec![0u8; spec.payload_bytes.max(8)];
            payload[..8].copy_from_slice(&(k as u64).to_le_bytes());
            nodes[p]
                .command(Command::Publish {
                    channel: CHANNEL.into(),
                    payload,
                })
                .await?;
        }
        while let Ok(e) = events.try_recv() {
            latencies.extend(latency(e));
        }
    }
    let drain_until = tokio::time::Instant::now() + DRAIN;
    while (latencies.len() as u64) < expected {
        match tokio::time::timeout_at(drain_until, events.recv()).await {
            Ok(Some(e)) => latencies.extend(latency(e)),
            Ok(None) | Err(_) => break,
        }
    }
    let delivered = latencies.len() as u64;
    let elapsed = started.elapsed();
    let wire = sum_written(&nodes).await? - wire_before;
    for node in &nodes {
        node.shutdown().await;
    }
    latencies.sort_by(f64::total_cmp);
    Ok(BroadcastReport {
        nodes: n,
        delivered,
        expected,
        payload_bytes_delivered: delivered * spec.payload_bytes as u64,
        wire_bytes_written: wire,
        latency_p50_ms: percentile(&latencies, 50.0),
        latency_p99_ms: percentile(&latencies, 99.0),
        elapsed,
        publish_failures: 0,
        mesh_formed: true,
    })
}

/// Delivery latency of a publication, ms: from the origin's timestamp to the moment the event
/// left the receiving node (one process clock at both ends).
fn latency((_, event, received_ms): (usize, AppEvent, u64)) -> Option<f64> {
    match event {
        AppEvent::Deliver(d) if d.plane == Plane::Tree => {
            Some(received_ms.saturating_sub(d.timestamp_ms) as f64)
        }
        _ => None,
    }
}

async fn sum_written(nodes: &[routefabric_node::actor::NodeHandle]) -> anyhow::Result<u64> {
    let mut total = 0;
    for node in nodes {
        total += node.report().await?.wire.written;
    }
    Ok(total)
}

async fn bench(args: BenchArgs) -> anyhow::Result<ExitCode> {
    if !args.json {
        println!(
            "{:>5}  {:>22}  {:>22}  {:>6}  {:>17}  {:>17}",
            "nodes",
            "routefabric B/B (dlv)",
            "gossipsub B/B (dlv)",
            "ratio",
            "rf p50/p99 ms",
            "gs p50/p99 ms"
        );
    }
    let mut all_delivered = true;
    for &n in &args.nodes {
        let spec = BroadcastSpec {
            nodes: n,
            publishers: PUBLISHERS,
            messages_per_publisher: args.messages,
            payload_bytes: args.payload,
            rate_per_sec: args.rate,
            ..BroadcastSpec::default()
        };
        let rf = routefabric(&spec, args.seed)
            .await
            .with_context(|| format!("routefabric run with {n} nodes"))?;
        // Let the sockets of the first run close before the second starts.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let gs = run_gossipsub(spec.clone())
            .await
            .with_context(|| format!("gossipsub run with {n} nodes"))?;
        all_delivered &= rf.delivered == rf.expected;
        let (a, b) = (
            rf.wire_bytes_per_payload_byte(),
            gs.wire_bytes_per_payload_byte(),
        );
        let ratio = if b > 0.0 { a / b } else { f64::NAN };
        if args.json {
            println!(
                "{}",
                serde_json::json!({
                    "nodes": n,
                    "routefabric": report_json(&rf),
                    "gossipsub": report_json(&gs),
                    "wire_ratio": ratio,
                })
            );
        } else {
            println!(
                "{:>5}  {:>10.2} ({:>5.3})  {:>10.2} ({:>5.3})  {:>5.2}×  {:>7.1} / {:>7.1}  {:>7.1} / {:>7.1}",
                n,
                a,
                rf.delivered as f64 / rf.expected.max(1) as f64,
                b,
                gs.delivered as f64 / gs.expected.max(1) as f64,
                ratio,
                rf.latency_p50_ms,
                rf.latency_p99_ms,
                gs.latency_p50_ms,
                gs.latency_p99_ms
            );
        }
    }
    Ok(if all_delivered {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn report_json(r: &BroadcastReport) -> serde_json::Value {
    serde_json::json!({
        "delivered": r.delivered,
        "expected": r.expected,
        "wire_bytes_written": r.wire_bytes_written,
        "wire_bytes_per_payload_byte": r.wire_bytes_per_payload_byte(),
        "latency_p50_ms": r.latency_p50_ms,
        "latency_p99_ms": r.latency_p99_ms,
        "elapsed_s": r.elapsed.as_secs_f64(),
    })
}
