//! Expected-cost ranking of route candidates, shared by the first-party policies (a library, not
//! a component: a plugin crate that exports an interface must not be linked into another).
//!
//! score = cost / confidence + latency_weight × link round trip (µs).

use routefabric_plugin_sdk::prelude::*;
use serde::{Deserialize, Serialize};

/// How candidates are ranked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Weight of the link round trip in the score. Default 1.0.
    pub latency_weight: f64,
    /// Round trip assumed for a link never measured, µs. Default 1,000.
    pub default_link_rtt_us: u32,
    /// Candidates below this confidence are ignored. Default 0.05.
    pub min_confidence: f32,
    /// Distinct next hops in a plan (the first is used, the rest are failovers). Default 3.
    pub max_hops: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            latency_weight: 1.0,
            default_link_rtt_us: 1_000,
            min_confidence: 0.05,
            max_hops: 3,
        }
    }
}

/// The expected cost of sending through a candidate, in the cost unit (µs).
pub fn score(config: &Config, c: &Candidate) -> f64 {
    let confidence = f64::from(c.hop.confidence)
        .max(f64::from(config.min_confidence))
        .max(1e-6);
    let rtt = f64::from(c.link_rtt_us.unwrap_or(config.default_link_rtt_us));
    f64::from(c.hop.cost) / confidence + config.latency_weight * rtt
}

/// Candidates worth trying, best first, one per next hop.
pub fn ranked(config: &Config, candidates: &[Candidate]) -> Vec<NodeId> {
    let mut usable: Vec<(f64, &Candidate)> = candidates
        .iter()
        .filter(|c| c.hop.confidence.is_finite() && c.hop.confidence >= config.min_confidence)
        .map(|c| (score(config, c), c))
        .collect();
    usable.sort_by(|(a, ca), (b, cb)| a.total_cmp(b).then(ca.hop.via.cmp(&cb.hop.via)));
    let mut hops: Vec<NodeId> = Vec::new();
    for (_, c) in usable {
        if !hops.contains(&c.hop.via) {
            hops.push(c.hop.via);
        }
    }
    hops
}
