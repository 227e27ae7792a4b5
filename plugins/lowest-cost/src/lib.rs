//! `lowest-cost`: the default routing policy. Sends along the cheapest candidate and keeps the
//! next cheapest distinct neighbours as failovers; falls back to the overlay when no candidate is
//! trustworthy enough.

use routefabric_plugin_sdk::cbor;
use routefabric_plugin_sdk::prelude::*;
use serde::{Deserialize, Serialize};

/// Configuration (CBOR of the plugin's config section).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Candidates below this confidence are ignored. Default 0.0 (every candidate counts).
    pub min_confidence: f32,
    /// How many distinct next hops a plan lists (the first is used, the rest are failovers).
    /// Default 3.
    pub max_hops: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            min_confidence: 0.0,
            max_hops: 3,
        }
    }
}

/// The policy.
#[derive(Debug)]
pub struct LowestCost {
    config: Config,
}

impl RoutingPolicy for LowestCost {
    fn info() -> PluginInfo {
        PluginInfo::new(
            "lowest-cost",
            env!("CARGO_PKG_VERSION"),
            "cheapest candidate first, next cheapest distinct neighbours as failovers",
        )
    }

    fn init(config: &[u8], _self_id: NodeId) -> Result<Self, String> {
        let config: Config = cbor::config(config)?;
        if !(0.0..=1.0).contains(&config.min_confidence) {
            return Err(format!(
                "min_confidence must be in [0, 1], got {}",
                config.min_confidence
            ));
        }
        if config.max_hops == 0 {
            return Err("max_hops must be at least 1".to_owned());
        }
        Ok(LowestCost { config })
    }

    fn choose(&mut self, _now: Millis, _dest: &NodeId, candidates: &[Candidate]) -> Decision {
        let mut usable: Vec<&NextHop> = candidates
            .iter()
            .map(|c| &c.hop)
            .filter(|h| h.confidence >= self.config.min_confidence)
            .collect();
        // Cheapest first; among equals the more confident; then by id so the choice is
        // deterministic whatever order the store listed them in.
        usable.sort_by(|a, b| {
            a.cost
                .cmp(&b.cost)
                .then(b.confidence.total_cmp(&a.confidence))
                .then(a.via.cmp(&b.via))
        });
        let mut hops: Vec<NodeId> = Vec::with_capacity(self.config.max_hops);
        for hop in usable {
            if !hops.contains(&hop.via) {
                hops.push(hop.via);
                if hops.len() == self.config.max_hops {
                    break;
                }
            }
        }
        if hops.is_empty() {
            Decision::Fallback
        } else {
            Decision::Send(RoutePlan { hops, copies: 1 })
        }
    }
}

routefabric_plugin_sdk::export_routing_policy!(LowestCost);

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(via: u64, cost: u32, confidence: f32) -> Candidate {
        Candidate {
            hop: NextHop {
                via: NodeId::from_index(via),
                cost,
                ttl_ms: 1_000,
                confidence,
            },
            source: "test".to_owned(),
            link_rtt_us: None,
        }
    }

    fn plan(d: Decision) -> Vec<u64> {
        match d {
            Decision::Send(plan) => plan.hops.iter().map(|id| id.to_words()[3]).collect(),
            other => panic!("expected a plan, got {other:?}"),
        }
    }

    #[test]
    fn cheapest_first_distinct_hops_capped() {
        let mut p = LowestCost::init(&[], NodeId::from_index(1)).unwrap();
        let dest = NodeId::from_index(9);
        let cs = [
            candidate(4, 900, 1.0),
            candidate(2, 100, 1.0),
            candidate(2, 50, 0.2),
            candidate(3, 100, 0.9),
            candidate(5, 2_000, 1.0),
        ];
        assert_eq!(plan(p.choose(0, &dest, &cs)), vec![2, 3, 4]);
    }

    #[test]
    fn no_trustworthy_candidate_falls_back() {
        let config = cbor::encode(&Config {
            min_confidence: 0.5,
            max_hops: 2,
        });
        let mut p = LowestCost::init(&config, NodeId::from_index(1)).unwrap();
        let dest = NodeId::from_index(9);
        assert_eq!(p.choose(0, &dest, &[]), Decision::Fallback);
        assert_eq!(
            p.choose(0, &dest, &[candidate(2, 1, 0.4)]),
            Decision::Fallback
        );
        assert_eq!(plan(p.choose(0, &dest, &[candidate(2, 1, 0.6)])), vec![2]);
    }

    #[test]
    fn bad_config_is_refused() {
        let bad = cbor::encode(&Config {
            min_confidence: 2.0,
            max_hops: 1,
        });
        assert!(LowestCost::init(&bad, NodeId::from_index(1)).is_err());
    }
}
