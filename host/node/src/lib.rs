//! The routefabric node: where the sans-IO core, the plugin runtime and the network meet.
//!
//! * [`frame`]: what nodes send each other (CBOR frames over the underlay);
//! * [`engine`]: one node's logic as a sans-IO state machine — overlay, route store, plugins and
//!   directed delivery joined;
//! * [`actor`]: one tokio task per node drives an engine over the libp2p underlay.
#![deny(missing_docs)]

pub mod actor;
pub mod engine;
pub mod frame;
pub mod plugins;
