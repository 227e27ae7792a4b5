//! The sans-IO core of routefabric.
//!
//! Everything here is a plain state machine or plain data: no sockets, no clocks, no threads, no
//! global randomness. Time (`now`, in milliseconds) and randomness are parameters, so the same code
//! runs inside the real node (`routefabric` binary), inside the deterministic simulator, and inside
//! WebAssembly plugins (the plugin SDK re-exports [`plugin`]).
//!
//! This crate defines the plugin contract on the host side:
//!
//! * [`NodeId`]: a node's 32-byte ed25519 public key;
//! * [`plugin`]: the types of the WIT package `routefabric:plugin` (next hops, observations,
//!   actions, decisions) and the traits plugins implement ([`plugin::ProofSource`],
//!   [`plugin::RoutingPolicy`]) — natively, or inside a WASM component through the SDK;
//! * [`plugin::HostedProofSource`] / [`plugin::HostedRoutingPolicy`]: how the host holds a
//!   plugin, whether it runs natively ([`plugin::Native`]) or in the wasmtime runtime;
//! * [`RouteStore`]: the one store of route proofs per node, fed by every proof source;
//! * `envelope` (feature `envelope`, off for plugins): signed envelopes, verification and
//!   de-duplication of what the node delivers.
#![deny(missing_docs)]

#[cfg(feature = "envelope")]
pub mod envelope;
pub mod id;
pub mod plugin;
pub mod route_store;

pub use id::{NodeId, PeerRef};
pub use route_store::{RouteStore, RouteStoreConfig};
