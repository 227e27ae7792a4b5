//! Gossipsub baseline for the side-by-side broadcast benchmark (feature `gossipsub-baseline`).
//!
//! [`run_gossipsub`] starts `nodes` libp2p gossipsub nodes in this process, on loopback TCP with
//! the same counted noise/yamux stack as the underlay, so that its wire bytes compare with the
//! routefabric overlays' byte for byte. Gossipsub keeps the defaults of libp2p-gossipsub 0.50
//! (mesh 6/5/12, heartbeat 1 s, flood publishing, IDONTWANT for messages over 1,000 bytes), with
//! `ValidationMode::Strict` and signed messages (`MessageAuthenticity::Signed`). The one change is
//! the first heartbeat at 100 ms instead of 5 s, which only shortens the setup before the counters
//! start.
//!
//! The run: node `i` dials up to `dial_degree` distinct random earlier nodes (seeded with
//! [`SEED`], so the topology repeats), every node subscribes to one topic, the mesh forms (each
//! node has `min(degree, mesh_n_low)` mesh peers, or every mesh is non-empty and unchanged for two
//! heartbeats), the TCP counters are read, the publishers publish at their rate, and
//! the counters are read again once every message reached every other node or the run timed out.
//! Each payload starts with its send time on the process clock, so latencies are measured on one
//! clock.
//!
//! Anchor from an earlier measurement on a 2-core machine: 7.98 / 7.73 / 7.12 wire bytes written
//! per delivered payload byte at 16 / 32 / 64 nodes. This harness (release build, default spec,
//! 2 cores) measured 7.75–8.17 at 16 nodes and 7.86–8.39 at 32. At 64 nodes the two cores are at
//! their limit (every copy of a message has its signature checked): some runs keep up (7.5–7.6,
//! p50 latency ~100 ms), others fall behind (about 5.0–5.4, p50 ~600 ms; fewer duplicates go
//! out, likely because IDONTWANTs now overtake them, and a few messages can miss the drain
//! timeout). Repeat 64-node runs and report them with the machine's load.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use libp2p::gossipsub::{self, IdentTopic, MessageAuthenticity, ValidationMode};
use libp2p::identity::Keypair;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, Swarm, SwarmBuilder};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::counting::{WireBytes, WireCounters, counted_tcp};

/// Seed of the topology and the node keys.
pub const SEED: u64 = 0x5eed_0f60_5519;

/// Where every node listens.
const LISTEN_ADDR: &str = "/ip4/127.0.0.1/tcp/0";

/// Topic all nodes subscribe to.
const TOPIC: &str = "routefabric-baseline";

/// Bytes at the start of each payload: send time (µs since the run's epoch), publisher, sequence.
const HEADER_BYTES: usize = 16;

/// Commands waiting for one node's task.
const COMMAND_QUEUE: usize = 8;

/// How often the mesh is checked while it forms.
const MESH_POLL: Duration = Duration::from_millis(50);

/// Longest wait for the mesh to form; the run goes on with whatever mesh there is then.
const MESH_TIMEOUT: Duration = Duration::from_secs(30);

/// Time allowed after the last scheduled publication for deliveries to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// First heartbeat, instead of gossipsub's 5 s (setup only).
const HEARTBEAT_INITIAL_DELAY: Duration = Duration::from_millis(100);

/// Idle connections are closed after this; long enough to outlive any run.
const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(600);

/// What to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BroadcastSpec {
    /// Nodes in the network. Default 16 (benchmarks use 16, 32, 64).
    pub nodes: usize,
    /// Nodes that publish (the first ones). Default 2.
    pub publishers: usize,
    /// Messages each publisher publishes. Default 100.
    pub messages_per_publisher: usize,
    /// Payload size in bytes (at least 16, the header). Default 1,024.
    pub payload_bytes: usize,
    /// Messages per second per publisher. Default 30.
    pub rate_per_sec: f64,
    /// Distinct random earlier nodes each node dials (fewer for the first nodes), so the mean
    /// degree is about twice this. Default 5: every node can fill gossipsub's `mesh_n_low` (5)
    /// from its own dials, so the mesh is the one gossipsub intends, not one limited by the
    /// topology. The ratio depends on it: on a 2-core machine 3 gave about 5.6 wire bytes per
    /// delivered payload byte at 16–64 nodes, 4 about 7.0, 5 about 8.2 / 8.2 / 7.6.
    pub dial_degree: usize,
}

impl Default for BroadcastSpec {
    fn default() -> Self {
        Self {
            nodes: 16,
            publishers: 2,
            messages_per_publisher: 100,
            payload_bytes: 1024,
            rate_per_sec: 30.0,
            dial_degree: 5,
        }
    }
}

/// What a run measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BroadcastReport {
    /// Nodes in the network.
    pub nodes: usize,
    /// Messages delivered to subscribers (publishers do not deliver to themselves).
    pub delivered: u64,
    /// `publishers × messages_per_publisher × (nodes − 1)`.
    pub expected: u64,
    /// `delivered × payload_bytes`.
    pub payload_bytes_delivered: u64,
    /// TCP bytes written by all nodes from the first publication until the end of the run
    /// (everything on the wire: gossipsub control, signatures, noise, yamux).
    pub wire_bytes_written: u64,
    /// Median delivery latency in milliseconds.
    pub latency_p50_ms: f64,
    /// 99th percentile delivery latency in milliseconds.
    pub latency_p99_ms: f64,
    /// From the first publication until the last delivery (or the timeout).
    pub elapsed: Duration,
    /// Publications gossipsub refused (e.g. no peers); they count as undelivered.
    pub publish_failures: u64,
    /// Whether the mesh met its target before publishing (else it timed out and the run went on).
    pub mesh_formed: bool,
}

impl BroadcastReport {
    /// Wire bytes written per delivered payload byte (0 when nothing was delivered).
    pub fn wire_bytes_per_payload_byte(&self) -> f64 {
        if self.payload_bytes_delivered == 0 {
            0.0
        } else {
            self.wire_bytes_written as f64 / self.payload_bytes_delivered as f64
        }
    }
}

/// Errors of a baseline run.
#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    /// The spec cannot run.
    #[error("invalid broadcast spec: {0}")]
    Spec(&'static str),
    /// A node could not be set up.
    #[error("cannot start gossipsub node {node}: {reason}")]
    Node {
        /// Index of the node.
        node: usize,
        /// Why.
        reason: String,
    },
}

/// Runs the gossipsub baseline; see the module docs.
pub async fn run_gossipsub(spec: BroadcastSpec) -> Result<BroadcastReport, BaselineError> {
    if spec.nodes < 2 {
        return Err(BaselineError::Spec("nodes must be at least 2"));
    }
    if spec.payload_bytes < HEADER_BYTES {
        return Err(BaselineError::Spec("payload_bytes must be at least 16"));
    }
    if spec.dial_degree == 0 {
        return Err(BaselineError::Spec("dial_degree must be at least 1"));
    }
    if !(spec.rate_per_sec > 0.0 && spec.rate_per_sec.is_finite()) {
        return Err(BaselineError::Spec("rate_per_sec must be positive"));
    }
    let publishers = spec.publishers.min(spec.nodes);
    let expected = (publishers * spec.messages_per_publisher * (spec.nodes - 1)) as u64;
    let epoch = Instant::now();
    let wire = WireCounters::default();
    let delivered = Arc::new(AtomicU64::new(0));
    let config = gossipsub_config(spec.payload_bytes)?;
    let mut rng = SplitMix64(SEED);

    // Start the nodes.
    let mut nodes = Vec::with_capacity(spec.nodes);
    for index in 0..spec.nodes {
        let mut secret = [0u8; 32];
        for chunk in secret.chunks_exact_mut(8) {
            chunk.copy_from_slice(&rng.next().to_le_bytes());
        }
        let node_error = |reason: String| BaselineError::Node {
            node: index,
            reason,
        };
        let keypair = Keypair::ed25519_from_bytes(secret).map_err(|e| node_error(e.to_string()))?;
        let mut swarm = build_swarm(keypair, config.clone(), wire.clone()).map_err(node_error)?;
        let topic = IdentTopic::new(TOPIC);
        swarm
            .behaviour_mut()
            .subscribe(&topic)
            .map_err(|e| node_error(e.to_string()))?;
        let loopback: Multiaddr = LISTEN_ADDR
            .parse()
            .map_err(|e| node_error(format!("{e}")))?;
        swarm
            .listen_on(loopback)
            .map_err(|e| node_error(e.to_string()))?;
        let addr = loop {
            if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                break address;
            }
        };
        let (commands, inbox) = mpsc::channel(COMMAND_QUEUE);
        let task = tokio::spawn(
            NodeTask {
                index,
                swarm,
                topic,
                inbox,
                epoch,
                delivered: delivered.clone(),
                latencies_us: Vec::new(),
                publish: None,
                publish_failures: 0,
            }
            .run(),
        );
        nodes.push(NodeHandle {
            addr,
            commands,
            task,
        });
    }

    // Topology: each node dials up to `dial_degree` distinct earlier nodes.
    let mut degree = vec![0usize; spec.nodes];
    for index in 1..spec.nodes {
        let mut earlier: Vec<usize> = (0..index).collect();
        for _ in 0..spec.dial_degree.min(index) {
            let pick = earlier.swap_remove(rng.below(earlier.len()));
            degree[index] += 1;
            degree[pick] += 1;
            let addr = nodes[pick].addr.clone();
            let _ = nodes[index].commands.send(Command::Dial(addr)).await;
        }
    }

    let mesh_formed = wait_for_mesh(&nodes, &degree, config.mesh_n_low()).await;

    // Publish phase.
    let before = wire.snapshot();
    let start = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / spec.rate_per_sec);
    for (publisher, node) in nodes.iter().take(publishers).enumerate() {
        let _ = node
            .commands
            .send(Command::Publish(PublishPlan {
                publisher: publisher as u32,
                count: spec.messages_per_publisher,
                payload_bytes: spec.payload_bytes,
                interval,
            }))
            .await;
    }
    let publish_time = interval.mul_f64(spec.messages_per_publisher as f64);
    let deadline = start + publish_time + DRAIN_TIMEOUT;
    while delivered.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = start.elapsed();
    let during: WireBytes = wire.snapshot().since(before);

    // Stop the nodes and collect their latencies.
    let mut latencies = Vec::new();
    let mut publish_failures = 0;
    for node in &nodes {
        let _ = node.commands.send(Command::Stop).await;
    }
    for node in nodes {
        if let Ok(result) = node.task.await {
            latencies.extend(result.latencies_us);
            publish_failures += result.publish_failures;
        }
    }
    latencies.sort_unstable();
    let delivered = delivered.load(Ordering::Relaxed);
    Ok(BroadcastReport {
        nodes: spec.nodes,
        delivered,
        expected,
        payload_bytes_delivered: delivered * spec.payload_bytes as u64,
        wire_bytes_written: during.written,
        latency_p50_ms: percentile_ms(&latencies, 0.50),
        latency_p99_ms: percentile_ms(&latencies, 0.99),
        elapsed,
        publish_failures,
        mesh_formed,
    })
}

fn gossipsub_config(payload_bytes: usize) -> Result<gossipsub::Config, BaselineError> {
    let default_max = gossipsub::Config::default().max_transmit_size();
    gossipsub::ConfigBuilder::default()
        .validation_mode(ValidationMode::Strict)
        .heartbeat_initial_delay(HEARTBEAT_INITIAL_DELAY)
        // Room for the payload and its envelope (signature, key, seqno, topic).
        .max_transmit_size(default_max.max(payload_bytes + 1024))
        .build()
        .map_err(|e| BaselineError::Node {
            node: 0,
            reason: e.to_string(),
        })
}

fn build_swarm(
    keypair: Keypair,
    config: gossipsub::Config,
    wire: WireCounters,
) -> Result<Swarm<gossipsub::Behaviour>, String> {
    let builder = SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_other_transport(|key| {
            counted_tcp(key, wire)
                .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { Box::new(e) })
        })
        .map_err(|e| e.to_string())?;
    let builder = builder
        .with_behaviour(|key| {
            gossipsub::Behaviour::new(MessageAuthenticity::Signed(key.clone()), config)
                .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { e.into() })
        })
        .map_err(|e| e.to_string())?;
    Ok(builder
        .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT))
        .build())
}

/// Waits until every node is connected to all its planned neighbours and its mesh holds
/// `min(degree, mesh_n_low)` peers, or until every mesh is non-empty and the total stopped
/// changing for two heartbeats (a node pruned by a crowded neighbour may stay below its target).
async fn wait_for_mesh(nodes: &[NodeHandle], degree: &[usize], mesh_n_low: usize) -> bool {
    let started = Instant::now();
    let mut stable_since: Option<(usize, Instant)> = None;
    while started.elapsed() < MESH_TIMEOUT {
        let mut all_at_target = true;
        let mut all_meshed = true;
        let mut total = 0;
        for (node, &want) in nodes.iter().zip(degree) {
            let (reply, answer) = oneshot::channel();
            if node.commands.send(Command::Mesh(reply)).await.is_err() {
                return false;
            }
            let Ok(state) = answer.await else {
                return false;
            };
            total += state.mesh;
            all_meshed &= state.connected >= want && state.mesh > 0;
            all_at_target &= state.connected >= want && state.mesh >= want.min(mesh_n_low);
        }
        if all_at_target {
            return true;
        }
        match stable_since {
            Some((t, since)) if all_meshed && t == total => {
                if since.elapsed() >= Duration::from_secs(2) {
                    return true;
                }
            }
            _ => stable_since = Some((total, Instant::now())),
        }
        tokio::time::sleep(MESH_POLL).await;
    }
    false
}

fn percentile_ms(sorted_us: &[u64], q: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let rank = ((sorted_us.len() - 1) as f64 * q).round() as usize;
    sorted_us
        .get(rank.min(sorted_us.len() - 1))
        .map_or(0.0, |us| *us as f64 / 1000.0)
}

struct NodeHandle {
    addr: Multiaddr,
    commands: mpsc::Sender<Command>,
    task: tokio::task::JoinHandle<NodeResult>,
}

enum Command {
    Dial(Multiaddr),
    Mesh(oneshot::Sender<MeshState>),
    Publish(PublishPlan),
    Stop,
}

struct MeshState {
    connected: usize,
    mesh: usize,
}

struct PublishPlan {
    publisher: u32,
    count: usize,
    payload_bytes: usize,
    interval: Duration,
}

struct Publishing {
    plan: PublishPlan,
    next_seq: u32,
    ticker: tokio::time::Interval,
}

struct NodeResult {
    latencies_us: Vec<u64>,
    publish_failures: u64,
}

struct NodeTask {
    index: usize,
    swarm: Swarm<gossipsub::Behaviour>,
    topic: IdentTopic,
    inbox: mpsc::Receiver<Command>,
    epoch: Instant,
    delivered: Arc<AtomicU64>,
    latencies_us: Vec<u64>,
    publish: Option<Publishing>,
    publish_failures: u64,
}

impl NodeTask {
    async fn run(mut self) -> NodeResult {
        loop {
            tokio::select! {
                command = self.inbox.recv() => match command {
                    None | Some(Command::Stop) => break,
                    Some(Command::Dial(addr)) => {
                        if let Err(error) = self.swarm.dial(addr) {
                            tracing::warn!(node = self.index, %error, "baseline dial failed");
                        }
                    }
                    Some(Command::Mesh(reply)) => {
                        let _ = reply.send(MeshState {
                            connected: self.swarm.connected_peers().count(),
                            mesh: self.swarm.behaviour().mesh_peers(&self.topic.hash()).count(),
                        });
                    }
                    Some(Command::Publish(plan)) => {
                        self.publish = Some(Publishing {
                            ticker: tokio::time::interval(plan.interval),
                            plan,
                            next_seq: 0,
                        });
                    }
                },
                Some(()) = tick(&mut self.publish) => self.publish_next(),
                event = self.swarm.select_next_some() => self.on_event(event),
            }
        }
        NodeResult {
            latencies_us: self.latencies_us,
            publish_failures: self.publish_failures,
        }
    }

    fn publish_next(&mut self) {
        let Some(publishing) = self.publish.as_mut() else {
            return;
        };
        let sent_us = self.epoch.elapsed().as_micros() as u64;
        let mut payload = Vec::with_capacity(publishing.plan.payload_bytes);
        payload.extend_from_slice(&sent_us.to_be_bytes());
        payload.extend_from_slice(&publishing.plan.publisher.to_be_bytes());
        payload.extend_from_slice(&publishing.next_seq.to_be_bytes());
        payload.resize(publishing.plan.payload_bytes, 0xab);
        publishing.next_seq += 1;
        let done = publishing.next_seq as usize >= publishing.plan.count;
        if let Err(error) = self
            .swarm
            .behaviour_mut()
            .publish(self.topic.hash(), payload)
        {
            tracing::warn!(node = self.index, %error, "baseline publish failed");
            self.publish_failures += 1;
        }
        if done {
            self.publish = None;
        }
    }

    fn on_event(&mut self, event: SwarmEvent<gossipsub::Event>) {
        let SwarmEvent::Behaviour(gossipsub::Event::Message { message, .. }) = event else {
            return;
        };
        let Some(sent) = message.data.first_chunk::<8>() else {
            return;
        };
        let sent_us = u64::from_be_bytes(*sent);
        let now_us = self.epoch.elapsed().as_micros() as u64;
        self.latencies_us.push(now_us.saturating_sub(sent_us));
        self.delivered.fetch_add(1, Ordering::Relaxed);
    }
}

/// The next publication tick, or never when not publishing.
async fn tick(publish: &mut Option<Publishing>) -> Option<()> {
    match publish {
        Some(p) => {
            p.ticker.tick().await;
            Some(())
        }
        None => std::future::pending().await,
    }
}

/// SplitMix64: a tiny seeded generator, enough for a reproducible topology and keys.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform enough in `0..n` for `n` far below 2^32 (`n` > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn small_network_delivers_everything() {
        let report = run_gossipsub(BroadcastSpec {
            nodes: 4,
            publishers: 2,
            messages_per_publisher: 5,
            payload_bytes: 1024,
            rate_per_sec: 50.0,
            dial_degree: 3,
        })
        .await
        .unwrap();
        assert_eq!(report.expected, 2 * 5 * 3);
        assert_eq!(report.delivered, report.expected, "{report:?}");
        assert_eq!(report.publish_failures, 0);
        assert!(
            report.wire_bytes_written > report.payload_bytes_delivered,
            "{report:?}"
        );
        assert!(report.latency_p99_ms >= report.latency_p50_ms);
    }

    #[test]
    fn percentiles() {
        let us: Vec<u64> = (1..=100).map(|i| i * 1000).collect();
        assert_eq!(percentile_ms(&us, 0.5), 51.0);
        assert_eq!(percentile_ms(&us, 0.99), 99.0);
        assert_eq!(percentile_ms(&[], 0.5), 0.0);
    }
}
