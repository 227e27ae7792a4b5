//! `redundant`: for messages that must arrive — two copies along disjoint next hops.
//!
//! Candidates are ranked like `expected-cost`; the plan's first two hops are the best two distinct
//! neighbours and both get a copy at once (`copies = 2`), the rest are failovers. With a single
//! usable neighbour it sends one copy; with none it falls back to the overlay.

use policy_ranking::{Config as Ranking, ranked};
use routefabric_plugin_sdk::cbor;
use routefabric_plugin_sdk::prelude::*;
use serde::{Deserialize, Serialize};

/// Configuration (CBOR of the plugin's config section).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Config {
    /// How candidates are ranked (as in `expected-cost`).
    pub ranking: Ranking,
}

/// The policy.
#[derive(Debug)]
pub struct Redundant {
    config: Config,
}

/// Copies sent at once.
pub const COPIES: u8 = 2;

impl RoutingPolicy for Redundant {
    fn info() -> PluginInfo {
        PluginInfo::new(
            "redundant",
            env!("CARGO_PKG_VERSION"),
            "two copies along disjoint next hops, for messages that must arrive",
        )
    }

    fn init(config: &[u8], _self_id: NodeId) -> Result<Self, String> {
        let config: Config = cbor::config(config)?;
        if config.ranking.max_hops < usize::from(COPIES) {
            return Err(format!("ranking.max_hops must be at least {COPIES}"));
        }
        Ok(Redundant { config })
    }

    fn choose(&mut self, _now: Millis, _dest: &NodeId, candidates: &[Candidate]) -> Decision {
        let mut hops = ranked(&self.config.ranking, candidates);
        hops.truncate(self.config.ranking.max_hops);
        match hops.len() {
            0 => Decision::Fallback,
            n => Decision::Send(RoutePlan {
                copies: COPIES.min(n as u8),
                hops,
            }),
        }
    }
}

routefabric_plugin_sdk::export_routing_policy!(Redundant);

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(via: u64, cost: u32) -> Candidate {
        Candidate {
            hop: NextHop {
                via: NodeId::from_index(via),
                cost,
                ttl_ms: 1_000,
                confidence: 1.0,
            },
            source: "t".into(),
            link_rtt_us: Some(100),
        }
    }

    #[test]
    fn two_disjoint_next_hops_get_a_copy_each() {
        let mut p = Redundant::init(&[], NodeId::from_index(1)).unwrap();
        let dest = NodeId::from_index(9);
        let cs = [
            candidate(2, 100),
            candidate(2, 50),
            candidate(3, 300),
            candidate(4, 900),
        ];
        match p.choose(0, &dest, &cs) {
            Decision::Send(plan) => {
                assert_eq!(plan.copies, 2);
                assert_eq!(
                    plan.hops[..2],
                    [NodeId::from_index(2), NodeId::from_index(3)]
                );
            }
            other => panic!("{other:?}"),
        }
        match p.choose(0, &dest, &cs[..2]) {
            Decision::Send(plan) => assert_eq!((plan.copies, plan.hops.len()), (1, 1)),
            other => panic!("{other:?}"),
        }
        assert_eq!(p.choose(0, &dest, &[]), Decision::Fallback);
    }
}
