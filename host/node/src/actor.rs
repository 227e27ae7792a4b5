//! The thin async adapter: one tokio task per node drives an [`Engine`] over the libp2p
//! [`Underlay`].
//!
//! The task owns both; nothing is shared with other tasks. Its loop is one
//! `tokio::select! { biased; … }` over local requests, the next due timer and underlay events;
//! each turn feeds one [`Input`] to the engine and carries out the [`Output`]s: frames go to the
//! underlay (dialling first when the peer is not connected, with a small bounded queue while the
//! dial runs), timers go into a bounded timer heap, deliveries and send results go to the
//! application's channel.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use routefabric_core::envelope::Keypair;
use routefabric_core::{NodeId, PeerRef};
use routefabric_net::{Event as NetEvent, Multiaddr, SendError, Underlay, WireBytes};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::engine::{
    Command, Delivery, Engine, EngineConfig, Input, Output, Plugins, SendOutcome, Stats, Timer,
};

/// Requests queued from the application to one node. Default bound of that queue.
pub const REQUEST_QUEUE: usize = 1_024;
/// Frames held for a peer while it is being dialled.
pub const DIAL_QUEUE: usize = 64;
/// Peers being dialled at once.
pub const MAX_DIALS: usize = 256;
/// A dial that has neither connected nor failed after this long no longer holds its slot (its
/// frames are counted as dropped): a peer can answer under another identity than the one asked
/// for, and then no event names the dial again.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(20);
/// Inputs the actor owes the engine (events from before the first turn, peers it could not dial).
const PENDING_INPUTS: usize = 4_096;
/// Timers armed at once; beyond it the latest are dropped (and logged).
pub const MAX_TIMERS: usize = 100_000;

/// What a node tells its application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppEvent {
    /// A message was delivered.
    Deliver(Delivery),
    /// A directed send finished.
    SendResult {
        /// The caller's tag.
        tag: u64,
        /// The outcome.
        outcome: SendOutcome,
    },
}

/// A node's counters and wire figures.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Engine counters.
    pub stats: Stats,
    /// Bytes on TCP sockets since the node started.
    pub wire: WireBytes,
    /// Connected peers.
    pub neighbours: usize,
    /// Routes in the store.
    pub routes: usize,
    /// Frames that could not be queued (peer queue full or dial queue full).
    pub frames_dropped: u64,
}

enum Request {
    Command(Command),
    Report(oneshot::Sender<Report>),
    Shutdown,
}

/// Errors starting a node.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The underlay failed.
    #[error("network: {0}")]
    Net(#[from] routefabric_net::NetError),
    /// No listen address came up.
    #[error("no listen address came up within 5 s: check the listen addresses in the config")]
    NoListenAddress,
    /// The node task is gone.
    #[error("the node stopped")]
    Stopped,
}

/// The application's side of a running node.
#[derive(Debug, Clone)]
pub struct NodeHandle {
    me: PeerRef,
    requests: mpsc::Sender<Request>,
}

impl NodeHandle {
    /// The node's id and dialable address.
    pub fn me(&self) -> PeerRef {
        self.me
    }

    /// The address to give other nodes as a bootstrap peer.
    pub fn multiaddr(&self) -> Multiaddr {
        dial_addr(&self.me)
    }

    /// Queue a command (waits while the node's request queue is full).
    pub async fn command(&self, command: Command) -> Result<(), NodeError> {
        self.requests
            .send(Request::Command(command))
            .await
            .map_err(|_| NodeError::Stopped)
    }

    /// Counters and wire figures.
    pub async fn report(&self) -> Result<Report, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send(Request::Report(tx))
            .await
            .map_err(|_| NodeError::Stopped)?;
        rx.await.map_err(|_| NodeError::Stopped)
    }

    /// Stop the node.
    pub async fn shutdown(&self) {
        let _ = self.requests.send(Request::Shutdown).await;
    }
}

/// Everything a node needs to start.
pub struct NodeSpec {
    /// Its key.
    pub keys: Keypair,
    /// Where to listen (the first TCP address that comes up is the one it advertises).
    pub listen: Vec<Multiaddr>,
    /// Engine settings.
    pub engine: EngineConfig,
    /// Underlay settings.
    pub net: routefabric_net::Config,
    /// Its plugins.
    pub plugins: Arc<dyn Plugins>,
    /// The TCP address other nodes are told to dial. Default (`None`): the first TCP listen
    /// address that comes up, preferring one that is neither loopback nor unspecified — a node
    /// listening on `0.0.0.0` is reported on every interface, and `127.0.0.1` is no use to a
    /// peer on another machine. Set it behind NAT or port forwarding.
    pub advertise: Option<SocketAddr>,
    /// How it dials its peers. Default TCP.
    pub transport: Transport,
    /// Seed of the overlay's random choices.
    pub seed: u64,
}

impl std::fmt::Debug for NodeSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeSpec")
            .field("id", &self.keys.id())
            .field("listen", &self.listen)
            .finish_non_exhaustive()
    }
}

/// Milliseconds since the Unix epoch: the clock envelopes are stamped with.
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// How a node dials its peers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// TCP with noise and yamux, at the peer's advertised address. The default.
    #[default]
    Tcp,
    /// QUIC at the UDP port with the number of the peer's advertised TCP port (the default
    /// listen addresses put both on 4001), falling back to TCP when that dial fails.
    Quic,
}

/// The multiaddr to dial a peer at over TCP.
pub fn dial_addr(peer: &PeerRef) -> Multiaddr {
    dial_addr_over(peer, Transport::Tcp)
}

/// The multiaddr to dial a peer at over `transport`.
pub fn dial_addr_over(peer: &PeerRef, transport: Transport) -> Multiaddr {
    let ip = match peer.addr.ip() {
        IpAddr::V4(ip) => format!("/ip4/{ip}"),
        IpAddr::V6(ip) => format!("/ip6/{ip}"),
    };
    let port = peer.addr.port();
    let mut s = match transport {
        Transport::Tcp => format!("{ip}/tcp/{port}"),
        Transport::Quic => format!("{ip}/udp/{port}/quic-v1"),
    };
    if let Ok(p) = routefabric_net::peer_id_of(&peer.id) {
        s.push_str(&format!("/p2p/{p}"));
    }
    s.parse().unwrap_or_else(|_| Multiaddr::empty())
}

/// The socket address of a `/ip4|ip6/…/tcp/…` multiaddr.
pub fn socket_addr(addr: &Multiaddr) -> Option<SocketAddr> {
    let text = addr.to_string();
    let mut parts = text.split('/').skip(1);
    let ip: IpAddr = match (parts.next()?, parts.next()?) {
        ("ip4" | "ip6", ip) => ip.parse().ok()?,
        _ => return None,
    };
    match (parts.next()?, parts.next()?) {
        ("tcp", port) => Some(SocketAddr::new(ip, port.parse().ok()?)),
        _ => None,
    }
}

/// Start a node: bring up the underlay, wait for its TCP listen address, and spawn its task.
/// Application events go to `events` (the node waits when that channel is full).
pub async fn spawn(
    spec: NodeSpec,
    events: mpsc::Sender<AppEvent>,
) -> Result<NodeHandle, NodeError> {
    let mut underlay = Underlay::new(spec.keys.secret(), spec.net)?;
    for addr in &spec.listen {
        underlay.listen(addr.clone())?;
    }
    // A wildcard listener is reported once per interface, right after the first; other
    // listeners once each. Whatever else arrives meanwhile is kept for the engine.
    let wildcard = spec
        .listen
        .iter()
        .any(|a| socket_addr(a).is_some_and(|s| s.ip().is_unspecified()));
    let tcp_listeners = spec
        .listen
        .iter()
        .filter(|a| socket_addr(a).is_some())
        .count();
    let mut deadline = Instant::now() + Duration::from_secs(5);
    let mut listening: Vec<SocketAddr> = Vec::new();
    let mut early: Vec<NetEvent> = Vec::new();
    while let Ok(event) = tokio::time::timeout_at(deadline, underlay.next_event()).await {
        let NetEvent::Listening(a) = event else {
            if early.len() < PENDING_INPUTS {
                early.push(event);
            }
            continue;
        };
        let Some(sa) = socket_addr(&a) else {
            continue;
        };
        listening.push(sa);
        if spec.advertise.is_some() || (!wildcard && listening.len() >= tcp_listeners) {
            break;
        }
        if wildcard && listening.len() == 1 {
            deadline = Instant::now() + Duration::from_millis(100);
        }
    }
    let routable = |a: &&SocketAddr| !a.ip().is_loopback() && !a.ip().is_unspecified();
    let addr = spec
        .advertise
        .or_else(|| listening.iter().find(routable).copied())
        .or_else(|| listening.first().copied())
        .ok_or(NodeError::NoListenAddress)?;
    let boot = wall_ms();
    let engine = Engine::new(spec.keys, addr, boot, spec.seed, spec.engine, spec.plugins);
    let me = engine.me();
    let (tx, rx) = mpsc::channel(REQUEST_QUEUE);
    let mut actor = Actor {
        engine,
        underlay,
        events,
        timers: BinaryHeap::new(),
        timer_payloads: HashMap::new(),
        timer_seq: 0,
        dialing: HashMap::new(),
        pending: VecDeque::new(),
        transport: spec.transport,
        frames_dropped: 0,
    };
    for event in early {
        if let Some(input) = actor.net_event(event) {
            actor.pending.push_back(input);
        }
    }
    tokio::spawn(actor.run(rx));
    Ok(NodeHandle { me, requests: tx })
}

struct Actor {
    engine: Engine,
    underlay: Underlay,
    events: mpsc::Sender<AppEvent>,
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    timer_payloads: HashMap<u64, Timer>,
    timer_seq: u64,
    /// Peers being dialled.
    dialing: HashMap<NodeId, Dial>,
    /// Inputs to hand the engine before the next event (bounded by [`PENDING_INPUTS`]).
    pending: VecDeque<Input>,
    transport: Transport,
    frames_dropped: u64,
}

/// A dial in progress.
struct Dial {
    peer: PeerRef,
    started: Instant,
    transport: Transport,
    /// Frames waiting for the connection.
    queue: VecDeque<Vec<u8>>,
}

impl Actor {
    async fn run(mut self, mut requests: mpsc::Receiver<Request>) {
        loop {
            let next_timer = self.timers.peek().map(|Reverse((at, _))| *at);
            let input = if let Some(input) = self.pending.pop_front() {
                input
            } else {
                tokio::select! {
                biased;
                request = requests.recv() => match request {
                    None | Some(Request::Shutdown) => break,
                    Some(Request::Report(reply)) => {
                        let _ = reply.send(self.report());
                        continue;
                    }
                    Some(Request::Command(c)) => Input::Command(c),
                },
                _ = sleep_until(next_timer) => {
                    let Some(Reverse((_, seq))) = self.timers.pop() else { continue };
                    let Some(timer) = self.timer_payloads.remove(&seq) else { continue };
                    Input::Timer(timer)
                },
                event = self.underlay.next_event() => match self.net_event(event) {
                    Some(input) => input,
                    None => continue,
                },
                }
            };
            let flush_for = match &input {
                Input::PeerUp { peer, .. } => Some(*peer),
                _ => None,
            };
            let outputs = self.engine.handle(wall_ms(), input);
            if self.apply(outputs).await.is_err() {
                break;
            }
            // Frames queued while dialling follow the engine's hello.
            if let Some(peer) = flush_for
                && let Some(dial) = self.dialing.remove(&peer)
            {
                for frame in dial.queue {
                    self.write(peer, frame);
                }
            }
        }
    }

    fn report(&self) -> Report {
        Report {
            stats: self.engine.stats().clone(),
            wire: self.underlay.wire_bytes(),
            neighbours: self.engine.neighbours().count(),
            routes: self.engine.route_store().len(),
            frames_dropped: self.frames_dropped,
        }
    }

    fn net_event(&mut self, event: NetEvent) -> Option<Input> {
        match event {
            NetEvent::PeerUp { peer, addr } => Some(Input::PeerUp {
                peer,
                addr: socket_addr(&addr),
            }),
            NetEvent::PeerDown { peer } => Some(Input::PeerDown(peer)),
            NetEvent::Frame { from, frame } => Some(Input::Frame {
                from,
                bytes: frame.to_vec(),
            }),
            NetEvent::LinkSample { peer, rtt_us } => Some(Input::LinkSample { peer, rtt_us }),
            NetEvent::DialFailed {
                peer: Some(peer),
                error,
            } => {
                tracing::debug!(%peer, "dial failed: {error}");
                let dial = self.dialing.remove(&peer)?;
                if dial.transport == Transport::Quic {
                    // The peer may not listen on QUIC at that port: try TCP before giving up.
                    self.dial(dial.peer, Transport::Tcp, dial.queue);
                    return None;
                }
                self.frames_dropped += dial.queue.len() as u64;
                Some(Input::Unreachable(peer))
            }
            NetEvent::FrameRejected { peer, reason } => {
                tracing::debug!(%peer, ?reason, "frame rejected by the underlay");
                Some(Input::FrameRefused(peer))
            }
            NetEvent::FramesDropped { count, .. } => {
                self.frames_dropped += count as u64;
                None
            }
            NetEvent::Listening(_) | NetEvent::DialFailed { peer: None, .. } => None,
        }
    }

    async fn apply(&mut self, outputs: Vec<Output>) -> Result<(), ()> {
        for output in outputs {
            match output {
                Output::Send { to, frame } => self.send(to, frame),
                Output::Timer { delay_ms, timer } => {
                    if self.timer_payloads.len() >= MAX_TIMERS {
                        tracing::warn!("timer heap full: dropping {timer:?}");
                        continue;
                    }
                    self.timer_seq += 1;
                    let at = Instant::now() + Duration::from_millis(delay_ms);
                    self.timers.push(Reverse((at, self.timer_seq)));
                    self.timer_payloads.insert(self.timer_seq, timer);
                }
                Output::Deliver(d) => {
                    self.events
                        .send(AppEvent::Deliver(d))
                        .await
                        .map_err(|_| ())?;
                }
                Output::SendResult { tag, outcome } => {
                    self.events
                        .send(AppEvent::SendResult { tag, outcome })
                        .await
                        .map_err(|_| ())?;
                }
                Output::Ban(peer) => {
                    tracing::info!(%peer, "banning a peer that keeps sending garbage");
                    let _ = self.underlay.ban_default(peer);
                }
            }
        }
        Ok(())
    }

    fn send(&mut self, to: PeerRef, frame: Vec<u8>) {
        if to.id == self.engine.me().id {
            return;
        }
        if self.underlay.is_connected(&to.id) {
            self.write(to.id, frame);
            return;
        }
        if let Some(dial) = self.dialing.get_mut(&to.id) {
            if dial.queue.len() < DIAL_QUEUE {
                dial.queue.push_back(frame);
            } else {
                self.frames_dropped += 1;
            }
            return;
        }
        if routefabric_net::peer_id_of(&to.id).is_err() {
            // Not an ed25519 key: no connection could authenticate it.
            self.frames_dropped += 1;
            self.unreachable(to.id);
            return;
        }
        if self.dialing.len() >= MAX_DIALS {
            let now = Instant::now();
            let stale: Vec<NodeId> = self
                .dialing
                .iter()
                .filter(|(_, dial)| now.duration_since(dial.started) >= DIAL_TIMEOUT)
                .map(|(peer, _)| *peer)
                .collect();
            for peer in stale {
                if let Some(dial) = self.dialing.remove(&peer) {
                    self.frames_dropped += dial.queue.len() as u64;
                }
                self.unreachable(peer);
            }
            if self.dialing.len() >= MAX_DIALS {
                self.frames_dropped += 1;
                return;
            }
        }
        self.dial(to, self.transport, VecDeque::from([frame]));
    }

    fn dial(&mut self, peer: PeerRef, transport: Transport, queue: VecDeque<Vec<u8>>) {
        match self.underlay.dial(dial_addr_over(&peer, transport)) {
            Ok(()) => {
                let dial = Dial {
                    peer,
                    started: Instant::now(),
                    transport,
                    queue,
                };
                self.dialing.insert(peer.id, dial);
            }
            Err(e) => {
                tracing::debug!(peer = %peer.id, "cannot dial: {e}");
                self.frames_dropped += queue.len() as u64;
                self.unreachable(peer.id);
            }
        }
    }

    /// Tell the engine, before the next event, that `peer` cannot be reached.
    fn unreachable(&mut self, peer: NodeId) {
        if self.pending.len() < PENDING_INPUTS {
            self.pending.push_back(Input::Unreachable(peer));
        }
    }

    fn write(&mut self, to: NodeId, frame: Vec<u8>) {
        match self.underlay.send(to, frame) {
            Ok(()) => {}
            Err(SendError::QueueFull | SendError::NotConnected) => self.frames_dropped += 1,
            Err(e @ SendError::Oversized { .. }) => {
                tracing::warn!("engine produced an oversized frame: {e}");
                self.frames_dropped += 1;
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
