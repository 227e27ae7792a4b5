//! Node identities.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A node's identity: its 32-byte ed25519 public key.
///
/// `Debug` and `Display` print the first 5 bytes in hex (enough to tell nodes apart in logs);
/// [`NodeId::to_hex`] gives all 32.
///
/// Ids compare as four big-endian 64-bit words — the same order as their bytes, but without the
/// byte-by-byte `memcmp` that a derived comparison becomes inside WebAssembly, where plugins keep
/// ids in ordered maps.
///
/// Aligned to 8 bytes like the WIT `node-id` record (four `u64`s), so that types holding ids have
/// the same layout as their generated WIT twins and converting a `Vec` of them reuses its buffer.
///
/// Serialized as a 32-byte string (34 bytes of CBOR rather than 32 small integers).
#[derive(Clone, Copy, Default)]
#[repr(align(8))]
pub struct NodeId(pub [u8; 32]);

impl Serialize for NodeId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for NodeId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Bytes32;
        impl<'de> serde::de::Visitor<'de> for Bytes32 {
            type Value = NodeId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("32 bytes of a node id")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<NodeId, E> {
                let bytes: [u8; 32] = v
                    .try_into()
                    .map_err(|_| E::invalid_length(v.len(), &self))?;
                Ok(NodeId(bytes))
            }
            // Formats without a byte-string type (JSON) write a sequence.
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<NodeId, A::Error> {
                let mut bytes = [0u8; 32];
                for (i, b) in bytes.iter_mut().enumerate() {
                    *b = seq
                        .next_element()?
                        .ok_or_else(|| serde::de::Error::invalid_length(i, &self))?;
                }
                if seq.next_element::<u8>()?.is_some() {
                    return Err(serde::de::Error::invalid_length(33, &self));
                }
                Ok(NodeId(bytes))
            }
        }
        deserializer.deserialize_bytes(Bytes32)
    }
}

impl PartialEq for NodeId {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        // Native-endian words: equality does not care about byte order, and skips the swaps.
        let word = |id: &NodeId, i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&id.0[i * 8..i * 8 + 8]);
            u64::from_ne_bytes(b)
        };
        (0..4).all(|i| word(self, i) == word(other, i))
    }
}

impl Eq for NodeId {}

impl std::hash::Hash for NodeId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // Equal ids have equal bytes, so hashing the bytes agrees with `eq`.
        self.0.hash(state);
    }
}

impl PartialOrd for NodeId {
    #[inline]
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for NodeId {
    #[inline]
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        for i in 0..4 {
            let word = |id: &NodeId| {
                let mut b = [0u8; 8];
                b.copy_from_slice(&id.0[i * 8..i * 8 + 8]);
                u64::from_be_bytes(b)
            };
            match word(self).cmp(&word(other)) {
                std::cmp::Ordering::Equal => {}
                unequal => return unequal,
            }
        }
        std::cmp::Ordering::Equal
    }
}

impl NodeId {
    /// Length of an id in bytes.
    pub const LEN: usize = 32;

    /// The id as four big-endian 64-bit words, the shape it has on the WIT boundary.
    pub fn to_words(&self) -> [u64; 4] {
        let mut words = [0u64; 4];
        for (word, chunk) in words.iter_mut().zip(self.0.chunks_exact(8)) {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(chunk);
            *word = u64::from_be_bytes(bytes);
        }
        words
    }

    /// The inverse of [`NodeId::to_words`].
    pub fn from_words(words: [u64; 4]) -> Self {
        let mut id = [0u8; 32];
        for (chunk, word) in id.chunks_exact_mut(8).zip(words) {
            chunk.copy_from_slice(&word.to_be_bytes());
        }
        NodeId(id)
    }

    /// A deterministic id for tests and the simulator: `n` in the last 8 bytes, the rest zero.
    pub fn from_index(n: u64) -> Self {
        Self::from_words([0, 0, 0, n])
    }

    /// All 32 bytes as lower-case hex.
    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(hex_digit(b >> 4));
            s.push(hex_digit(b & 0xf));
        }
        s
    }
}

fn hex_digit(n: u8) -> char {
    char::from_digit(u32::from(n), 16).unwrap_or('?')
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({self})")
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0[..5] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// Why a string is not a [`NodeId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseNodeIdError {
    /// The string does not have 64 characters.
    #[error("a node id is 64 hex characters, got {0}")]
    Length(usize),
    /// A character is not a hex digit.
    #[error("a node id is hex, found {0:?}")]
    Digit(char),
}

impl FromStr for NodeId {
    type Err = ParseNodeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.len() != 64 {
            return Err(ParseNodeIdError::Length(s.chars().count()));
        }
        let mut id = [0u8; 32];
        let mut chars = s.chars();
        for byte in &mut id {
            let mut value = 0u8;
            for _ in 0..2 {
                let c = chars.next().ok_or(ParseNodeIdError::Length(s.len()))?;
                let digit = c.to_digit(16).ok_or(ParseNodeIdError::Digit(c))?;
                value = (value << 4) | digit as u8;
            }
            *byte = value;
        }
        Ok(NodeId(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip_and_keep_byte_order() {
        let mut bytes = [0u8; 32];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = i as u8;
        }
        let id = NodeId(bytes);
        let words = id.to_words();
        assert_eq!(words[0], 0x0001_0203_0405_0607);
        assert_eq!(words[3], 0x1819_1a1b_1c1d_1e1f);
        assert_eq!(NodeId::from_words(words), id);
    }

    #[test]
    fn order_and_equality_match_the_bytes() {
        let ids: Vec<NodeId> = [0u64, 1, 255, 256, u64::MAX]
            .iter()
            .flat_map(|&w| {
                [
                    NodeId::from_words([w, 0, 0, 0]),
                    NodeId::from_words([0, 0, 0, w]),
                    NodeId::from_words([1, w, 0, 7]),
                ]
            })
            .collect();
        for a in &ids {
            for b in &ids {
                assert_eq!(a.cmp(b), a.0.cmp(&b.0), "{a:?} vs {b:?}");
                assert_eq!(a == b, a.0 == b.0);
            }
        }
    }

    #[test]
    fn hex_round_trip_and_errors() {
        let id = NodeId::from_index(0xdead_beef);
        let hex = id.to_hex();
        assert_eq!(hex.len(), 64);
        assert_eq!(hex.parse::<NodeId>(), Ok(id));
        assert_eq!("abc".parse::<NodeId>(), Err(ParseNodeIdError::Length(3)));
        let bad = format!("{}g", &hex[..63]);
        assert_eq!(bad.parse::<NodeId>(), Err(ParseNodeIdError::Digit('g')));
        assert_eq!(id.to_string(), "0000000000");
    }
}

/// A node and the address it can be dialled at.
///
/// Overlay messages name other nodes — a forwarded join, the peers of a shuffle, a tree's root, a
/// joiner redirected down a tree — and the receiver may have to connect to them. Carrying the
/// address with the id (as Kademlia contacts do) means no separate address directory. Equality,
/// order and hashing look at the id only: the address is how to reach the node, not who it is.
#[derive(Clone, Copy, Serialize, Deserialize)]
pub struct PeerRef {
    /// Who.
    pub id: NodeId,
    /// Where it listens (TCP; QUIC on the same port when it listens there too).
    pub addr: std::net::SocketAddr,
}

impl PartialEq for PeerRef {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for PeerRef {}

impl std::hash::Hash for PeerRef {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.id.hash(state);
    }
}

impl PartialOrd for PeerRef {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for PeerRef {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.id.cmp(&other.id)
    }
}

impl fmt::Debug for PeerRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.id, self.addr)
    }
}
