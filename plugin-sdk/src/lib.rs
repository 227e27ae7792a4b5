//! Write routefabric plugins in Rust.
//!
//! A plugin is a WebAssembly component built for `wasm32-wasip2` against the WIT package
//! `routefabric:plugin@0.1.0` (the repository's `wit/` folder). This crate hides the component
//! model: implement [`ProofSource`] (a source of route proofs) or [`RoutingPolicy`] for a struct,
//! export it with one macro line, and build with `cargo build --release --target wasm32-wasip2`.
//! The logic stays plain Rust: the same struct runs natively in tests (and in the node, wrapped
//! in `routefabric_core::plugin::Native`), so it is testable without WASM.
//!
//! # A complete proof source
//!
//! This plugin offers a direct route to every neighbour whose link is up, with the measured round
//! trip as its cost, and keeps what it learned across hot swaps. (This example is compiled and run
//! by `cargo test`.)
//!
//! ```
//! use std::collections::BTreeMap;
//! use routefabric_plugin_sdk::prelude::*;
//!
//! #[derive(Default)]
//! pub struct Neighbours {
//!     rtt_us: BTreeMap<NodeId, u32>,
//! }
//!
//! impl ProofSource for Neighbours {
//!     fn info() -> PluginInfo {
//!         PluginInfo::new("neighbours", "0.1.0", "one-hop routes to every live neighbour")
//!     }
//!
//!     fn init(_config: &[u8], _self_id: NodeId) -> Result<Self, String> {
//!         Ok(Self::default())
//!     }
//!
//!     fn observe(&mut self, _now: Millis, observations: &[Observation]) -> Vec<Action> {
//!         let mut actions = Vec::new();
//!         for observation in observations {
//!             if let Observation::Link(link) = observation {
//!                 if link.up {
//!                     let rtt = link.rtt_us.unwrap_or(1_000);
//!                     self.rtt_us.insert(link.peer, rtt);
//!                     let hop = NextHop { via: link.peer, cost: rtt, ttl_ms: 30_000, confidence: 1.0 };
//!                     actions.push(Action::Offer { dest: link.peer, hops: vec![hop] });
//!                 } else if self.rtt_us.remove(&link.peer).is_some() {
//!                     actions.push(Action::Withdraw(link.peer));
//!                 }
//!             }
//!         }
//!         actions
//!     }
//!
//!     fn query(&mut self, _now: Millis, dest: &NodeId) -> Vec<NextHop> {
//!         self.rtt_us
//!             .get(dest)
//!             .map(|&rtt| NextHop { via: *dest, cost: rtt, ttl_ms: 30_000, confidence: 1.0 })
//!             .into_iter()
//!             .collect()
//!     }
//!
//!     fn snapshot(&self) -> Vec<u8> {
//!         routefabric_plugin_sdk::cbor::encode(&self.rtt_us)
//!     }
//!
//!     fn restore(&mut self, state: &[u8]) -> Result<(), String> {
//!         self.rtt_us = routefabric_plugin_sdk::cbor::decode(state)?;
//!         Ok(())
//!     }
//! }
//!
//! // The one line that makes it a component (it expands to nothing outside wasm32).
//! routefabric_plugin_sdk::export_proof_source!(Neighbours);
//!
//! # fn main() {
//! // The same logic, natively:
//! let me = NodeId::from_index(1);
//! let peer = NodeId::from_index(2);
//! let mut plugin = Neighbours::init(&[], me).unwrap();
//! let link = LinkSample { peer, up: true, rtt_us: Some(800), session: 1 };
//! let actions = plugin.observe(0, &[Observation::Link(link)]);
//! assert_eq!(actions.len(), 1);
//! assert_eq!(plugin.query(0, &peer)[0].cost, 800);
//! # }
//! ```
//!
//! In the plugin's `Cargo.toml`, ask for a C-compatible dynamic library (the component), and an
//! rlib if native tests or benchmarks use the logic:
//!
//! ```toml
//! [lib]
//! crate-type = ["cdylib", "rlib"]
//! ```
//!
//! Then `cargo build --release --target wasm32-wasip2` writes `target/wasm32-wasip2/release/<name>.wasm`,
//! which `routefabric plugin check` inspects and a node loads from its plugin folder.
#![deny(missing_docs)]

#[cfg(target_arch = "wasm32")]
extern crate self as routefabric_plugin_sdk;

pub use routefabric_core::NodeId;
pub use routefabric_core::plugin::{
    AckTrace, Action, Candidate, Decision, LinkSample, Millis, NextHop, Observation, PeerMessage,
    PluginInfo, ProofSource, RoutePlan, RouteToken, RoutingPolicy, decayed_confidence,
};

/// Everything a plugin usually needs, in one `use`.
pub mod prelude {
    pub use crate::{
        AckTrace, Action, Candidate, Decision, LinkSample, Millis, NextHop, NodeId, Observation,
        PeerMessage, PluginInfo, ProofSource, RoutePlan, RouteToken, RoutingPolicy,
        decayed_confidence,
    };
}

/// CBOR helpers for configuration and snapshots, the formats first-party plugins use.
pub mod cbor {
    use serde::Serialize;
    use serde::de::DeserializeOwned;

    /// Encode a value as CBOR.
    pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
        let mut out = Vec::new();
        // Writing into a Vec cannot fail; a serializer error would mean a type that serde cannot
        // represent in CBOR at all, which is a bug in the plugin, reported as an empty snapshot.
        if ciborium::into_writer(value, &mut out).is_err() {
            out.clear();
        }
        out
    }

    /// Decode CBOR, with an error message fit for the node's log.
    pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
        ciborium::from_reader(bytes).map_err(|e| format!("invalid CBOR: {e}"))
    }

    /// Decode a plugin configuration: empty bytes (no config section) give `T::default()`.
    pub fn config<T: DeserializeOwned + Default>(bytes: &[u8]) -> Result<T, String> {
        if bytes.is_empty() {
            return Ok(T::default());
        }
        decode(bytes).map_err(|e| format!("bad plugin configuration: {e}"))
    }
}

/// Severity of a line written with [`log`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Very detailed.
    Trace,
    /// Detailed.
    Debug,
    /// Normal operation.
    Info,
    /// Something looks wrong.
    Warn,
    /// Something failed.
    Error,
}

/// Write a line to the node's log, tagged with this plugin's name. Outside WASM (native tests) the
/// line is dropped.
pub fn log(level: LogLevel, message: &str) {
    #[cfg(target_arch = "wasm32")]
    {
        use __private::proof_source::routefabric::plugin::host;
        let level = match level {
            LogLevel::Trace => host::LogLevel::Trace,
            LogLevel::Debug => host::LogLevel::Debug,
            LogLevel::Info => host::LogLevel::Info,
            LogLevel::Warn => host::LogLevel::Warn,
            LogLevel::Error => host::LogLevel::Error,
        };
        host::log(level, message);
    }
    #[cfg(not(target_arch = "wasm32"))]
    let _ = (level, message);
}

/// Export a [`ProofSource`] implementation as this component's `routefabric:plugin/proof`
/// interface. Use once per plugin crate; expands to nothing when not compiling for wasm32.
#[macro_export]
macro_rules! export_proof_source {
    ($plugin:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            use $crate::__private::proof_source::exports::routefabric::plugin::proof as __iface;
            use $crate::__private::proof_source::routefabric::plugin::types as __wit;
            static __STATE: $crate::__private::Slot<$plugin> = $crate::__private::Slot::new();
            struct __RoutefabricProofSource;
            impl __iface::Guest for __RoutefabricProofSource {
                fn describe() -> __wit::PluginInfo {
                    $crate::__private::glue::describe_proof::<$plugin>()
                }
                fn init(
                    config: ::std::vec::Vec<u8>,
                    self_id: __wit::NodeId,
                ) -> ::std::result::Result<(), ::std::string::String> {
                    $crate::__private::glue::init_proof(&__STATE, &config, self_id)
                }
                fn observe(
                    now_ms: u64,
                    observations: ::std::vec::Vec<__wit::Observation>,
                ) -> ::std::vec::Vec<__wit::Action> {
                    $crate::__private::glue::observe(&__STATE, now_ms, observations)
                }
                fn query(now_ms: u64, dest: __wit::NodeId) -> ::std::vec::Vec<__wit::NextHop> {
                    $crate::__private::glue::query(&__STATE, now_ms, dest)
                }
                fn snapshot() -> ::std::vec::Vec<u8> {
                    $crate::__private::glue::snapshot(&__STATE)
                }
                fn restore(
                    state: ::std::vec::Vec<u8>,
                ) -> ::std::result::Result<(), ::std::string::String> {
                    $crate::__private::glue::restore(&__STATE, &state)
                }
            }
            $crate::__private::proof_source::export_world!(
                __RoutefabricProofSource with_types_in $crate::__private::proof_source
            );
        };
    };
}

/// Export a [`RoutingPolicy`] implementation as this component's `routefabric:plugin/policy`
/// interface. Use once per plugin crate; expands to nothing when not compiling for wasm32.
#[macro_export]
macro_rules! export_routing_policy {
    ($plugin:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            use $crate::__private::proof_source::routefabric::plugin::types as __wit;
            use $crate::__private::routing_policy::exports::routefabric::plugin::policy as __iface;
            static __STATE: $crate::__private::Slot<$plugin> = $crate::__private::Slot::new();
            struct __RoutefabricRoutingPolicy;
            impl __iface::Guest for __RoutefabricRoutingPolicy {
                fn describe() -> __wit::PluginInfo {
                    $crate::__private::glue::describe_policy::<$plugin>()
                }
                fn init(
                    config: ::std::vec::Vec<u8>,
                    self_id: __wit::NodeId,
                ) -> ::std::result::Result<(), ::std::string::String> {
                    $crate::__private::glue::init_policy(&__STATE, &config, self_id)
                }
                fn choose(
                    now_ms: u64,
                    dest: __wit::NodeId,
                    candidates: ::std::vec::Vec<__wit::Candidate>,
                ) -> __wit::Decision {
                    $crate::__private::glue::choose(&__STATE, now_ms, dest, candidates)
                }
            }
            $crate::__private::routing_policy::export_world!(
                __RoutefabricRoutingPolicy with_types_in $crate::__private::routing_policy
            );
        };
    };
}

#[doc(hidden)]
pub mod __private;
