//! `ack-trace`: learns routes from the traces that end-to-end acknowledgements carry back.
//!
//! A directed message from `O` crosses `O → h1 → … → D`; `D` acknowledges and the ACK comes back
//! along the same path carrying it. Every node on the path then knows, for every node on the path:
//! the neighbour toward it (the next node along the path in its direction) and the distance in
//! hops. The sender also measured the round trip.
//!
//! Baseline: Peerbit's route table (distance by position on the path, expiry of a peer's session,
//! LRU bounds). Added here: a cost in microseconds (hops × 1,000, or the measured round trip for
//! the sender), a confidence that decays with age (half-life configurable) and a TTL, and
//! invalidation of everything learned through a neighbour when that neighbour restarts (a new
//! session in its link samples) or its link goes down.
//!
//! Routes are re-offered on a refresh timer with their decayed confidence and remaining TTL, so the
//! node's route store never holds a confidence fresher than the truth.

use std::collections::BTreeMap;

use routefabric_plugin_sdk::cbor;
use routefabric_plugin_sdk::prelude::*;
use serde::{Deserialize, Serialize};

/// Cost of one hop when nothing was measured, in the first-party unit (µs).
pub const HOP_COST_US: u32 = 1_000;
const REFRESH_TIMER: u64 = 1;

/// Configuration (CBOR of the plugin's config section).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// How long a learned route stays valid, ms. Default 600,000 (Peerbit's route cache TTL).
    pub route_ttl_ms: u32,
    /// Age at which a route's confidence has halved, ms. Default 120,000.
    pub half_life_ms: u32,
    /// Destinations remembered; the least recently learned or used go first. Default 2,048
    /// (Peerbit: 2,048 at a root, 512 elsewhere).
    pub max_destinations: usize,
    /// Next hops remembered per destination. Default 4.
    pub max_hops_per_destination: usize,
    /// How often routes are re-offered with their decayed confidence, ms. Default 30,000.
    pub refresh_ms: u32,
    /// Longest path accepted in a trace; longer traces are ignored. Default 32 (Peerbit's cap on
    /// route tokens).
    pub max_path_len: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            route_ttl_ms: 600_000,
            half_life_ms: 120_000,
            max_destinations: 2_048,
            max_hops_per_destination: 4,
            refresh_ms: 30_000,
            max_path_len: 32,
        }
    }
}

/// One learned way toward a destination.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Learned {
    via: NodeId,
    hops: u16,
    cost_us: u32,
    learned_at: Millis,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Destination {
    ways: Vec<Learned>,
    last_used: Millis,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    routes: BTreeMap<NodeId, Destination>,
    /// Last known session of each neighbour.
    sessions: BTreeMap<NodeId, u64>,
}

/// The plugin.
#[derive(Debug)]
pub struct AckTraceSource {
    config: Config,
    self_id: NodeId,
    state: State,
    timer_set: bool,
}

impl AckTraceSource {
    fn confidence(&self, learned: &Learned, now: Millis) -> f32 {
        // Longer paths are a little less certain to hold.
        let base = (1.0 - 0.05 * f32::from(learned.hops.saturating_sub(1))).max(0.5);
        let age = now.saturating_sub(learned.learned_at);
        decayed_confidence(base, age, self.config.half_life_ms)
    }

    fn alive(&self, learned: &Learned, now: Millis) -> bool {
        now < learned.learned_at + u64::from(self.config.route_ttl_ms)
    }

    fn hops_for(&self, now: Millis, dest: &NodeId) -> Vec<NextHop> {
        let Some(d) = self.state.routes.get(dest) else {
            return Vec::new();
        };
        let mut hops: Vec<NextHop> = d
            .ways
            .iter()
            .filter(|w| self.alive(w, now))
            .map(|w| NextHop {
                via: w.via,
                cost: w.cost_us,
                ttl_ms: (w.learned_at + u64::from(self.config.route_ttl_ms)).saturating_sub(now)
                    as u32,
                confidence: self.confidence(w, now),
            })
            .collect();
        hops.sort_by_key(|h| h.cost);
        hops
    }

    fn learn(&mut self, now: Millis, dest: NodeId, way: Learned) {
        if dest == self.self_id || way.via == self.self_id {
            return;
        }
        let max_ways = self.config.max_hops_per_destination.max(1);
        let d = self.state.routes.entry(dest).or_default();
        d.last_used = now;
        match d.ways.iter_mut().find(|w| w.via == way.via) {
            Some(existing) => *existing = way,
            None => d.ways.push(way),
        }
        d.ways
            .sort_by_key(|w| (w.cost_us, std::cmp::Reverse(w.learned_at)));
        d.ways.truncate(max_ways);
        let max = self.config.max_destinations.max(1);
        if self.state.routes.len() > max {
            self.evict_least_recent(dest, max);
        }
    }

    /// Bring the table back to at most `max` destinations, dropping the least recently learned
    /// or used — an eighth of the table at once, so the linear pass is paid once per `max / 8`
    /// insertions rather than on each (amortized O(log n) per learned destination).
    fn evict_least_recent(&mut self, keep: NodeId, max: usize) {
        let target = max - max / 8;
        let excess = self.state.routes.len().saturating_sub(target);
        if excess == 0 {
            return;
        }
        let mut by_age: Vec<(Millis, NodeId)> = self
            .state
            .routes
            .iter()
            .filter(|(id, _)| **id != keep)
            .map(|(id, d)| (d.last_used, *id))
            .collect();
        let excess = excess.min(by_age.len());
        if excess < by_age.len() {
            by_age.select_nth_unstable(excess);
        }
        for (_, id) in by_age.into_iter().take(excess) {
            self.state.routes.remove(&id);
        }
    }

    /// Forget every way through `peer`; returns the destinations that changed.
    fn forget_via(&mut self, peer: &NodeId) -> Vec<NodeId> {
        let mut changed = Vec::new();
        self.state.routes.retain(|dest, d| {
            let before = d.ways.len();
            d.ways.retain(|w| w.via != *peer);
            if d.ways.len() != before {
                changed.push(*dest);
            }
            !d.ways.is_empty()
        });
        changed
    }

    fn on_trace(&mut self, now: Millis, trace: &AckTrace, touched: &mut Vec<NodeId>) {
        let path = &trace.path;
        if path.len() < 2 || path.len() > self.config.max_path_len {
            return;
        }
        let Some(me) = path.iter().position(|n| *n == self.self_id) else {
            return;
        };
        // A path that visits a node twice is a loop: learn nothing from it.
        for (i, a) in path.iter().enumerate() {
            if path[i + 1..].contains(a) {
                return;
            }
        }
        for (j, dest) in path.iter().enumerate() {
            if j == me {
                continue;
            }
            let (via, hops) = if j > me {
                (path[me + 1], (j - me) as u16)
            } else {
                (path[me - 1], (me - j) as u16)
            };
            let mut cost_us = u32::from(hops) * HOP_COST_US;
            // The sender measured the round trip to the acker: the best estimate there is.
            if me == 0
                && j == path.len() - 1
                && let Some(rtt_ms) = trace.rtt_ms
            {
                cost_us = rtt_ms.saturating_mul(1_000).max(1);
            }
            self.learn(
                now,
                *dest,
                Learned {
                    via,
                    hops,
                    cost_us,
                    learned_at: now,
                },
            );
            // Deduplicated once per batch (sort + dedup in `observe`), not per push.
            touched.push(*dest);
        }
    }
}

impl ProofSource for AckTraceSource {
    fn info() -> PluginInfo {
        PluginInfo::new(
            "ack-trace",
            env!("CARGO_PKG_VERSION"),
            "next hops learned from the paths end-to-end ACKs travelled",
        )
    }

    fn init(config: &[u8], self_id: NodeId) -> Result<Self, String> {
        let config: Config = cbor::config(config)?;
        if config.route_ttl_ms == 0 || config.refresh_ms == 0 || config.half_life_ms == 0 {
            return Err("route_ttl_ms, refresh_ms and half_life_ms must be > 0".to_owned());
        }
        Ok(AckTraceSource {
            config,
            self_id,
            state: State::default(),
            timer_set: false,
        })
    }

    fn observe(&mut self, now: Millis, observations: &[Observation]) -> Vec<Action> {
        let mut actions = Vec::new();
        let mut touched: Vec<NodeId> = Vec::new();
        if !self.timer_set {
            self.timer_set = true;
            actions.push(Action::SetTimer {
                token: REFRESH_TIMER,
                after_ms: self.config.refresh_ms,
            });
        }
        for observation in observations {
            match observation {
                Observation::Ack(trace) => self.on_trace(now, trace, &mut touched),
                Observation::Link(link) => {
                    let restarted = self
                        .state
                        .sessions
                        .insert(link.peer, link.session)
                        .is_some_and(|old| old != link.session);
                    if !link.up || restarted {
                        touched.extend(self.forget_via(&link.peer));
                        // What was learned *about* a restarted peer is stale too.
                        if self.state.routes.remove(&link.peer).is_some() {
                            touched.push(link.peer);
                        }
                    }
                    if !link.up {
                        self.state.sessions.remove(&link.peer);
                    }
                }
                Observation::Timer(REFRESH_TIMER) => {
                    let ttl = u64::from(self.config.route_ttl_ms);
                    let mut expired = Vec::new();
                    for (dest, d) in self.state.routes.iter_mut() {
                        d.ways.retain(|w| now < w.learned_at + ttl);
                        if d.ways.is_empty() {
                            expired.push(*dest);
                        }
                    }
                    for dest in &expired {
                        self.state.routes.remove(dest);
                    }
                    // Re-offer everything with its current confidence.
                    touched.extend(self.state.routes.keys().copied());
                    actions.push(Action::SetTimer {
                        token: REFRESH_TIMER,
                        after_ms: self.config.refresh_ms,
                    });
                }
                _ => {}
            }
        }
        touched.sort();
        touched.dedup();
        for dest in touched {
            actions.push(Action::offer_or_withdraw(dest, self.hops_for(now, &dest)));
        }
        actions
    }

    fn query(&mut self, now: Millis, dest: &NodeId) -> Vec<NextHop> {
        if let Some(d) = self.state.routes.get_mut(dest) {
            d.last_used = now;
        }
        self.hops_for(now, dest)
    }

    fn snapshot(&self) -> Vec<u8> {
        cbor::encode(&self.state)
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        self.state = cbor::decode(state)?;
        Ok(())
    }
}

routefabric_plugin_sdk::export_proof_source!(AckTraceSource);

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> NodeId {
        NodeId::from_index(n)
    }

    fn node(me: u64) -> AckTraceSource {
        AckTraceSource::init(&[], id(me)).unwrap()
    }

    fn ack(path: &[u64], rtt_ms: Option<u32>) -> Observation {
        Observation::Ack(AckTrace {
            path: path.iter().map(|&n| id(n)).collect(),
            rtt_ms,
        })
    }

    fn link(peer: u64, up: bool, session: u64) -> Observation {
        Observation::Link(LinkSample {
            peer: id(peer),
            up,
            rtt_us: None,
            session,
        })
    }

    fn best(p: &mut AckTraceSource, now: Millis, dest: u64) -> Option<(u64, u32)> {
        p.query(now, &id(dest))
            .first()
            .map(|h| (h.via.to_words()[3], h.cost))
    }

    #[test]
    fn a_relay_learns_both_directions_with_hop_distances() {
        // 1 → 2 → 3 → 4 → 5, observed at 3.
        let mut p = node(3);
        let actions = p.observe(0, &[ack(&[1, 2, 3, 4, 5], None)]);
        assert_eq!(best(&mut p, 0, 5), Some((4, 2 * HOP_COST_US)));
        assert_eq!(best(&mut p, 0, 4), Some((4, HOP_COST_US)));
        assert_eq!(best(&mut p, 0, 1), Some((2, 2 * HOP_COST_US)));
        assert_eq!(best(&mut p, 0, 2), Some((2, HOP_COST_US)));
        let offers = actions
            .iter()
            .filter(|a| matches!(a, Action::Offer { .. }))
            .count();
        assert_eq!(offers, 4, "one offer per node on the path but itself");
    }

    #[test]
    fn the_sender_costs_the_acker_by_the_measured_round_trip() {
        let mut p = node(1);
        p.observe(0, &[ack(&[1, 2, 3], Some(42))]);
        assert_eq!(best(&mut p, 0, 3), Some((2, 42_000)));
        assert_eq!(best(&mut p, 0, 2), Some((2, HOP_COST_US)));
    }

    #[test]
    fn a_shorter_path_wins_and_both_are_kept() {
        let mut p = node(1);
        p.observe(0, &[ack(&[1, 2, 3, 9], None)]);
        p.observe(1, &[ack(&[1, 4, 9], None)]);
        let hops = p.query(1, &id(9));
        assert_eq!(hops.len(), 2);
        assert_eq!((hops[0].via, hops[0].cost), (id(4), 2 * HOP_COST_US));
        assert_eq!((hops[1].via, hops[1].cost), (id(2), 3 * HOP_COST_US));
    }

    #[test]
    fn confidence_decays_and_routes_expire() {
        let mut p = node(1);
        p.observe(0, &[ack(&[1, 2], None)]);
        let fresh = p.query(0, &id(2))[0].confidence;
        let later = p.query(120_000, &id(2))[0].confidence;
        assert!((fresh - 1.0).abs() < 1e-6);
        assert!((later - 0.5).abs() < 1e-3, "half-life: {later}");
        assert_eq!(p.query(599_999, &id(2))[0].ttl_ms, 1);
        assert!(p.query(600_000, &id(2)).is_empty());
        let refresh = p.observe(600_000, &[Observation::Timer(REFRESH_TIMER)]);
        assert!(refresh.iter().any(|a| matches!(a, Action::SetTimer { .. })));
        assert!(
            p.state.routes.is_empty(),
            "expired routes are dropped on refresh"
        );
    }

    #[test]
    fn a_restart_or_a_link_down_invalidates_what_was_learned_through_the_peer() {
        let mut p = node(1);
        p.observe(0, &[link(2, true, 10), link(4, true, 20)]);
        p.observe(1, &[ack(&[1, 2, 3, 9], None), ack(&[1, 4, 9], None)]);
        // Same session: nothing changes.
        p.observe(2, &[link(2, true, 10)]);
        assert_eq!(p.query(2, &id(9)).len(), 2);
        // 2 restarted: routes via 2 (to 3 and 9) go, and withdrawals/re-offers are emitted.
        let actions = p.observe(3, &[link(2, true, 11)]);
        assert_eq!(best(&mut p, 3, 9), Some((4, 2 * HOP_COST_US)));
        assert!(p.query(3, &id(3)).is_empty());
        assert!(actions.contains(&Action::Withdraw(id(3))));
        assert!(
            actions
                .iter()
                .any(|a| matches!(a, Action::Offer { dest, .. } if *dest == id(9)))
        );
        // 4's link goes down: nothing left toward 9.
        let actions = p.observe(4, &[link(4, false, 20)]);
        assert!(p.query(4, &id(9)).is_empty());
        assert!(actions.contains(&Action::Withdraw(id(9))));
    }

    #[test]
    fn traces_that_do_not_concern_this_node_or_loop_are_ignored() {
        let mut p = node(1);
        assert!(
            p.observe(0, &[ack(&[5, 6, 7], None)])
                .iter()
                .all(|a| !matches!(a, Action::Offer { .. }))
        );
        assert!(
            p.observe(0, &[ack(&[1, 2, 3, 2, 9], None)])
                .iter()
                .all(|a| !matches!(a, Action::Offer { .. }))
        );
        assert!(
            p.observe(0, &[ack(&[1], None)])
                .iter()
                .all(|a| !matches!(a, Action::Offer { .. }))
        );
        let long: Vec<u64> = (1..=40).collect();
        p.observe(0, &[ack(&long, None)]);
        assert!(p.state.routes.is_empty());
    }

    #[test]
    fn memory_is_bounded_by_destinations_and_ways() {
        let config = cbor::encode(&Config {
            max_destinations: 10,
            max_hops_per_destination: 2,
            ..Config::default()
        });
        let mut p = AckTraceSource::init(&config, id(1)).unwrap();
        for dest in 100..200 {
            p.observe(
                dest,
                &[
                    ack(&[1, 2, dest], None),
                    ack(&[1, 3, dest], None),
                    ack(&[1, 4, 5, dest], None),
                ],
            );
        }
        assert!(p.state.routes.len() <= 10, "{}", p.state.routes.len());
        assert!(p.state.routes.values().all(|d| d.ways.len() <= 2));
        assert!(
            p.query(199, &id(199)).len() == 2,
            "the newest destinations are kept"
        );
    }

    #[test]
    fn state_moves_through_snapshot_and_restore() {
        let mut old = node(3);
        old.observe(0, &[ack(&[1, 2, 3, 4, 5], None), link(2, true, 7)]);
        let mut new = node(3);
        new.restore(&old.snapshot()).unwrap();
        assert_eq!(new.query(0, &id(5)), old.query(0, &id(5)));
        // The session survived too: the same session number is no restart.
        new.observe(1, &[link(2, true, 7)]);
        assert_eq!(best(&mut new, 1, 1), Some((2, 2 * HOP_COST_US)));
    }
}
