//! libp2p underlay carrying routefabric core frames between peers.
//!
//! This is the only crate of the workspace that knows libp2p. The node binary owns one
//! [`Underlay`] per node and drives it from its actor loop (`tokio::select!` over
//! [`Underlay::next_event`], local commands and timers); the sans-IO core never sees it. What goes
//! through is opaque: the node encodes core frames (CBOR) into bytes, the underlay carries them to
//! the peer named by its [`NodeId`](routefabric_core::NodeId) — an ed25519 public key, which is
//! also the libp2p identity, so peers with other key types are refused ([`node_id_of`],
//! [`peer_id_of`]).
//!
//! * Transports: TCP with noise and yamux, and QUIC. TCP sockets are counted below encryption
//!   ([`Underlay::wire_bytes`]) so that the node can report real wire overhead; QUIC is not
//!   counted.
//! * [`Behaviour`] keeps all peers and a bounded frame queue per peer, [`Handler`] one connection
//!   (one long-lived outbound frame stream, a few inbound ones), [`protocol`] the framing
//!   (`/routefabric/frame/0.1.0`, 4-byte big-endian length, then the payload).
//! * libp2p ping measures links ([`Event::LinkSample`]) and detects dead connections; identify
//!   tells peers our protocols; a block list with expiry implements [`Underlay::ban`].
//!
//! The membership overlay on top (HyParView, Leitão et al., DSN 2007) relies on a reliable,
//! connection-oriented transport whose closed connections are its failure detector: that is why a
//! connection here lives until it is closed on purpose or fails, not for as long as it is busy.
#![deny(missing_docs)]

#[cfg(feature = "gossipsub-baseline")]
pub mod baseline;
mod behaviour;
mod counting;
mod handler;
mod identity;
pub mod protocol;
mod underlay;

pub use behaviour::{Behaviour, Config, Event, FRAME_BYTES_LIMIT, FrameCounts, SendError};
pub use counting::{TransportError, WireBytes};
pub use handler::{Handler, HandlerIn, HandlerOut, WRITE_BATCH_BYTES, WRITE_BATCH_FRAMES};
pub use identity::{IdError, node_id_of, peer_id_of};
pub use libp2p::{Multiaddr, PeerId};
pub use protocol::{PROTOCOL_NAME, ProtocolError, RejectReason};
pub use underlay::{IDENTIFY_PROTOCOL, NetError, Underlay};
