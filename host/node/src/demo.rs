//! `routefabric demo`: a small real network on loopback, in one process.
//!
//! N nodes (real TCP sockets on 127.0.0.1, noise, yamux, the embedded WebAssembly plugins) join
//! through the first one; two writers publish on their trees, which every node subscribes to;
//! directed sends with end-to-end ACKs go between random pairs; halfway through, every node's
//! routing policy is swapped. The run ends with a table (or one JSON object) of what arrived and
//! what it cost, and exits 0 only if everything arrived.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use routefabric_core::envelope::Keypair;
use routefabric_node::actor::{self, AppEvent, NodeHandle, NodeSpec, Report};
use routefabric_node::engine::{Command, EngineConfig, Plane, SendOutcome};
use routefabric_node::plugins::{RegistryPlugins, builtin_registry};
use routefabric_runtime::{Registry, Runtime, RuntimeConfig};
use tokio::sync::mpsc;

/// Options of `routefabric demo`.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Nodes to start.
    #[arg(long, default_value_t = 16)]
    nodes: usize,
    /// Messages each of the two writers publishes.
    #[arg(long, default_value_t = 100)]
    messages: usize,
    /// Directed sends between random pairs.
    #[arg(long, default_value_t = 50)]
    directed: usize,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 256)]
    payload: usize,
    /// Seed of the pairs and of the overlays' random choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Give up waiting for deliveries after this many seconds.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

pub(crate) const CHANNEL: &str = "demo";
const FIRST_POLICY: &str = "lowest-cost";
const SECOND_POLICY: &str = "expected-cost";

struct Lcg(u64);
impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) % n.max(1) as u64) as usize
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Run the demo.
pub(crate) fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    if args.nodes < 3 {
        anyhow::bail!(
            "the demo needs at least 3 nodes (two writers and a reader), got {}",
            args.nodes
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(demo(args))
}

fn say(quiet: bool, line: &str) {
    if !quiet {
        eprintln!("{line}");
    }
}

/// N nodes on loopback in this process, with the embedded plugins, joined through node 0.
pub(crate) struct Cluster {
    pub(crate) nodes: Vec<NodeHandle>,
    pub(crate) registries: Vec<Arc<Registry>>,
    /// Every node's events, stamped with the time they left the node (ms since the Unix epoch).
    pub(crate) events: mpsc::Receiver<(usize, AppEvent, u64)>,
}

impl Cluster {
    /// Start `n` nodes and wait until each has a neighbour.
    pub(crate) async fn start(n: usize, seed: u64, quiet: bool) -> anyhow::Result<Cluster> {
        let started = Instant::now();
        let runtime =
            Runtime::new(RuntimeConfig::default()).context("cannot start the plugin runtime")?;
        let (events_tx, events) = mpsc::channel::<(usize, AppEvent, u64)>(65_536);
        let mut nodes: Vec<NodeHandle> = Vec::with_capacity(n);
        let mut registries: Vec<Arc<Registry>> = Vec::with_capacity(n);
        say(
            quiet,
            &format!("starting {n} nodes on 127.0.0.1 (TCP, noise, yamux, embedded plugins)…"),
        );
        for i in 0..n {
            let mut secret = [0u8; 32];
            secret[..8].copy_from_slice(&(seed ^ 0x5eed).to_le_bytes());
            secret[8..16].copy_from_slice(&(i as u64).to_le_bytes());
            let keys = Keypair::from_secret(secret);
            let registry = builtin_registry(&runtime, keys.id())
                .with_context(|| format!("node {i}: the embedded plugins did not load"))?;
            registry.select_policy(FIRST_POLICY)?;
            let (tx, mut rx) = mpsc::channel::<AppEvent>(4_096);
            let fan_in = events_tx.clone();
            tokio::spawn(async move {
                while let Some(e) = rx.recv().await {
                    if fan_in.send((i, e, actor::wall_ms())).await.is_err() {
                        break;
                    }
                }
            });
            let spec = NodeSpec {
                keys,
                listen: vec!["/ip4/127.0.0.1/tcp/0".parse()?],
                engine: EngineConfig::default(),
                net: routefabric_net::Config::default(),
                plugins: Arc::new(RegistryPlugins(registry.clone())),
                seed: seed.wrapping_mul(1_000).wrapping_add(i as u64),
                advertise: None,
                transport: actor::Transport::Tcp,
            };
            nodes.push(actor::spawn(spec, tx).await?);
            registries.push(registry);
        }
        nodes[0].command(Command::Start { contact: None }).await?;
        for node in &nodes[1..] {
            node.command(Command::Start {
                contact: Some(nodes[0].me()),
            })
            .await?;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let join_deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut alone = 0;
            for node in &nodes {
                if node.report().await?.neighbours == 0 {
                    alone += 1;
                }
            }
            if alone == 0 {
                break;
            }
            if Instant::now() > join_deadline {
                anyhow::bail!("{alone} nodes have no neighbour after 10 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        say(
            quiet,
            &format!("joined in {:.1} s", started.elapsed().as_secs_f64()),
        );
        Ok(Cluster {
            nodes,
            registries,
            events,
        })
    }

    /// Every node subscribes to `channel` of each writer; returns after the trees had time to
    /// form.
    pub(crate) async fn subscribe_all(&self, writers: &[usize]) -> anyhow::Result<()> {
        for node in &self.nodes {
            for &w in writers {
                node.command(Command::Subscribe {
                    channel: CHANNEL.into(),
                    writer: self.nodes[w].me(),
                })
                .await?;
            }
        }
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        Ok(())
    }

    /// TCP bytes written by all nodes so far.
    pub(crate) async fn wire_written(&self) -> anyhow::Result<u64> {
        sum_wire(&self.nodes).await
    }
}

async fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let n = args.nodes;
    let cluster = Cluster::start(n, args.seed, args.json).await?;
    let wire_before = cluster.wire_written().await?;
    let mut rng = Lcg(args.seed);
    let first_half = args.directed / 2;

    // Directed sends before any tree exists: the route stores know only the neighbours, so a
    // send to anyone else takes the safe path, and its ACK's trace teaches the nodes on the way.
    say(
        args.json,
        &format!("{first_half} directed sends with ACK, before any broadcast ({FIRST_POLICY})…"),
    );
    directed_sends(&cluster.nodes, &mut rng, 0..first_half as u64, args.payload).await?;

    let writers = [1usize, 2usize];
    cluster.subscribe_all(&writers).await?;
    let Cluster {
        nodes,
        registries,
        events: mut events_rx,
    } = cluster;

    // Broadcast: both writers interleaved, one message each every 5 ms.
    say(
        args.json,
        &format!(
            "broadcasting {} messages from 2 writers…",
            2 * args.messages
        ),
    );
    for k in 0..args.messages {
        for w in writers {
            let mut payload = vec![0u8; args.payload.max(8)];
            payload[..8].copy_from_slice(&(k as u64).to_le_bytes());
            nodes[w]
                .command(Command::Publish {
                    channel: CHANNEL.into(),
                    payload,
                })
                .await?;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // Swap every node's policy while traffic flows, then the second half: the trees' route
    // tokens and the first half's ACK traces are proofs now.
    let mut swaps = 0u64;
    for r in &registries {
        r.select_policy(SECOND_POLICY)?;
        swaps += 1;
    }
    say(
        args.json,
        &format!(
            "policy swapped to {SECOND_POLICY} on every node; {} more directed sends…",
            args.directed - first_half
        ),
    );
    directed_sends(
        &nodes,
        &mut rng,
        first_half as u64..args.directed as u64,
        args.payload,
    )
    .await?;

    // Collect.
    let broadcast_expected = (2 * args.messages * (n - 1)) as u64;
    let mut broadcast_delivered = 0u64;
    let mut directed_delivered = 0u64;
    let mut acked = 0u64;
    let mut failed = 0u64;
    let mut fast = 0u64;
    let mut fallback = 0u64;
    let mut fast_multi_hop = 0u64;
    let mut latencies: Vec<u64> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.timeout);
    while broadcast_delivered < broadcast_expected || acked + failed < args.directed as u64 {
        let Ok(Some(event)) = tokio::time::timeout_at(deadline, events_rx.recv()).await else {
            break;
        };
        let (_, event, received_ms) = event;
        match event {
            AppEvent::Deliver(d) => {
                latencies.push(received_ms.saturating_sub(d.timestamp_ms));
                match d.plane {
                    Plane::Tree => broadcast_delivered += 1,
                    Plane::Fast | Plane::Flood => directed_delivered += 1,
                }
            }
            AppEvent::SendResult { outcome, .. } => match outcome {
                SendOutcome::Acked { fast: f, hops, .. } => {
                    acked += 1;
                    if f {
                        fast += 1;
                        if hops > 1 {
                            fast_multi_hop += 1;
                        }
                    } else {
                        fallback += 1;
                    }
                }
                SendOutcome::Failed => failed += 1,
            },
        }
    }
    let wire_after: u64 = sum_wire(&nodes).await?;
    let reports: Vec<Report> = {
        let mut v = Vec::new();
        for node in &nodes {
            v.push(node.report().await?);
        }
        v
    };
    for node in &nodes {
        node.shutdown().await;
    }
    latencies.sort_unstable();
    let delivered = broadcast_delivered + directed_delivered;
    let bytes_per_message = if delivered == 0 {
        0.0
    } else {
        (wire_after - wire_before) as f64 / delivered as f64
    };
    let broadcast_ratio = broadcast_delivered as f64 / broadcast_expected.max(1) as f64;
    let directed_ratio = acked as f64 / (args.directed.max(1)) as f64;
    let rejects: u64 = reports.iter().map(|r| r.stats.rejects.total()).sum();
    let routes: usize = reports.iter().map(|r| r.routes).sum();
    let p50 = percentile(&latencies, 50.0);
    let p99 = percentile(&latencies, 99.0);
    let ok = broadcast_delivered == broadcast_expected
        && acked == args.directed as u64
        && (args.directed == 0 || fast > 0)
        && swaps > 0;
    let elapsed = started.elapsed().as_secs_f64();
    if args.json {
        let v = serde_json::json!({
            "ok": ok,
            "nodes": n,
            "broadcast_sent": 2 * args.messages,
            "broadcast_expected": broadcast_expected,
            "broadcast_delivered": broadcast_delivered,
            "broadcast_delivered_ratio": broadcast_ratio,
            "directed_sent": args.directed,
            "directed_acked": acked,
            "directed_acked_ratio": directed_ratio,
            "fast_path": fast,
            "fast_path_direct": fast - fast_multi_hop,
            "fast_path_multi_hop": fast_multi_hop,
            "fallback": fallback,
            "swaps": swaps,
            "latency_p50_ms": p50,
            "latency_p99_ms": p99,
            "wire_bytes_per_delivered_message": bytes_per_message,
            "payload_bytes": args.payload,
            "routes_stored": routes,
            "envelopes_rejected": rejects,
            "elapsed_s": elapsed,
        });
        println!("{v}");
    } else {
        println!();
        println!("routefabric demo: {n} nodes on loopback, {:.1} s", elapsed);
        println!("{:<34} {:>12}", "what", "result");
        println!(
            "{:<34} {:>7}/{:<5} ({:.3})",
            "broadcast delivered", broadcast_delivered, broadcast_expected, broadcast_ratio
        );
        println!(
            "{:<34} {:>7}/{:<5} ({:.3})",
            "directed sends acknowledged", acked, args.directed, directed_ratio
        );
        println!("{:<34} {:>12}", "  on the fast path", fast);
        println!("{:<34} {:>12}", "    to a neighbour", fast - fast_multi_hop);
        println!("{:<34} {:>12}", "    over a learned proof", fast_multi_hop);
        println!("{:<34} {:>12}", "  on the safe path (fallback)", fallback);
        println!("{:<34} {:>12}", "policy swaps (lowest → expected)", swaps);
        println!("{:<34} {:>9} ms", "latency p50", p50);
        println!("{:<34} {:>9} ms", "latency p99", p99);
        println!(
            "{:<34} {:>12.0}",
            "wire bytes per delivered message", bytes_per_message
        );
        println!("{:<34} {:>12}", "  payload bytes per message", args.payload);
        println!("{:<34} {:>12}", "routes in the stores", routes);
        println!("{:<34} {:>12}", "envelopes rejected", rejects);
        println!(
            "{}",
            if ok {
                "everything arrived"
            } else {
                "SOMETHING WAS LOST"
            }
        );
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Directed sends tagged `tags` between random pairs, one every 20 ms.
async fn directed_sends(
    nodes: &[NodeHandle],
    rng: &mut Lcg,
    tags: std::ops::Range<u64>,
    payload_bytes: usize,
) -> anyhow::Result<()> {
    let n = nodes.len();
    for tag in tags {
        let a = rng.below(n);
        let mut b = rng.below(n - 1);
        if b >= a {
            b += 1;
        }
        let mut payload = vec![0u8; payload_bytes.max(8)];
        payload[..8].copy_from_slice(&tag.to_le_bytes());
        nodes[a]
            .command(Command::Send {
                dest: nodes[b].me().id,
                payload,
                tag,
            })
            .await?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

async fn sum_wire(nodes: &[NodeHandle]) -> anyhow::Result<u64> {
    let mut total = 0;
    for node in nodes {
        total += node.report().await?.wire.written;
    }
    Ok(total)
}
