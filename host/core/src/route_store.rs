//! The route store: one per node, fed by every proof source, read by the routing policy.
//!
//! For each destination it keeps up to [`RouteStoreConfig::max_routes_per_destination`] candidate
//! next hops `{via, cost, confidence, learned_at, expires_at, source}`. Offers upsert by
//! `(via, source)`; entries expire on the caller's clock; the store holds at most
//! [`RouteStoreConfig::max_routes`] routes in all, evicting the least recently used destination
//! first; a link that goes down takes every route through that neighbour with it. Everything a
//! plugin offers is validated first, and each rejection is counted per source with its reason.
//!
//! Sans-IO: every call takes `now`; nothing here reads a clock.

use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BinaryHeap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::NodeId;
use crate::plugin::{Millis, NextHop};

/// Limits of the route store. Every field has a default, given in its doc.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RouteStoreConfig {
    /// Candidates kept per destination; the worst (highest cost, then lowest confidence) goes
    /// first. Default 8 — a policy never needs more than a few failovers.
    pub max_routes_per_destination: usize,
    /// Routes kept in all; the least recently used destinations go first. Default 262,144
    /// (about 50 MiB at the measured size of an entry).
    pub max_routes: usize,
    /// Longest TTL a source may give a route, in ms; longer is rejected as absurd. Default one hour.
    pub max_ttl_ms: u32,
    /// Most hops one offer may carry; a longer offer is rejected whole. Default 16.
    pub max_hops_per_offer: usize,
}

impl Default for RouteStoreConfig {
    fn default() -> Self {
        RouteStoreConfig {
            max_routes_per_destination: 8,
            max_routes: 1 << 18,
            max_ttl_ms: 3_600_000,
            max_hops_per_offer: 16,
        }
    }
}

/// A source of routes, interned by the store (see [`RouteStore::source`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceId(u16);

/// A stored candidate next hop.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Route {
    /// The neighbour to hand the message to.
    pub via: NodeId,
    /// Cost as the source gave it; lower is better.
    pub cost: u32,
    /// Confidence in [0, 1].
    pub confidence: f32,
    /// When the route was last offered.
    pub learned_at: Millis,
    /// When it stops being valid.
    pub expires_at: Millis,
    /// Who offered it.
    pub source: SourceId,
}

impl Route {
    /// Order of preference: cheaper first, then more confident, then by neighbour id.
    fn rank_key(&self) -> (u32, Reverse<u32>, NodeId) {
        (self.cost, Reverse(self.confidence.to_bits()), self.via)
    }
}

/// Why a hop offered by a plugin was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Rejection {
    /// `via` is not a current neighbour.
    NotNeighbour,
    /// Confidence NaN, infinite or outside [0, 1].
    BadConfidence,
    /// TTL zero or above the configured maximum.
    BadTtl,
    /// The offer carried more hops than the configured maximum.
    TooManyHops,
    /// A route to this node itself.
    SelfDestination,
    /// A message to a peer larger than allowed.
    OversizedMessage,
    /// More actions in one call than allowed.
    TooManyActions,
    /// A timer outside the allowed range.
    BadTimer,
}

impl Rejection {
    /// Every reason, in counter order.
    pub const ALL: [Rejection; 8] = [
        Rejection::NotNeighbour,
        Rejection::BadConfidence,
        Rejection::BadTtl,
        Rejection::TooManyHops,
        Rejection::SelfDestination,
        Rejection::OversizedMessage,
        Rejection::TooManyActions,
        Rejection::BadTimer,
    ];

    fn index(self) -> usize {
        self as usize
    }
}

/// Counters of one source.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceCounters {
    /// Hops offered (valid or not).
    pub offered: u64,
    /// Hops stored (new or refreshed).
    pub accepted: u64,
    /// Hops or actions rejected, by reason (indexed like [`Rejection::ALL`]).
    pub rejected: [u64; 8],
    /// Routes of this source returned by a query.
    pub hits: u64,
    /// Routes that reached their TTL.
    pub expired: u64,
    /// Routes dropped to respect a cap.
    pub evicted: u64,
    /// Routes removed by a withdrawal of the source.
    pub withdrawn: u64,
    /// Routes removed because their neighbour's link went down.
    pub link_down: u64,
}

impl SourceCounters {
    /// Rejections for one reason.
    pub fn rejected(&self, reason: Rejection) -> u64 {
        self.rejected[reason.index()]
    }
}

const NIL: u32 = u32::MAX;

struct Slot {
    dest: NodeId,
    routes: Vec<Route>,
    /// LRU neighbours (towards the most / least recently used end).
    newer: u32,
    older: u32,
}

/// The route store. See the module docs.
pub struct RouteStore {
    self_id: NodeId,
    config: RouteStoreConfig,
    slots: Vec<Slot>,
    free: Vec<u32>,
    index: HashMap<NodeId, u32>,
    /// Most and least recently used destinations.
    newest: u32,
    oldest: u32,
    /// Which destinations hold a route through each neighbour.
    by_via: HashMap<NodeId, HashSet<u32>>,
    /// Expiry times of routes, with stale entries dropped lazily.
    expiry: BinaryHeap<Reverse<(Millis, u32)>>,
    total: usize,
    sources: Vec<(String, SourceCounters)>,
}

impl std::fmt::Debug for RouteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteStore")
            .field("destinations", &self.index.len())
            .field("routes", &self.total)
            .finish_non_exhaustive()
    }
}

impl RouteStore {
    /// An empty store for the node `self_id`.
    pub fn new(self_id: NodeId, config: RouteStoreConfig) -> Self {
        RouteStore {
            self_id,
            config,
            slots: Vec::new(),
            free: Vec::new(),
            index: HashMap::new(),
            newest: NIL,
            oldest: NIL,
            by_via: HashMap::new(),
            expiry: BinaryHeap::new(),
            total: 0,
            sources: Vec::new(),
        }
    }

    /// The limits in force.
    pub fn config(&self) -> &RouteStoreConfig {
        &self.config
    }

    /// The id of a source by name, registering it on first use.
    pub fn source(&mut self, name: &str) -> SourceId {
        if let Some(i) = self.sources.iter().position(|(n, _)| n == name) {
            return SourceId(i as u16);
        }
        // More than 65,535 distinct sources cannot happen with a bounded plugin set; share the
        // last id rather than fail.
        let id = self.sources.len().min(u16::MAX as usize);
        if id == self.sources.len() {
            self.sources
                .push((name.to_owned(), SourceCounters::default()));
        }
        SourceId(id as u16)
    }

    /// A source's name.
    pub fn source_name(&self, id: SourceId) -> &str {
        self.sources
            .get(id.0 as usize)
            .map_or("?", |(n, _)| n.as_str())
    }

    /// Counters of every source, by name.
    pub fn counters(&self) -> impl Iterator<Item = (&str, &SourceCounters)> {
        self.sources.iter().map(|(n, c)| (n.as_str(), c))
    }

    /// Counters of one source.
    pub fn source_counters(&self, id: SourceId) -> Option<&SourceCounters> {
        self.sources.get(id.0 as usize).map(|(_, c)| c)
    }

    fn counters_mut(&mut self, id: SourceId) -> &mut SourceCounters {
        // Ids come from `source`, so they index the table; an id from another store (a caller
        // bug) is counted against the last source rather than panicking.
        if self.sources.is_empty() {
            self.sources
                .push(("?".to_owned(), SourceCounters::default()));
        }
        let last = self.sources.len() - 1;
        &mut self.sources[(id.0 as usize).min(last)].1
    }

    /// Count a rejection that happened outside the store (e.g. an oversized plugin message).
    pub fn count_rejection(&mut self, source: SourceId, reason: Rejection) {
        self.counters_mut(source).rejected[reason.index()] += 1;
    }

    /// Destinations with at least one route.
    pub fn destinations(&self) -> usize {
        self.index.len()
    }

    /// Routes stored in all.
    pub fn len(&self) -> usize {
        self.total
    }

    /// Whether the store holds no route.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Check one hop of an offer toward `dest`.
    pub fn check_hop(
        &self,
        dest: &NodeId,
        hop: &NextHop,
        is_neighbour: impl Fn(&NodeId) -> bool,
    ) -> Result<(), Rejection> {
        if *dest == self.self_id {
            return Err(Rejection::SelfDestination);
        }
        if !hop.confidence.is_finite() || !(0.0..=1.0).contains(&hop.confidence) {
            return Err(Rejection::BadConfidence);
        }
        if hop.ttl_ms == 0 || hop.ttl_ms > self.config.max_ttl_ms {
            return Err(Rejection::BadTtl);
        }
        if !is_neighbour(&hop.via) {
            return Err(Rejection::NotNeighbour);
        }
        Ok(())
    }

    /// Store what `source` offers toward `dest`: each valid hop is inserted or refreshed by
    /// `(via, source)`; invalid hops are dropped and counted. Returns how many hops were stored.
    pub fn offer(
        &mut self,
        now: Millis,
        source: SourceId,
        dest: NodeId,
        hops: &[NextHop],
        is_neighbour: impl Fn(&NodeId) -> bool,
    ) -> usize {
        let max_hops = self.config.max_hops_per_offer;
        let counters = self.counters_mut(source);
        counters.offered += hops.len() as u64;
        if hops.len() > max_hops {
            counters.rejected[Rejection::TooManyHops.index()] += hops.len() as u64;
            return 0;
        }
        let mut valid = Vec::with_capacity(hops.len());
        for hop in hops {
            match self.check_hop(&dest, hop, &is_neighbour) {
                Ok(()) => valid.push(*hop),
                Err(reason) => self.counters_mut(source).rejected[reason.index()] += 1,
            }
        }
        if valid.is_empty() {
            return 0;
        }
        let slot = self.slot_for(dest);
        for hop in &valid {
            let route = Route {
                via: hop.via,
                cost: hop.cost,
                confidence: hop.confidence,
                learned_at: now,
                expires_at: now.saturating_add(u64::from(hop.ttl_ms)),
                source,
            };
            self.upsert(slot, route);
        }
        self.counters_mut(source).accepted += valid.len() as u64;
        self.enforce_total_cap(slot);
        self.maybe_compact_expiry();
        valid.len()
    }

    fn slot_for(&mut self, dest: NodeId) -> u32 {
        let slot = match self.index.entry(dest) {
            Entry::Occupied(e) => *e.get(),
            Entry::Vacant(e) => {
                let slot = match self.free.pop() {
                    Some(slot) => {
                        let s = &mut self.slots[slot as usize];
                        s.dest = dest;
                        s.routes.clear();
                        slot
                    }
                    None => {
                        self.slots.push(Slot {
                            dest,
                            // Most destinations have one route: a Vec's first growth would
                            // reserve four (256 B); reserve what is used.
                            routes: Vec::with_capacity(1),
                            newer: NIL,
                            older: NIL,
                        });
                        (self.slots.len() - 1) as u32
                    }
                };
                e.insert(slot);
                self.link_newest(slot);
                return slot;
            }
        };
        self.touch(slot);
        slot
    }

    fn upsert(&mut self, slot: u32, route: Route) {
        let max = self.config.max_routes_per_destination.max(1);
        let routes = &mut self.slots[slot as usize].routes;
        if let Some(existing) = routes
            .iter_mut()
            .find(|r| r.via == route.via && r.source == route.source)
        {
            *existing = route;
        } else {
            if routes.len() == routes.capacity() {
                routes.reserve_exact(1);
            }
            routes.push(route);
            self.total += 1;
            self.by_via.entry(route.via).or_default().insert(slot);
        }
        self.expiry.push(Reverse((route.expires_at, slot)));
        let routes = &mut self.slots[slot as usize].routes;
        routes.sort_by_key(Route::rank_key);
        let dropped: Vec<Route> = routes.drain(max.min(routes.len())..).collect();
        for worst in dropped {
            self.total -= 1;
            self.counters_mut(worst.source).evicted += 1;
            self.unindex_via(slot, worst.via);
        }
    }

    fn unindex_via(&mut self, slot: u32, via: NodeId) {
        if self.slots[slot as usize]
            .routes
            .iter()
            .any(|r| r.via == via)
        {
            return;
        }
        if let Entry::Occupied(mut e) = self.by_via.entry(via) {
            e.get_mut().remove(&slot);
            if e.get().is_empty() {
                e.remove();
            }
        }
    }

    /// Remove routes of a slot matching `drop`, count them, and free the slot when empty.
    fn remove_where(
        &mut self,
        slot: u32,
        mut drop: impl FnMut(&Route) -> bool,
        mut count: impl FnMut(&mut SourceCounters),
    ) {
        let mut removed = Vec::new();
        self.slots[slot as usize].routes.retain(|r| {
            if drop(r) {
                removed.push(*r);
                false
            } else {
                true
            }
        });
        for route in removed {
            self.total -= 1;
            count(self.counters_mut(route.source));
            self.unindex_via(slot, route.via);
        }
        if self.slots[slot as usize].routes.is_empty() {
            self.free_slot(slot);
        }
    }

    fn free_slot(&mut self, slot: u32) {
        let dest = self.slots[slot as usize].dest;
        if self.index.get(&dest) == Some(&slot) {
            self.index.remove(&dest);
            self.unlink(slot);
            self.free.push(slot);
        }
    }

    fn enforce_total_cap(&mut self, keep: u32) {
        while self.total > self.config.max_routes.max(1) {
            let victim = self.oldest;
            if victim == NIL || victim == keep {
                break;
            }
            self.remove_where(victim, |_| true, |c| c.evicted += 1);
        }
    }

    /// Ranked candidates toward `dest` at `now` (best first). Expired routes are dropped on the
    /// way; the destination becomes the most recently used.
    pub fn query(&mut self, now: Millis, dest: &NodeId) -> &[Route] {
        let Some(&slot) = self.index.get(dest) else {
            return &[];
        };
        if self.slots[slot as usize]
            .routes
            .iter()
            .any(|r| r.expires_at <= now)
        {
            self.remove_where(slot, |r| r.expires_at <= now, |c| c.expired += 1);
            if !self.index.contains_key(dest) {
                return &[];
            }
        }
        self.touch(slot);
        let routes = &self.slots[slot as usize].routes;
        for route in routes {
            if let Some((_, counters)) = self.sources.get_mut(route.source.0 as usize) {
                counters.hits += 1;
            }
        }
        &self.slots[slot as usize].routes
    }

    /// Remove every route `source` offered toward `dest`.
    pub fn withdraw(&mut self, source: SourceId, dest: &NodeId) {
        if let Some(&slot) = self.index.get(dest) {
            self.remove_where(slot, |r| r.source == source, |c| c.withdrawn += 1);
        }
    }

    /// The link to `peer` went down: every route through it goes.
    pub fn link_down(&mut self, peer: &NodeId) {
        let Some(slots) = self.by_via.remove(peer) else {
            return;
        };
        for slot in slots {
            self.remove_where(slot, |r| r.via == *peer, |c| c.link_down += 1);
        }
    }

    /// Drop every route whose TTL ran out by `now`. Cheap when nothing expired.
    pub fn expire(&mut self, now: Millis) {
        while let Some(&Reverse((at, slot))) = self.expiry.peek() {
            if at > now {
                break;
            }
            self.expiry.pop();
            let live = self.slots.get(slot as usize).is_some_and(|s| {
                self.index.get(&s.dest) == Some(&slot)
                    && s.routes.iter().any(|r| r.expires_at <= now)
            });
            if live {
                self.remove_where(slot, |r| r.expires_at <= now, |c| c.expired += 1);
            }
        }
    }

    /// When the next route expires, if any (for the caller's timer).
    pub fn next_expiry(&self) -> Option<Millis> {
        self.expiry.peek().map(|Reverse((at, _))| *at)
    }

    /// Refreshed routes leave stale entries in the expiry heap; rebuild it when they dominate.
    fn maybe_compact_expiry(&mut self) {
        if self.expiry.len() <= 2 * self.total + 1024 {
            return;
        }
        let mut heap = BinaryHeap::with_capacity(self.total);
        for &slot in self.index.values() {
            for r in &self.slots[slot as usize].routes {
                heap.push(Reverse((r.expires_at, slot)));
            }
        }
        self.expiry = heap;
    }

    fn link_newest(&mut self, slot: u32) {
        let s = &mut self.slots[slot as usize];
        s.newer = NIL;
        s.older = self.newest;
        if self.newest != NIL {
            self.slots[self.newest as usize].newer = slot;
        }
        self.newest = slot;
        if self.oldest == NIL {
            self.oldest = slot;
        }
    }

    fn unlink(&mut self, slot: u32) {
        let (newer, older) = {
            let s = &self.slots[slot as usize];
            (s.newer, s.older)
        };
        if newer != NIL {
            self.slots[newer as usize].older = older;
        } else {
            self.newest = older;
        }
        if older != NIL {
            self.slots[older as usize].newer = newer;
        } else {
            self.oldest = newer;
        }
        let s = &mut self.slots[slot as usize];
        s.newer = NIL;
        s.older = NIL;
    }

    fn touch(&mut self, slot: u32) {
        if self.newest != slot {
            self.unlink(slot);
            self.link_newest(slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> NodeId {
        NodeId::from_index(n)
    }

    fn hop(via: u64, cost: u32, ttl_ms: u32, confidence: f32) -> NextHop {
        NextHop {
            via: id(via),
            cost,
            ttl_ms,
            confidence,
        }
    }

    fn any(_: &NodeId) -> bool {
        true
    }

    fn store(config: RouteStoreConfig) -> (RouteStore, SourceId, SourceId) {
        let mut s = RouteStore::new(id(1), config);
        let a = s.source("ack-trace");
        let b = s.source("fanout-token");
        (s, a, b)
    }

    fn vias(routes: &[Route]) -> Vec<u64> {
        routes.iter().map(|r| r.via.to_words()[3]).collect()
    }

    #[test]
    fn offers_upsert_by_via_and_source_and_queries_rank() {
        let (mut s, a, b) = store(RouteStoreConfig::default());
        assert_eq!(
            s.offer(
                0,
                a,
                id(9),
                &[hop(2, 300, 1_000, 0.9), hop(3, 100, 1_000, 0.5)],
                any
            ),
            2
        );
        assert_eq!(s.offer(0, b, id(9), &[hop(2, 100, 1_000, 0.9)], any), 1);
        assert_eq!(vias(s.query(0, &id(9))), vec![2, 3, 2]);
        // Refresh a's route via 2: cheaper now, no new entry.
        s.offer(10, a, id(9), &[hop(2, 50, 1_000, 0.9)], any);
        let routes = s.query(10, &id(9));
        assert_eq!(routes.len(), 3);
        assert_eq!(
            (routes[0].cost, routes[0].source, routes[0].learned_at),
            (50, a, 10)
        );
        assert_eq!(s.len(), 3);
        assert_eq!(
            s.source_counters(a).unwrap().hits,
            2 + 2,
            "two of a's routes per query"
        );
    }

    #[test]
    fn invalid_hops_are_rejected_and_counted_by_reason() {
        let (mut s, a, _) = store(RouteStoreConfig::default());
        let neighbours = |n: &NodeId| *n != id(66);
        let hops = [
            hop(2, 1, 1_000, f32::NAN),
            hop(2, 1, 1_000, 1.5),
            hop(2, 1, 1_000, f32::INFINITY),
            hop(2, 1, 0, 1.0),
            hop(2, 1, u32::MAX, 1.0),
            hop(66, 1, 1_000, 1.0),
            hop(3, 1, 1_000, 1.0),
        ];
        assert_eq!(s.offer(0, a, id(9), &hops, neighbours), 1);
        assert_eq!(s.offer(0, a, id(1), &[hop(2, 1, 1_000, 1.0)], any), 0);
        let too_many: Vec<NextHop> = (0..17).map(|i| hop(10 + i, 1, 1_000, 1.0)).collect();
        assert_eq!(s.offer(0, a, id(9), &too_many, any), 0);
        let c = s.source_counters(a).unwrap();
        assert_eq!(c.rejected(Rejection::BadConfidence), 3);
        assert_eq!(c.rejected(Rejection::BadTtl), 2);
        assert_eq!(c.rejected(Rejection::NotNeighbour), 1);
        assert_eq!(c.rejected(Rejection::SelfDestination), 1);
        assert_eq!(c.rejected(Rejection::TooManyHops), 17);
        assert_eq!((c.offered, c.accepted), (7 + 1 + 17, 1));
        assert_eq!(vias(s.query(0, &id(9))), vec![3]);
    }

    #[test]
    fn routes_expire_on_the_callers_clock() {
        let (mut s, a, _) = store(RouteStoreConfig::default());
        s.offer(
            100,
            a,
            id(9),
            &[hop(2, 1, 50, 1.0), hop(3, 2, 500, 1.0)],
            any,
        );
        s.offer(100, a, id(8), &[hop(2, 1, 50, 1.0)], any);
        assert_eq!(s.next_expiry(), Some(150));
        assert_eq!(vias(s.query(149, &id(9))), vec![2, 3]);
        assert_eq!(
            vias(s.query(150, &id(9))),
            vec![3],
            "expired at exactly ttl"
        );
        s.expire(150);
        assert_eq!(s.destinations(), 1, "id(8) had only an expired route");
        assert_eq!(s.source_counters(a).unwrap().expired, 2);
        s.expire(10_000);
        assert!(s.is_empty());
    }

    #[test]
    fn per_destination_cap_keeps_the_best() {
        let config = RouteStoreConfig {
            max_routes_per_destination: 2,
            ..RouteStoreConfig::default()
        };
        let (mut s, a, _) = store(config);
        s.offer(
            0,
            a,
            id(9),
            &[
                hop(2, 300, 1_000, 1.0),
                hop(3, 100, 1_000, 1.0),
                hop(4, 200, 1_000, 1.0),
            ],
            any,
        );
        assert_eq!(vias(s.query(0, &id(9))), vec![3, 4]);
        assert_eq!(s.source_counters(a).unwrap().evicted, 1);
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn total_cap_evicts_the_least_recently_used_destination() {
        let config = RouteStoreConfig {
            max_routes: 3,
            ..RouteStoreConfig::default()
        };
        let (mut s, a, _) = store(config);
        for dest in [10, 11, 12] {
            s.offer(0, a, id(dest), &[hop(2, 1, 1_000, 1.0)], any);
        }
        s.query(0, &id(10)); // 11 is now the oldest
        s.offer(0, a, id(13), &[hop(2, 1, 1_000, 1.0)], any);
        assert!(s.query(0, &id(11)).is_empty());
        for dest in [10, 12, 13] {
            assert_eq!(s.query(0, &id(dest)).len(), 1, "dest {dest}");
        }
        assert_eq!(s.len(), 3);
    }

    #[test]
    fn a_link_going_down_takes_every_route_through_it() {
        let (mut s, a, b) = store(RouteStoreConfig::default());
        s.offer(
            0,
            a,
            id(9),
            &[hop(2, 1, 1_000, 1.0), hop(3, 2, 1_000, 1.0)],
            any,
        );
        s.offer(0, b, id(8), &[hop(2, 1, 1_000, 1.0)], any);
        s.offer(0, b, id(2), &[hop(3, 1, 1_000, 1.0)], any);
        s.link_down(&id(2));
        assert_eq!(vias(s.query(0, &id(9))), vec![3]);
        assert!(s.query(0, &id(8)).is_empty());
        assert_eq!(
            vias(s.query(0, &id(2))),
            vec![3],
            "a route *to* the peer via another stays"
        );
        assert_eq!(s.source_counters(a).unwrap().link_down, 1);
        assert_eq!(s.source_counters(b).unwrap().link_down, 1);
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn withdraw_removes_only_that_sources_routes() {
        let (mut s, a, b) = store(RouteStoreConfig::default());
        s.offer(0, a, id(9), &[hop(2, 1, 1_000, 1.0)], any);
        s.offer(
            0,
            b,
            id(9),
            &[hop(2, 1, 1_000, 1.0), hop(3, 1, 1_000, 1.0)],
            any,
        );
        s.withdraw(b, &id(9));
        let routes = s.query(0, &id(9));
        assert_eq!((routes.len(), routes[0].source), (1, a));
        assert_eq!(s.source_counters(b).unwrap().withdrawn, 2);
        s.link_down(&id(3)); // nothing left via 3: a no-op
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn freed_slots_are_reused_and_the_expiry_heap_stays_bounded() {
        let config = RouteStoreConfig {
            max_routes: 100,
            ..RouteStoreConfig::default()
        };
        let (mut s, a, _) = store(config);
        for round in 0..50u64 {
            for dest in 0..100u64 {
                s.offer(round, a, id(1_000 + dest), &[hop(2, 1, 10, 1.0)], any);
            }
            s.expire(round + 5);
        }
        assert!(s.len() <= 100);
        assert!(s.slots.len() <= 101, "slots reused: {}", s.slots.len());
        assert!(s.expiry.len() <= 2 * s.len() + 1024 + 100);
    }
}
