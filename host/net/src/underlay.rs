//! The swarm a node drives: transports, the frame behaviour, ping, identify and bans.

use std::collections::HashMap;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use libp2p::allow_block_list::{self, BlockedPeers};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, SwarmBuilder, identify, ping};
use routefabric_core::NodeId;
use tokio::time::{Instant, Sleep};

use crate::behaviour::{Behaviour, Config, Event, FrameCounts, SendError};
use crate::counting::{WireBytes, WireCounters, counted_tcp};
use crate::identity::{IdError, keypair_from_secret, node_id_of, node_id_of_keypair, peer_id_of};

/// Protocol version announced by identify.
pub const IDENTIFY_PROTOCOL: &str = "/routefabric/0.1.0";

/// Errors of the underlay.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A key or id problem.
    #[error(transparent)]
    Id(#[from] IdError),
    /// The transports could not be built.
    #[error("cannot build the transports: {0}")]
    Transport(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Listening failed.
    #[error("cannot listen on {addr}: {source}; check the address and that the port is free")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A dial could not be started.
    #[error("cannot dial {addr}: {source}; check the address (tcp or quic-v1)")]
    Dial {
        /// The address.
        addr: Multiaddr,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

#[derive(NetworkBehaviour)]
#[behaviour(prelude = "libp2p::swarm::derive_prelude")]
struct Stack {
    // First, so that banned peers are refused before the others set anything up.
    blocked: allow_block_list::Behaviour<BlockedPeers>,
    frames: Behaviour,
    ping: ping::Behaviour,
    identify: identify::Behaviour,
}

/// The libp2p underlay of one node: TCP (noise, yamux; counted) and QUIC, carrying frames.
///
/// Drive it by awaiting [`Underlay::next_event`] in the node's actor loop; nothing happens on the
/// network between calls. Every method must be called inside a tokio runtime.
pub struct Underlay {
    swarm: Swarm<Stack>,
    local: NodeId,
    wire: WireCounters,
    /// Ban expiries; at most `config.max_banned` entries.
    bans: HashMap<PeerId, Instant>,
    ban_timer: Option<Pin<Box<Sleep>>>,
    /// The ban set changed: re-arm `ban_timer` on the next poll.
    bans_changed: bool,
    ban_default: Duration,
    max_banned: usize,
}

impl std::fmt::Debug for Underlay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Underlay")
            .field("local", &self.local)
            .field("connected", &self.swarm.connected_peers().count())
            .field("banned", &self.bans.len())
            .finish_non_exhaustive()
    }
}

impl Underlay {
    /// An underlay with the identity of a 32-byte ed25519 secret key. Nothing listens or dials
    /// yet.
    pub fn new(secret: [u8; 32], config: Config) -> Result<Self, NetError> {
        let keypair = keypair_from_secret(secret)?;
        let local = node_id_of_keypair(&keypair)?;
        let wire = WireCounters::default();
        let tcp_wire = wire.clone();
        let ban_default = Duration::from_millis(config.ban_ms);
        let max_banned = config.max_banned;
        let ping = ping::Config::new()
            .with_interval(Duration::from_millis(config.ping_interval_ms.max(1)))
            .with_timeout(Duration::from_millis(config.ping_timeout_ms.max(1)));
        let builder = SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_quic()
            .with_other_transport(|key| {
                counted_tcp(key, tcp_wire)
                    .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { Box::new(e) })
            })
            .map_err(|e| NetError::Transport(Box::new(e)))?;
        let Ok(builder) = builder.with_behaviour(|key| Stack {
            blocked: allow_block_list::Behaviour::default(),
            frames: Behaviour::new(config),
            ping: ping::Behaviour::new(ping),
            identify: identify::Behaviour::new(
                identify::Config::new(IDENTIFY_PROTOCOL.to_owned(), key.public())
                    .with_agent_version(
                        concat!("routefabric-net/", env!("CARGO_PKG_VERSION")).to_owned(),
                    ),
            ),
        });
        // Idleness is the frame handler's call (see `Config::idle_connection_timeout_ms`): the
        // swarm closes a connection as soon as no handler wants it.
        let swarm = builder
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::ZERO))
            .build();
        Ok(Self {
            swarm,
            local,
            wire,
            bans: HashMap::new(),
            ban_timer: None,
            bans_changed: false,
            ban_default,
            max_banned,
        })
    }

    /// This node's id.
    pub fn local_id(&self) -> NodeId {
        self.local
    }

    /// Starts listening, e.g. on `/ip4/0.0.0.0/tcp/0` or `/ip4/0.0.0.0/udp/0/quic-v1`; the bound
    /// address comes as [`Event::Listening`].
    pub fn listen(&mut self, addr: Multiaddr) -> Result<(), NetError> {
        self.swarm
            .listen_on(addr.clone())
            .map(|_| ())
            .map_err(|e| NetError::Listen {
                addr,
                source: Box::new(e),
            })
    }

    /// Addresses listened on now.
    pub fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.swarm.listeners().cloned().collect()
    }

    /// Dials an address; success is [`Event::PeerUp`], failure [`Event::DialFailed`].
    pub fn dial(&mut self, addr: Multiaddr) -> Result<(), NetError> {
        self.swarm.dial(addr.clone()).map_err(|e| NetError::Dial {
            addr,
            source: Box::new(e),
        })
    }

    /// Queues a frame for a connected peer. Never blocks: fails with
    /// [`SendError::NotConnected`], [`SendError::QueueFull`] or [`SendError::Oversized`].
    pub fn send(&mut self, to: NodeId, frame: impl Into<Bytes>) -> Result<(), SendError> {
        self.swarm.behaviour_mut().frames.send(&to, frame.into())
    }

    /// Whether a connection to `peer` is up.
    pub fn is_connected(&self, peer: &NodeId) -> bool {
        self.swarm.behaviour().frames.is_connected(peer)
    }

    /// Connected peers.
    pub fn connected(&self) -> Vec<NodeId> {
        self.swarm.behaviour().frames.connected().collect()
    }

    /// Closes every connection to `peer`; `false` when there was none. It may connect again.
    pub fn disconnect(&mut self, peer: NodeId) -> bool {
        match self.swarm.behaviour().frames.peer_of(&peer) {
            Some(peer_id) => self.swarm.disconnect_peer_id(peer_id).is_ok(),
            None => false,
        }
    }

    /// Closes every connection to `peer` and refuses it for `duration`.
    pub fn ban(&mut self, peer: NodeId, duration: Duration) -> Result<(), NetError> {
        let peer_id = match self.swarm.behaviour().frames.peer_of(&peer) {
            Some(id) => id,
            None => peer_id_of(&peer)?,
        };
        if !self.bans.contains_key(&peer_id) && self.bans.len() >= self.max_banned {
            // Make room by lifting the ban that would end first.
            if let Some(first) = self
                .bans
                .iter()
                .min_by_key(|(_, until)| **until)
                .map(|(p, _)| *p)
            {
                self.bans.remove(&first);
                self.swarm.behaviour_mut().blocked.unblock_peer(first);
            }
        }
        if self.max_banned == 0 {
            return Ok(());
        }
        self.bans.insert(peer_id, Instant::now() + duration);
        self.bans_changed = true;
        // Blocking closes the peer's connections and refuses new ones.
        self.swarm.behaviour_mut().blocked.block_peer(peer_id);
        Ok(())
    }

    /// [`Underlay::ban`] for `Config::ban_ms`.
    pub fn ban_default(&mut self, peer: NodeId) -> Result<(), NetError> {
        self.ban(peer, self.ban_default)
    }

    /// Whether `peer` is banned now.
    pub fn is_banned(&self, peer: &NodeId) -> bool {
        peer_id_of(peer).is_ok_and(|id| self.bans.contains_key(&id))
    }

    /// Bytes read from and written to TCP sockets so far (QUIC is not counted).
    pub fn wire_bytes(&self) -> WireBytes {
        self.wire.snapshot()
    }

    /// Frames sent, received, rejected and dropped so far.
    pub fn frame_counts(&self) -> FrameCounts {
        self.swarm.behaviour().frames.counts()
    }

    /// The next event. Cancel-safe: dropping the future loses nothing, so it can be one branch of
    /// a `tokio::select!`. Swarm events the node has no use for are handled inside.
    pub async fn next_event(&mut self) -> Event {
        std::future::poll_fn(|cx| self.poll_event(cx)).await
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Event> {
        self.poll_bans(cx);
        loop {
            match self.swarm.poll_next_unpin(cx) {
                Poll::Ready(Some(event)) => {
                    if let Some(event) = self.on_swarm_event(event) {
                        return Poll::Ready(event);
                    }
                }
                // A swarm never ends; if it did, there would be nothing more to report.
                Poll::Ready(None) | Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Lifts expired bans and keeps the timer on the next expiry.
    fn poll_bans(&mut self, cx: &mut Context<'_>) {
        loop {
            if self.bans_changed
                || self
                    .ban_timer
                    .as_mut()
                    .is_some_and(|t| t.as_mut().poll(cx).is_ready())
            {
                self.bans_changed = false;
                let now = Instant::now();
                let expired: Vec<PeerId> = self
                    .bans
                    .iter()
                    .filter(|(_, until)| **until <= now)
                    .map(|(p, _)| *p)
                    .collect();
                for peer in expired {
                    self.bans.remove(&peer);
                    self.swarm.behaviour_mut().blocked.unblock_peer(peer);
                }
                self.ban_timer = self
                    .bans
                    .values()
                    .min()
                    .map(|next| Box::pin(tokio::time::sleep_until(*next)));
                // Poll the new timer once so that it wakes this task.
                continue;
            }
            return;
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<StackEvent>) -> Option<Event> {
        match event {
            SwarmEvent::Behaviour(StackEvent::Frames(event)) => Some(event),
            SwarmEvent::Behaviour(StackEvent::Ping(ping::Event {
                peer,
                connection,
                result,
            })) => match result {
                Ok(rtt) => {
                    let peer = self.swarm.behaviour().frames.node_of(&peer)?;
                    let rtt_us = u32::try_from(rtt.as_micros()).unwrap_or(u32::MAX);
                    Some(Event::LinkSample { peer, rtt_us })
                }
                Err(error) => {
                    tracing::debug!(%peer, %error, "ping failed; closing the connection");
                    self.swarm.close_connection(connection);
                    None
                }
            },
            SwarmEvent::NewListenAddr { address, .. } => Some(Event::Listening(address)),
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => Some(Event::DialFailed {
                peer: peer_id.and_then(|p| node_id_of(&p).ok()),
                error: error.to_string(),
            }),
            _ => None,
        }
    }
}
