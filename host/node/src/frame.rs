//! What nodes send each other: one CBOR-encoded [`Frame`] per underlay frame.
//!
//! Routing headers (who sent a directed message, where it goes, the trace so far) travel in the
//! clear beside the origin's [`Signed`] envelope, which holds what the origin says (payload,
//! timestamp, destination, sequence number). Relays forward the envelope's bytes unchanged and
//! never re-sign; every receiver, relay or destination, verifies it and checks the header against
//! it before it forwards, de-duplicates or delivers, so a forged copy can neither take a real
//! one's place nor get an honest relay blamed for it. The routing header itself (attempt, hop
//! budget, trace) is not signed: a node that has seen the real envelope can replay it with a
//! worse header — as any node on the path could simply drop it; the origin's retries and the
//! flood's other paths are the answer to both.

use routefabric_core::envelope::Signed;
use routefabric_core::{NodeId, PeerRef};
use routefabric_overlay::Message as OverlayMessage;
use serde::{Deserialize, Serialize};

/// One frame between two neighbours.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Frame {
    /// The first frame on a connection: the sender's dialable address and boot identifier (a
    /// new boot identifier tells route sources that what they learned through the peer is stale).
    Hello {
        /// The sender, with the address it listens at.
        me: PeerRef,
        /// Changes whenever the sender restarts.
        boot: u64,
    },
    /// Membership and fanout messages.
    Overlay(OverlayMessage<PeerRef>),
    /// A directed message on its way to one destination.
    Directed(Box<Directed>),
    /// An end-to-end acknowledgement on its way back: an envelope signed by the destination, of
    /// kind `Direct { dest: origin }`, whose payload is an [`AckBody`].
    Ack(Signed),
    /// Bytes for the same proof source on this node.
    Plugin {
        /// The proof source's name.
        source: String,
        /// The source's bytes.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
}

/// A directed message and its routing header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Directed {
    /// The node that sent it (as in the envelope; every receiver checks).
    pub origin: NodeId,
    /// The destination (as in the envelope; every receiver checks).
    pub dest: NodeId,
    /// The origin's identifier for the message (the envelope's sequence number).
    pub id: u64,
    /// Attempt number: 0 for the first try, then one per retry.
    pub attempt: u8,
    /// True once the message is being flooded (no proof was known somewhere on the way).
    pub flood: bool,
    /// Hops a flood may still travel.
    pub ttl: u8,
    /// Every node the message crossed, the origin first.
    pub trace: Vec<NodeId>,
    /// The origin's signed envelope.
    pub envelope: Signed,
}

/// What an acknowledgement says, signed by the destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckBody {
    /// The acknowledged message's identifier.
    pub id: u64,
    /// The attempt that arrived first.
    pub attempt: u8,
    /// The path the message took: the origin first, the destination last.
    pub path: Vec<NodeId>,
    /// True when that copy was flooded on some hop.
    pub flood: bool,
}

/// Why bytes from a peer are not a frame.
#[derive(Debug, thiserror::Error)]
#[error("malformed frame: {0}")]
pub struct DecodeError(String);

impl Frame {
    /// CBOR bytes of the frame.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        // Writing into a Vec has no I/O errors and these types always serialize.
        if let Err(e) = ciborium::into_writer(self, &mut out) {
            tracing::error!("frame did not encode: {e}");
            out.clear();
        }
        out
    }

    /// Parse bytes from a peer.
    pub fn decode(bytes: &[u8]) -> Result<Frame, DecodeError> {
        ciborium::from_reader(bytes).map_err(|e| DecodeError(e.to_string()))
    }
}

/// CBOR bytes of any serializable value (acknowledgement bodies).
pub(crate) fn to_cbor<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    if ciborium::into_writer(value, &mut out).is_err() {
        out.clear();
    }
    out
}
