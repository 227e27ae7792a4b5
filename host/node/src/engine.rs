//! One node's logic, sans-IO: the overlay, the route store, the plugins and directed delivery
//! joined into one state machine.
//!
//! [`Engine::handle`] takes the caller's clock (milliseconds since the Unix epoch: envelopes carry
//! wall-clock timestamps) and one [`Input`] and returns [`Output`]s — frames to send, timers to
//! arm, deliveries, results of directed sends. It opens no socket, reads no clock and spawns
//! nothing, so tests drive several engines by hand and the actor ([`crate::actor`]) drives one
//! over the libp2p underlay.
//!
//! Data flow (see `DESIGN.md`):
//!
//! * links, route tokens from the fanout trees, ACK traces and plugin-channel messages become
//!   [`Observation`]s, batched per input and handed to every proof source; their offers land in
//!   the [`RouteStore`] after validation;
//! * a directed message takes the **fast path** when the destination is a neighbour or the store
//!   holds a proof (the active routing policy chooses among the candidates), and the **safe path**
//!   — a flood over the node's links bounded by a hop budget and de-duplicated at every node —
//!   when there is none, when the policy says so, or when the fast attempt is not acknowledged in
//!   time; every hop on the way back learns from the acknowledgement's trace;
//! * broadcasts ride the fanout trees; the payload is the origin's signed envelope, verified by
//!   every receiver before delivery.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use routefabric_core::envelope::{Dedup, Envelope, Keypair, Kind, Limits, Reject, Rejects, Signed};
use routefabric_core::plugin::{
    AckTrace, Action, Candidate, Decision, HostedProofSource, HostedRoutingPolicy, LinkSample,
    Observation, PeerMessage, RouteToken,
};
use routefabric_core::route_store::{Rejection, SourceId};
use routefabric_core::{NodeId, PeerRef, RouteStore, RouteStoreConfig};
use routefabric_overlay::fanout::{self, ChannelId, TreeId};
use routefabric_overlay::{self as overlay, membership};
use serde::{Deserialize, Serialize};

use crate::frame::{AckBody, Directed, Frame, to_cbor};

/// The plugins an engine consults: every proof source and the active routing policy. The node
/// implements it over the wasmtime registry; tests can implement it with native plugins.
pub trait Plugins: Send + Sync {
    /// The proof sources, by name.
    fn proof_sources(&self) -> Vec<(String, Arc<dyn HostedProofSource>)>;
    /// The active routing policy, by name (none: every directed send takes the safe path).
    fn policy(&self) -> Option<(String, Arc<dyn HostedRoutingPolicy>)>;
}

/// Engine settings. Every field has a default, written in its doc.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EngineConfig {
    /// Membership and fanout settings (see `routefabric_overlay`).
    pub overlay: overlay::Config,
    /// Route store bounds.
    pub route_store: RouteStoreConfig,
    /// What envelopes are accepted.
    pub envelope: Limits,
    /// Time a directed send waits for its acknowledgement before the next attempt, ms.
    /// Default 1,000 (loopback round trips are ~1 ms, wide-area ones ~100 ms).
    pub ack_timeout_ms: u64,
    /// Attempts of a directed send: the first on the fast path when a proof exists, the rest
    /// flooded. Default 3.
    pub max_attempts: u8,
    /// Hop budget of a flood. Default 8 (a HyParView overlay of a million nodes with active
    /// views of 5 has a diameter around 8–9).
    pub flood_ttl: u8,
    /// Longest trace a directed message may carry. Default 32 (Peerbit caps route tokens at 32).
    pub max_trace: usize,
    /// Directed sends waiting for an acknowledgement. Default 4,096; more fail at once.
    pub max_pending: usize,
    /// Messages remembered for de-duplication (deliveries and flood copies). Default 65,536.
    pub dedup_capacity: usize,
    /// Largest plugin-channel message, bytes. Default 64 KiB.
    pub max_plugin_message: usize,
    /// Addresses of peers remembered. Default 4,096.
    pub max_known_peers: usize,
    /// Malformed frames or forged envelopes from one peer before it is banned. Default 16.
    pub strikes_before_ban: u32,
    /// A peer's strikes are forgotten after this long without a new one, ms. Default 600,000
    /// (the envelope age window): rare honest mistakes never add up to a ban.
    pub strike_memory_ms: u64,
    /// Period of route expiry, ms. Default 1,000.
    pub expire_interval_ms: u64,
    /// Timers one proof source may have armed at once; more are refused and counted, so a
    /// plugin cannot crowd the node's own timers out of the driver's bounded timer heap.
    /// Default 1,024.
    pub max_plugin_timers: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            overlay: overlay::Config::default(),
            route_store: RouteStoreConfig::default(),
            envelope: Limits::default(),
            ack_timeout_ms: 1_000,
            max_attempts: 3,
            flood_ttl: 8,
            max_trace: 32,
            max_pending: 4_096,
            dedup_capacity: 65_536,
            max_plugin_message: 64 << 10,
            max_known_peers: 4_096,
            strikes_before_ban: 16,
            strike_memory_ms: 600_000,
            expire_interval_ms: 1_000,
            max_plugin_timers: 1_024,
        }
    }
}

/// Timers the engine asks its driver to arm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Timer {
    /// An overlay timer.
    Overlay(overlay::Timer<PeerRef>),
    /// A directed send's acknowledgement is due.
    Ack {
        /// The send's identifier.
        id: u64,
        /// The attempt the timer belongs to.
        attempt: u8,
    },
    /// A timer a proof source set.
    Plugin {
        /// The source.
        source: String,
        /// Its token.
        token: u64,
    },
    /// Expire routes.
    Expire,
}

/// Commands from the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Start: join the membership through `contact` (or found the overlay when `None`).
    Start {
        /// A peer to join through; `None` for the first node.
        contact: Option<PeerRef>,
    },
    /// Subscribe to `channel` as published by `writer` (one tree per writer and channel).
    Subscribe {
        /// Channel name.
        channel: String,
        /// The writer, root of the tree.
        writer: PeerRef,
    },
    /// Publish on `channel` (this node's own tree of the channel).
    Publish {
        /// Channel name.
        channel: String,
        /// Bytes.
        payload: Vec<u8>,
    },
    /// Send `payload` to `dest` with an end-to-end acknowledgement; the result comes back as
    /// [`Output::SendResult`] with `tag`.
    Send {
        /// Destination.
        dest: NodeId,
        /// Bytes.
        payload: Vec<u8>,
        /// Caller's tag, echoed in the result.
        tag: u64,
    },
}

/// Inputs of the engine.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// The underlay connected to `peer` (`addr`: the remote address as seen).
    PeerUp {
        /// The peer.
        peer: NodeId,
        /// Its remote address, when known.
        addr: Option<SocketAddr>,
    },
    /// The last connection to `peer` closed.
    PeerDown(NodeId),
    /// A peer the engine asked to send to could not be reached.
    Unreachable(NodeId),
    /// A frame arrived.
    Frame {
        /// Sender.
        from: NodeId,
        /// Its bytes.
        bytes: Vec<u8>,
    },
    /// A round-trip measurement to a neighbour.
    LinkSample {
        /// The neighbour.
        peer: NodeId,
        /// Round trip, µs.
        rtt_us: u32,
    },
    /// The underlay refused a frame from `peer` (oversized): counted. Not a strike: frame limits
    /// are local settings, and the frame may carry a relayed envelope another node accepted.
    FrameRefused(NodeId),
    /// A timer fired.
    Timer(Timer),
    /// An application command.
    Command(Command),
}

/// How a delivered message travelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Plane {
    /// Down a fanout tree.
    Tree,
    /// A directed message on a proof route.
    Fast,
    /// A directed message that was flooded on some hop.
    Flood,
}

/// A message for the application, with what its origin signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The author (verified signature).
    pub origin: NodeId,
    /// The author's timestamp, ms since the Unix epoch.
    pub timestamp_ms: u64,
    /// The channel, for publications (its name when this node subscribed by name).
    pub channel: Option<String>,
    /// Hops from the origin.
    pub hops: u16,
    /// How it travelled.
    pub plane: Plane,
    /// The bytes.
    pub payload: Vec<u8>,
}

/// The outcome of a directed send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// The destination acknowledged it.
    Acked {
        /// Round trip from the first attempt, ms.
        rtt_ms: u64,
        /// Hops the message took.
        hops: u16,
        /// True when the acknowledged copy never left the fast path.
        fast: bool,
    },
    /// No acknowledgement after every attempt (or too many sends pending).
    Failed,
}

/// Outputs of the engine.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send a frame; the driver dials `to.addr` when it has no connection.
    Send {
        /// Receiver.
        to: PeerRef,
        /// Encoded [`Frame`].
        frame: Vec<u8>,
    },
    /// Hand `timer` back after `delay_ms`.
    Timer {
        /// Delay, ms.
        delay_ms: u64,
        /// The timer.
        timer: Timer,
    },
    /// A message for the application.
    Deliver(Delivery),
    /// A directed send finished.
    SendResult {
        /// The caller's tag.
        tag: u64,
        /// What happened.
        outcome: SendOutcome,
    },
    /// Disconnect `peer` and refuse it for a while: it keeps sending garbage.
    Ban(NodeId),
}

/// Counters of one node.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Stats {
    /// Publications this node made.
    pub published: u64,
    /// Publications delivered here (each once).
    pub broadcast_delivered: u64,
    /// Directed sends started here.
    pub directed_sent: u64,
    /// Of those, acknowledged.
    pub directed_acked: u64,
    /// Of those, failed.
    pub directed_failed: u64,
    /// Acknowledged sends whose copy stayed on the fast path.
    pub fast_path: u64,
    /// Acknowledged sends that needed the safe path.
    pub fallback: u64,
    /// Directed messages delivered here (each once).
    pub directed_delivered: u64,
    /// Directed copies forwarded for others.
    pub relayed: u64,
    /// Routing decisions per policy name.
    pub decisions: BTreeMap<String, u64>,
    /// Envelopes refused, per reason.
    pub rejects: Rejects,
    /// Frames that did not decode.
    pub malformed_frames: u64,
    /// Frames the underlay refused as larger than its frame limit.
    pub oversized_frames: u64,
    /// Peers banned for garbage.
    pub bans: u64,
    /// Failed plugin calls.
    pub plugin_errors: u64,
    /// Directed copies dropped because their trace was full (`max_trace`).
    pub trace_full: u64,
    /// Plugin timers refused because the source already had `max_plugin_timers` armed.
    pub plugin_timers_refused: u64,
}

#[derive(Debug, Clone)]
struct Link {
    addr: Option<SocketAddr>,
    session: u64,
    hello: bool,
    rtt_us: Option<u32>,
}

#[derive(Debug, Clone)]
struct Pending {
    tag: u64,
    dest: NodeId,
    started_ms: u64,
    attempt: u8,
    envelope: Signed,
}

/// One node's state machine. See the module docs.
pub struct Engine {
    me: PeerRef,
    keys: Keypair,
    boot: u64,
    config: Arc<EngineConfig>,
    overlay: overlay::Node<PeerRef>,
    store: RouteStore,
    plugins: Arc<dyn Plugins>,
    source_ids: HashMap<String, SourceId>,
    links: BTreeMap<NodeId, Link>,
    known: HashMap<NodeId, SocketAddr>,
    started: bool,
    seq: u64,
    delivered: Dedup,
    copies: Dedup,
    pending: HashMap<u64, Pending>,
    channels: HashMap<u64, String>,
    /// Strikes per peer, and when the last one came.
    strikes: HashMap<NodeId, (u32, u64)>,
    /// Timers armed per proof source.
    plugin_timers: HashMap<String, usize>,
    stats: Stats,
    /// Observations gathered while handling one input: `None` for every source, `Some(name)` for
    /// one.
    observations: Vec<(Option<String>, Observation)>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("me", &self.me)
            .field("links", &self.links.len())
            .field("routes", &self.store.len())
            .finish_non_exhaustive()
    }
}

/// Channel identifier of a channel name (FNV-1a, 64 bits: stable across builds and machines).
pub fn channel_id(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The route-token tree identifier plugins see for one (channel, root) tree.
fn tree_key(tree: &TreeId<PeerRef>) -> u64 {
    let mut h = tree.channel.0 ^ 0x9e37_79b9_7f4a_7c15;
    for w in tree.root.id.to_words() {
        h = (h ^ w).wrapping_mul(0x0000_0100_0000_01b3).rotate_left(29);
    }
    h
}

impl Engine {
    /// A node with key `keys` listening at `addr`. `boot` must change on every restart (the
    /// start time is a good choice); `seed` seeds the overlay's random choices.
    pub fn new(
        keys: Keypair,
        addr: SocketAddr,
        boot: u64,
        seed: u64,
        config: EngineConfig,
        plugins: Arc<dyn Plugins>,
    ) -> Self {
        let me = PeerRef {
            id: keys.id(),
            addr,
        };
        let config = Arc::new(config);
        let overlay = overlay::Node::new(
            me,
            Arc::new(config.overlay.membership.clone()),
            Arc::new(config.overlay.fanout.clone()),
            overlay::Rng::new(seed),
        );
        Engine {
            me,
            boot,
            store: RouteStore::new(me.id, config.route_store.clone()),
            delivered: Dedup::new(config.dedup_capacity),
            copies: Dedup::new(config.dedup_capacity),
            keys,
            config,
            overlay,
            plugins,
            source_ids: HashMap::new(),
            links: BTreeMap::new(),
            known: HashMap::new(),
            started: false,
            // Sequence numbers start from the boot time so a restarted node's messages are not
            // mistaken for its earlier ones by anyone's de-duplication.
            seq: boot.saturating_mul(1_000),
            pending: HashMap::new(),
            channels: HashMap::new(),
            strikes: HashMap::new(),
            plugin_timers: HashMap::new(),
            stats: Stats::default(),
            observations: Vec::new(),
        }
    }

    /// This node.
    pub fn me(&self) -> PeerRef {
        self.me
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The route store (read only).
    pub fn route_store(&self) -> &RouteStore {
        &self.store
    }

    /// Connected neighbours.
    pub fn neighbours(&self) -> impl Iterator<Item = &NodeId> {
        self.links.keys()
    }

    /// The overlay state.
    pub fn overlay(&self) -> &overlay::Node<PeerRef> {
        &self.overlay
    }

    /// Process one input.
    pub fn handle(&mut self, now: u64, input: Input) -> Vec<Output> {
        let mut out = Vec::new();
        match input {
            Input::PeerUp { peer, addr } => self.peer_up(now, peer, addr, &mut out),
            Input::PeerDown(peer) => self.peer_down(now, peer, &mut out),
            Input::Unreachable(peer) => {
                if !self.links.contains_key(&peer) {
                    let r = self.peer_ref(peer);
                    self.overlay_in(now, overlay::InEvent::PeerDown(r), &mut out);
                }
            }
            Input::Frame { from, bytes } => self.frame(now, from, &bytes, &mut out),
            Input::FrameRefused(_) => self.stats.oversized_frames += 1,
            Input::LinkSample { peer, rtt_us } => {
                if let Some(link) = self.links.get_mut(&peer) {
                    link.rtt_us = Some(rtt_us);
                    let sample = LinkSample {
                        peer,
                        up: true,
                        rtt_us: Some(rtt_us),
                        session: link.session,
                    };
                    self.observations.push((None, Observation::Link(sample)));
                }
            }
            Input::Timer(timer) => self.timer(now, timer, &mut out),
            Input::Command(command) => self.command(now, command, &mut out),
        }
        self.flush_observations(now, &mut out);
        out
    }

    fn peer_ref(&self, id: NodeId) -> PeerRef {
        let addr = self
            .known
            .get(&id)
            .copied()
            .or_else(|| self.links.get(&id).and_then(|l| l.addr))
            .unwrap_or(self.me.addr);
        PeerRef { id, addr }
    }

    fn remember(&mut self, peer: PeerRef) {
        if peer.id == self.me.id {
            return;
        }
        if self.known.len() >= self.config.max_known_peers
            && !self.known.contains_key(&peer.id)
            && let Some(victim) = self
                .known
                .keys()
                .find(|k| !self.links.contains_key(k))
                .copied()
        {
            self.known.remove(&victim);
        }
        if self.known.len() < self.config.max_known_peers || self.known.contains_key(&peer.id) {
            self.known.insert(peer.id, peer.addr);
        }
    }

    fn send_frame(&self, to: PeerRef, frame: &Frame, out: &mut Vec<Output>) {
        out.push(Output::Send {
            to,
            frame: frame.encode(),
        });
    }

    fn peer_up(
        &mut self,
        _now: u64,
        peer: NodeId,
        addr: Option<SocketAddr>,
        out: &mut Vec<Output>,
    ) {
        self.links.entry(peer).or_insert(Link {
            addr,
            session: 0,
            hello: false,
            rtt_us: None,
        });
        let hello = Frame::Hello {
            me: self.me,
            boot: self.boot,
        };
        let to = self.peer_ref(peer);
        self.send_frame(to, &hello, out);
    }

    fn peer_down(&mut self, now: u64, peer: NodeId, out: &mut Vec<Output>) {
        let Some(link) = self.links.remove(&peer) else {
            return;
        };
        self.store.link_down(&peer);
        self.observations.push((
            None,
            Observation::Link(LinkSample {
                peer,
                up: false,
                rtt_us: None,
                session: link.session,
            }),
        ));
        let r = self.peer_ref(peer);
        self.overlay_in(now, overlay::InEvent::PeerDown(r), out);
    }

    fn strike(&mut self, now: u64, peer: NodeId, out: &mut Vec<Output>) {
        let memory = self.config.strike_memory_ms;
        if !self.strikes.contains_key(&peer) && self.strikes.len() >= self.config.max_known_peers {
            // Bounded: forget the peer struck longest ago, so a persistent offender keeps its
            // count however many others misbehave once.
            let stalest = self
                .strikes
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(p, _)| *p);
            if let Some(victim) = stalest {
                self.strikes.remove(&victim);
            }
        }
        let (strikes, last) = self.strikes.entry(peer).or_insert((0, now));
        if now.saturating_sub(*last) > memory {
            *strikes = 0;
        }
        *strikes += 1;
        *last = now;
        if *strikes >= self.config.strikes_before_ban {
            self.strikes.remove(&peer);
            self.stats.bans += 1;
            out.push(Output::Ban(peer));
        }
    }

    /// Count a refused envelope handed over by `from`, and strike `from` unless the reason
    /// depends on this node's own settings or clock: an honest relay forwards what it accepted
    /// under its limits, which may differ from ours (size, timestamp window). An envelope
    /// `from` signed itself is its own fault whatever the reason.
    fn refuse(
        &mut self,
        now: u64,
        from: NodeId,
        origin: Option<NodeId>,
        reason: Reject,
        out: &mut Vec<Output>,
    ) {
        self.stats.rejects.count(reason);
        let local = matches!(reason, Reject::Timestamp | Reject::Oversized);
        if !local || origin == Some(from) {
            self.strike(now, from, out);
        }
    }

    /// Verify an envelope handed over by `from`; a refusal is counted (and struck, see
    /// [`Engine::refuse`]).
    fn open(
        &mut self,
        now: u64,
        from: NodeId,
        signed: &Signed,
        out: &mut Vec<Output>,
    ) -> Option<Envelope> {
        let verified = signed
            .verify(&self.config.envelope)
            .map_err(|reason| (reason, None))
            .and_then(|e| match self.config.envelope.check_time(&e, now) {
                Ok(()) => Ok(e),
                // Signed, so its origin is known: stale or early, it is the origin's doing.
                Err(reason) => Err((reason, Some(e.origin))),
            });
        match verified {
            Ok(e) => Some(e),
            Err((reason, origin)) => {
                self.refuse(now, from, origin, reason, out);
                None
            }
        }
    }

    fn frame(&mut self, now: u64, from: NodeId, bytes: &[u8], out: &mut Vec<Output>) {
        let frame = match Frame::decode(bytes) {
            Ok(f) => f,
            Err(e) => {
                tracing::debug!(%from, "{e}");
                self.stats.malformed_frames += 1;
                self.strike(now, from, out);
                return;
            }
        };
        match frame {
            Frame::Hello { me, boot } => {
                if me.id != from {
                    self.stats.malformed_frames += 1;
                    self.strike(now, from, out);
                    return;
                }
                self.remember(me);
                let Some(link) = self.links.get_mut(&from) else {
                    return;
                };
                let first = !link.hello;
                link.hello = true;
                link.session = boot;
                let sample = LinkSample {
                    peer: from,
                    up: true,
                    rtt_us: link.rtt_us,
                    session: boot,
                };
                self.observations.push((None, Observation::Link(sample)));
                if first && !self.started_overlay() {
                    self.started = true;
                    let join = overlay::Command::Join(me);
                    self.overlay_in(now, overlay::InEvent::Command(join), out);
                }
            }
            Frame::Overlay(message) => {
                let from = self.peer_ref(from);
                self.overlay_in(now, overlay::InEvent::Message { from, message }, out);
            }
            Frame::Directed(d) => self.directed_in(now, from, *d, out),
            Frame::Ack(signed) => self.ack_in(now, from, signed, out),
            Frame::Plugin { source, data } => {
                if data.len() <= self.config.max_plugin_message {
                    let message = PeerMessage { sender: from, data };
                    self.observations
                        .push((Some(source), Observation::Message(message)));
                }
            }
        }
    }

    fn started_overlay(&self) -> bool {
        self.started
    }

    fn command(&mut self, now: u64, command: Command, out: &mut Vec<Output>) {
        match command {
            Command::Start { contact } => {
                self.arm(self.config.expire_interval_ms, Timer::Expire, out);
                match contact {
                    None => {
                        self.started = true;
                        let join = overlay::Command::Join(self.me);
                        self.overlay_in(now, overlay::InEvent::Command(join), out);
                    }
                    Some(contact) => {
                        self.remember(contact);
                        self.started = true;
                        let join = overlay::Command::Join(contact);
                        self.overlay_in(now, overlay::InEvent::Command(join), out);
                    }
                }
            }
            Command::Subscribe { channel, writer } => {
                let id = channel_id(&channel);
                self.channels.insert(id, channel);
                self.remember(writer);
                let tree = TreeId {
                    channel: ChannelId(id),
                    root: writer,
                };
                self.overlay_in(
                    now,
                    overlay::InEvent::Command(fanout::Command::Subscribe(tree).into()),
                    out,
                );
            }
            Command::Publish { channel, payload } => {
                let id = channel_id(&channel);
                self.channels.insert(id, channel);
                let tree = TreeId {
                    channel: ChannelId(id),
                    root: self.me,
                };
                // The writer is the root of its tree; subscribing again is a no-op.
                self.overlay_in(
                    now,
                    overlay::InEvent::Command(fanout::Command::Subscribe(tree).into()),
                    out,
                );
                self.seq += 1;
                let envelope = Envelope {
                    origin: self.me.id,
                    timestamp_ms: now,
                    seq: self.seq,
                    kind: Kind::Publish { channel: id },
                    payload,
                };
                let signed = self.keys.seal(&envelope);
                self.stats.published += 1;
                let payload = Bytes::from(to_cbor(&signed));
                self.overlay_in(
                    now,
                    overlay::InEvent::Command(fanout::Command::Publish { tree, payload }.into()),
                    out,
                );
            }
            Command::Send { dest, payload, tag } => self.send(now, dest, payload, tag, out),
        }
    }

    fn arm(&self, delay_ms: u64, timer: Timer, out: &mut Vec<Output>) {
        out.push(Output::Timer { delay_ms, timer });
    }

    fn timer(&mut self, now: u64, timer: Timer, out: &mut Vec<Output>) {
        match timer {
            Timer::Overlay(t) => self.overlay_in(now, overlay::InEvent::TimerExpired(t), out),
            Timer::Ack { id, attempt } => self.ack_timeout(now, id, attempt, out),
            Timer::Plugin { source, token } => {
                if let Some(armed) = self.plugin_timers.get_mut(&source) {
                    *armed = armed.saturating_sub(1);
                }
                self.observations
                    .push((Some(source), Observation::Timer(token)));
            }
            Timer::Expire => {
                self.store.expire(now);
                self.arm(self.config.expire_interval_ms, Timer::Expire, out);
            }
        }
    }

    // ---- overlay ----

    fn overlay_in(&mut self, now: u64, event: overlay::InEvent<PeerRef>, out: &mut Vec<Output>) {
        let mut events = Vec::new();
        self.overlay.handle_into(now, event, &mut events);
        for e in events {
            match e {
                overlay::OutEvent::Send { to, message } => {
                    self.remember(to);
                    self.send_frame(to, &Frame::Overlay(message), out);
                }
                overlay::OutEvent::ScheduleTimer { delay_ms, timer } => {
                    self.arm(delay_ms, Timer::Overlay(timer), out)
                }
                overlay::OutEvent::Emit(event) => self.overlay_event(now, event, out),
            }
        }
    }

    fn overlay_event(&mut self, now: u64, event: overlay::Event<PeerRef>, out: &mut Vec<Output>) {
        match event {
            overlay::Event::Fanout(fanout::Event::Deliver {
                tree,
                hops,
                publication,
                ..
            }) => self.publication(now, tree, hops, &publication, out),
            overlay::Event::Fanout(fanout::Event::RouteToken { tree, path, .. }) => {
                let token = RouteToken {
                    tree: tree_key(&tree),
                    path: path.iter().map(|p| p.id).collect(),
                    issued_at_ms: now,
                };
                self.observations.push((None, Observation::Token(token)));
            }
            overlay::Event::Membership(membership::Event::NeighborUp(p)) => self.remember(p),
            _ => {}
        }
    }

    fn publication(
        &mut self,
        now: u64,
        tree: TreeId<PeerRef>,
        hops: u16,
        publication: &fanout::Publication<PeerRef>,
        out: &mut Vec<Output>,
    ) {
        let opened = ciborium::from_reader::<Signed, _>(publication.payload.as_ref())
            .map_err(|_| Reject::Malformed)
            .and_then(|s| s.open(&self.config.envelope, now));
        let envelope = match opened {
            Ok(e) => e,
            Err(reason) => {
                self.stats.rejects.count(reason);
                return;
            }
        };
        // The tree's publication header must agree with what the origin signed.
        if envelope.origin != publication.origin.id
            || envelope.kind
                != (Kind::Publish {
                    channel: tree.channel.0,
                })
        {
            self.stats.rejects.count(Reject::BadSignature);
            return;
        }
        if !self.delivered.first_time(Dedup::key(&envelope)) {
            return;
        }
        self.stats.broadcast_delivered += 1;
        out.push(Output::Deliver(Delivery {
            origin: envelope.origin,
            timestamp_ms: envelope.timestamp_ms,
            channel: Some(
                self.channels
                    .get(&tree.channel.0)
                    .cloned()
                    .unwrap_or_else(|| format!("{:016x}", tree.channel.0)),
            ),
            hops,
            plane: Plane::Tree,
            payload: envelope.payload,
        }));
    }

    // ---- directed delivery ----

    fn send(&mut self, now: u64, dest: NodeId, payload: Vec<u8>, tag: u64, out: &mut Vec<Output>) {
        self.stats.directed_sent += 1;
        if self.pending.len() >= self.config.max_pending {
            self.stats.directed_failed += 1;
            out.push(Output::SendResult {
                tag,
                outcome: SendOutcome::Failed,
            });
            return;
        }
        self.seq += 1;
        let id = self.seq;
        let envelope = self.keys.seal(&Envelope {
            origin: self.me.id,
            timestamp_ms: now,
            seq: id,
            kind: Kind::Direct { dest },
            payload,
        });
        self.pending.insert(
            id,
            Pending {
                tag,
                dest,
                started_ms: now,
                attempt: 0,
                envelope: envelope.clone(),
            },
        );
        let directed = Directed {
            origin: self.me.id,
            dest,
            id,
            attempt: 0,
            flood: false,
            ttl: self.config.flood_ttl,
            trace: vec![self.me.id],
            envelope,
        };
        self.copies.first_time((self.me.id, id, 0));
        self.forward(now, None, directed, out);
        self.arm(
            self.config.ack_timeout_ms,
            Timer::Ack { id, attempt: 0 },
            out,
        );
    }

    fn ack_timeout(&mut self, now: u64, id: u64, attempt: u8, out: &mut Vec<Output>) {
        let Some(p) = self.pending.get_mut(&id) else {
            return;
        };
        if p.attempt != attempt {
            return;
        }
        if attempt + 1 >= self.config.max_attempts {
            let tag = p.tag;
            self.pending.remove(&id);
            self.stats.directed_failed += 1;
            out.push(Output::SendResult {
                tag,
                outcome: SendOutcome::Failed,
            });
            return;
        }
        p.attempt += 1;
        let directed = Directed {
            origin: self.me.id,
            dest: p.dest,
            id,
            attempt: p.attempt,
            // Retries take the safe path.
            flood: true,
            ttl: self.config.flood_ttl,
            trace: vec![self.me.id],
            envelope: p.envelope.clone(),
        };
        let attempt = p.attempt;
        self.copies.first_time((self.me.id, id, u64::from(attempt)));
        self.forward(now, None, directed, out);
        self.arm(self.config.ack_timeout_ms, Timer::Ack { id, attempt }, out);
    }

    /// Route a directed message one hop on: to the destination when it is a neighbour, along the
    /// policy's choice among the stored proofs, or flooded.
    fn forward(&mut self, now: u64, from: Option<NodeId>, mut d: Directed, out: &mut Vec<Output>) {
        if !d.flood {
            if self.links.contains_key(&d.dest) {
                let to = self.peer_ref(d.dest);
                self.send_frame(to, &Frame::Directed(Box::new(d)), out);
                return;
            }
            match self.choose(now, &d) {
                Some(hops) => {
                    let frame = Frame::Directed(Box::new(d));
                    for via in hops {
                        let to = self.peer_ref(via);
                        self.send_frame(to, &frame, out);
                    }
                    return;
                }
                None => d.flood = true,
            }
        }
        // Safe path: every link except where it came from and where it has been.
        if d.ttl == 0 {
            return;
        }
        d.ttl -= 1;
        let targets: Vec<NodeId> = if self.links.contains_key(&d.dest) {
            vec![d.dest]
        } else {
            self.links
                .keys()
                .filter(|p| Some(**p) != from && !d.trace.contains(p))
                .copied()
                .collect()
        };
        let frame = Frame::Directed(Box::new(d));
        for via in targets {
            let to = self.peer_ref(via);
            self.send_frame(to, &frame, out);
        }
    }

    /// The next hops the active policy picks for `d`, or `None` for the safe path.
    fn choose(&mut self, now: u64, d: &Directed) -> Option<Vec<NodeId>> {
        let routes = self.store.query(now, &d.dest).to_vec();
        let candidates: Vec<Candidate> = routes
            .iter()
            .filter(|r| self.links.contains_key(&r.via) && !d.trace.contains(&r.via))
            .map(|r| Candidate {
                hop: routefabric_core::plugin::NextHop {
                    via: r.via,
                    cost: r.cost,
                    ttl_ms: u32::try_from(r.expires_at.saturating_sub(now)).unwrap_or(u32::MAX),
                    confidence: r.confidence,
                },
                source: self.store.source_name(r.source).to_owned(),
                link_rtt_us: self.links.get(&r.via).and_then(|l| l.rtt_us),
            })
            .collect();
        if candidates.is_empty() {
            self.observations.push((None, Observation::Miss(d.dest)));
            return None;
        }
        let (name, policy) = self.plugins.policy()?;
        *self.stats.decisions.entry(name).or_insert(0) += 1;
        match policy.choose(now, &d.dest, &candidates) {
            Ok(Decision::Send(plan)) => {
                let copies = usize::from(plan.copies.max(1));
                let hops: Vec<NodeId> = plan
                    .hops
                    .into_iter()
                    .filter(|h| candidates.iter().any(|c| c.hop.via == *h))
                    .take(copies)
                    .collect();
                (!hops.is_empty()).then_some(hops)
            }
            Ok(Decision::Fallback) => None,
            Ok(Decision::Drop) => Some(Vec::new()),
            Err(e) => {
                tracing::debug!("routing policy failed: {e}");
                self.stats.plugin_errors += 1;
                None
            }
        }
    }

    fn directed_in(&mut self, now: u64, from: NodeId, mut d: Directed, out: &mut Vec<Output>) {
        if d.trace.len() >= self.config.max_trace
            || d.trace.last() != Some(&from)
            || d.trace.first() != Some(&d.origin)
        {
            self.stats.malformed_frames += 1;
            self.strike(now, from, out);
            return;
        }
        let key = (d.origin, d.id, u64::from(d.attempt));
        if self.copies.contains(&key) {
            return;
        }
        // Every receiver verifies before it forwards or delivers: a forged copy never takes the
        // real one's place in anybody's de-duplication, and whoever hands on a bad envelope is
        // to blame for it (no honest node forwards one).
        let Some(envelope) = self.open(now, from, &d.envelope, out) else {
            return;
        };
        if envelope.origin != d.origin
            || envelope.seq != d.id
            || envelope.kind != (Kind::Direct { dest: d.dest })
        {
            self.refuse(now, from, Some(envelope.origin), Reject::BadSignature, out);
            return;
        }
        self.copies.first_time(key);
        // The hop budget is ours to bound, whatever the sender wrote.
        d.ttl = d.ttl.min(self.config.flood_ttl);
        if d.dest != self.me.id {
            if d.trace.contains(&self.me.id) {
                return;
            }
            if d.trace.len() + 1 >= self.config.max_trace {
                // One hop more and the next node would refuse it as malformed.
                self.stats.trace_full += 1;
                return;
            }
            self.stats.relayed += 1;
            d.trace.push(self.me.id);
            self.forward(now, Some(from), d, out);
            return;
        }
        let mut path = d.trace;
        path.push(self.me.id);
        let hops = u16::try_from(path.len() - 1).unwrap_or(u16::MAX);
        if self.delivered.first_time(Dedup::key(&envelope)) {
            self.stats.directed_delivered += 1;
            out.push(Output::Deliver(Delivery {
                origin: envelope.origin,
                timestamp_ms: envelope.timestamp_ms,
                channel: None,
                hops,
                plane: if d.flood { Plane::Flood } else { Plane::Fast },
                payload: envelope.payload,
            }));
        }
        // Acknowledge every attempt that arrives first, so a retry whose ACK was lost gets one.
        self.observations.push((
            None,
            Observation::Ack(AckTrace {
                path: path.clone(),
                rtt_ms: None,
            }),
        ));
        self.seq += 1;
        let body = AckBody {
            id: d.id,
            attempt: d.attempt,
            path,
            flood: d.flood,
        };
        let ack = self.keys.seal(&Envelope {
            origin: self.me.id,
            timestamp_ms: now,
            seq: self.seq,
            kind: Kind::Direct { dest: d.origin },
            payload: to_cbor(&body),
        });
        let to = self.peer_ref(from);
        self.send_frame(to, &Frame::Ack(ack), out);
    }

    fn ack_in(&mut self, now: u64, from: NodeId, signed: Signed, out: &mut Vec<Output>) {
        let Some(envelope) = self.open(now, from, &signed, out) else {
            return;
        };
        let Kind::Direct { dest: origin } = envelope.kind else {
            self.stats.rejects.count(Reject::Malformed);
            return;
        };
        let body: AckBody = match ciborium::from_reader(envelope.payload.as_slice()) {
            Ok(b) => b,
            Err(_) => {
                self.stats.rejects.count(Reject::Malformed);
                self.strike(now, from, out);
                return;
            }
        };
        // The path runs from the origin to the acker, who signed it; we must be on it, before
        // the acker, and the ACK must come from our successor.
        let path = &body.path;
        let (Some(first), Some(last)) = (path.first(), path.last()) else {
            self.stats.rejects.count(Reject::Malformed);
            return;
        };
        let Some(pos) = path.iter().position(|n| *n == self.me.id) else {
            return;
        };
        if *first != origin
            || *last != envelope.origin
            || pos + 1 >= path.len()
            || path.get(pos + 1) != Some(&from)
            || path.len() > self.config.max_trace + 1
        {
            self.stats.rejects.count(Reject::Malformed);
            return;
        }
        if pos == 0 {
            // Only the destination can acknowledge, and only an attempt that was sent: anyone
            // else on the way could sign an ACK of its own.
            if self
                .pending
                .get(&body.id)
                .is_some_and(|p| p.dest != envelope.origin || body.attempt > p.attempt)
            {
                self.stats.rejects.count(Reject::BadSignature);
                // Relays pass on any validly signed ACK; only its signer is to blame.
                if from == envelope.origin {
                    self.strike(now, from, out);
                }
                return;
            }
            let Some(p) = self.pending.remove(&body.id) else {
                // A second attempt's ACK after the first: still a trace worth learning.
                self.observations.push((
                    None,
                    Observation::Ack(AckTrace {
                        path: body.path,
                        rtt_ms: None,
                    }),
                ));
                return;
            };
            let rtt_ms = now.saturating_sub(p.started_ms);
            let fast = !body.flood;
            self.stats.directed_acked += 1;
            if fast {
                self.stats.fast_path += 1;
            } else {
                self.stats.fallback += 1;
            }
            let hops = u16::try_from(path.len() - 1).unwrap_or(u16::MAX);
            out.push(Output::SendResult {
                tag: p.tag,
                outcome: SendOutcome::Acked { rtt_ms, hops, fast },
            });
            self.observations.push((
                None,
                Observation::Ack(AckTrace {
                    path: body.path,
                    rtt_ms: Some(u32::try_from(rtt_ms).unwrap_or(u32::MAX)),
                }),
            ));
            return;
        }
        let Some(back) = path.get(pos - 1).copied() else {
            return;
        };
        self.observations.push((
            None,
            Observation::Ack(AckTrace {
                path: body.path.clone(),
                rtt_ms: None,
            }),
        ));
        if self.links.contains_key(&back) {
            let to = self.peer_ref(back);
            self.send_frame(to, &Frame::Ack(signed), out);
        }
    }

    // ---- plugins ----

    fn source_id(&mut self, name: &str) -> SourceId {
        if let Some(id) = self.source_ids.get(name) {
            return *id;
        }
        let id = self.store.source(name);
        self.source_ids.insert(name.to_owned(), id);
        id
    }

    /// Hand what this input taught to the proof sources and apply what they answer.
    fn flush_observations(&mut self, now: u64, out: &mut Vec<Output>) {
        if self.observations.is_empty() {
            return;
        }
        let observations = std::mem::take(&mut self.observations);
        for (name, source) in self.plugins.proof_sources() {
            let batch: Vec<Observation> = observations
                .iter()
                .filter(|(to, _)| to.as_deref().is_none_or(|t| t == name))
                .map(|(_, o)| o.clone())
                .collect();
            if batch.is_empty() {
                continue;
            }
            match source.observe(now, &batch) {
                Ok(actions) => self.apply(now, &name, actions, out),
                Err(e) => {
                    tracing::debug!(source = %name, "observe failed: {e}");
                    self.stats.plugin_errors += 1;
                }
            }
        }
    }

    fn apply(&mut self, now: u64, name: &str, actions: Vec<Action>, out: &mut Vec<Output>) {
        let source = self.source_id(name);
        for action in actions {
            match action {
                Action::Offer { dest, hops } => {
                    let links = &self.links;
                    self.store
                        .offer(now, source, dest, &hops, |p| links.contains_key(p));
                }
                Action::Withdraw(dest) => self.store.withdraw(source, &dest),
                Action::Send { to, data } => {
                    if data.len() <= self.config.max_plugin_message && self.links.contains_key(&to)
                    {
                        let frame = Frame::Plugin {
                            source: name.to_owned(),
                            data,
                        };
                        let to = self.peer_ref(to);
                        self.send_frame(to, &frame, out);
                    } else {
                        let reason = if self.links.contains_key(&to) {
                            Rejection::OversizedMessage
                        } else {
                            Rejection::NotNeighbour
                        };
                        self.store.count_rejection(source, reason);
                    }
                }
                Action::SetTimer { token, after_ms } => {
                    // The name is copied only the first time a source arms a timer.
                    let armed = match self.plugin_timers.get_mut(name) {
                        Some(armed) => armed,
                        None => self.plugin_timers.entry(name.to_owned()).or_insert(0),
                    };
                    if *armed >= self.config.max_plugin_timers {
                        self.stats.plugin_timers_refused += 1;
                        self.store.count_rejection(source, Rejection::BadTimer);
                        continue;
                    }
                    *armed += 1;
                    self.arm(
                        u64::from(after_ms),
                        Timer::Plugin {
                            source: name.to_owned(),
                            token,
                        },
                        out,
                    );
                }
            }
        }
    }
}
