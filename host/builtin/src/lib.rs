//! The first-party plugins, built for `wasm32-wasip2` by this crate's build script and embedded as
//! bytes, so the node runs with them out of the box. A plugin folder given to the node overrides
//! them by plugin name.
#![deny(missing_docs)]

/// A plugin component carried inside the binary.
#[derive(Debug, Clone, Copy)]
pub struct BuiltinPlugin {
    /// The file name it would have in a plugin folder.
    pub file_name: &'static str,
    /// The component's bytes.
    pub bytes: &'static [u8],
}

/// `static-routes`: a proof source from a configured table plus one-hop neighbour routes.
pub const STATIC_ROUTES: BuiltinPlugin = BuiltinPlugin {
    file_name: "static-routes.wasm",
    bytes: include_bytes!(concat!(env!("OUT_DIR"), "/static_routes.wasm")),
};

/// `lowest-cost`: the default routing policy.
pub const LOWEST_COST: BuiltinPlugin = BuiltinPlugin {
    file_name: "lowest-cost.wasm",
    bytes: include_bytes!(concat!(env!("OUT_DIR"), "/lowest_cost.wasm")),
};

/// `ack-trace`: a proof source learning next hops from the paths end-to-end ACKs travelled.
pub const ACK_TRACE: BuiltinPlugin = BuiltinPlugin {
    file_name: "ack-trace.wasm",
    bytes: include_bytes!(concat!(env!("OUT_DIR"), "/ack_trace.wasm")),
};

/// `fanout-token`: a proof source offering next hops inside fanout trees, from route tokens.
pub const FANOUT_TOKEN: BuiltinPlugin = BuiltinPlugin {
    file_name: "fanout-token.wasm",
    bytes: include_bytes!(concat!(env!("OUT_DIR"), "/fanout_token.wasm")),
};

/// `dht-directory`: a proof source looking destinations up in a Kademlia-style directory kept
/// with the same plugin on the neighbours.
pub const DHT_DIRECTORY: BuiltinPlugin = BuiltinPlugin {
    file_name: "dht-directory.wasm",
    bytes: include_bytes!(concat!(env!("OUT_DIR"), "/dht_directory.wasm")),
};

/// `expected-cost`: a policy ranking by cost / confidence plus link latency.
pub const EXPECTED_COST: BuiltinPlugin = BuiltinPlugin {
    file_name: "expected-cost.wasm",
    bytes: include_bytes!(concat!(env!("OUT_DIR"), "/expected_cost.wasm")),
};

/// `redundant`: a policy sending two copies along disjoint next hops.
pub const REDUNDANT: BuiltinPlugin = BuiltinPlugin {
    file_name: "redundant.wasm",
    bytes: include_bytes!(concat!(env!("OUT_DIR"), "/redundant.wasm")),
};

/// Every built-in plugin: proof sources first, then policies.
pub const ALL: &[BuiltinPlugin] = &[
    STATIC_ROUTES,
    ACK_TRACE,
    FANOUT_TOKEN,
    DHT_DIRECTORY,
    LOWEST_COST,
    EXPECTED_COST,
    REDUNDANT,
];
