//! All peers: who is connected, their node ids, and a bounded frame queue per peer.

use std::collections::{HashMap, VecDeque};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use libp2p::core::Endpoint;
use libp2p::core::transport::PortUse;
use libp2p::swarm::behaviour::{ConnectionClosed, ConnectionEstablished};
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, NotifyHandler, THandler,
    THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId};
use routefabric_core::NodeId;
use serde::{Deserialize, Serialize};

use crate::handler::{Handler, HandlerConfig, HandlerIn, HandlerOut};
use crate::identity::node_id_of;
use crate::protocol::RejectReason;

/// Largest `max_frame_bytes` the 4-byte length prefix can carry.
pub const FRAME_BYTES_LIMIT: usize = u32::MAX as usize;

/// Underlay configuration; loaded from the node's TOML, every field optional.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Largest frame payload in bytes, sent or received. Sending a larger one fails at once;
    /// receiving a larger one skips it without buffering and reports it. Default 1 MiB
    /// (1,048,576). At most [`FRAME_BYTES_LIMIT`].
    pub max_frame_bytes: usize,
    /// Frames accepted by `send` for one peer and not yet written to its stream; `send` fails
    /// with `QueueFull` beyond it. Default 1,024 (about 1 s of a busy link at 1 KiB frames).
    pub per_peer_queue: usize,
    /// Inbound frame streams read at once per connection; more are reset. Default 2: the
    /// remote's stream plus one replacing a stream that just failed.
    pub max_inbound_streams: usize,
    /// Connections kept per peer (simultaneous dials make two); more are refused. Default 4.
    pub max_connections_per_peer: usize,
    /// Connections kept in total; more are refused. Default 512.
    pub max_connections: usize,
    /// Close a connection after this many milliseconds without a frame in either direction
    /// (ping and identify don't count). Default 0: never. The membership layer (HyParView) reads
    /// a closed connection as a failed peer, so links live until `disconnect`, a ban, a failed
    /// ping or an I/O error closes them.
    pub idle_connection_timeout_ms: u64,
    /// Ping period in milliseconds; each round trip is an `Event::LinkSample`. Default 15,000
    /// (libp2p's).
    pub ping_interval_ms: u64,
    /// A ping unanswered for this many milliseconds closes the connection: the failure detector
    /// for peers that vanish without closing TCP. Default 20,000 (libp2p's).
    pub ping_timeout_ms: u64,
    /// Ban length of `Underlay::ban_default` in milliseconds. Default 600,000 (10 minutes).
    pub ban_ms: u64,
    /// Peers banned at once; banning one more lifts the ban that would end first (0 turns bans
    /// off). Default 1,024.
    pub max_banned: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_frame_bytes: 1024 * 1024,
            per_peer_queue: 1024,
            max_inbound_streams: 2,
            max_connections_per_peer: 4,
            max_connections: 512,
            idle_connection_timeout_ms: 0,
            ping_interval_ms: 15_000,
            ping_timeout_ms: 20_000,
            ban_ms: 600_000,
            max_banned: 1024,
        }
    }
}

impl Config {
    fn handler_config(&self) -> HandlerConfig {
        HandlerConfig {
            max_frame_bytes: self.max_frame_bytes,
            max_inbound_streams: self.max_inbound_streams,
            per_peer_queue: self.per_peer_queue,
            idle_timeout: (self.idle_connection_timeout_ms > 0)
                .then(|| Duration::from_millis(self.idle_connection_timeout_ms)),
        }
    }
}

/// What the underlay reports to the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Listening on a new address.
    Listening(Multiaddr),
    /// The first connection to a peer is up.
    PeerUp {
        /// The peer.
        peer: NodeId,
        /// The remote address of that connection.
        addr: Multiaddr,
    },
    /// The last connection to a peer is gone.
    PeerDown {
        /// The peer.
        peer: NodeId,
    },
    /// A frame arrived. Frames from one peer arrive in the order they were sent while the
    /// connection they were sent on lives.
    Frame {
        /// The sender.
        from: NodeId,
        /// The payload.
        frame: Bytes,
    },
    /// A frame from `peer` was skipped.
    FrameRejected {
        /// The sender.
        peer: NodeId,
        /// Why.
        reason: RejectReason,
    },
    /// Frames accepted by `send` were lost before being written: the stream or the connection
    /// failed. Every accepted frame is either written or counted here once.
    FramesDropped {
        /// The peer they were for.
        peer: NodeId,
        /// How many.
        count: usize,
    },
    /// A ping round trip.
    LinkSample {
        /// The peer.
        peer: NodeId,
        /// Round-trip time in microseconds (saturating at `u32::MAX`, about 71 minutes).
        rtt_us: u32,
    },
    /// A dial failed.
    DialFailed {
        /// The peer, when the dial named one.
        peer: Option<NodeId>,
        /// What went wrong, for logs.
        error: String,
    },
}

/// Errors of [`Behaviour::send`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// No connection to the peer.
    #[error("no connection to this peer; dial it or route via another peer")]
    NotConnected,
    /// The peer's queue is full.
    #[error("the peer's send queue is full; retry later or drop the frame")]
    QueueFull,
    /// The frame is larger than `max_frame_bytes`.
    #[error("frame of {len} bytes exceeds max_frame_bytes ({max}); split it or raise the limit")]
    Oversized {
        /// Frame length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// Frame counts since the underlay started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrameCounts {
    /// Frames written to a stream.
    pub sent: u64,
    /// Frames received and delivered.
    pub received: u64,
    /// Received frames skipped (see [`RejectReason`]).
    pub rejected: u64,
    /// Accepted frames lost before being written.
    pub dropped: u64,
}

#[derive(Debug)]
struct Connection {
    id: ConnectionId,
    /// Frames handed to this connection's handler and not yet reported drained.
    in_flight: usize,
}

#[derive(Debug)]
struct Peer {
    node: NodeId,
    /// In order of establishment; frames go to the first, so they stay in order.
    connections: Vec<Connection>,
}

impl Peer {
    fn in_flight(&self) -> usize {
        self.connections.iter().map(|c| c.in_flight).sum()
    }
}

/// The frame protocol's [`NetworkBehaviour`].
///
/// Its event queue is bounded by the per-peer queues (one entry per frame in flight) plus a few
/// entries per connection (up, down, drops).
#[derive(Debug)]
pub struct Behaviour {
    config: Config,
    peers: HashMap<PeerId, Peer>,
    nodes: HashMap<NodeId, PeerId>,
    connections: usize,
    events: VecDeque<ToSwarm<Event, HandlerIn>>,
    counts: FrameCounts,
    waker: Option<Waker>,
}

impl Behaviour {
    /// A behaviour with the given configuration (`max_frame_bytes` is capped at
    /// [`FRAME_BYTES_LIMIT`]).
    pub fn new(mut config: Config) -> Self {
        config.max_frame_bytes = config.max_frame_bytes.min(FRAME_BYTES_LIMIT);
        Self {
            config,
            peers: HashMap::new(),
            nodes: HashMap::new(),
            connections: 0,
            events: VecDeque::new(),
            counts: FrameCounts::default(),
            waker: None,
        }
    }

    /// Queues a frame for `to` on its first connection. Never blocks.
    pub fn send(&mut self, to: &NodeId, frame: Bytes) -> Result<(), SendError> {
        if frame.len() > self.config.max_frame_bytes {
            return Err(SendError::Oversized {
                len: frame.len(),
                max: self.config.max_frame_bytes,
            });
        }
        let peer_id = *self.nodes.get(to).ok_or(SendError::NotConnected)?;
        let peer = self
            .peers
            .get_mut(&peer_id)
            .ok_or(SendError::NotConnected)?;
        if peer.in_flight() >= self.config.per_peer_queue {
            return Err(SendError::QueueFull);
        }
        let connection = peer
            .connections
            .first_mut()
            .ok_or(SendError::NotConnected)?;
        connection.in_flight += 1;
        self.events.push_back(ToSwarm::NotifyHandler {
            peer_id,
            handler: NotifyHandler::One(connection.id),
            event: HandlerIn::Send(frame),
        });
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
        Ok(())
    }

    /// Whether a connection to `peer` is up.
    pub fn is_connected(&self, peer: &NodeId) -> bool {
        self.nodes.contains_key(peer)
    }

    /// The node id of a connected peer.
    pub fn node_of(&self, peer: &PeerId) -> Option<NodeId> {
        self.peers.get(peer).map(|p| p.node)
    }

    /// The peer id of a connected node.
    pub fn peer_of(&self, node: &NodeId) -> Option<PeerId> {
        self.nodes.get(node).copied()
    }

    /// Frames sent, received, rejected and dropped so far.
    pub fn counts(&self) -> FrameCounts {
        self.counts
    }

    /// Connected peers.
    pub fn connected(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.nodes.keys().copied()
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    fn admit(&self, peer: PeerId) -> Result<Handler, ConnectionDenied> {
        // Only ed25519 peers are routefabric nodes; the conversion error says why.
        node_id_of(&peer).map_err(ConnectionDenied::new)?;
        if self.connections >= self.config.max_connections {
            return Err(ConnectionDenied::new(LimitError::Total(
                self.config.max_connections,
            )));
        }
        let per_peer = self.peers.get(&peer).map_or(0, |p| p.connections.len());
        if per_peer >= self.config.max_connections_per_peer {
            return Err(ConnectionDenied::new(LimitError::PerPeer(
                self.config.max_connections_per_peer,
            )));
        }
        Ok(Handler::new(peer, self.config.handler_config()))
    }

    fn on_established(&mut self, e: ConnectionEstablished<'_>) {
        let Ok(node) = node_id_of(&e.peer_id) else {
            return; // refused in `admit`
        };
        self.connections += 1;
        let peer = self.peers.entry(e.peer_id).or_insert_with(|| Peer {
            node,
            connections: Vec::new(),
        });
        peer.connections.push(Connection {
            id: e.connection_id,
            in_flight: 0,
        });
        if peer.connections.len() == 1 {
            self.nodes.insert(node, e.peer_id);
            self.events.push_back(ToSwarm::GenerateEvent(Event::PeerUp {
                peer: node,
                addr: e.endpoint.get_remote_address().clone(),
            }));
        }
    }

    fn on_closed(&mut self, e: ConnectionClosed<'_>) {
        let Some(peer) = self.peers.get_mut(&e.peer_id) else {
            return;
        };
        let Some(index) = peer
            .connections
            .iter()
            .position(|c| c.id == e.connection_id)
        else {
            return;
        };
        let connection = peer.connections.remove(index);
        self.connections = self.connections.saturating_sub(1);
        let node = peer.node;
        if connection.in_flight > 0 {
            self.counts.dropped += connection.in_flight as u64;
            self.events
                .push_back(ToSwarm::GenerateEvent(Event::FramesDropped {
                    peer: node,
                    count: connection.in_flight,
                }));
        }
        if peer.connections.is_empty() {
            self.peers.remove(&e.peer_id);
            self.nodes.remove(&node);
            self.events
                .push_back(ToSwarm::GenerateEvent(Event::PeerDown { peer: node }));
        }
    }
}

/// Why a connection was refused for a limit.
#[derive(Debug, thiserror::Error)]
enum LimitError {
    #[error("connection limit of {0} reached; raise max_connections or disconnect peers")]
    Total(usize),
    #[error("per-peer connection limit of {0} reached; use the existing connection")]
    PerPeer(usize),
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = Handler;
    type ToSwarm = Event;

    fn handle_established_inbound_connection(
        &mut self,
        _connection_id: ConnectionId,
        peer: PeerId,
        _local_addr: &Multiaddr,
        _remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.admit(peer)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _connection_id: ConnectionId,
        peer: PeerId,
        _addr: &Multiaddr,
        _role_override: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.admit(peer)
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        match event {
            FromSwarm::ConnectionEstablished(e) => self.on_established(e),
            FromSwarm::ConnectionClosed(e) => self.on_closed(e),
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        peer_id: PeerId,
        connection_id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        let Some(peer) = self.peers.get_mut(&peer_id) else {
            return;
        };
        let node = peer.node;
        let event = match event {
            HandlerOut::Frame(frame) => {
                self.counts.received += 1;
                Event::Frame { from: node, frame }
            }
            HandlerOut::Rejected(reason) => {
                self.counts.rejected += 1;
                Event::FrameRejected { peer: node, reason }
            }
            HandlerOut::Drained { sent, dropped } => {
                if let Some(c) = peer.connections.iter_mut().find(|c| c.id == connection_id) {
                    c.in_flight = c.in_flight.saturating_sub(sent + dropped);
                }
                self.counts.sent += sent as u64;
                self.counts.dropped += dropped as u64;
                if dropped == 0 {
                    return;
                }
                Event::FramesDropped {
                    peer: node,
                    count: dropped,
                }
            }
        };
        self.events.push_back(ToSwarm::GenerateEvent(event));
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Event, THandlerInEvent<Self>>> {
        match self.events.pop_front() {
            Some(event) => Poll::Ready(event),
            None => {
                self.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use libp2p::multihash::Multihash;

    use super::*;

    #[test]
    fn non_ed25519_peers_are_refused() {
        let mut behaviour = Behaviour::new(Config::default());
        let hashed = PeerId::from_multihash(Multihash::wrap(0x12, &[1u8; 32]).unwrap()).unwrap();
        let addr: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
        let id = ConnectionId::new_unchecked(0);
        assert!(
            behaviour
                .handle_established_inbound_connection(id, hashed, &addr, &addr)
                .is_err()
        );
        assert!(
            behaviour
                .handle_established_outbound_connection(
                    id,
                    hashed,
                    &addr,
                    Endpoint::Dialer,
                    PortUse::New
                )
                .is_err()
        );
    }

    #[test]
    fn send_checks_size_before_connection() {
        let mut behaviour = Behaviour::new(Config {
            max_frame_bytes: 4,
            ..Config::default()
        });
        let node = NodeId([0u8; 32]);
        assert_eq!(
            behaviour.send(&node, Bytes::from_static(b"12345")),
            Err(SendError::Oversized { len: 5, max: 4 })
        );
        assert_eq!(
            behaviour.send(&node, Bytes::from_static(b"1234")),
            Err(SendError::NotConnected)
        );
    }

    #[test]
    fn config_defaults_fill_missing_fields() {
        let config: Config = parse_empty_map();
        assert_eq!(config, Config::default());
        assert_eq!(config.max_frame_bytes, 1 << 20);
    }

    /// `#[serde(default)]` in action without a format crate: an empty map deserializes.
    fn parse_empty_map() -> Config {
        use serde::de::value::{Error, MapDeserializer};
        let empty = MapDeserializer::<_, Error>::new(std::iter::empty::<(&str, u64)>());
        Config::deserialize(empty).unwrap()
    }
}
