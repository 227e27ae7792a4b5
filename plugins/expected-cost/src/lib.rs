//! `expected-cost`: ranks candidates by what a message is expected to cost.
//!
//! score = cost / confidence + latency_weight × link round trip (µs, of the link to the next hop,
//! as the host measured it; `default_link_rtt_us` when unmeasured). A cheap route that is rarely
//! right loses to a slightly dearer one that is; a next hop behind a slow link pays for it.

use routefabric_plugin_sdk::cbor;
use routefabric_plugin_sdk::prelude::*;

pub use policy_ranking::{Config, ranked, score};

/// The policy.
#[derive(Debug)]
pub struct ExpectedCost {
    config: Config,
}

impl RoutingPolicy for ExpectedCost {
    fn info() -> PluginInfo {
        PluginInfo::new(
            "expected-cost",
            env!("CARGO_PKG_VERSION"),
            "cost divided by confidence plus the next hop's link latency",
        )
    }

    fn init(config: &[u8], _self_id: NodeId) -> Result<Self, String> {
        let config: Config = cbor::config(config)?;
        if !config.latency_weight.is_finite() || config.latency_weight < 0.0 {
            return Err("latency_weight must be a finite number ≥ 0".to_owned());
        }
        if !(0.0..=1.0).contains(&config.min_confidence) || config.max_hops == 0 {
            return Err("min_confidence must be in [0, 1] and max_hops ≥ 1".to_owned());
        }
        Ok(ExpectedCost { config })
    }

    fn choose(&mut self, _now: Millis, _dest: &NodeId, candidates: &[Candidate]) -> Decision {
        let mut hops = ranked(&self.config, candidates);
        hops.truncate(self.config.max_hops);
        if hops.is_empty() {
            Decision::Fallback
        } else {
            Decision::Send(RoutePlan { hops, copies: 1 })
        }
    }
}

routefabric_plugin_sdk::export_routing_policy!(ExpectedCost);

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(via: u64, cost: u32, confidence: f32, rtt: Option<u32>) -> Candidate {
        Candidate {
            hop: NextHop {
                via: NodeId::from_index(via),
                cost,
                ttl_ms: 1_000,
                confidence,
            },
            source: "t".into(),
            link_rtt_us: rtt,
        }
    }

    fn plan(d: Decision) -> Vec<u64> {
        match d {
            Decision::Send(p) => p.hops.iter().map(|h| h.to_words()[3]).collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn confidence_and_link_latency_change_the_ranking() {
        let mut p = ExpectedCost::init(&[], NodeId::from_index(1)).unwrap();
        let dest = NodeId::from_index(9);
        // 2: cheap but unsure (1000/0.2 = 5000); 3: dearer but sure (2000); 4: sure, slow link.
        let cs = [
            candidate(2, 1_000, 0.2, Some(100)),
            candidate(3, 2_000, 1.0, Some(100)),
            candidate(4, 1_500, 1.0, Some(5_000)),
        ];
        assert_eq!(plan(p.choose(0, &dest, &cs)), vec![3, 2, 4]);
    }

    #[test]
    fn untrustworthy_candidates_fall_back() {
        let mut p = ExpectedCost::init(&[], NodeId::from_index(1)).unwrap();
        let cs = [candidate(2, 1, 0.01, None), candidate(3, 1, f32::NAN, None)];
        assert_eq!(p.choose(0, &NodeId::from_index(9), &cs), Decision::Fallback);
    }
}
