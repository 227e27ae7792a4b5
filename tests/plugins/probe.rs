// Shared source of the `probe-v1` / `probe-v2` test fixtures, included by each with its own
// `GENERATION`. A proof source that answers predictably and misbehaves on demand:
//
// * `query(dest)` returns one hop via `dest` whose cost is `GENERATION * 1_000_000 + observed`,
//   where `observed` counts every observation ever fed to it (carried across swaps by
//   snapshot/restore) — so a test sees both which version answered and whether state survived;
// * `query` toward one of the `*_DEST` ids below traps, loops forever or allocates without bound;
// * `init` with the config bytes `fail` refuses to start.

use routefabric_plugin_sdk::prelude::*;

/// Query this destination to make the plugin panic (a trap).
pub const TRAP_DEST: u64 = u64::MAX - 1;
/// Query this destination to make the plugin loop forever.
pub const LOOP_DEST: u64 = u64::MAX - 2;
/// Query this destination to make the plugin allocate until it hits its memory cap.
pub const BOMB_DEST: u64 = u64::MAX - 3;

/// The fixture.
#[derive(Debug, Default)]
pub struct Probe {
    observed: u64,
}

impl ProofSource for Probe {
    fn info() -> PluginInfo {
        PluginInfo::new("probe", env!("CARGO_PKG_VERSION"), "test fixture")
    }

    fn init(config: &[u8], _self_id: NodeId) -> Result<Self, String> {
        if config == b"fail" {
            return Err("refused by its configuration".to_owned());
        }
        Ok(Probe::default())
    }

    fn observe(&mut self, _now: Millis, observations: &[Observation]) -> Vec<Action> {
        self.observed += observations.len() as u64;
        Vec::new()
    }

    fn query(&mut self, _now: Millis, dest: &NodeId) -> Vec<NextHop> {
        let [w0, w1, w2, w3] = dest.to_words();
        if (w0, w1, w2) == (0, 0, 0) {
            match w3 {
                TRAP_DEST => panic!("probe asked to trap"),
                LOOP_DEST => {
                    let mut n = 0u64;
                    loop {
                        n = std::hint::black_box(n.wrapping_add(1));
                    }
                }
                BOMB_DEST => {
                    let mut hoard: Vec<Vec<u8>> = Vec::new();
                    loop {
                        hoard.push(vec![1u8; 1 << 20]);
                        std::hint::black_box(&hoard);
                    }
                }
                _ => {}
            }
        }
        vec![NextHop {
            via: *dest,
            cost: GENERATION * 1_000_000 + (self.observed % 1_000_000) as u32,
            ttl_ms: 1_000,
            confidence: 1.0,
        }]
    }

    fn snapshot(&self) -> Vec<u8> {
        self.observed.to_le_bytes().to_vec()
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        let bytes: [u8; 8] = state
            .try_into()
            .map_err(|_| format!("a probe snapshot is 8 bytes, got {}", state.len()))?;
        self.observed = u64::from_le_bytes(bytes);
        Ok(())
    }
}

routefabric_plugin_sdk::export_proof_source!(Probe);
