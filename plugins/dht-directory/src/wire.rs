//! The messages instances exchange on the plugin channel.
//!
//! A message is one version byte ([`WIRE_VERSION`]) followed by the CBOR of a [`Message`]. Ids
//! travel as four 64-bit words (about 37 bytes of CBOR instead of about 56 for 32 small
//! integers); entries are CBOR arrays, not maps. Everything that arrives is hostile until parsed:
//! [`decode`] refuses oversized input before decoding, an unknown version, malformed CBOR, and
//! lists longer than [`MAX_ENTRIES`].

use routefabric_plugin_sdk::prelude::*;
use serde::{Deserialize, Serialize};

use crate::table::Distance;

/// The first byte of every message. A newer protocol takes a new number; an instance ignores (and
/// counts) versions it does not speak.
pub(crate) const WIRE_VERSION: u8 = 1;

/// Most entries a reply may carry, whatever `k` the sender runs with; a reply with more is
/// refused whole.
pub(crate) const MAX_ENTRIES: usize = 64;

/// An id on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WireId(pub(crate) [u64; 4]);

impl From<NodeId> for WireId {
    fn from(id: NodeId) -> Self {
        WireId(id.to_words())
    }
}

impl From<WireId> for NodeId {
    fn from(id: WireId) -> Self {
        NodeId::from_words(id.0)
    }
}

/// "Which nodes closest to `target` do you know?", sent by `origin`'s instance and possibly
/// forwarded hop by hop toward nodes closer to the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Find {
    /// The node that started the lookup.
    pub(crate) origin: WireId,
    /// The origin's id for the lookup; `(origin, lookup)` names it network-wide.
    pub(crate) lookup: u64,
    /// The id looked up.
    pub(crate) target: WireId,
    /// How many more times the request may be forwarded.
    pub(crate) budget: u8,
    /// Hops from the origin to the sender of this copy (0 when the origin sent it).
    pub(crate) travelled: u8,
    /// The XOR distance to the target of the contact the sender aimed at through the receiver…
    pub(crate) aim_distance: Distance,
    /// …and the hops from the receiver to that contact, as the sender knew them. The receiver
    /// forwards only if it knows a contact at least as good: see the crate docs.
    pub(crate) aim_hops: u8,
}

/// One contact in a reply, as its sender knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Entry(
    /// The contact.
    pub(crate) WireId,
    /// Hops from the sender of the reply to the contact (0: the sender itself).
    pub(crate) u8,
    /// How old the sender's knowledge of the route is, in ms.
    pub(crate) u32,
);

/// The answer to a [`Find`], sent back along the path the request took.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Found {
    /// The lookup's origin.
    pub(crate) origin: WireId,
    /// The lookup's id.
    pub(crate) lookup: u64,
    /// The id looked up.
    pub(crate) target: WireId,
    /// The contacts closest to the target that the replier knows (the target itself, when known),
    /// closest first, with hops counted from the sender of this copy.
    pub(crate) entries: Vec<Entry>,
}

/// "Do not reach these through me": sent to every neighbour when a node loses its last way to
/// contacts (route poisoning, a triggered update), and to the neighbour its best way to a contact
/// now goes through (poisoned reverse), so that two nodes never send a contact's traffic to each
/// other (Bellman-Ford's two-node loop; RIP, RFC 2453 §3.4.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Poison {
    /// The contacts, at most [`MAX_ENTRIES`].
    pub(crate) ids: Vec<WireId>,
}

/// Every message of protocol version 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Message {
    /// A lookup request.
    Find(Find),
    /// A lookup reply.
    Found(Found),
    /// Contacts not to be reached through the sender.
    Poison(Poison),
}

/// Why an incoming message was ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Longer than the configured maximum.
    Oversized,
    /// Empty, or a version this instance does not speak.
    Version,
    /// Not a valid CBOR message of this version.
    Malformed,
}

/// Encode `message` for the wire.
pub(crate) fn encode(message: &Message) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.push(WIRE_VERSION);
    // Writing into a Vec cannot fail, and every field has a CBOR form.
    if ciborium::into_writer(message, &mut out).is_err() {
        out.truncate(1);
    }
    out
}

/// Parse an incoming message of at most `max_len` bytes.
pub(crate) fn decode(data: &[u8], max_len: usize) -> Result<Message, Refusal> {
    if data.len() > max_len {
        return Err(Refusal::Oversized);
    }
    let Some((&WIRE_VERSION, body)) = data.split_first() else {
        return Err(Refusal::Version);
    };
    let message: Message = ciborium::from_reader(body).map_err(|_| Refusal::Malformed)?;
    match &message {
        Message::Found(found) if found.entries.len() > MAX_ENTRIES => Err(Refusal::Malformed),
        Message::Poison(poison) if poison.ids.len() > MAX_ENTRIES => Err(Refusal::Malformed),
        _ => Ok(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_stay_small() {
        let id = |n: u64| WireId::from(NodeId::from_words([n, !n, n << 7, n ^ 0xfeed]));
        let find = Message::Find(Find {
            origin: id(1),
            lookup: 42,
            target: id(2),
            budget: 16,
            travelled: 0,
            aim_distance: Distance([1, 2, 3, 4]),
            aim_hops: 3,
        });
        assert_eq!(decode(&encode(&find), 1_024), Ok(find));
        let found = Message::Found(Found {
            origin: id(1),
            lookup: 42,
            target: id(2),
            entries: (0..20).map(|n| Entry(id(n + 10), 3, 1_000)).collect(),
        });
        let bytes = encode(&found);
        assert!(
            bytes.len() < 1_100,
            "a reply of k = 20 entries is {} bytes",
            bytes.len()
        );
        assert_eq!(decode(&bytes, 8_192), Ok(found));
    }

    #[test]
    fn hostile_bytes_are_refused_not_trusted() {
        assert_eq!(decode(&[], 100), Err(Refusal::Version));
        assert_eq!(decode(&[2, 0xa0], 100), Err(Refusal::Version));
        assert_eq!(decode(&[WIRE_VERSION], 100), Err(Refusal::Malformed));
        assert_eq!(
            decode(&[WIRE_VERSION, 0xff, 0x00], 100),
            Err(Refusal::Malformed)
        );
        assert_eq!(decode(&[WIRE_VERSION; 200], 100), Err(Refusal::Oversized));
        // An array header claiming 2^32 entries in a few bytes.
        let mut lying = encode(&Message::Found(Found {
            origin: WireId([0; 4]),
            lookup: 1,
            target: WireId([0; 4]),
            entries: Vec::new(),
        }));
        lying.pop(); // the empty array
        lying.extend([0x9a, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(decode(&lying, 8_192), Err(Refusal::Malformed));
        // Too many entries, even if well formed.
        let many = encode(&Message::Found(Found {
            origin: WireId([0; 4]),
            lookup: 1,
            target: WireId([0; 4]),
            entries: vec![Entry(WireId([1; 4]), 1, 0); MAX_ENTRIES + 1],
        }));
        assert_eq!(decode(&many, 1 << 20), Err(Refusal::Malformed));
    }
}
