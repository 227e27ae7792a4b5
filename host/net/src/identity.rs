//! Node ids and libp2p peer ids.
//!
//! A routefabric [`NodeId`] is an ed25519 public key; a libp2p [`PeerId`] of an ed25519 key is the
//! protobuf encoding of that key inside an identity multihash. The conversion is exact both ways
//! for ed25519 keys. Peers with any other kind of key (RSA, secp256k1, ECDSA, hashed ids) have no
//! `NodeId` and are refused by the underlay.

use libp2p::PeerId;
use libp2p::identity::{Keypair, PublicKey, ed25519};
use routefabric_core::NodeId;

/// Multihash code of the identity hash: the digest is the encoded key itself.
const IDENTITY_MULTIHASH: u64 = 0x00;

/// Errors converting between node ids, peer ids and keys.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The peer id is a hash of its key, not the key: only ed25519 peers are routefabric nodes.
    #[error("peer {0} does not inline its public key; only ed25519 peers can join routefabric")]
    HashedPeerId(PeerId),
    /// The inlined key could not be decoded.
    #[error("peer {0} carries a malformed public key; refuse the peer")]
    MalformedKey(PeerId),
    /// The key is of another kind than ed25519.
    #[error("peer {0} has a non-ed25519 key; only ed25519 peers can join routefabric")]
    NotEd25519(PeerId),
    /// The 32 bytes of a node id are not a valid ed25519 public key.
    #[error("node id {0} is not a valid ed25519 public key; check where it came from")]
    InvalidNodeId(NodeId),
    /// The 32-byte secret is not a valid ed25519 secret key.
    #[error("the secret key is not a valid 32-byte ed25519 secret; regenerate the key file")]
    InvalidSecret,
}

/// The node id of a peer: the ed25519 key inlined in its peer id.
pub fn node_id_of(peer: &PeerId) -> Result<NodeId, IdError> {
    let multihash = peer.as_ref();
    if multihash.code() != IDENTITY_MULTIHASH {
        return Err(IdError::HashedPeerId(*peer));
    }
    let key = PublicKey::try_decode_protobuf(multihash.digest())
        .map_err(|_| IdError::MalformedKey(*peer))?;
    let key = key
        .try_into_ed25519()
        .map_err(|_| IdError::NotEd25519(*peer))?;
    Ok(NodeId(key.to_bytes()))
}

/// The peer id of a node: fails only when the id's bytes are not an ed25519 point.
pub fn peer_id_of(node: &NodeId) -> Result<PeerId, IdError> {
    let key =
        ed25519::PublicKey::try_from_bytes(&node.0).map_err(|_| IdError::InvalidNodeId(*node))?;
    Ok(PublicKey::from(key).to_peer_id())
}

/// The keypair of a 32-byte ed25519 secret key.
pub(crate) fn keypair_from_secret(mut secret: [u8; 32]) -> Result<Keypair, IdError> {
    // `ed25519_from_bytes` zeroes the buffer it is given; `secret` is our copy.
    Keypair::ed25519_from_bytes(&mut secret).map_err(|_| IdError::InvalidSecret)
}

/// The node id of a local keypair.
pub(crate) fn node_id_of_keypair(keypair: &Keypair) -> Result<NodeId, IdError> {
    node_id_of(&keypair.public().to_peer_id())
}

#[cfg(test)]
mod tests {
    use libp2p::multihash::Multihash;

    use super::*;

    #[test]
    fn ed25519_round_trip() {
        let keypair = keypair_from_secret([7u8; 32]).unwrap();
        let peer = keypair.public().to_peer_id();
        let node = node_id_of(&peer).unwrap();
        let ed = keypair.public().try_into_ed25519().unwrap();
        assert_eq!(node.0, ed.to_bytes());
        assert_eq!(peer_id_of(&node).unwrap(), peer);
        assert_eq!(node_id_of_keypair(&keypair).unwrap(), node);
    }

    #[test]
    fn non_ed25519_peers_have_no_node_id() {
        let hashed = PeerId::from_multihash(Multihash::wrap(0x12, &[1u8; 32]).unwrap()).unwrap();
        assert_eq!(node_id_of(&hashed), Err(IdError::HashedPeerId(hashed)));

        let garbage =
            PeerId::from_multihash(Multihash::wrap(0x00, &[0xffu8; 32]).unwrap()).unwrap();
        assert_eq!(node_id_of(&garbage), Err(IdError::MalformedKey(garbage)));
    }

    #[test]
    fn invalid_node_id_is_an_error() {
        // About half of all 32-byte strings are not the encoding of a curve point.
        let invalid = (0u8..=255)
            .map(|b| {
                let mut bytes = [0u8; 32];
                bytes[0] = b;
                bytes[31] = 0x7f;
                NodeId(bytes)
            })
            .find(|node| peer_id_of(node).is_err())
            .unwrap();
        assert_eq!(peer_id_of(&invalid), Err(IdError::InvalidNodeId(invalid)));
    }
}
