//! XOR distance, k-buckets and the routing table of learned contacts.

use std::cmp::Reverse;
use std::collections::BTreeMap;

use routefabric_plugin_sdk::prelude::*;
use serde::{Deserialize, Serialize};

/// The XOR distance between two ids (Kademlia §2.1), as a 256-bit big-endian number in four
/// words: comparing two distances compares the numbers.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub(crate) struct Distance(pub(crate) [u64; 4]);

impl Distance {
    /// `a XOR b`.
    pub(crate) fn between(a: &NodeId, b: &NodeId) -> Distance {
        let (a, b) = (a.to_words(), b.to_words());
        Distance([a[0] ^ b[0], a[1] ^ b[1], a[2] ^ b[2], a[3] ^ b[3]])
    }

    /// The k-bucket a node at this distance falls in: the position of the highest set bit, 255
    /// for the half of the id space farthest away, 0 for the one id that differs in the last bit
    /// only. `None` for distance zero (the node itself).
    pub(crate) fn bucket(&self) -> Option<u8> {
        self.0.iter().enumerate().find_map(|(i, word)| {
            (*word != 0).then(|| (255 - (i as u32 * 64 + word.leading_zeros())) as u8)
        })
    }
}

/// The first and the last id of bucket `bucket` of `self_id`, in id order. A bucket is a
/// contiguous range of ids: they share every bit above `bucket` with `self_id`, differ at
/// `bucket`, and range freely below it.
pub(crate) fn bucket_range(self_id: &NodeId, bucket: u8) -> (NodeId, NodeId) {
    let mut lo = self_id.to_words();
    let word = 3 - usize::from(bucket / 64);
    let bit = u32::from(bucket % 64);
    lo[word] ^= 1u64 << bit;
    // Clear everything below the bucket's bit.
    let below = (1u64 << bit) - 1;
    lo[word] &= !below;
    for w in lo.iter_mut().skip(word + 1) {
        *w = 0;
    }
    let mut hi = lo;
    hi[word] |= below;
    for w in hi.iter_mut().skip(word + 1) {
        *w = u64::MAX;
    }
    (NodeId::from_words(lo), NodeId::from_words(hi))
}

/// One way to reach a contact: through which neighbour, in how many hops, and since when the
/// knowledge dates (the age carried in replies is subtracted, so relaying never refreshes it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Way {
    /// The neighbour of ours that leads toward the contact.
    pub(crate) via: NodeId,
    /// Hops from this node to the contact along that way (≥ 2: one-hop contacts are neighbours).
    pub(crate) hops: u8,
    /// When the knowledge was fresh, on this node's clock.
    pub(crate) learned_at: Millis,
}

impl Way {
    /// Preference among ways: fewer hops, then fresher, then by neighbour id (for determinism).
    fn rank(&self) -> (u8, Reverse<Millis>, NodeId) {
        (self.hops, Reverse(self.learned_at), self.via)
    }
}

/// A learned contact: its ways, best first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Contact {
    /// At most `max_ways`, sorted by preference.
    pub(crate) ways: Vec<Way>,
    /// When this node last heard of or used it, as a sequence number of the table (not how old
    /// the knowledge is): the cache keeps the most recently heard.
    pub(crate) heard: u64,
}

impl Contact {
    /// The best way, if any.
    pub(crate) fn best(&self) -> Option<&Way> {
        self.ways.first()
    }

    /// How strongly a bucket wants to keep the contact (smaller is better): the hops of its best
    /// way. A shorter route wins a place in a full bucket, as in proximity neighbour selection
    /// (Gummadi et al. 2003); at equal length the entry already there stays, as Kademlia prefers
    /// long-known contacts (§2.2). Contacts nobody re-confirms leave by TTL, making room.
    fn keep_rank(&self) -> u8 {
        self.best().map_or(u8::MAX, |w| w.hops)
    }
}

/// The routing table: learned contacts (not the neighbours, which the plugin keeps apart), at most
/// `k` per k-bucket of the XOR distance from this node, at most `max_ways` ways each. With 256
/// buckets that bounds them to `256 × k`; in a network of `n` nodes only about `log₂(n / k)`
/// buckets fill, so they hold a few hundred.
///
/// Beside the buckets, a **cache** keeps what a full bucket refused — Kademlia's replacement cache
/// (§4.1) — at most `cache_size` contacts, the least recently heard of going first. Unlike
/// Kademlia's, it routes too: a walk passes only through nodes that learned the contacts on its
/// way (requests teach their origin, replies their entries), and if those nodes dropped them
/// because a bucket was full, the next walk toward them would stop short. Recent knowledge stays
/// consistent along recent paths; the buckets keep the long-lived structure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Table {
    self_id: NodeId,
    contacts: BTreeMap<NodeId, Contact>,
    cache: BTreeMap<NodeId, Contact>,
    /// The cache in the order it was heard of: `heard` → id, for eviction in O(log n). Rebuilt,
    /// not stored: a snapshot is restored contact by contact.
    #[serde(skip)]
    cache_order: BTreeMap<u64, NodeId>,
    /// The last `heard` number given out.
    heard: u64,
}

/// What a call to [`Table::learn`] changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Learned {
    /// Nothing: the way was no better than what is kept.
    Nothing,
    /// The contact's ways changed, or it entered the table.
    Updated,
    /// The way entered and pushed out a longer way through another neighbour.
    Narrowed,
    /// The contact entered the table and pushed out this one.
    Replaced(NodeId),
}

/// Limits of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bounds {
    /// Contacts per bucket.
    pub(crate) k: usize,
    /// Ways per contact.
    pub(crate) max_ways: usize,
    /// Contacts in the cache.
    pub(crate) cache_size: usize,
}

impl Table {
    /// An empty table for `self_id`.
    pub(crate) fn new(self_id: NodeId) -> Self {
        Table {
            self_id,
            contacts: BTreeMap::new(),
            cache: BTreeMap::new(),
            cache_order: BTreeMap::new(),
            heard: 0,
        }
    }

    /// Number of contacts, the cache's included.
    pub(crate) fn len(&self) -> usize {
        self.contacts.len() + self.cache.len()
    }

    /// The contact `id`, if known.
    pub(crate) fn get(&self, id: &NodeId) -> Option<&Contact> {
        self.contacts.get(id).or_else(|| self.cache.get(id))
    }

    /// Every contact: the buckets' in id order, then the cache's in id order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&NodeId, &Contact)> {
        self.contacts.iter().chain(self.cache.iter())
    }

    /// At least the `k` contacts closest to `target` among those `accept` takes (all of them if
    /// fewer), in no particular order, visiting only a few more than `k`.
    ///
    /// The ids sharing a prefix with `target` are a contiguous range in id order, and the
    /// contacts in "bucket `b` of `target`" are all closer to it than those of bucket `b + 1`. So
    /// the search starts at the lowest bucket holding a contact — the one of the contact next to
    /// `target` in id order, before or after — and takes whole buckets upward until `k` are taken:
    /// about `log₂ k` range scans of a few entries, instead of a pass over the table per request.
    pub(crate) fn nearest(
        &self,
        target: &NodeId,
        k: usize,
        mut accept: impl FnMut(&NodeId, &Contact) -> bool,
    ) -> Vec<(&NodeId, &Contact)> {
        use std::ops::Bound::{Excluded, Unbounded};
        let maps = [&self.contacts, &self.cache];
        let mut out = Vec::with_capacity(2 * k);
        for map in maps {
            if let Some((id, contact)) = map.get_key_value(target)
                && accept(id, contact)
            {
                out.push((id, contact));
            }
        }
        let bucket_of = |id: &NodeId| Distance::between(id, target).bucket();
        let start = maps
            .iter()
            .flat_map(|map| {
                let before = map
                    .range(..*target)
                    .next_back()
                    .and_then(|(id, _)| bucket_of(id));
                let after = map
                    .range((Excluded(*target), Unbounded))
                    .next()
                    .and_then(|(id, _)| bucket_of(id));
                before.into_iter().chain(after)
            })
            .min();
        let Some(start) = start else {
            return out;
        };
        // Both maps bucket by bucket, so that a dense cache near the target spares a pass over
        // a sparse half of the buckets.
        for bucket in start..=u8::MAX {
            if out.len() >= k {
                break;
            }
            let (lo, hi) = bucket_range(target, bucket);
            for map in maps {
                for (id, contact) in map.range(lo..=hi) {
                    if accept(id, contact) {
                        out.push((id, contact));
                    }
                }
            }
        }
        out
    }

    /// Mark `id` as used, so that the cache keeps it longer.
    pub(crate) fn touch(&mut self, id: &NodeId) {
        self.heard += 1;
        if let Some(contact) = self.contacts.get_mut(id) {
            contact.heard = self.heard;
        } else if let Some(contact) = self.cache.get_mut(id) {
            self.cache_order.remove(&contact.heard);
            contact.heard = self.heard;
            self.cache_order.insert(self.heard, *id);
        }
    }

    /// Contacts in bucket `bucket`.
    #[cfg(test)]
    pub(crate) fn bucket(&self, bucket: u8) -> impl Iterator<Item = (&NodeId, &Contact)> {
        let (lo, hi) = bucket_range(&self.self_id, bucket);
        self.contacts.range(lo..=hi)
    }

    /// Record that `id` is reachable through `way`. The neighbour's latest word on a way through
    /// it replaces its earlier one (unless it is older); ways through other neighbours compete
    /// for the `max_ways` places; a new contact takes a place in its bucket if there is one or it
    /// is shorter than the longest there (which moves to the cache), else goes to the cache.
    pub(crate) fn learn(&mut self, id: NodeId, way: Way, bounds: Bounds) -> Learned {
        let Some(bucket) = Distance::between(&self.self_id, &id).bucket() else {
            return Learned::Nothing; // ourselves
        };
        self.heard += 1;
        if let Some(contact) = self.contacts.get_mut(&id) {
            contact.heard = self.heard;
            return merge(contact, way, bounds.max_ways);
        }
        if let Some(contact) = self.cache.get_mut(&id) {
            self.cache_order.remove(&contact.heard);
            contact.heard = self.heard;
            self.cache_order.insert(self.heard, id);
            return merge(contact, way, bounds.max_ways);
        }
        let new = Contact {
            ways: vec![way],
            heard: self.heard,
        };
        let (lo, hi) = bucket_range(&self.self_id, bucket);
        let mut members = 0usize;
        let mut worst: Option<(&NodeId, &Contact)> = None;
        for (member, contact) in self.contacts.range(lo..=hi) {
            members += 1;
            if worst.is_none_or(|(_, w)| contact.keep_rank() >= w.keep_rank()) {
                worst = Some((member, contact));
            }
        }
        if members < bounds.k.max(1) {
            self.contacts.insert(id, new);
            return Learned::Updated;
        }
        let (id, new) = match worst {
            Some((member, contact)) if new.keep_rank() < contact.keep_rank() => {
                let member = *member;
                let demoted = self.contacts.remove(&member).unwrap_or_default();
                self.contacts.insert(id, new);
                (member, demoted)
            }
            _ => (id, new),
        };
        self.cache_insert(id, new, bounds.cache_size)
            .map_or(Learned::Updated, Learned::Replaced)
    }

    /// Put a contact in the cache; returns the contact pushed out, if one was.
    fn cache_insert(&mut self, id: NodeId, contact: Contact, cache_size: usize) -> Option<NodeId> {
        if cache_size == 0 {
            return Some(id);
        }
        let mut evicted = None;
        if self.cache.len() >= cache_size
            && let Some((_, oldest)) = self.cache_order.pop_first()
        {
            self.cache.remove(&oldest);
            evicted = Some(oldest);
        }
        self.cache_order.insert(contact.heard, id);
        self.cache.insert(id, contact);
        evicted
    }

    /// Forget every way through `via`; returns the contacts whose ways changed.
    pub(crate) fn forget_via(&mut self, via: &NodeId) -> Vec<NodeId> {
        self.retain_ways(|w| w.via != *via)
    }

    /// Drop ways learned before `oldest`; returns the contacts whose ways changed.
    pub(crate) fn expire(&mut self, oldest: Millis) -> Vec<NodeId> {
        self.retain_ways(|w| w.learned_at >= oldest)
    }

    fn retain_ways(&mut self, keep: impl Fn(&Way) -> bool) -> Vec<NodeId> {
        let mut changed = Vec::new();
        let order = &mut self.cache_order;
        for (map, cached) in [(&mut self.contacts, false), (&mut self.cache, true)] {
            map.retain(|id, contact| {
                let before = contact.ways.len();
                contact.ways.retain(&keep);
                if contact.ways.len() != before {
                    changed.push(*id);
                }
                if contact.ways.is_empty() && cached {
                    order.remove(&contact.heard);
                }
                !contact.ways.is_empty()
            });
        }
        changed
    }
}

/// Merge `way` into `contact`.
fn merge(contact: &mut Contact, way: Way, max_ways: usize) -> Learned {
    match contact.ways.iter_mut().find(|w| w.via == way.via) {
        Some(existing) if existing.learned_at > way.learned_at => return Learned::Nothing,
        Some(existing) if *existing == way => return Learned::Nothing,
        Some(existing) => *existing = way,
        None => contact.ways.push(way),
    }
    contact.ways.sort_by_key(Way::rank);
    let kept = contact.ways.len().min(max_ways.max(1));
    let dropped = contact.ways.len() - kept;
    let dropped_new = contact.ways[kept..].contains(&way);
    contact.ways.truncate(kept);
    match (dropped, dropped_new) {
        (0, _) => Learned::Updated,
        (_, true) => Learned::Nothing,
        (_, false) => Learned::Narrowed,
    }
}

impl Table {
    /// Forget the way to `id` through `via`; what is left of the contact (`None` if nothing).
    pub(crate) fn forget_way(&mut self, id: &NodeId, via: &NodeId) -> Option<Option<&Contact>> {
        let contact = self.contacts.get_mut(id).or(self.cache.get_mut(id))?;
        let before = contact.ways.len();
        contact.ways.retain(|w| w.via != *via);
        if contact.ways.len() == before {
            return None; // no way through `via`: nothing changed
        }
        if contact.ways.is_empty() {
            self.contacts.remove(id);
            if let Some(gone) = self.cache.remove(id) {
                self.cache_order.remove(&gone.heard);
            }
            return Some(None);
        }
        Some(self.get(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> NodeId {
        NodeId::from_index(n)
    }

    fn way(via: u64, hops: u8, learned_at: Millis) -> Way {
        Way {
            via: id(via),
            hops,
            learned_at,
        }
    }

    #[test]
    fn distance_is_xor_and_orders_numerically() {
        assert_eq!(Distance::between(&id(5), &id(5)), Distance::default());
        assert_eq!(
            Distance::between(&id(0b1010), &id(0b0110)).0,
            [0, 0, 0, 0b1100]
        );
        let top = NodeId::from_words([1 << 63, 0, 0, 0]);
        assert!(Distance::between(&id(0), &top) > Distance::between(&id(0), &id(u64::MAX)));
        // Symmetric, and the triangle inequality of XOR: d(a,c) ≤ d(a,b) ⊕ d(b,c) as numbers.
        assert_eq!(
            Distance::between(&id(3), &id(9)),
            Distance::between(&id(9), &id(3))
        );
    }

    #[test]
    fn buckets_are_the_highest_differing_bit() {
        let me = id(0);
        assert_eq!(Distance::between(&me, &me).bucket(), None);
        assert_eq!(Distance::between(&me, &id(1)).bucket(), Some(0));
        assert_eq!(Distance::between(&me, &id(2)).bucket(), Some(1));
        assert_eq!(Distance::between(&me, &id(3)).bucket(), Some(1));
        assert_eq!(Distance::between(&me, &id(1 << 63)).bucket(), Some(63));
        let far = NodeId::from_words([0, 0, 1, 0]);
        assert_eq!(Distance::between(&me, &far).bucket(), Some(64));
        let farthest = NodeId::from_words([1 << 63, 0, 0, 0]);
        assert_eq!(Distance::between(&me, &farthest).bucket(), Some(255));
    }

    #[test]
    fn a_bucket_range_holds_exactly_the_ids_of_that_bucket() {
        let me = NodeId::from_words([0xdead_beef, 0x1234, 0xffff_0000_ffff_0000, 0b1011_0110]);
        for bucket in [0u8, 1, 3, 7, 63, 64, 100, 191, 192, 255] {
            let (lo, hi) = bucket_range(&me, bucket);
            assert!(lo <= hi);
            assert_eq!(Distance::between(&me, &lo).bucket(), Some(bucket));
            assert_eq!(Distance::between(&me, &hi).bucket(), Some(bucket));
            // Just outside the range: another bucket.
            let (lo_w, hi_w) = (lo.to_words(), hi.to_words());
            if lo_w != [0; 4] {
                let below = NodeId::from_words(sub_one(lo_w));
                assert_ne!(Distance::between(&me, &below).bucket(), Some(bucket));
            }
            if hi_w != [u64::MAX; 4] {
                let above = NodeId::from_words(add_one(hi_w));
                assert_ne!(Distance::between(&me, &above).bucket(), Some(bucket));
            }
        }
    }

    fn add_one(mut w: [u64; 4]) -> [u64; 4] {
        for i in (0..4).rev() {
            let (v, carry) = w[i].overflowing_add(1);
            w[i] = v;
            if !carry {
                break;
            }
        }
        w
    }

    fn sub_one(mut w: [u64; 4]) -> [u64; 4] {
        for i in (0..4).rev() {
            let (v, borrow) = w[i].overflowing_sub(1);
            w[i] = v;
            if !borrow {
                break;
            }
        }
        w
    }

    fn bounds(k: usize, max_ways: usize, cache_size: usize) -> Bounds {
        Bounds {
            k,
            max_ways,
            cache_size,
        }
    }

    #[test]
    fn a_full_bucket_keeps_the_shorter_routes_and_caches_the_rest() {
        let mut t = Table::new(id(0));
        let b = bounds(4, 3, 2);
        // Bucket 4 of id 0 holds ids 16..=31.
        for n in 16..20 {
            assert_eq!(t.learn(id(n), way(2, 5, n), b), Learned::Updated);
        }
        assert_eq!(t.bucket(4).count(), 4);
        // Not shorter: to the cache.
        assert_eq!(t.learn(id(20), way(2, 5, 20), b), Learned::Updated);
        assert_eq!(t.bucket(4).count(), 4);
        assert_eq!(t.len(), 5);
        // Shorter: takes the place of one of the longest (the last among equals), which moves
        // to the cache.
        assert_eq!(t.learn(id(21), way(2, 3, 21), b), Learned::Updated);
        assert!(t.bucket(4).any(|(n, _)| *n == id(21)));
        assert!(!t.bucket(4).any(|(n, _)| *n == id(19)));
        assert_eq!(t.get(&id(19)).unwrap().best().unwrap().hops, 5);
        // The cache is full (20, 19): the least recently learned goes.
        assert_eq!(t.learn(id(22), way(2, 5, 22), b), Learned::Replaced(id(19)));
        assert_eq!(t.len(), 6);
        // Other buckets are unaffected by this one being full.
        assert_eq!(t.learn(id(40), way(2, 9, 0), b), Learned::Updated);
        assert_eq!(t.bucket(5).count(), 1);
        // Cached contacts learn, expire and go with their neighbour like any other.
        assert_eq!(t.learn(id(22), way(3, 4, 30), b), Learned::Updated);
        assert_eq!(t.get(&id(22)).unwrap().best().unwrap().via, id(3));
        let order_matches = |t: &Table| {
            t.cache_order.len() == t.cache.len()
                && t.cache_order.iter().all(|(h, id)| t.cache[id].heard == *h)
        };
        assert!(order_matches(&t));
        t.touch(&id(20));
        assert!(order_matches(&t));
        let mut gone = t.forget_via(&id(2));
        gone.sort();
        assert_eq!(gone.len(), 7);
        assert_eq!(t.len(), 1);
        assert!(order_matches(&t));
        assert_eq!(t.expire(31), vec![id(22)]);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn nearest_finds_the_k_closest_without_scanning_everything() {
        let mut t = Table::new(id(0));
        let mix = |n: u64| n.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (n << 7);
        let ids: Vec<NodeId> = (1..3_000u64)
            .map(|n| NodeId::from_words([mix(n), mix(n + 1), 0, n]))
            .collect();
        for (n, i) in ids.iter().enumerate() {
            t.learn(*i, way(2, 2 + (n % 5) as u8, 0), bounds(20, 3, 1_024));
        }
        for target in [ids[7], NodeId::from_words([5, 6, 7, 8]), id(0), ids[2_000]] {
            let mut visited = 0;
            let near = t.nearest(&target, 8, |_, c| {
                visited += 1;
                c.best().is_some_and(|w| w.hops != 3) // a filter, as requests apply one
            });
            let mut got: Vec<Distance> = near
                .iter()
                .map(|(i, _)| Distance::between(i, &target))
                .collect();
            got.sort();
            got.truncate(8);
            let mut all: Vec<Distance> = t
                .iter()
                .filter(|(_, c)| c.best().is_some_and(|w| w.hops != 3))
                .map(|(i, _)| Distance::between(i, &target))
                .collect();
            all.sort();
            all.truncate(8);
            assert_eq!(got, all);
            assert!(visited < 200, "visited {visited} of {}", t.len());
        }
    }

    #[test]
    fn ways_are_kept_best_first_and_bounded() {
        let mut t = Table::new(id(0));
        let b = bounds(20, 2, 0);
        t.learn(id(99), way(2, 6, 10), b);
        t.learn(id(99), way(3, 4, 10), b);
        assert_eq!(t.learn(id(99), way(4, 9, 10), b), Learned::Nothing);
        // Shorter through a third neighbour: the longest way gives its place.
        assert_eq!(t.learn(id(99), way(5, 5, 10), b), Learned::Narrowed);
        assert_eq!(
            t.forget_way(&id(99), &id(5))
                .map(|c| c.map(|c| c.ways.len())),
            Some(Some(1))
        );
        assert_eq!(t.forget_way(&id(99), &id(5)), None);
        t.learn(id(99), way(2, 6, 10), b);
        let ways: Vec<(NodeId, u8)> = t
            .get(&id(99))
            .unwrap()
            .ways
            .iter()
            .map(|w| (w.via, w.hops))
            .collect();
        assert_eq!(ways, vec![(id(3), 4), (id(2), 6)]);
        // The neighbour's newer word replaces its older one, even when longer; an older is ignored.
        assert_eq!(t.learn(id(99), way(3, 7, 20), b), Learned::Updated);
        assert_eq!(t.learn(id(99), way(3, 2, 5), b), Learned::Nothing);
        assert_eq!(t.get(&id(99)).unwrap().best().unwrap().via, id(2));
        assert_eq!(t.forget_via(&id(2)), vec![id(99)]);
        assert_eq!(t.get(&id(99)).unwrap().ways.len(), 1);
        assert_eq!(t.expire(21), vec![id(99)]);
        assert_eq!(t.len(), 0);
    }
}
