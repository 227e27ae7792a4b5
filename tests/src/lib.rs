//! Integration tests of routefabric live in `tests/`; this library only carries the fixtures the
//! build script compiles (test plugins as `wasm32-wasip2` components).

/// `probe` generation 1 (see `tests/plugins/probe.rs`).
pub const PROBE_V1: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/probe_v1.wasm"));
/// `probe` generation 2.
pub const PROBE_V2: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/probe_v2.wasm"));

/// Query this destination (as `NodeId::from_index`) to make the probe trap.
pub const TRAP_DEST: u64 = u64::MAX - 1;
/// Query this destination to make the probe loop forever.
pub const LOOP_DEST: u64 = u64::MAX - 2;
/// Query this destination to make the probe allocate without bound.
pub const BOMB_DEST: u64 = u64::MAX - 3;

/// Replace every occurrence of `from` by `to` (same length) in a component: a way to produce
/// components with a wrong contract version or a missing export from a good one.
pub fn patch(bytes: &[u8], from: &str, to: &str) -> Vec<u8> {
    assert_eq!(from.len(), to.len(), "patch must keep lengths");
    let (from, to) = (from.as_bytes(), to.as_bytes());
    let mut out = bytes.to_vec();
    let mut i = 0;
    let mut hits = 0;
    while i + from.len() <= out.len() {
        if &out[i..i + from.len()] == from {
            out[i..i + from.len()].copy_from_slice(to);
            hits += 1;
            i += from.len();
        } else {
            i += 1;
        }
    }
    assert!(hits > 0, "pattern not found in the component");
    out
}
