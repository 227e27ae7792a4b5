//! Signed envelopes: what the origin of a message says about it, signed once by the origin.
//!
//! Every message routefabric delivers — a publication on a fanout tree or a directed send — travels
//! as a [`Signed`] envelope: the origin's CBOR encoding of an [`Envelope`] (`origin`, `timestamp`,
//! `seq`, [`Kind`], payload) and the origin's ed25519 signature over exactly those bytes. Relays
//! and tree roots forward the bytes as they received them and never re-sign, so a receiver always
//! checks the origin's own signature, whichever plane carried the message (Peerbit's fanout root
//! re-signs published data and loses the publisher's identity at the transport level; this is the
//! fix). [`Signed::open`] checks size, signature and timestamp window before anything is
//! delivered; [`Dedup`] drops copies that arrive twice (floods, repairs, retries).
//!
//! Sans-IO like the rest of the core: the caller passes `now` and owns the key.

use std::collections::{HashSet, VecDeque};

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::NodeId;

/// What an envelope is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// A publication on a channel (delivered to every subscriber of the channel's tree).
    Publish {
        /// The channel identifier.
        channel: u64,
    },
    /// A directed message for one destination, acknowledged end to end.
    Direct {
        /// The destination.
        dest: NodeId,
    },
}

/// The origin's statement about a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The author: its ed25519 public key.
    pub origin: NodeId,
    /// The author's clock when it made the message, in milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// The author's own sequence number (unique per author together with the timestamp).
    pub seq: u64,
    /// Publication or directed message.
    pub kind: Kind,
    /// Application bytes.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

/// An envelope as it travels: the origin's encoded bytes and its signature over them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signed {
    /// CBOR of the [`Envelope`], exactly as the origin encoded it.
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    /// ed25519 signature of `body` by `origin` (64 bytes).
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

/// Why an envelope was refused. Counted per reason by [`Rejects`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Reject {
    /// The signature does not verify against the origin's key (or is not 64 bytes).
    #[error("bad signature: the envelope was not signed by its origin")]
    BadSignature,
    /// The body is not a valid CBOR envelope.
    #[error("malformed envelope: the body is not valid CBOR")]
    Malformed,
    /// The timestamp is too far in the past or the future.
    #[error("timestamp outside the accepted window: check the origin's clock")]
    Timestamp,
    /// The body is larger than the limit.
    #[error("oversized envelope: the body exceeds the size limit")]
    Oversized,
}

impl Reject {
    /// Every reason, for reports.
    pub const ALL: [Reject; 4] = [
        Reject::BadSignature,
        Reject::Malformed,
        Reject::Timestamp,
        Reject::Oversized,
    ];

    /// Short name for tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Reject::BadSignature => "bad_signature",
            Reject::Malformed => "malformed",
            Reject::Timestamp => "timestamp",
            Reject::Oversized => "oversized",
        }
    }
}

/// What [`Signed::open`] accepts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Largest body accepted, bytes. Default 1 MiB (the node's maximum frame size).
    pub max_body_bytes: usize,
    /// How far in the past a timestamp may lie, ms. Default 10 minutes: long enough for pull
    /// repair of a tree to hand a late joiner what it missed, short enough to bound replays.
    pub max_age_ms: u64,
    /// How far in the future a timestamp may lie (clock skew), ms. Default 30 s.
    pub max_skew_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 1 << 20,
            max_age_ms: 600_000,
            max_skew_ms: 30_000,
        }
    }
}

/// A node's signing key.
#[derive(Clone)]
pub struct Keypair(SigningKey);

impl std::fmt::Debug for Keypair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        write!(f, "Keypair({})", self.id())
    }
}

impl Keypair {
    /// The key with this 32-byte secret (as stored in a key file).
    pub fn from_secret(secret: [u8; 32]) -> Self {
        Keypair(SigningKey::from_bytes(&secret))
    }

    /// The 32-byte secret, for the key file.
    pub fn secret(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The public key: this node's id.
    pub fn id(&self) -> NodeId {
        NodeId(self.0.verifying_key().to_bytes())
    }

    /// Encode and sign an envelope (whose `origin` should be [`Keypair::id`]).
    pub fn seal(&self, envelope: &Envelope) -> Signed {
        let mut body = Vec::with_capacity(envelope.payload.len() + 96);
        // Writing CBOR into a Vec cannot fail for these types (no maps with non-string keys,
        // no I/O); an empty body would only fail verification at the receiver.
        if ciborium::into_writer(envelope, &mut body).is_err() {
            body.clear();
        }
        let signature = self.0.sign(&body).to_bytes().to_vec();
        Signed { body, signature }
    }
}

impl Signed {
    /// Check size, encoding, signature and timestamp (against `now_ms`), and return the envelope.
    pub fn open(&self, limits: &Limits, now_ms: u64) -> Result<Envelope, Reject> {
        let envelope = self.verify(limits)?;
        limits.check_time(&envelope, now_ms)?;
        Ok(envelope)
    }

    /// Check size, encoding and signature, not the timestamp: what a receiver needs to know who
    /// is to blame for an envelope [`Limits::check_time`] then refuses.
    pub fn verify(&self, limits: &Limits) -> Result<Envelope, Reject> {
        if self.body.len() > limits.max_body_bytes {
            return Err(Reject::Oversized);
        }
        let signature: [u8; 64] = self
            .signature
            .as_slice()
            .try_into()
            .map_err(|_| Reject::BadSignature)?;
        let envelope: Envelope =
            ciborium::from_reader(self.body.as_slice()).map_err(|_| Reject::Malformed)?;
        let key = VerifyingKey::from_bytes(&envelope.origin.0).map_err(|_| Reject::BadSignature)?;
        key.verify_strict(&self.body, &Signature::from_bytes(&signature))
            .map_err(|_| Reject::BadSignature)?;
        Ok(envelope)
    }
}

impl Limits {
    /// Whether `envelope`'s timestamp lies in the window around `now_ms`.
    pub fn check_time(&self, envelope: &Envelope, now_ms: u64) -> Result<(), Reject> {
        let oldest = now_ms.saturating_sub(self.max_age_ms);
        let newest = now_ms.saturating_add(self.max_skew_ms);
        if envelope.timestamp_ms < oldest || envelope.timestamp_ms > newest {
            return Err(Reject::Timestamp);
        }
        Ok(())
    }
}

/// Rejected envelopes, per reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Rejects {
    /// [`Reject::BadSignature`].
    pub bad_signature: u64,
    /// [`Reject::Malformed`].
    pub malformed: u64,
    /// [`Reject::Timestamp`].
    pub timestamp: u64,
    /// [`Reject::Oversized`].
    pub oversized: u64,
}

impl Rejects {
    /// Count one.
    pub fn count(&mut self, reason: Reject) {
        match reason {
            Reject::BadSignature => self.bad_signature += 1,
            Reject::Malformed => self.malformed += 1,
            Reject::Timestamp => self.timestamp += 1,
            Reject::Oversized => self.oversized += 1,
        }
    }

    /// The count for one reason.
    pub fn get(&self, reason: Reject) -> u64 {
        match reason {
            Reject::BadSignature => self.bad_signature,
            Reject::Malformed => self.malformed,
            Reject::Timestamp => self.timestamp,
            Reject::Oversized => self.oversized,
        }
    }

    /// All reasons together.
    pub fn total(&self) -> u64 {
        Reject::ALL.iter().map(|r| self.get(*r)).sum()
    }
}

/// Identity of one envelope for de-duplication: origin, timestamp and sequence number (the
/// timestamp keeps an origin that restarted with its counter at zero from being mistaken for
/// its earlier self).
pub type MessageKey = (NodeId, u64, u64);

/// A bounded set of recently seen messages; the oldest is forgotten first.
#[derive(Debug, Clone)]
pub struct Dedup {
    cap: usize,
    seen: HashSet<MessageKey>,
    order: VecDeque<MessageKey>,
}

impl Dedup {
    /// Remember at most `cap` messages (at least 1).
    pub fn new(cap: usize) -> Self {
        let cap = cap.max(1);
        Dedup {
            cap,
            seen: HashSet::with_capacity(cap.min(1 << 16)),
            order: VecDeque::with_capacity(cap.min(1 << 16)),
        }
    }

    /// The key of an envelope.
    pub fn key(envelope: &Envelope) -> MessageKey {
        (envelope.origin, envelope.timestamp_ms, envelope.seq)
    }

    /// True the first time `key` is seen (and remembers it), false for a duplicate.
    pub fn first_time(&mut self, key: MessageKey) -> bool {
        if !self.seen.insert(key) {
            return false;
        }
        self.order.push_back(key);
        if self.order.len() > self.cap
            && let Some(old) = self.order.pop_front()
        {
            self.seen.remove(&old);
        }
        true
    }

    /// Whether `key` was seen (and is still remembered); remembers nothing.
    pub fn contains(&self, key: &MessageKey) -> bool {
        self.seen.contains(key)
    }

    /// Messages remembered.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn key(n: u8) -> Keypair {
        Keypair::from_secret([n; 32])
    }

    fn envelope(k: &Keypair, seq: u64, payload: &[u8]) -> Envelope {
        Envelope {
            origin: k.id(),
            timestamp_ms: 1_000_000,
            seq,
            kind: Kind::Publish { channel: 7 },
            payload: payload.to_vec(),
        }
    }

    #[test]
    fn sealed_envelopes_open_unchanged() {
        let k = key(1);
        let e = envelope(&k, 1, b"hello");
        let signed = k.seal(&e);
        assert_eq!(signed.open(&Limits::default(), 1_000_500), Ok(e));
        // Body and signature survive a CBOR round trip as bytes, not as arrays of integers.
        let mut wire = Vec::new();
        ciborium::into_writer(&signed, &mut wire).unwrap();
        // Two byte strings and two field names; an integer per byte would double the size.
        assert!(
            wire.len() < signed.body.len() + 64 + 32,
            "{} bytes for a body of {}",
            wire.len(),
            signed.body.len()
        );
        let back: Signed = ciborium::from_reader(wire.as_slice()).unwrap();
        assert_eq!(back, signed);
    }

    #[test]
    fn forged_tampered_stale_and_oversized_envelopes_are_refused() {
        let (k, mallory) = (key(1), key(2));
        let limits = Limits::default();
        let now = 1_000_000;
        // Mallory claims k's identity but signs with her own key.
        let forged = mallory.seal(&envelope(&k, 1, b"pay me"));
        assert_eq!(forged.open(&limits, now), Err(Reject::BadSignature));
        // A relay changes one payload byte.
        let mut tampered = k.seal(&envelope(&k, 2, b"hello"));
        if let Some(last) = tampered.body.last_mut() {
            *last ^= 1;
        }
        assert_eq!(tampered.open(&limits, now), Err(Reject::BadSignature));
        let mut short = k.seal(&envelope(&k, 3, b"x"));
        short.signature.truncate(10);
        assert_eq!(short.open(&limits, now), Err(Reject::BadSignature));
        let garbage = Signed {
            body: vec![0xff; 40],
            signature: vec![0; 64],
        };
        assert_eq!(garbage.open(&limits, now), Err(Reject::Malformed));
        let old = k.seal(&envelope(&k, 4, b"x"));
        assert_eq!(
            old.open(&limits, now + limits.max_age_ms + 1),
            Err(Reject::Timestamp)
        );
        assert_eq!(
            old.open(&limits, now - limits.max_skew_ms - 1),
            Err(Reject::Timestamp)
        );
        let big = k.seal(&envelope(&k, 5, &vec![0; 2_000]));
        let small = Limits {
            max_body_bytes: 1_000,
            ..limits
        };
        assert_eq!(big.open(&small, now), Err(Reject::Oversized));
        let mut rejects = Rejects::default();
        for r in Reject::ALL {
            rejects.count(r);
        }
        assert_eq!(rejects.total(), 4);
    }

    #[test]
    fn dedup_is_bounded_and_forgets_the_oldest() {
        let mut d = Dedup::new(3);
        let id = key(1).id();
        for seq in 0..5 {
            assert!(d.first_time((id, 0, seq)));
            assert!(!d.first_time((id, 0, seq)));
        }
        assert_eq!(d.len(), 3);
        assert!(d.first_time((id, 0, 0)), "the oldest was forgotten");
        assert!(!d.first_time((id, 0, 4)));
        assert!(
            d.first_time((id, 1, 4)),
            "a restarted origin is not a duplicate"
        );
    }
}
