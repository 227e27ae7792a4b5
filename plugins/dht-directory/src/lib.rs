//! `dht-directory`: a Kademlia-style directory of node ids, the slow, safe source of route proofs.
//!
//! The other sources learn routes from traffic that already flowed (ACK traces, tree tokens).
//! This one answers the question nobody's traffic answered yet: the host needed a route toward
//! `D`, its route store had none ([`Observation::Miss`]), so the directory looks `D` up.
//!
//! # Model
//!
//! Node ids are points of Kademlia's XOR metric (Maymounkov & Mazières, *Kademlia: A Peer-to-peer
//! Information System Based on the XOR Metric*, IPTPS 2002, §2.1): 256 k-buckets, `k = 20`,
//! lookups with `α = 3` parallel queries. What differs from Kademlia is the network under it:
//! an instance talks only to the same plugin on its *neighbours* (`Action::Send` /
//! `Observation::Message`), and the host only stores next hops that are neighbours. So the
//! routing table does not map ids to addresses; it maps an id to **which neighbour leads toward
//! it and in how many hops** ("D is reachable via N in h hops"), and a lookup walks the network
//! hop by hop instead of contacting far nodes directly — a recursive Kademlia (R/Kademlia, Heep
//! 2010) over the physical topology, as Virtual Ring Routing (Caesar et al., SIGCOMM 2006) runs a
//! DHT's key space over a network without end-to-end connectivity.
//!
//! # Protocol (wire version 1, CBOR behind a version byte; see `wire.rs`)
//!
//! * **`Find { origin, lookup, target, budget, travelled, aim }`** asks a neighbour for the
//!   contacts closest to `target` it knows. `lookup` numbers the walk (a lookup's id and the walk's
//!   index), so `(origin, lookup)` names one walk network-wide.
//! * The receiver `R` considers itself (0 hops), its neighbours (1 hop) and its table, leaving
//!   out the sender and every way through the sender (split horizon: it never tells a neighbour
//!   about routes that lead back through that neighbour). It **replies** with its `k` closest
//!   entries `(id, hops from R, age)` if it knows `target` exactly, if the budget is spent, if it
//!   already relays this walk, or if it knows nothing at least as close as what the sender aimed
//!   at. Otherwise it **forwards** the request one hop, through the way of its XOR-closest
//!   contact, and remembers (bounded, with a deadline) whom to pass the reply back to.
//! * **Progress, hence no loops:** the request carries the `aim` — the XOR distance to the target
//!   of the contact the sender steered toward, and the hops left to reach it. A node forwards
//!   only if its own closest contact `(distance, hops)` is at most the aim, and then aims at that
//!   contact with one hop fewer. The pair strictly decreases (lexicographically) at every hop, so
//!   a walk ends at the node XOR-closest to the target it could reach, or at one that knows the
//!   target; relays refuse to forward a walk twice and the hop budget (default 16) bounds the
//!   rest. A walk that comes back through its origin is answered there.
//! * **`Found { origin, lookup, target, entries }`** travels back along the walk, one hop at a
//!   time; every node it passes learns "X via the neighbour it came from, hops + 1", adds one hop
//!   and passes it on (leaving out what it reaches through the node it passes it to). Requests
//!   teach too: a node that sees a `Find` learns the route back to its origin (the hops it
//!   `travelled`), so a node's periodic lookup of its own id teaches the XOR-closest nodes a
//!   route to it — the directory's equivalent of Kademlia's join (§2.3).
//! * Ages, not timestamps, travel: a relayed entry keeps the age it had, so relaying never makes
//!   old knowledge look fresh, and a route learned through a chain expires when the first-hand
//!   knowledge would.
//! * **`Poison { ids }`**, "do not reach these through me", keeps neighbours from routing into
//!   each other as distance-vector protocols do (RIP, RFC 2453 §3.4.3): sent to the neighbour a
//!   contact's best way now goes through (poisoned reverse), and to every neighbour when the last
//!   way to a contact is lost (the link went down, the neighbour restarted or poisoned it, the
//!   route expired). The receiver drops its ways through the sender; a node losing its last way
//!   that way passes the news on. A neighbour can only ever remove routes through itself.
//!
//! # Lookups
//!
//! A miss starts a lookup (at most `max_lookups` at a time, one per destination, with a back-off
//! after a failure). Like Kademlia's iterative lookup (§2.3), it keeps `α` walks in flight, each
//! aimed at one of the `k` contacts closest to the target that no walk has aimed at yet — the
//! replies add closer ones — then through the neighbours no walk has taken; it ends when the
//! target is known, when none is left to try, or after `max_queries_per_lookup` walks, each
//! counted out after `query_timeout_ms`. While it runs, the `α` neighbours leading toward the
//! closest contacts are offered as **guesses** — confidence 0.1, cost 1,000,000 µs (a public DHT's
//! lookup takes seconds: ANCHORS) and a short TTL — so a policy takes any real proof first. When
//! a reply teaches a route to the target, the guesses are withdrawn and the **exact** route is
//! offered: cost 1,000 µs per hop (the first-party unit, as `ack-trace` counts), confidence 0.6
//! halving every `half_life_ms` of age, TTL what is left of `route_ttl_ms`. A failed lookup
//! withdraws its guesses, leaving the host to its overlay fallback.
//!
//! # Table upkeep
//!
//! The table is `k`-buckets plus a bounded cache of what full buckets refused (see `table.rs`:
//! walks need the nodes on their way to remember what they relayed). A new neighbour is asked for
//! its `k` contacts closest to us (a one-hop exchange). Every `refresh_ms` the table is expired,
//! every route is re-offered with its decayed confidence, and a refresh lookup runs — alternately
//! for our own id and for a pseudo-random id, Kademlia's bucket refresh (§2.3). The route store
//! mirrors the table: what the table forgets or loses is withdrawn, and when some of a contact's
//! ways go, the contact is withdrawn and offered again with the ways left (offers only upsert).
//!
//! # Bounds, trust and limits
//!
//! Buckets of `k`, the cache, `max_ways` ways per contact, `max_neighbours`, `max_lookups`,
//! `max_relays`, back-offs, messages of at most `max_message_bytes`, lists of at most `k` (and
//! never more than 64) entries, poison notices of at most 256 contacts per neighbour and batch.
//! Every incoming message is hostile until parsed: oversized, unknown-version, malformed and
//! protocol-breaking messages are dropped and counted ([`Stats`]); replies nobody asked for are
//! dropped. A lying neighbour can still advertise routes *through itself* (any distance-vector
//! source can be lied to); the moderate confidence and the host's end-to-end acknowledgements are
//! what catch it. Poisoning closes two-node loops; a longer loop out of stale knowledge is still
//! possible, as in any distance-vector protocol without sequence numbers (DSDV's, or Babel's
//! feasibility condition, would close it), and lasts until the stale route's TTL at most.

mod table;
mod wire;

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap};

use routefabric_plugin_sdk::cbor;
use routefabric_plugin_sdk::prelude::*;
use serde::{Deserialize, Serialize};

use table::Distance;
use table::{Bounds, Learned, Table, Way};
use wire::{Entry, Find, Found, Message, Poison, Refusal, WireId};

/// Cost of one hop of an exact route, in the first-party unit (µs), as `ack-trace` counts it.
pub const HOP_COST_US: u32 = 1_000;
/// Timer token of the periodic refresh.
const REFRESH_TIMER: u64 = 1;
/// Timer tokens of lookup timeouts: this bit plus the lookup id.
const LOOKUP_TIMER: u64 = 1 << 63;
/// A walk's id on the wire is its lookup's id followed by this many bits of walk number.
const WALK_BITS: u32 = 6;
/// Lookup ids stay below this, so walk ids fit in 64 bits (and timer tokens in 63).
const MAX_LOOKUP_ID: u64 = (1 << (63 - WALK_BITS)) - 1;
/// Most contacts one batch of observations poisons toward one neighbour (four messages of 64);
/// beyond, routes through this node age out by TTL.
const MAX_POISON: usize = 4 * wire::MAX_ENTRIES;
/// Version of the snapshot format.
const SNAPSHOT_VERSION: u8 = 1;

/// Configuration (CBOR of the plugin's config section). Every field has a default, given in its
/// doc.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Contacts per k-bucket, and entries per reply. Default 20 (Kademlia §2.2; rust-libp2p's
    /// `K_VALUE`). At most 64.
    pub k: usize,
    /// Walks a lookup keeps in flight, and guesses offered while it runs. Default 3 (Kademlia
    /// §2.3). At most 16.
    pub alpha: usize,
    /// Ways (next hops) remembered per contact. Default 3. At most 15.
    pub max_ways: usize,
    /// Lookups started by misses running at once; further misses are dropped and counted.
    /// Default 16.
    pub max_lookups: usize,
    /// Neighbours one lookup asks in all. Default 6 (2α).
    pub max_queries_per_lookup: usize,
    /// How long a walk may take before its neighbour is counted out, ms. Default 5,000 (a walk is
    /// up to 2 × 16 hops of plugin-channel latency).
    pub query_timeout_ms: u32,
    /// How many times a request may be forwarded. Default 16.
    pub forward_budget: u8,
    /// Longest route accepted, in hops; longer ones are ignored. Default 32 (the cap the other
    /// sources put on paths, after Peerbit's route tokens).
    pub max_hops: u8,
    /// How long a route stays valid after the knowledge was first-hand, ms. Default 600,000
    /// (`ack-trace`'s, after Peerbit's route cache).
    pub route_ttl_ms: u32,
    /// Age at which an exact route's confidence has halved, ms. Default 120,000.
    pub half_life_ms: u32,
    /// Confidence of a fresh exact route from the directory. Default 0.6: second-hand knowledge,
    /// below an acknowledged path (`ack-trace` starts at 1.0).
    pub exact_confidence: f32,
    /// Confidence of a guess offered while a lookup runs. Default 0.1.
    pub guess_confidence: f32,
    /// Cost of a guess, µs; the k-th best guess costs `k × 1,000` more. Default 1,000,000 (a DHT
    /// lookup's seconds, so any real proof is cheaper).
    pub guess_cost_us: u32,
    /// TTL of a guess, ms. Default 10,000 (a lookup's longest run: two waves of timeouts).
    pub guess_ttl_ms: u32,
    /// Period of table expiry, re-offers and refresh lookups, ms. Default 30,000.
    pub refresh_ms: u32,
    /// After a failed lookup, misses for the same destination are ignored this long, ms.
    /// Default 30,000.
    pub miss_backoff_ms: u32,
    /// Lookups of others this node is relaying at once; beyond it, it answers instead of
    /// forwarding. Default 256.
    pub max_relays: usize,
    /// Neighbours tracked; links beyond it are ignored. Default 256 (HyParView's active view is 5).
    pub max_neighbours: usize,
    /// Destinations remembered in back-off. Default 1,024.
    pub max_backoffs: usize,
    /// Contacts kept beside full buckets (Kademlia's replacement cache, §4.1, which here routes
    /// too: see the crate docs); the least recently heard of goes first. Default 1,024.
    pub cache_size: usize,
    /// Longest message accepted, bytes. Default 8,192 (a reply of 64 entries is about 3 KiB).
    pub max_message_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            k: 20,
            alpha: 3,
            max_ways: 3,
            max_lookups: 16,
            max_queries_per_lookup: 6,
            query_timeout_ms: 5_000,
            forward_budget: 16,
            max_hops: 32,
            route_ttl_ms: 600_000,
            half_life_ms: 120_000,
            exact_confidence: 0.6,
            guess_confidence: 0.1,
            guess_cost_us: 1_000_000,
            guess_ttl_ms: 10_000,
            refresh_ms: 30_000,
            miss_backoff_ms: 30_000,
            max_relays: 256,
            max_neighbours: 256,
            max_backoffs: 1_024,
            cache_size: 1_024,
            max_message_bytes: 8_192,
        }
    }
}

impl Config {
    fn check(&self) -> Result<(), String> {
        let unit = |x: f32| x.is_finite() && (0.0..=1.0).contains(&x);
        if !(1..=wire::MAX_ENTRIES).contains(&self.k) {
            return Err(format!("k must be in 1..=64, got {}", self.k));
        }
        if self.alpha == 0 || self.max_ways == 0 || self.max_queries_per_lookup == 0 {
            return Err("alpha, max_ways and max_queries_per_lookup must be ≥ 1".to_owned());
        }
        if self.max_queries_per_lookup > 1 << WALK_BITS {
            return Err("max_queries_per_lookup must be at most 64".to_owned());
        }
        // An offer carries the direct link plus the ways, or the guesses: at most 16 hops, the
        // route store's default cap on one offer.
        if self.max_ways > 15 || self.alpha > 16 {
            return Err("max_ways must be at most 15 and alpha at most 16".to_owned());
        }
        if self.max_hops < 2 || self.forward_budget > self.max_hops {
            return Err("max_hops must be ≥ 2 and forward_budget ≤ max_hops".to_owned());
        }
        if [
            self.query_timeout_ms,
            self.route_ttl_ms,
            self.half_life_ms,
            self.guess_ttl_ms,
            self.refresh_ms,
        ]
        .contains(&0)
        {
            return Err("timeouts, TTLs, half_life_ms and refresh_ms must be > 0".to_owned());
        }
        if self.route_ttl_ms > 3_600_000 || self.guess_ttl_ms > 3_600_000 {
            return Err("route_ttl_ms and guess_ttl_ms must be at most one hour".to_owned());
        }
        if !unit(self.exact_confidence) || !unit(self.guess_confidence) {
            return Err("exact_confidence and guess_confidence must be in [0, 1]".to_owned());
        }
        if self.max_message_bytes < 1_024 {
            return Err("max_message_bytes must be at least 1,024".to_owned());
        }
        Ok(())
    }
}

/// Counters of what the instance did and refused, for tests and the node's diagnostics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages longer than `max_message_bytes`.
    pub oversized: u64,
    /// Empty messages, or of a wire version this instance does not speak.
    pub bad_version: u64,
    /// Messages that are not valid CBOR of the protocol.
    pub malformed: u64,
    /// Well-formed messages or entries that break the protocol (our own lookup coming back to
    /// us, impossible hop counts).
    pub invalid: u64,
    /// Replies nobody here was waiting for.
    pub unexpected: u64,
    /// Messages from a node that is not a current neighbour.
    pub not_neighbour: u64,
    /// Lookups started (misses, refreshes and neighbour exchanges).
    pub lookups: u64,
    /// Miss lookups that found their target.
    pub found: u64,
    /// Miss lookups that did not.
    pub failed: u64,
    /// Misses ignored because `max_lookups` were running.
    pub misses_dropped: u64,
    /// Requests forwarded for others.
    pub forwarded: u64,
    /// Requests answered.
    pub answered: u64,
}

/// A live neighbour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Neighbour {
    session: u64,
    rtt_us: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// The host missed a route: offer guesses, then the answer.
    Miss,
    /// Periodic table upkeep.
    Refresh,
    /// A one-hop table exchange with a new neighbour.
    Join,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QueryState {
    Waiting,
    Answered,
    TimedOut,
}

/// One walk of a lookup: sent through the neighbour `to`, aimed at the contact `aim`.
#[derive(Debug, Clone, Copy)]
struct Query {
    to: NodeId,
    aim: NodeId,
    sent_at: Millis,
    state: QueryState,
}

#[derive(Debug, Clone)]
struct Lookup {
    target: NodeId,
    purpose: Purpose,
    queries: Vec<Query>,
    /// Neighbours offered as guesses while a miss lookup runs.
    guesses: Vec<NodeId>,
    /// Found or given up; kept until the last walk answers or times out, to learn from it.
    done: bool,
}

impl Lookup {
    fn waiting(&self) -> usize {
        self.queries
            .iter()
            .filter(|q| q.state == QueryState::Waiting)
            .count()
    }
}

/// A request this node forwarded for someone else: where the reply goes back to.
#[derive(Debug, Clone, Copy)]
struct Relay {
    from: NodeId,
    to: NodeId,
    expires_at: Millis,
}

/// A node this instance knows, as seen for one request.
#[derive(Debug, Clone, Copy)]
struct Known {
    distance: Distance,
    id: NodeId,
    hops: u8,
    via: NodeId,
    learned_at: Millis,
}

// Ordered by distance alone: ids are distinct, so distances to one target are too.
impl PartialEq for Known {
    fn eq(&self, other: &Self) -> bool {
        self.distance == other.distance
    }
}
impl Eq for Known {}
impl PartialOrd for Known {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Known {
    fn cmp(&self, other: &Self) -> Ordering {
        self.distance.cmp(&other.distance)
    }
}

/// What one `observe` call has to say, collected while observations are handled.
#[derive(Debug, Default)]
struct Out {
    actions: Vec<Action>,
    /// Destinations whose routes may have changed: offered or withdrawn at the end.
    touched: Vec<NodeId>,
    /// Destinations some of whose next hops went (a lookup's guesses, a way pushed out):
    /// withdrawn first, then offered what is left.
    reset: Vec<NodeId>,
    /// Contacts this node no longer reaches at all: every neighbour is told ([`Poison`]).
    lost: Vec<NodeId>,
    /// `(neighbour, contact)`: our best way to the contact now goes through that neighbour, which
    /// is told not to route it through us ([`Poison`]).
    poison: Vec<(NodeId, NodeId)>,
}

/// What a hot swap carries over (the lookups and relays in flight are not: the host reports a
/// new miss, and walks time out).
#[derive(Serialize)]
struct SnapshotOut<'a> {
    version: u8,
    neighbours: &'a BTreeMap<NodeId, Neighbour>,
    table: &'a Table,
    next_lookup: u64,
    refresh_round: u64,
}

#[derive(Deserialize)]
struct SnapshotIn {
    version: u8,
    neighbours: BTreeMap<NodeId, Neighbour>,
    table: Table,
    next_lookup: u64,
    refresh_round: u64,
}

/// The plugin.
#[derive(Debug)]
pub struct DhtDirectory {
    config: Config,
    self_id: NodeId,
    neighbours: BTreeMap<NodeId, Neighbour>,
    table: Table,
    lookups: BTreeMap<u64, Lookup>,
    relays: BTreeMap<(NodeId, u64), Relay>,
    /// Destinations whose lookup failed, and when a miss may look them up again.
    backoff: BTreeMap<NodeId, Millis>,
    next_lookup: u64,
    refresh_round: u64,
    timer_set: bool,
    stats: Stats,
}

/// SplitMix64: the deterministic stream of refresh targets (the same natively and in WASM).
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl DhtDirectory {
    /// What the instance counted so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Contacts in the routing table (neighbours not included).
    pub fn contacts(&self) -> usize {
        self.table.len()
    }

    /// Lookups in flight.
    pub fn lookups(&self) -> usize {
        self.lookups.len()
    }

    fn alive(&self, learned_at: Millis, now: Millis) -> bool {
        now < learned_at.saturating_add(u64::from(self.config.route_ttl_ms))
    }

    /// Whether an exact route toward `dest` is known.
    fn has_route(&self, now: Millis, dest: &NodeId) -> bool {
        self.neighbours.contains_key(dest)
            || self
                .table
                .get(dest)
                .is_some_and(|c| c.ways.iter().any(|w| self.alive(w.learned_at, now)))
    }

    /// Next hops toward `dest`: the direct link, the exact ways, or the guesses of a running
    /// lookup; cheapest first.
    fn hops_for(&self, now: Millis, dest: &NodeId) -> Vec<NextHop> {
        let mut hops = Vec::new();
        if *dest == self.self_id {
            return hops;
        }
        let ttl = u64::from(self.config.route_ttl_ms);
        if let Some(n) = self.neighbours.get(dest) {
            hops.push(NextHop {
                via: *dest,
                cost: n.rtt_us.unwrap_or(HOP_COST_US).max(1),
                ttl_ms: self.config.route_ttl_ms,
                confidence: 1.0,
            });
        }
        if let Some(contact) = self.table.get(dest) {
            for way in &contact.ways {
                if !self.alive(way.learned_at, now) || !self.neighbours.contains_key(&way.via) {
                    continue;
                }
                hops.push(NextHop {
                    via: way.via,
                    cost: u32::from(way.hops) * HOP_COST_US,
                    ttl_ms: (way.learned_at + ttl).saturating_sub(now) as u32,
                    confidence: decayed_confidence(
                        self.config.exact_confidence,
                        now.saturating_sub(way.learned_at),
                        self.config.half_life_ms,
                    ),
                });
            }
        }
        if hops.is_empty()
            && let Some(lookup) = self.running_miss(dest)
        {
            for (rank, via) in lookup.guesses.iter().enumerate() {
                hops.push(NextHop {
                    via: *via,
                    cost: self
                        .config
                        .guess_cost_us
                        .saturating_add(rank as u32 * HOP_COST_US),
                    ttl_ms: self.config.guess_ttl_ms,
                    confidence: self.config.guess_confidence,
                });
            }
        }
        hops.sort_by_key(|h| (h.cost, h.via));
        hops
    }

    fn running_miss(&self, dest: &NodeId) -> Option<&Lookup> {
        self.lookups
            .values()
            .find(|l| l.purpose == Purpose::Miss && !l.done && l.target == *dest)
    }

    /// The `k` nodes closest to `target` this node knows — itself, its neighbours, its table —
    /// leaving out `exclude` and every way through it; closest first.
    fn closest(&self, now: Millis, target: &NodeId, exclude: &NodeId) -> Vec<Known> {
        let k = self.config.k;
        let mut heap: BinaryHeap<Known> = BinaryHeap::with_capacity(k + 1);
        let mut consider = |known: Known| {
            if heap.len() < k {
                heap.push(known);
            } else if heap.peek().is_some_and(|worst| known < *worst) {
                heap.pop();
                heap.push(known);
            }
        };
        consider(Known {
            distance: Distance::between(&self.self_id, target),
            id: self.self_id,
            hops: 0,
            via: self.self_id,
            learned_at: now,
        });
        for id in self.neighbours.keys().filter(|n| *n != exclude) {
            consider(Known {
                distance: Distance::between(id, target),
                id: *id,
                hops: 1,
                via: *id,
                learned_at: now,
            });
        }
        let way_for = |id: &NodeId, contact: &table::Contact| {
            if id == exclude || self.neighbours.contains_key(id) {
                return None;
            }
            contact
                .ways
                .iter()
                .find(|w| w.via != *exclude && self.alive(w.learned_at, now))
                .copied()
        };
        let near = self
            .table
            .nearest(target, k, |id, contact| way_for(id, contact).is_some());
        for (id, contact) in near {
            if let Some(way) = way_for(id, contact) {
                consider(Known {
                    distance: Distance::between(id, target),
                    id: *id,
                    hops: way.hops,
                    via: way.via,
                    learned_at: way.learned_at,
                });
            }
        }
        heap.into_sorted_vec()
    }

    /// For each neighbour, the contact closest to `target` reachable through it (the neighbour
    /// itself at worst); the best neighbours first. Lookups use it to try every direction once
    /// the closest contacts are exhausted, and to choose the guesses.
    fn neighbour_aims(&self, now: Millis, target: &NodeId) -> Vec<Known> {
        let mut aims: BTreeMap<NodeId, Known> = self
            .neighbours
            .keys()
            .map(|n| {
                let known = Known {
                    distance: Distance::between(n, target),
                    id: *n,
                    hops: 1,
                    via: *n,
                    learned_at: now,
                };
                (*n, known)
            })
            .collect();
        for (id, contact) in self.table.iter() {
            if self.neighbours.contains_key(id) {
                continue;
            }
            let distance = Distance::between(id, target);
            for way in contact
                .ways
                .iter()
                .filter(|w| self.alive(w.learned_at, now))
            {
                if let Some(aim) = aims.get_mut(&way.via)
                    && (distance, way.hops) < (aim.distance, aim.hops)
                {
                    *aim = Known {
                        distance,
                        id: *id,
                        hops: way.hops,
                        via: way.via,
                        learned_at: way.learned_at,
                    };
                }
            }
        }
        let mut aims: Vec<Known> = aims.into_values().collect();
        aims.sort_by_key(|a| (a.distance, a.hops));
        aims
    }

    /// Whether `way` toward `id` is one this node may hold: through a neighbour, not to
    /// ourselves or the neighbour itself, with a hop count in range.
    fn acceptable(&self, id: &NodeId, way: &Way) -> bool {
        *id != self.self_id
            && *id != way.via
            && (2..=self.config.max_hops).contains(&way.hops)
            && self.neighbours.contains_key(&way.via)
    }

    fn learn(&mut self, id: NodeId, way: Way, out: &mut Out) {
        if self.acceptable(&id, &way) {
            let best_via = |t: &Table| t.get(&id).and_then(|c| c.best()).map(|w| w.via);
            let before = best_via(&self.table);
            let bounds = Bounds {
                k: self.config.k,
                max_ways: self.config.max_ways,
                cache_size: self.config.cache_size,
            };
            let learned = self.table.learn(id, way, bounds);
            self.touch(learned, id, out);
            if let Some(after) = best_via(&self.table).filter(|after| Some(*after) != before) {
                out.poison.push((after, id));
            }
        }
    }

    fn touch(&self, learned: Learned, id: NodeId, out: &mut Out) {
        match learned {
            Learned::Nothing => {}
            Learned::Updated => out.touched.push(id),
            // What the table forgets leaves the store: a route nobody here vouches for any longer
            // is how loops start. Neighbours are not told (evictions are frequent under load);
            // one still routing it through us is poisoned when we learn it back through them.
            Learned::Replaced(evicted) => {
                out.touched.push(id);
                out.touched.push(evicted);
            }
            // A way through another neighbour went: the store must forget it too.
            Learned::Narrowed => out.reset.push(id),
        }
    }

    /// Learn the entries of a reply from the neighbour `via`.
    fn learn_entries(&mut self, now: Millis, via: NodeId, entries: &[Entry], out: &mut Out) {
        // Closest last: when the cache is full, what is heard last is kept longest.
        for &Entry(id, hops, age_ms) in entries.iter().rev() {
            let id = NodeId::from(id);
            if id == via || id == self.self_id {
                continue; // the replier itself, or us
            }
            if hops == 0 {
                self.stats.invalid += 1; // only the replier is 0 hops from the replier
                continue;
            }
            if age_ms >= self.config.route_ttl_ms {
                continue;
            }
            let way = Way {
                via,
                hops: hops.saturating_add(1),
                learned_at: now.saturating_sub(u64::from(age_ms)),
            };
            self.learn(id, way, out);
        }
    }

    fn next_lookup_id(&mut self, now: Millis) -> u64 {
        // Ids grow with the clock, so a restarted instance does not reuse the ids of its previous
        // life while other nodes still remember them.
        self.next_lookup = (self.next_lookup + 1).max(now << 10) & MAX_LOOKUP_ID;
        self.next_lookup
    }

    fn send(&self, to: NodeId, message: &Message, actions: &mut Vec<Action>) {
        actions.push(Action::Send {
            to,
            data: wire::encode(message),
        });
    }

    /// Send a walk of lookup `id` toward `aim` (a contact, or a neighbour) through its way.
    fn send_query(&mut self, now: Millis, id: u64, aim: &Known, out: &mut Out) {
        let Some(lookup) = self.lookups.get_mut(&id) else {
            return;
        };
        let budget = if lookup.purpose == Purpose::Join {
            0
        } else {
            self.config.forward_budget
        };
        let walk = (id << WALK_BITS) | lookup.queries.len() as u64;
        lookup.queries.push(Query {
            to: aim.via,
            aim: aim.id,
            sent_at: now,
            state: QueryState::Waiting,
        });
        let find = Find {
            origin: self.self_id.into(),
            lookup: walk,
            target: lookup.target.into(),
            budget,
            travelled: 0,
            aim_distance: aim.distance,
            aim_hops: aim.hops.saturating_sub(1),
        };
        self.send(aim.via, &Message::Find(find), &mut out.actions);
    }

    fn start_lookup(&mut self, now: Millis, target: NodeId, purpose: Purpose, out: &mut Out) {
        let id = self.next_lookup_id(now);
        let mut guesses = Vec::new();
        if purpose == Purpose::Miss {
            out.touched.push(target);
            // The neighbours leading toward the contacts closest to the target.
            guesses = self
                .neighbour_aims(now, &target)
                .into_iter()
                .take(self.config.alpha)
                .map(|aim| aim.via)
                .collect();
        }
        self.lookups.insert(
            id,
            Lookup {
                target,
                purpose,
                queries: Vec::new(),
                guesses,
                done: false,
            },
        );
        self.stats.lookups += 1;
        self.top_up(now, id, out);
    }

    /// A one-hop exchange with a new neighbour: its contacts closest to us.
    fn join(&mut self, now: Millis, peer: NodeId, out: &mut Out) {
        let joins = self
            .lookups
            .values()
            .filter(|l| l.purpose == Purpose::Join)
            .count();
        if joins >= self.config.max_lookups {
            return; // the next refresh catches up
        }
        let id = self.next_lookup_id(now);
        self.lookups.insert(
            id,
            Lookup {
                target: self.self_id,
                purpose: Purpose::Join,
                queries: Vec::new(),
                guesses: Vec::new(),
                done: false,
            },
        );
        self.stats.lookups += 1;
        let aim = Known {
            distance: Distance::between(&peer, &self.self_id),
            id: peer,
            hops: 1,
            via: peer,
            learned_at: now,
        };
        self.send_query(now, id, &aim, out);
        out.actions.push(Action::SetTimer {
            token: LOOKUP_TIMER | id,
            after_ms: self.config.query_timeout_ms,
        });
    }

    /// Keep `α` walks of lookup `id` in flight, aimed at the closest contacts to the target not
    /// aimed at yet — Kademlia's iterative lookup (§2.3), each query a walk — then through the
    /// neighbours no walk has taken yet; end the lookup when none is left to ask, or
    /// `max_queries_per_lookup` were sent.
    fn top_up(&mut self, now: Millis, id: u64, out: &mut Out) {
        let Some(lookup) = self.lookups.get(&id) else {
            return;
        };
        if lookup.done {
            if lookup.waiting() == 0 {
                self.lookups.remove(&id);
            }
            return;
        }
        let limit = match lookup.purpose {
            Purpose::Miss | Purpose::Refresh => self.config.max_queries_per_lookup,
            Purpose::Join => 1,
        };
        let want = self
            .config
            .alpha
            .saturating_sub(lookup.waiting())
            .min(limit.saturating_sub(lookup.queries.len()));
        if want > 0 {
            let target = lookup.target;
            let mut picks: Vec<Known> = self
                .closest(now, &target, &self.self_id)
                .into_iter()
                .filter(|c| c.hops > 0 && !lookup.queries.iter().any(|q| q.aim == c.id))
                .take(want)
                .collect();
            if picks.len() < want {
                // The closest are exhausted: try the directions not taken yet.
                let unused = self.neighbour_aims(now, &target).into_iter().filter(|a| {
                    !lookup
                        .queries
                        .iter()
                        .any(|q| q.to == a.via || q.aim == a.id)
                        && !picks.iter().any(|p| p.via == a.via)
                });
                let more: Vec<Known> = unused.take(want - picks.len()).collect();
                picks.extend(more);
            }
            for aim in &picks {
                self.send_query(now, id, aim, out);
            }
            if !picks.is_empty() {
                out.actions.push(Action::SetTimer {
                    token: LOOKUP_TIMER | id,
                    after_ms: self.config.query_timeout_ms,
                });
            }
        }
        if self.lookups.get(&id).is_some_and(|l| l.waiting() == 0) {
            self.finish(now, id, false, out);
        }
    }

    fn finish(&mut self, now: Millis, id: u64, found: bool, out: &mut Out) {
        let Some(lookup) = self.lookups.get_mut(&id) else {
            return;
        };
        lookup.done = true;
        let (target, purpose, waiting) = (lookup.target, lookup.purpose, lookup.waiting());
        if waiting == 0 {
            self.lookups.remove(&id);
        }
        if purpose != Purpose::Miss {
            return;
        }
        out.reset.push(target);
        if found {
            self.stats.found += 1;
        } else {
            self.stats.failed += 1;
            if self.backoff.len() >= self.config.max_backoffs {
                self.backoff.retain(|_, until| *until > now);
            }
            if self.backoff.len() < self.config.max_backoffs {
                self.backoff
                    .insert(target, now + u64::from(self.config.miss_backoff_ms));
            }
        }
    }

    fn on_link(&mut self, now: Millis, link: &LinkSample, out: &mut Out) {
        let peer = link.peer;
        if peer == self.self_id {
            return;
        }
        if !link.up {
            if self.neighbours.remove(&peer).is_some() {
                self.lost_neighbour(now, &peer, out);
            }
            return;
        }
        match self.neighbours.get_mut(&peer) {
            Some(n) if n.session == link.session => {
                if link.rtt_us.is_some() && n.rtt_us != link.rtt_us {
                    n.rtt_us = link.rtt_us;
                    out.touched.push(peer);
                }
            }
            Some(n) => {
                // A restart: what it told us belongs to its previous life.
                n.session = link.session;
                n.rtt_us = link.rtt_us.or(n.rtt_us);
                self.lost_neighbour(now, &peer, out);
                out.touched.push(peer);
                self.join(now, peer, out);
            }
            None => {
                if self.neighbours.len() >= self.config.max_neighbours {
                    return;
                }
                self.neighbours.insert(
                    peer,
                    Neighbour {
                        session: link.session,
                        rtt_us: link.rtt_us,
                    },
                );
                out.touched.push(peer);
                self.join(now, peer, out);
            }
        }
    }

    /// Everything that went through `peer` is gone (it went down or restarted).
    fn lost_neighbour(&mut self, now: Millis, peer: &NodeId, out: &mut Out) {
        for id in self.table.forget_via(peer) {
            self.lost_ways(id, out);
        }
        out.touched.push(*peer);
        self.relays.retain(|_, r| r.from != *peer && r.to != *peer);
        let affected: Vec<u64> = self
            .lookups
            .iter_mut()
            .filter_map(|(id, lookup)| {
                let mut hit = false;
                for q in &mut lookup.queries {
                    if q.to == *peer && q.state == QueryState::Waiting {
                        q.state = QueryState::TimedOut;
                        hit = true;
                    }
                }
                if lookup.guesses.contains(peer) {
                    lookup.guesses.retain(|g| g != peer);
                    out.touched.push(lookup.target);
                }
                hit.then_some(*id)
            })
            .collect();
        for id in affected {
            self.top_up(now, id, out);
        }
    }

    fn on_miss(&mut self, now: Millis, dest: NodeId, out: &mut Out) {
        if dest == self.self_id {
            return;
        }
        if self.has_route(now, &dest) {
            self.table.touch(&dest);
            out.touched.push(dest); // the store lost it (expiry, eviction): offer it again
            return;
        }
        if self.running_miss(&dest).is_some()
            || self.backoff.get(&dest).is_some_and(|until| *until > now)
            || self.neighbours.is_empty()
        {
            return;
        }
        let running = self
            .lookups
            .values()
            .filter(|l| l.purpose == Purpose::Miss)
            .count();
        if running >= self.config.max_lookups {
            self.stats.misses_dropped += 1;
            return;
        }
        self.backoff.remove(&dest);
        self.start_lookup(now, dest, Purpose::Miss, out);
    }

    fn on_message(&mut self, now: Millis, message: &PeerMessage, out: &mut Out) {
        if !self.neighbours.contains_key(&message.sender) {
            self.stats.not_neighbour += 1;
            return;
        }
        match wire::decode(&message.data, self.config.max_message_bytes) {
            Ok(Message::Find(find)) => self.on_find(now, message.sender, find, out),
            Ok(Message::Found(found)) => self.on_found(now, message.sender, found, out),
            Ok(Message::Poison(poison)) => self.on_poison(message.sender, &poison, out),
            Err(Refusal::Oversized) => self.stats.oversized += 1,
            Err(Refusal::Version) => self.stats.bad_version += 1,
            Err(Refusal::Malformed) => self.stats.malformed += 1,
        }
    }

    fn on_find(&mut self, now: Millis, sender: NodeId, find: Find, out: &mut Out) {
        let origin = NodeId::from(find.origin);
        let target = NodeId::from(find.target);
        if find.travelled >= self.config.max_hops {
            self.stats.invalid += 1;
            return;
        }
        // The request came a way we can take back to its origin.
        let back = Way {
            via: sender,
            hops: find.travelled + 1,
            learned_at: now,
        };
        self.learn(origin, back, out);

        let closest = self.closest(now, &target, &sender);
        let known = closest.first().is_some_and(|c| c.id == target);
        let key = (origin, find.lookup);
        // A walk that comes back to its origin (its best way lies through us) is answered here:
        // a reply we relayed would reach us from a neighbour we did not ask.
        let next = closest.first().filter(|best| {
            origin != self.self_id
                && !known
                && find.budget.min(self.config.forward_budget) > 0
                && best.hops > 0
                && (best.distance, best.hops) <= (find.aim_distance, find.aim_hops)
                && !self.relays.contains_key(&key)
        });
        if let Some(best) = next.copied()
            && self.room_for_relay(now)
        {
            self.relays.insert(
                key,
                Relay {
                    from: sender,
                    to: best.via,
                    expires_at: now + u64::from(self.config.query_timeout_ms),
                },
            );
            let forward = Find {
                budget: find.budget.min(self.config.forward_budget) - 1,
                travelled: find.travelled + 1,
                aim_distance: best.distance,
                aim_hops: best.hops - 1,
                ..find
            };
            self.stats.forwarded += 1;
            self.send(best.via, &Message::Find(forward), &mut out.actions);
            return;
        }
        let entries = closest
            .iter()
            .map(|c| {
                let age = now.saturating_sub(c.learned_at).min(u64::from(u32::MAX)) as u32;
                Entry(c.id.into(), c.hops, age)
            })
            .collect();
        self.stats.answered += 1;
        let reply = Found {
            origin: find.origin,
            lookup: find.lookup,
            target: find.target,
            entries,
        };
        self.send(sender, &Message::Found(reply), &mut out.actions);
    }

    fn room_for_relay(&mut self, now: Millis) -> bool {
        if self.relays.len() >= self.config.max_relays {
            self.relays.retain(|_, r| r.expires_at > now);
        }
        self.relays.len() < self.config.max_relays
    }

    fn on_found(&mut self, now: Millis, sender: NodeId, found: Found, out: &mut Out) {
        let origin = NodeId::from(found.origin);
        let target = NodeId::from(found.target);
        if origin != self.self_id {
            self.relay_back(now, sender, origin, target, found, out);
            return;
        }
        let id = found.lookup >> WALK_BITS;
        let walk = (found.lookup & ((1 << WALK_BITS) - 1)) as usize;
        let expected = self.lookups.get_mut(&id).and_then(|lookup| {
            let query = lookup
                .queries
                .get_mut(walk)
                .filter(|q| q.to == sender && q.state != QueryState::Answered)?;
            (lookup.target == target).then(|| {
                query.state = QueryState::Answered;
                (lookup.purpose, lookup.done)
            })
        });
        let Some((purpose, done)) = expected else {
            self.stats.unexpected += 1;
            return;
        };
        self.learn_entries(now, sender, &found.entries, out);
        if purpose == Purpose::Miss && !done && self.has_route(now, &target) {
            self.finish(now, id, true, out);
        } else {
            self.top_up(now, id, out);
        }
    }

    /// A reply to a request we forwarded: learn from it, and pass it back one hop.
    fn relay_back(
        &mut self,
        now: Millis,
        sender: NodeId,
        origin: NodeId,
        target: NodeId,
        found: Found,
        out: &mut Out,
    ) {
        let key = (origin, found.lookup);
        let Some(relay) = self.relays.get(&key).filter(|r| r.to == sender).copied() else {
            self.stats.unexpected += 1;
            return;
        };
        self.relays.remove(&key);
        self.learn_entries(now, sender, &found.entries, out);
        if !self.neighbours.contains_key(&relay.from) {
            return;
        }
        let max_hops = self.config.max_hops;
        // Split horizon here too: what we reach through the requester is not passed back to it.
        let through_requester = |id: &NodeId| {
            *id == relay.from
                || self
                    .table
                    .get(id)
                    .and_then(|c| c.best())
                    .is_some_and(|w| w.via == relay.from)
        };
        let entries = found
            .entries
            .iter()
            .filter(|Entry(id, _, _)| !through_requester(&NodeId::from(*id)))
            .filter_map(|&Entry(id, hops, age)| {
                let hops = hops.checked_add(1).filter(|h| *h <= max_hops)?;
                Some(Entry(id, hops, age))
            })
            .collect();
        let back = Found {
            origin: origin.into(),
            lookup: found.lookup,
            target: WireId::from(target),
            entries,
        };
        self.send(relay.from, &Message::Found(back), &mut out.actions);
    }

    /// A neighbour asks not to be used toward these contacts: drop our ways through it, and pass
    /// the news on for those we no longer reach at all. It can only remove routes through itself.
    fn on_poison(&mut self, sender: NodeId, poison: &Poison, out: &mut Out) {
        for id in &poison.ids {
            let id = NodeId::from(*id);
            if self.table.forget_way(&id, &sender).is_some() {
                self.lost_ways(id, out);
            }
        }
    }

    /// Some ways to `id` are gone. If others are left, the store drops the lost ones (withdraw,
    /// then offer the rest) and the neighbour of the best one left is asked not to route `id`
    /// through us; if none are, the store forgets `id` and every neighbour is told.
    fn lost_ways(&mut self, id: NodeId, out: &mut Out) {
        match self.table.get(&id).and_then(|c| c.best()) {
            Some(best) => {
                out.reset.push(id);
                out.poison.push((best.via, id));
            }
            None => {
                out.touched.push(id);
                if !self.neighbours.contains_key(&id) {
                    out.lost.push(id);
                }
            }
        }
    }

    fn on_lookup_timer(&mut self, now: Millis, id: u64, out: &mut Out) {
        let Some(lookup) = self.lookups.get_mut(&id) else {
            return;
        };
        let timeout = u64::from(self.config.query_timeout_ms);
        for q in &mut lookup.queries {
            if q.state == QueryState::Waiting && q.sent_at + timeout <= now {
                q.state = QueryState::TimedOut;
            }
        }
        self.top_up(now, id, out);
    }

    fn on_refresh(&mut self, now: Millis, out: &mut Out) {
        let ttl = u64::from(self.config.route_ttl_ms);
        if now >= ttl {
            for id in self.table.expire(now - ttl + 1) {
                self.lost_ways(id, out);
            }
        }
        self.relays.retain(|_, r| r.expires_at > now);
        self.backoff.retain(|_, until| *until > now);
        // Re-offer everything with its decayed confidence and remaining TTL.
        out.touched.extend(self.table.iter().map(|(id, _)| *id));
        out.touched.extend(self.neighbours.keys().copied());
        let refreshing = self
            .lookups
            .values()
            .any(|l| l.purpose == Purpose::Refresh && !l.done);
        if !refreshing && !self.neighbours.is_empty() {
            let round = self.refresh_round;
            self.refresh_round += 1;
            let target = if round.is_multiple_of(2) {
                self.self_id
            } else {
                let w = self.self_id.to_words();
                NodeId::from_words([
                    mix(w[0] ^ round),
                    mix(w[1] ^ round.rotate_left(16)),
                    mix(w[2] ^ round.rotate_left(32)),
                    mix(w[3] ^ round.rotate_left(48)),
                ])
            };
            self.start_lookup(now, target, Purpose::Refresh, out);
        }
        out.actions.push(Action::SetTimer {
            token: REFRESH_TIMER,
            after_ms: self.config.refresh_ms,
        });
    }

    /// Turn what the observations touched into offers and withdrawals, in destination order.
    fn flush(&self, now: Millis, out: Out) -> Vec<Action> {
        let Out {
            mut actions,
            mut touched,
            mut reset,
            lost,
            poison,
        } = out;
        // Poison what is still true at the end of the batch: contacts still unreachable go to
        // every neighbour, a best way to the neighbour it still goes through.
        let mut notices: BTreeMap<NodeId, Vec<NodeId>> = BTreeMap::new();
        for id in lost.iter().filter(|id| !self.has_route(now, id)) {
            for neighbour in self.neighbours.keys() {
                notices.entry(*neighbour).or_default().push(*id);
            }
        }
        for (via, id) in poison {
            let best = self.table.get(&id).and_then(|c| c.best()).map(|w| w.via);
            if best == Some(via) && self.neighbours.contains_key(&via) {
                notices.entry(via).or_default().push(id);
            }
        }
        for (neighbour, mut ids) in notices {
            ids.sort();
            ids.dedup();
            ids.truncate(MAX_POISON);
            for chunk in ids.chunks(wire::MAX_ENTRIES) {
                let message = Message::Poison(Poison {
                    ids: chunk.iter().map(|id| WireId::from(*id)).collect(),
                });
                self.send(neighbour, &message, &mut actions);
            }
        }
        reset.sort();
        reset.dedup();
        touched.sort();
        touched.dedup();
        touched.retain(|d| *d != self.self_id && reset.binary_search(d).is_err());
        for dest in reset {
            // Withdraw first: the guesses went through other neighbours than the answer.
            actions.push(Action::Withdraw(dest));
            let hops = self.hops_for(now, &dest);
            if !hops.is_empty() {
                actions.push(Action::Offer { dest, hops });
            }
        }
        for dest in touched {
            actions.push(Action::offer_or_withdraw(dest, self.hops_for(now, &dest)));
        }
        actions
    }
}

impl ProofSource for DhtDirectory {
    fn info() -> PluginInfo {
        PluginInfo::new(
            "dht-directory",
            env!("CARGO_PKG_VERSION"),
            "a Kademlia-style directory of node ids, looked up hop by hop through neighbours",
        )
    }

    fn init(config: &[u8], self_id: NodeId) -> Result<Self, String> {
        let config: Config = cbor::config(config)?;
        config.check()?;
        Ok(DhtDirectory {
            config,
            self_id,
            neighbours: BTreeMap::new(),
            table: Table::new(self_id),
            lookups: BTreeMap::new(),
            relays: BTreeMap::new(),
            backoff: BTreeMap::new(),
            next_lookup: 0,
            refresh_round: 0,
            timer_set: false,
            stats: Stats::default(),
        })
    }

    fn observe(&mut self, now: Millis, observations: &[Observation]) -> Vec<Action> {
        let mut out = Out::default();
        if !self.timer_set {
            self.timer_set = true;
            out.actions.push(Action::SetTimer {
                token: REFRESH_TIMER,
                after_ms: self.config.refresh_ms,
            });
        }
        for observation in observations {
            match observation {
                Observation::Link(link) => self.on_link(now, link, &mut out),
                Observation::Miss(dest) => self.on_miss(now, *dest, &mut out),
                Observation::Message(message) => self.on_message(now, message, &mut out),
                Observation::Timer(REFRESH_TIMER) => self.on_refresh(now, &mut out),
                Observation::Timer(token) if token & LOOKUP_TIMER != 0 => {
                    self.on_lookup_timer(now, token & !LOOKUP_TIMER, &mut out)
                }
                _ => {}
            }
        }
        self.flush(now, out)
    }

    fn query(&mut self, now: Millis, dest: &NodeId) -> Vec<NextHop> {
        self.table.touch(dest);
        self.hops_for(now, dest)
    }

    fn snapshot(&self) -> Vec<u8> {
        cbor::encode(&SnapshotOut {
            version: SNAPSHOT_VERSION,
            neighbours: &self.neighbours,
            table: &self.table,
            next_lookup: self.next_lookup,
            refresh_round: self.refresh_round,
        })
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        let snapshot: SnapshotIn = cbor::decode(state)?;
        if snapshot.version != SNAPSHOT_VERSION {
            return Err(format!(
                "snapshot version {} is not {SNAPSHOT_VERSION}",
                snapshot.version
            ));
        }
        // Rebuild through the same rules as learning, so the bounds of this version's
        // configuration hold whatever the snapshot carries.
        let mut neighbours = snapshot.neighbours;
        neighbours.remove(&self.self_id);
        while neighbours.len() > self.config.max_neighbours {
            neighbours.pop_last();
        }
        self.neighbours = neighbours;
        self.table = Table::new(self.self_id);
        let mut ignored = Out::default();
        // In the order they were heard of, so the cache keeps the same ones.
        let mut contacts: Vec<(&NodeId, &table::Contact)> = snapshot.table.iter().collect();
        contacts.sort_by_key(|(_, c)| c.heard);
        for (id, contact) in contacts {
            for way in &contact.ways {
                self.learn(*id, *way, &mut ignored);
            }
        }
        self.next_lookup = self.next_lookup.max(snapshot.next_lookup);
        self.refresh_round = snapshot.refresh_round;
        Ok(())
    }
}

/// The bytes of a lookup request as an instance of this version sends them: `origin` looks for
/// `target` (lookup `lookup`), the request having `travelled` hops and `budget` more to go. For
/// tests, benchmarks and tools that speak the protocol; instances build their own.
pub fn lookup_request(
    origin: NodeId,
    lookup: u64,
    target: NodeId,
    budget: u8,
    travelled: u8,
) -> Vec<u8> {
    wire::encode(&Message::Find(Find {
        origin: origin.into(),
        lookup,
        target: target.into(),
        budget,
        travelled,
        // Aimed at "anything closer than the far end of the id space": the receiver forwards
        // toward whatever it knows closest, as far as the budget goes.
        aim_distance: Distance([u64::MAX; 4]),
        aim_hops: u8::MAX,
    }))
}

routefabric_plugin_sdk::export_proof_source!(DhtDirectory);

#[cfg(test)]
mod tests;
