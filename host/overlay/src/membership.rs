//! HyParView membership (Leitão, Pereira, Rodrigues, DSN 2007), sans-IO.
//!
//! Every node keeps a small *active view* of peers it is connected to (the links every overlay
//! above uses) and a larger *passive view* of known peers used to repair the active view. Joins
//! spread with random walks (`ForwardJoin`), active links are set up with a two-way `Neighbor`
//! handshake whose priority is high when the requester has no active peer left, and a periodic
//! `Shuffle` walk refreshes passive views. Failures are reported by the transport as
//! [`InEvent::PeerDown`] (HyParView assumes a reliable, connection-oriented transport: a broken
//! connection is the failure detector).
//!
//! The handshake is two-way (a peer enters the active view only on an accepted reply) so that a
//! lost message cannot leave one side believing in a link the other side never set up; a request
//! that times out is cancelled with a `Disconnect` for the same reason.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::rng::Rng;
use crate::{Outbox, PeerId, WIRE_ID_LEN};

/// Contacts remembered for rejoining.
pub const MAX_CONTACTS: usize = 4;

/// Failed repair rounds in a row after which a poorly connected node joins again.
pub const STUCK_ROUNDS_BEFORE_REJOIN: u8 = 3;

/// Peers taken from one shuffle message (a peer may send more; the rest is ignored).
pub const MAX_SHUFFLE_PEERS: usize = 64;

/// Membership configuration. Defaults are the paper's (section 5.1) as used by implementations
/// such as iroh-gossip; timers are ours.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Active view capacity. Default 5 (HyParView paper: log10(n) + 1 for n = 10,000).
    pub active_view_capacity: usize,
    /// Passive view capacity. Default 30 (HyParView paper: k · (log10(n) + 1), k = 6).
    pub passive_view_capacity: usize,
    /// Active random walk length (ARWL) of a `ForwardJoin`. Default 6 (paper).
    pub active_random_walk_length: u8,
    /// Passive random walk length (PRWL): the hop at which the joiner enters passive views.
    /// Default 3 (paper).
    pub passive_random_walk_length: u8,
    /// Random walk length of a shuffle. Default 6 (paper's ARWL, as in iroh-gossip).
    pub shuffle_random_walk_length: u8,
    /// Active peers sent in a shuffle. Default 3 (paper, ka).
    pub shuffle_active_count: usize,
    /// Passive peers sent in a shuffle. Default 4 (paper, kp).
    pub shuffle_passive_count: usize,
    /// Shuffle period in milliseconds; the first shuffle is at a random offset within one period.
    /// Default 60,000 (iroh-gossip's default).
    pub shuffle_interval_ms: u64,
    /// How long to wait for the reply to a `Neighbor` request before trying another passive
    /// peer. Default 500 ms (a few round trips on wide-area links).
    pub neighbor_timeout_ms: u64,
    /// Back-off before the next repair attempt after a passive peer refused a low-priority
    /// request. Default 5,000 ms: a node that still has active peers is not in danger, and
    /// retrying faster only makes full nodes refuse more often.
    pub repair_backoff_ms: u64,
    /// Retry period of a `Join` while the active view stays empty. Default 1,000 ms.
    pub join_retry_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            active_view_capacity: 5,
            passive_view_capacity: 30,
            active_random_walk_length: 6,
            passive_random_walk_length: 3,
            shuffle_random_walk_length: 6,
            shuffle_active_count: 3,
            shuffle_passive_count: 4,
            shuffle_interval_ms: 60_000,
            neighbor_timeout_ms: 500,
            repair_backoff_ms: 5_000,
            join_retry_ms: 1_000,
        }
    }
}

/// Priority of a `Neighbor` request: high requests are always accepted (the requester has no
/// active peer left), low ones only when the receiver has a free slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Priority {
    /// The requester is isolated: accept even if that means dropping a random active peer.
    High,
    /// Accept only into a free slot.
    Low,
}

/// Membership wire messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message<P> {
    /// A new node asks the contact to bring it into the overlay.
    Join,
    /// A random walk carrying a joiner: it enters the passive view at hop PRWL and the active view
    /// where the walk ends.
    ForwardJoin {
        /// The joining node.
        peer: P,
        /// Remaining hops.
        ttl: u8,
    },
    /// Ask the receiver to become an active neighbour.
    Neighbor {
        /// Whether the receiver must accept.
        priority: Priority,
    },
    /// Answer to [`Message::Neighbor`].
    NeighborReply {
        /// True if the receiver added the sender to its active view.
        accepted: bool,
    },
    /// The sender removed the receiver from its active view (the receiver keeps it as passive).
    Disconnect,
    /// A shuffle walk: the origin offers a sample of the peers it knows.
    Shuffle {
        /// Node that started the shuffle (the reply goes straight to it).
        origin: P,
        /// Remaining hops.
        ttl: u8,
        /// Sample offered by the origin (itself, some active and some passive peers).
        peers: Vec<P>,
    },
    /// Answer to a shuffle with a sample of the receiver's passive view.
    ShuffleReply {
        /// Sample of passive peers.
        peers: Vec<P>,
    },
}

impl<P> Message<P> {
    /// Estimated encoded size in bytes with 32-byte node ids (a tag byte, fields, ids).
    pub fn wire_size(&self) -> usize {
        1 + match self {
            Message::Join | Message::Disconnect => 0,
            Message::ForwardJoin { .. } => WIRE_ID_LEN + 1,
            Message::Neighbor { .. } | Message::NeighborReply { .. } => 1,
            Message::Shuffle { peers, .. } => WIRE_ID_LEN + 2 + peers.len() * WIRE_ID_LEN,
            Message::ShuffleReply { peers } => 1 + peers.len() * WIRE_ID_LEN,
        }
    }
}

/// Timers the membership asks its driver to fire later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Timer {
    /// Start a shuffle.
    Shuffle,
    /// Expire `Neighbor` requests that got no answer in time. One timer covers every request
    /// outstanding at a node (a timer per request would double the events of a join burst).
    NeighborSweep,
    /// Look at the active view and fill free slots from the passive view.
    Repair,
    /// Re-send `Join` if the active view is still empty.
    JoinRetry,
}

/// Inputs of the membership state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InEvent<P> {
    /// A message from a peer.
    Message {
        /// Sender.
        from: P,
        /// The message.
        message: Message<P>,
    },
    /// A timer set earlier expired.
    TimerExpired(Timer),
    /// The transport lost the connection to this peer (or could not open one).
    PeerDown(P),
    /// Join the overlay through this contact.
    Join(P),
}

/// Events the membership reports to the layers above.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<P> {
    /// A peer entered the active view.
    NeighborUp(P),
    /// A peer left the active view.
    NeighborDown(P),
}

/// Outputs of the membership state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutEvent<P> {
    /// Send a message to a peer.
    Send {
        /// Receiver.
        to: P,
        /// The message.
        message: Message<P>,
    },
    /// Hand `timer` back as [`InEvent::TimerExpired`] after `delay_ms`.
    ScheduleTimer {
        /// Delay in milliseconds.
        delay_ms: u64,
        /// The timer.
        timer: Timer,
    },
    /// Something the layers above may react to.
    Emit(Event<P>),
}

/// HyParView state of one node. Views are small `Vec`s: a node of a million-node simulation costs
/// a few hundred bytes.
#[derive(Debug, Clone)]
pub struct Membership<P> {
    me: P,
    config: Arc<Config>,
    active: Vec<P>,
    passive: Vec<P>,
    /// Peers we sent a `Neighbor` request to, with the time the request expires.
    pending: Vec<(P, u64)>,
    /// When the armed `NeighborSweep` fires (0: not armed).
    sweep_at: u64,
    now_ms: u64,
    /// Nodes to (re)join through: the first contact and rendezvous points the layers above know
    /// (tree roots). At most [`MAX_CONTACTS`].
    contacts: Vec<P>,
    /// Repair attempts that failed in a row (refused or unanswered).
    stuck_rounds: u8,
    /// Low-priority requests refused in a row (sets the repair back-off).
    refusals: u8,
    rng: Rng,
    shuffle_armed: bool,
    repair_armed: bool,
}

impl<P: PeerId> Membership<P> {
    /// A node `me` with its own seeded random stream.
    pub fn new(me: P, config: Arc<Config>, rng: Rng) -> Self {
        Self {
            me,
            config,
            active: Vec::new(),
            passive: Vec::new(),
            pending: Vec::new(),
            sweep_at: 0,
            now_ms: 0,
            contacts: Vec::new(),
            stuck_rounds: 0,
            refusals: 0,
            rng,
            shuffle_armed: false,
            repair_armed: false,
        }
    }

    /// The active view (connected neighbours).
    pub fn active_view(&self) -> &[P] {
        &self.active
    }

    /// The passive view (known peers used for repair).
    pub fn passive_view(&self) -> &[P] {
        &self.passive
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Process one input; outputs are pushed to `out`.
    pub fn handle(&mut self, now_ms: u64, event: InEvent<P>, out: &mut impl Outbox<OutEvent<P>>) {
        self.now_ms = now_ms;
        match event {
            InEvent::Join(contact) => self.join(contact, out),
            InEvent::PeerDown(peer) => self.peer_down(peer, out),
            InEvent::TimerExpired(timer) => self.on_timer(timer, out),
            InEvent::Message { from, message } => self.on_message(from, message, out),
        }
    }

    fn join(&mut self, contact: P, out: &mut impl Outbox<OutEvent<P>>) {
        if contact == self.me {
            // The first node of a network: nothing to join, but keep shuffling once peers arrive.
            self.arm_shuffle(out);
            return;
        }
        self.add_contact(contact);
        send(out, contact, Message::Join);
        timer(out, self.config.join_retry_ms, Timer::JoinRetry);
        self.arm_shuffle(out);
    }

    fn arm_shuffle(&mut self, out: &mut impl Outbox<OutEvent<P>>) {
        if !self.shuffle_armed {
            self.shuffle_armed = true;
            let first =
                self.rng
                    .below(self.config.shuffle_interval_ms.max(1) as usize) as u64;
            timer(out, first + 1, Timer::Shuffle);
        }
    }

    fn on_message(&mut self, from: P, message: Message<P>, out: &mut impl Outbox<OutEvent<P>>) {
        if from == self.me {
            return;
        }
        match message {
            Message::Join => {
                for &peer in &self.active {
                    if peer != from {
                        let ttl = self.config.active_random_walk_length;
                        send(out, peer, Message::ForwardJoin { peer: from, ttl });
                    }
                }
                self.request_neighbor(from, Priority::High, out);
            }
            Message::ForwardJoin { peer, ttl } => self.on_forward_join(from, peer, ttl, out),
            Message::Neighbor { priority } => {
                // Crossing requests: we asked `from` too, so we want the link whatever the priority.
                let crossing = self.is_pending(from);
                self.pending.retain(|(p, _)| *p != from);
                let accepted = self.active.contains(&from)
                    || crossing
                    || priority == Priority::High
                    || self.active.len() < self.config.active_view_capacity;
                if accepted {
                    self.add_active(from, out);
                } else {
                    self.add_passive(from);
                }
                send(out, from, Message::NeighborReply { accepted });
            }
            Message::NeighborReply { accepted } => {
                if !self.is_pending(from) {
                    // Late reply to a request we already cancelled (or that crossed theirs): if
                    // they took us but we did not take them, say so.
                    if accepted && !self.active.contains(&from) {
                        send(out, from, Message::Disconnect);
                    }
                    return;
                }
                self.pending.retain(|(p, _)| *p != from);
                if accepted {
                    self.add_active(from, out);
                } else {
                    self.add_passive(from);
                    self.note_failed_repair(out);
                    // Back off further after each refusal in a row (up to 8×): in a large, healthy
                    // overlay most views are full, and a node one short of its capacity should not
                    // poll them every few seconds forever.
                    let delay = self.config.repair_backoff_ms << self.refusals.min(3);
                    self.refusals = self.refusals.saturating_add(1);
                    self.arm_repair(delay, out);
                }
            }
            Message::Disconnect => {
                self.pending.retain(|(p, _)| *p != from);
                if let Some(i) = self.active.iter().position(|p| *p == from) {
                    self.active.swap_remove(i);
                    out.push(OutEvent::Emit(Event::NeighborDown(from)));
                    self.add_passive(from);
                    self.repair(out);
                }
            }
            Message::Shuffle { origin, ttl, peers } => {
                if origin == self.me {
                    return;
                }
                if ttl > 1 && self.active.len() > 1 {
                    let next = self.random_active_except(&[from, origin]);
                    if let Some(next) = next {
                        let ttl = ttl - 1;
                        send(out, next, Message::Shuffle { origin, ttl, peers });
                        return;
                    }
                }
                let reply = self.sample_passive(peers.len());
                send(out, origin, Message::ShuffleReply { peers: reply });
                for p in peers.into_iter().take(MAX_SHUFFLE_PEERS) {
                    self.add_passive(p);
                }
            }
            Message::ShuffleReply { peers } => {
                for p in peers.into_iter().take(MAX_SHUFFLE_PEERS) {
                    self.add_passive(p);
                }
            }
        }
    }

    fn on_forward_join(&mut self, from: P, peer: P, ttl: u8, out: &mut impl Outbox<OutEvent<P>>) {
        if peer == self.me {
            return;
        }
        if ttl == 0 || self.active.len() <= 1 {
            self.request_neighbor(peer, Priority::High, out);
            return;
        }
        if ttl == self.config.passive_random_walk_length {
            self.add_passive(peer);
        }
        match self.random_active_except(&[from, peer]) {
            Some(next) => send(out, next, Message::ForwardJoin { peer, ttl: ttl - 1 }),
            None => self.request_neighbor(peer, Priority::High, out),
        }
    }

    fn on_timer(&mut self, timer: Timer, out: &mut impl Outbox<OutEvent<P>>) {
        match timer {
            Timer::Shuffle => {
                timer_at(out, self.config.shuffle_interval_ms, Timer::Shuffle);
                let Some(&target) = self.rng.pick(&self.active) else {
                    return;
                };
                let mut peers = vec![self.me];
                peers.extend(self.sample(&self.active.clone(), self.config.shuffle_active_count));
                peers.retain(|p| *p != target);
                peers.extend(self.sample_passive(self.config.shuffle_passive_count));
                let ttl = self.config.shuffle_random_walk_length;
                send(
                    out,
                    target,
                    Message::Shuffle {
                        origin: self.me,
                        ttl,
                        peers,
                    },
                );
            }
            Timer::NeighborSweep => {
                self.sweep_at = 0;
                let now = self.now_ms;
                let mut expired = false;
                let mut k = 0;
                while k < self.pending.len() {
                    let (peer, deadline) = self.pending[k];
                    if deadline <= now {
                        self.pending.swap_remove(k);
                        // Cancel a half-open link in case only our request or its reply was lost.
                        send(out, peer, Message::Disconnect);
                        self.passive.retain(|p| *p != peer);
                        expired = true;
                    } else {
                        k += 1;
                    }
                }
                if expired {
                    self.note_failed_repair(out);
                    self.repair(out);
                }
                self.arm_sweep(out);
            }
            Timer::Repair => {
                self.repair_armed = false;
                let isolated =
                    self.active.is_empty() && self.pending.is_empty() && self.passive.is_empty();
                if isolated {
                    self.rejoin(out);
                }
                self.repair(out);
            }
            Timer::JoinRetry => {
                if self.active.is_empty() {
                    self.rejoin(out);
                    self.repair(out);
                    timer_at(out, self.config.join_retry_ms, Timer::JoinRetry);
                }
            }
        }
    }

    fn peer_down(&mut self, peer: P, out: &mut impl Outbox<OutEvent<P>>) {
        if self.contacts.len() > 1 {
            self.contacts.retain(|p| *p != peer);
        }
        self.passive.retain(|p| *p != peer);
        self.pending.retain(|(p, _)| *p != peer);
        if let Some(i) = self.active.iter().position(|p| *p == peer) {
            self.active.swap_remove(i);
            out.push(OutEvent::Emit(Event::NeighborDown(peer)));
        }
        self.repair(out);
    }

    /// Fill free active slots from the passive view, one outstanding request per free slot.
    fn repair(&mut self, out: &mut impl Outbox<OutEvent<P>>) {
        while self.active.len() + self.pending.len() < self.config.active_view_capacity {
            let pending = &self.pending;
            let n = self
                .passive
                .iter()
                .filter(|p| !pending.iter().any(|(q, _)| q == *p))
                .count();
            if n == 0 {
                break;
            }
            let k = self.rng.below(n);
            let pending = &self.pending;
            let Some(peer) = self
                .passive
                .iter()
                .copied()
                .filter(|p| !pending.iter().any(|(q, _)| q == p))
                .nth(k)
            else {
                break;
            };
            let priority = if self.active.is_empty() {
                Priority::High
            } else {
                Priority::Low
            };
            self.request_neighbor(peer, priority, out);
        }
        if self.active.is_empty() && self.pending.is_empty() {
            // Isolated with nothing to try: knock at the contact again later.
            self.arm_repair(self.config.join_retry_ms, out);
        }
    }

    /// Remember a node to rejoin through (e.g. the root of a tree this node belongs to).
    pub fn add_contact(&mut self, peer: P) {
        if peer == self.me || self.contacts.contains(&peer) {
            return;
        }
        if self.contacts.len() >= MAX_CONTACTS {
            self.contacts.remove(0);
        }
        self.contacts.push(peer);
    }

    fn rejoin(&mut self, out: &mut impl Outbox<OutEvent<P>>) {
        if let Some(&contact) = self.rng.pick(&self.contacts) {
            send(out, contact, Message::Join);
        }
    }

    /// A node that keeps failing to fill its active view while it knows few peers is probably in
    /// a small island (after a mass failure, or a clique left by join-time evictions): joining
    /// again through a contact brings random walks, and so neighbours, from the wider overlay.
    fn note_failed_repair(&mut self, out: &mut impl Outbox<OutEvent<P>>) {
        self.stuck_rounds = self.stuck_rounds.saturating_add(1);
        let cap = self.config.active_view_capacity;
        let few_known = self.passive.len() < cap;
        if self.stuck_rounds >= STUCK_ROUNDS_BEFORE_REJOIN
            && few_known
            && self.active.len() + 1 < cap
        {
            self.stuck_rounds = 0;
            self.rejoin(out);
        }
    }

    fn arm_repair(&mut self, delay_ms: u64, out: &mut impl Outbox<OutEvent<P>>) {
        if !self.repair_armed {
            self.repair_armed = true;
            timer(out, delay_ms, Timer::Repair);
        }
    }

    fn request_neighbor(
        &mut self,
        peer: P,
        priority: Priority,
        out: &mut impl Outbox<OutEvent<P>>,
    ) {
        if peer == self.me || self.active.contains(&peer) || self.is_pending(peer) {
            return;
        }
        self.pending
            .push((peer, self.now_ms + self.config.neighbor_timeout_ms));
        send(out, peer, Message::Neighbor { priority });
        self.arm_sweep(out);
    }

    fn is_pending(&self, peer: P) -> bool {
        self.pending.iter().any(|(p, _)| *p == peer)
    }

    fn arm_sweep(&mut self, out: &mut impl Outbox<OutEvent<P>>) {
        if self.sweep_at != 0 {
            return;
        }
        if let Some(next) = self.pending.iter().map(|(_, d)| *d).min() {
            self.sweep_at = next.max(self.now_ms + 1);
            timer(out, self.sweep_at - self.now_ms, Timer::NeighborSweep);
        }
    }

    fn add_active(&mut self, peer: P, out: &mut impl Outbox<OutEvent<P>>) {
        if peer == self.me || self.active.contains(&peer) {
            return;
        }
        self.passive.retain(|p| *p != peer);
        if self.active.len() >= self.config.active_view_capacity {
            let i = self.rng.below(self.active.len());
            let victim = self.active.swap_remove(i);
            send(out, victim, Message::Disconnect);
            out.push(OutEvent::Emit(Event::NeighborDown(victim)));
            self.add_passive(victim);
        }
        self.active.push(peer);
        self.stuck_rounds = 0;
        self.refusals = 0;
        out.push(OutEvent::Emit(Event::NeighborUp(peer)));
    }

    fn add_passive(&mut self, peer: P) {
        if peer == self.me || self.active.contains(&peer) || self.passive.contains(&peer) {
            return;
        }
        if self.passive.len() >= self.config.passive_view_capacity {
            let i = self.rng.below(self.passive.len());
            self.passive.swap_remove(i);
        }
        self.passive.push(peer);
    }

    fn random_active_except(&mut self, except: &[P]) -> Option<P> {
        let n = self.active.iter().filter(|p| !except.contains(p)).count();
        let k = self.rng.below(n);
        self.active
            .iter()
            .copied()
            .filter(|p| !except.contains(p))
            .nth(k)
    }

    fn sample_passive(&mut self, k: usize) -> Vec<P> {
        let passive = std::mem::take(&mut self.passive);
        let s = self.sample(&passive, k);
        self.passive = passive;
        s
    }

    fn sample(&mut self, from: &[P], k: usize) -> Vec<P> {
        let mut idx: Vec<usize> = (0..from.len()).collect();
        let mut outv = Vec::with_capacity(k.min(from.len()));
        while outv.len() < k && !idx.is_empty() {
            let i = self.rng.below(idx.len());
            let j = idx.swap_remove(i);
            if let Some(p) = from.get(j) {
                outv.push(*p);
            }
        }
        outv
    }
}

fn send<P>(out: &mut impl Outbox<OutEvent<P>>, to: P, message: Message<P>) {
    out.push(OutEvent::Send { to, message });
}

fn timer<P>(out: &mut impl Outbox<OutEvent<P>>, delay_ms: u64, timer: Timer) {
    out.push(OutEvent::ScheduleTimer { delay_ms, timer });
}

fn timer_at<P>(out: &mut impl Outbox<OutEvent<P>>, delay_ms: u64, t: Timer) {
    timer(out, delay_ms, t);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(me: u32) -> Membership<u32> {
        Membership::new(me, Arc::new(Config::default()), Rng::new(u64::from(me)))
    }

    fn sends(out: &[OutEvent<u32>]) -> Vec<(u32, Message<u32>)> {
        out.iter()
            .filter_map(|o| match o {
                OutEvent::Send { to, message } => Some((*to, message.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn crossing_neighbor_requests_end_symmetric() {
        let (mut a, mut b) = (node(1), node(2));
        let mut out: Vec<OutEvent<u32>> = Vec::new();
        // Both ask each other at once (low priority, both have room).
        a.request_neighbor(2, Priority::Low, &mut out);
        let from_a = sends(&out);
        out.clear();
        b.request_neighbor(1, Priority::Low, &mut out);
        let from_b = sends(&out);
        out.clear();
        for (_, m) in from_a {
            b.handle(
                0,
                InEvent::Message {
                    from: 1,
                    message: m,
                },
                &mut out,
            );
        }
        let b_replies = sends(&out);
        out.clear();
        for (_, m) in from_b {
            a.handle(
                0,
                InEvent::Message {
                    from: 2,
                    message: m,
                },
                &mut out,
            );
        }
        let a_replies = sends(&out);
        out.clear();
        for (_, m) in b_replies {
            a.handle(
                0,
                InEvent::Message {
                    from: 2,
                    message: m,
                },
                &mut out,
            );
        }
        for (_, m) in a_replies {
            b.handle(
                0,
                InEvent::Message {
                    from: 1,
                    message: m,
                },
                &mut out,
            );
        }
        assert_eq!(a.active_view(), &[2]);
        assert_eq!(b.active_view(), &[1]);
    }

    #[test]
    fn full_view_refuses_low_and_accepts_high_by_evicting() {
        let mut a = node(0);
        let mut out: Vec<OutEvent<u32>> = Vec::new();
        for p in 1..=5 {
            a.handle(
                0,
                InEvent::Message {
                    from: p,
                    message: Message::Neighbor {
                        priority: Priority::Low,
                    },
                },
                &mut out,
            );
        }
        assert_eq!(a.active_view().len(), 5);
        out.clear();
        a.handle(
            0,
            InEvent::Message {
                from: 9,
                message: Message::Neighbor {
                    priority: Priority::Low,
                },
            },
            &mut out,
        );
        assert!(sends(&out).contains(&(9, Message::NeighborReply { accepted: false })));
        assert!(!a.active_view().contains(&9));
        assert!(
            a.passive_view().contains(&9),
            "a refused peer is still worth knowing"
        );
        out.clear();
        a.handle(
            0,
            InEvent::Message {
                from: 9,
                message: Message::Neighbor {
                    priority: Priority::High,
                },
            },
            &mut out,
        );
        assert!(a.active_view().contains(&9));
        assert_eq!(a.active_view().len(), 5);
        let evicted: Vec<u32> = sends(&out)
            .into_iter()
            .filter(|(_, m)| *m == Message::Disconnect)
            .map(|(p, _)| p)
            .collect();
        assert_eq!(evicted.len(), 1, "exactly one peer is told it was dropped");
        assert!(a.passive_view().contains(&evicted[0]));
    }

    #[test]
    fn unanswered_request_is_cancelled_and_the_next_passive_peer_tried() {
        let mut a = node(0);
        let mut out: Vec<OutEvent<u32>> = Vec::new();
        a.add_passive(7);
        a.handle(0, InEvent::PeerDown(3), &mut out);
        assert!(sends(&out).contains(&(
            7,
            Message::Neighbor {
                priority: Priority::High
            }
        )));
        out.clear();
        let timeout = a.config().neighbor_timeout_ms;
        a.handle(
            timeout,
            InEvent::TimerExpired(Timer::NeighborSweep),
            &mut out,
        );
        assert!(
            sends(&out).contains(&(7, Message::Disconnect)),
            "half-open link cancelled"
        );
        assert!(
            !a.passive_view().contains(&7),
            "an unresponsive peer is forgotten"
        );
    }
}
