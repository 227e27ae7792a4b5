//! `fanout-token`: next hops inside fanout trees, learned from route tokens.
//!
//! A route token is the path from a tree's root down to one member. From the tokens it sees, a node
//! knows where members sit in each tree it belongs to, and offers the next hop toward any of them:
//! down to the child whose subtree holds the member when the member is below it, otherwise up to
//! its parent (toward the common ancestor). The cost is the tree distance (1,000 µs per hop, the
//! first-party unit); the confidence starts at 0.9 — a tree path is a good guess, an acknowledged
//! one is proof — and halves every `half_life_ms`; tokens expire after `token_ttl_ms`.
//!
//! Memory is bounded: at most `max_trees` trees and `max_members` tokens per tree, the least
//! recently refreshed going first.

use std::collections::BTreeMap;

use routefabric_plugin_sdk::cbor;
use routefabric_plugin_sdk::prelude::*;
use serde::{Deserialize, Serialize};

/// Cost of one tree hop (µs).
pub const HOP_COST_US: u32 = 1_000;
/// Confidence of a fresh tree route.
pub const FRESH_CONFIDENCE: f32 = 0.9;
const REFRESH_TIMER: u64 = 1;

/// Configuration (CBOR of the plugin's config section).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// How long a token stays usable after it was seen, ms. Default 60,000.
    pub token_ttl_ms: u32,
    /// Age at which confidence has halved, ms. Default 30,000.
    pub half_life_ms: u32,
    /// Trees remembered. Default 64.
    pub max_trees: usize,
    /// Tokens remembered per tree. Default 4,096.
    pub max_members: usize,
    /// Longest token accepted (Peerbit caps route tokens at 32 hops). Default 32.
    pub max_path_len: usize,
    /// How often routes are re-offered with their decayed confidence, ms. Default 15,000.
    pub refresh_ms: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            token_ttl_ms: 60_000,
            half_life_ms: 30_000,
            max_trees: 64,
            max_members: 4_096,
            max_path_len: 32,
            refresh_ms: 15_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Token {
    path: Vec<NodeId>,
    issued_at_ms: Millis,
    seen_at: Millis,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Tree {
    /// This node's own token in the tree (its path from the root), if known.
    own: Option<Token>,
    /// The latest token of each other member.
    members: BTreeMap<NodeId, Token>,
    last_seen: Millis,
}

/// The plugin.
#[derive(Debug)]
pub struct FanoutToken {
    config: Config,
    self_id: NodeId,
    trees: BTreeMap<u64, Tree>,
    timer_set: bool,
}

/// Next hop and distance from the node whose path is `own` to the member at the end of `path`.
fn route(self_id: &NodeId, own: Option<&[NodeId]>, path: &[NodeId]) -> Option<(NodeId, u32)> {
    // Below us: the member's path passes through this node.
    if let Some(i) = path.iter().position(|n| n == self_id) {
        let next = *path.get(i + 1)?;
        return Some((next, (path.len() - 1 - i) as u32));
    }
    // Elsewhere: up to the common ancestor, then down.
    let own = own?;
    let depth = own.len().checked_sub(1)?;
    let common = own.iter().zip(path).take_while(|(a, b)| a == b).count();
    if common == 0 || depth == 0 {
        return None; // another root, or we are the root and it is not below us
    }
    let parent = own[depth - 1];
    let distance = (depth + 1 - common) + (path.len() - common);
    Some((parent, distance as u32))
}

impl FanoutToken {
    fn alive(&self, token: &Token, now: Millis) -> bool {
        now < token.seen_at + u64::from(self.config.token_ttl_ms)
    }

    fn hop(&self, token: &Token, via: NodeId, distance: u32, now: Millis) -> NextHop {
        let age = now.saturating_sub(token.seen_at);
        NextHop {
            via,
            cost: distance.saturating_mul(HOP_COST_US),
            ttl_ms: (token.seen_at + u64::from(self.config.token_ttl_ms)).saturating_sub(now)
                as u32,
            confidence: decayed_confidence(FRESH_CONFIDENCE, age, self.config.half_life_ms),
        }
    }

    /// Next hops toward `dest` over every tree, cheapest first, one per neighbour.
    fn hops_for(&self, now: Millis, dest: &NodeId) -> Vec<NextHop> {
        let mut hops: Vec<NextHop> = Vec::new();
        for tree in self.trees.values() {
            let own = tree.own.as_ref().filter(|t| self.alive(t, now));
            let own_path = own.map(|t| t.path.as_slice());
            let candidate = match tree.members.get(dest).filter(|t| self.alive(t, now)) {
                Some(token) => {
                    route(&self.self_id, own_path, &token.path).map(|(via, d)| (token, via, d))
                }
                // An ancestor of ours: straight up.
                None => own.and_then(|own_token| {
                    let i = own_token.path.iter().position(|n| n == dest)?;
                    let depth = own_token.path.len() - 1;
                    (i < depth).then(|| (own_token, own_token.path[depth - 1], (depth - i) as u32))
                }),
            };
            if let Some((token, via, distance)) = candidate {
                let hop = self.hop(token, via, distance, now);
                match hops.iter_mut().find(|h| h.via == via) {
                    Some(existing) if existing.cost <= hop.cost => {}
                    Some(existing) => *existing = hop,
                    None => hops.push(hop),
                }
            }
        }
        hops.sort_by_key(|h| (h.cost, h.via));
        hops
    }

    fn learn(&mut self, now: Millis, token: &RouteToken, touched: &mut Vec<NodeId>) {
        let path = &token.path;
        if path.is_empty() || path.len() > self.config.max_path_len {
            return;
        }
        for (i, a) in path.iter().enumerate() {
            if path[i + 1..].contains(a) {
                return; // a loop: not a tree path
            }
        }
        let Some(member) = path.last().copied() else {
            return;
        };
        let max_members = self.config.max_members.max(1);
        let tree = self.trees.entry(token.tree).or_default();
        tree.last_seen = now;
        let entry = Token {
            path: path.clone(),
            issued_at_ms: token.issued_at_ms,
            seen_at: now,
        };
        if member == self.self_id {
            if tree
                .own
                .as_ref()
                .is_some_and(|t| t.issued_at_ms > token.issued_at_ms)
            {
                return; // an older token of ours
            }
            // Our position changed: every route through the tree may have.
            touched.extend(tree.members.keys().copied());
            touched.extend(path[..path.len() - 1].iter().copied());
            tree.own = Some(entry);
        } else {
            if tree
                .members
                .get(&member)
                .is_some_and(|t| t.issued_at_ms > token.issued_at_ms)
            {
                return;
            }
            tree.members.insert(member, entry);
            touched.push(member);
            if tree.members.len() > max_members {
                let oldest = tree
                    .members
                    .iter()
                    .filter(|(id, _)| **id != member)
                    .min_by_key(|(_, t)| t.seen_at)
                    .map(|(id, _)| *id);
                if let Some(id) = oldest {
                    tree.members.remove(&id);
                    touched.push(id);
                }
            }
        }
        while self.trees.len() > self.config.max_trees.max(1) {
            let oldest = self
                .trees
                .iter()
                .filter(|(c, _)| **c != token.tree)
                .min_by_key(|(_, t)| t.last_seen)
                .map(|(c, _)| *c);
            match oldest.and_then(|c| self.trees.remove(&c)) {
                Some(tree) => touched.extend(tree.members.into_keys()),
                None => break,
            }
        }
    }
}

impl ProofSource for FanoutToken {
    fn info() -> PluginInfo {
        PluginInfo::new(
            "fanout-token",
            env!("CARGO_PKG_VERSION"),
            "next hops inside fanout trees, from route tokens",
        )
    }

    fn init(config: &[u8], self_id: NodeId) -> Result<Self, String> {
        let config: Config = cbor::config(config)?;
        if config.token_ttl_ms == 0 || config.half_life_ms == 0 || config.refresh_ms == 0 {
            return Err("token_ttl_ms, half_life_ms and refresh_ms must be > 0".to_owned());
        }
        Ok(FanoutToken {
            config,
            self_id,
            trees: BTreeMap::new(),
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
                Observation::Token(token) => self.learn(now, token, &mut touched),
                Observation::Link(link) if !link.up => {
                    // A lost parent or child invalidates the tree paths through it until new
                    // tokens arrive; the host's store drops routes via the neighbour by itself.
                    for tree in self.trees.values_mut() {
                        if tree
                            .own
                            .as_ref()
                            .is_some_and(|t| t.path.contains(&link.peer))
                        {
                            tree.own = None;
                            touched.extend(tree.members.keys().copied());
                        }
                        tree.members.retain(|id, t| {
                            let through = t.path.contains(&link.peer);
                            if through {
                                touched.push(*id);
                            }
                            !through
                        });
                    }
                }
                Observation::Timer(REFRESH_TIMER) => {
                    let ttl = u64::from(self.config.token_ttl_ms);
                    for tree in self.trees.values_mut() {
                        tree.members.retain(|id, t| {
                            let alive = now < t.seen_at + ttl;
                            if !alive {
                                touched.push(*id);
                            }
                            alive
                        });
                        if tree.own.as_ref().is_some_and(|t| now >= t.seen_at + ttl) {
                            tree.own = None;
                        }
                        touched.extend(tree.members.keys().copied());
                    }
                    self.trees
                        .retain(|_, t| t.own.is_some() || !t.members.is_empty());
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
        touched.retain(|id| *id != self.self_id);
        for dest in touched {
            actions.push(Action::offer_or_withdraw(dest, self.hops_for(now, &dest)));
        }
        actions
    }

    fn query(&mut self, now: Millis, dest: &NodeId) -> Vec<NextHop> {
        self.hops_for(now, dest)
    }

    fn snapshot(&self) -> Vec<u8> {
        cbor::encode(&self.trees)
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        self.trees = cbor::decode(state)?;
        Ok(())
    }
}

routefabric_plugin_sdk::export_proof_source!(FanoutToken);

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> NodeId {
        NodeId::from_index(n)
    }

    fn token(tree: u64, path: &[u64], issued_at_ms: u64) -> Observation {
        Observation::Token(RouteToken {
            tree,
            path: path.iter().map(|&n| id(n)).collect(),
            issued_at_ms,
        })
    }

    fn best(p: &mut FanoutToken, now: Millis, dest: u64) -> Option<(u64, u32)> {
        p.query(now, &id(dest))
            .first()
            .map(|h| (h.via.to_words()[3], h.cost))
    }

    //        1 (root)
    //       / \
    //      2   3
    //     / \    \
    //    4   5    6
    //    |
    //    7
    fn tree_at(me: u64) -> FanoutToken {
        let mut p = FanoutToken::init(&[], id(me)).unwrap();
        let tokens = [
            token(3, &[1, 2], 0),
            token(3, &[1, 3], 0),
            token(3, &[1, 2, 4], 0),
            token(3, &[1, 2, 5], 0),
            token(3, &[1, 3, 6], 0),
            token(3, &[1, 2, 4, 7], 0),
        ];
        p.observe(0, &tokens);
        p
    }

    #[test]
    fn down_to_the_child_whose_subtree_holds_the_member() {
        let mut p = tree_at(2);
        assert_eq!(best(&mut p, 0, 7), Some((4, 2 * HOP_COST_US)));
        assert_eq!(best(&mut p, 0, 5), Some((5, HOP_COST_US)));
        let mut root = tree_at(1);
        assert_eq!(best(&mut root, 0, 7), Some((2, 3 * HOP_COST_US)));
        assert_eq!(best(&mut root, 0, 6), Some((3, 2 * HOP_COST_US)));
    }

    #[test]
    fn up_to_the_parent_toward_the_common_ancestor() {
        let mut p = tree_at(7);
        // 7 → 4 → 2 → 5: up two, down one.
        assert_eq!(best(&mut p, 0, 5), Some((4, 3 * HOP_COST_US)));
        // 7 → 4 → 2 → 1 → 3 → 6.
        assert_eq!(best(&mut p, 0, 6), Some((4, 5 * HOP_COST_US)));
        // Ancestors are reachable straight up.
        assert_eq!(best(&mut p, 0, 1), Some((4, 3 * HOP_COST_US)));
        // Without our own token we cannot route up.
        let mut lost = FanoutToken::init(&[], id(7)).unwrap();
        lost.observe(0, &[token(3, &[1, 3, 6], 0)]);
        assert!(lost.query(0, &id(6)).is_empty());
    }

    #[test]
    fn confidence_decays_and_tokens_expire() {
        let mut p = tree_at(2);
        let fresh = p.query(0, &id(7))[0].confidence;
        let later = p.query(30_000, &id(7))[0].confidence;
        assert!((fresh - FRESH_CONFIDENCE).abs() < 1e-6);
        assert!((later - FRESH_CONFIDENCE / 2.0).abs() < 1e-3);
        assert!(p.query(60_000, &id(7)).is_empty());
        let actions = p.observe(60_000, &[Observation::Timer(REFRESH_TIMER)]);
        assert!(actions.contains(&Action::Withdraw(id(7))));
    }

    #[test]
    fn a_newer_token_moves_a_member_and_an_older_one_is_ignored() {
        let mut p = tree_at(2);
        p.observe(1, &[token(3, &[1, 2, 5, 7], 10)]); // 7 moved under 5
        assert_eq!(best(&mut p, 1, 7), Some((5, 2 * HOP_COST_US)));
        p.observe(2, &[token(3, &[1, 2, 4, 7], 5)]); // stale
        assert_eq!(best(&mut p, 2, 7), Some((5, 2 * HOP_COST_US)));
    }

    #[test]
    fn a_lost_link_drops_the_paths_through_it() {
        let mut p = tree_at(2);
        let actions = p.observe(
            1,
            &[Observation::Link(LinkSample {
                peer: id(4),
                up: false,
                rtt_us: None,
                session: 1,
            })],
        );
        assert!(p.query(1, &id(7)).is_empty());
        assert!(actions.contains(&Action::Withdraw(id(7))));
        assert_eq!(best(&mut p, 1, 5), Some((5, HOP_COST_US)));
    }

    #[test]
    fn bounded_and_robust_to_bad_tokens() {
        let config = cbor::encode(&Config {
            max_members: 3,
            max_trees: 2,
            ..Config::default()
        });
        let mut p = FanoutToken::init(&config, id(1)).unwrap();
        for m in 10..20 {
            p.observe(m, &[token(1, &[1, m], 0)]);
        }
        assert!(p.trees[&1].members.len() <= 3);
        for c in [2, 3, 4] {
            p.observe(100, &[token(c, &[1, 2], 0)]);
        }
        assert!(p.trees.len() <= 2);
        let before = p.trees.clone();
        p.observe(200, &[token(1, &[], 0), token(1, &[1, 2, 1], 0)]);
        let long: Vec<u64> = (1..=40).collect();
        p.observe(200, &[token(1, &long, 0)]);
        assert_eq!(
            p.trees, before,
            "empty, looping and overlong tokens are ignored"
        );
    }

    #[test]
    fn state_moves_through_snapshot_and_restore() {
        let old = tree_at(7);
        let mut new = FanoutToken::init(&[], id(7)).unwrap();
        new.restore(&old.snapshot()).unwrap();
        assert_eq!(best(&mut new, 0, 6), Some((4, 5 * HOP_COST_US)));
        assert!(new.restore(b"\x00garbage").is_err());
    }
}
