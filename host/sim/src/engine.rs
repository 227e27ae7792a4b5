//! The discrete-event engine: events ordered by (simulated millisecond, insertion order), so a
//! run is a pure function of its scenario and seed.
//!
//! Network model: each link has a fixed one-way latency drawn (by hash, no storage) from the
//! scenario's range, so a link is FIFO; a message is dropped with the scenario's loss
//! probability; a message to a crashed node makes the sender see [`InEvent::PeerDown`] after
//! `detect_ms`, and a crash is reported the same way to every node holding a connection to the
//! victim (its active view and tree links) — HyParView's "TCP as failure detector".
//!
//! Diagnostics (environment variables, off by default): `SIM_TRACE=<node id>` prints every input
//! and output of one node, drops on its links and its late deliveries; `SIM_DEBUG=1` lists the
//! expected deliveries that did not happen and the nodes that sent one message more often than
//! `max_children`; `SIM_KINDS=1` counts sent messages by kind.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use bytes::Bytes;
use routefabric_overlay::fanout::{self, ChannelId, TreeId};
use routefabric_overlay::rng::{Rng, mix64};
use routefabric_overlay::{Command, Event, InEvent, Message, Node, OutEvent, Timer};

use crate::report::Report;
use crate::scenario::{Scenario, Topology};

/// Node ids in the simulator.
pub type Id = u32;

/// Latency histogram resolution: 1 ms buckets up to this many ms (later ones share the last).
const LATENCY_BUCKETS: usize = 120_000;
/// Hop histogram size (hops beyond share the last bucket).
const HOP_BUCKETS: usize = 1024;
/// Channel used by every tree of a run.
const CHANNEL: ChannelId = ChannelId(1);

#[derive(Debug)]
enum Action {
    Start(Id),
    Deliver {
        from: Id,
        to: Id,
        message: Message<Id>,
    },
    Timer {
        node: Id,
        timer: Timer<Id>,
    },
    PeerDown {
        node: Id,
        peer: Id,
    },
    Publish {
        writer: Id,
        index: u32,
    },
    Churn,
    Failure,
}

/// The event queue: one bucket per simulated millisecond, each a FIFO. Events are processed in
/// (time, insertion order) — the same order as a heap keyed by (time, sequence number), at O(1)
/// per event instead of O(log n) cache misses (the heap took 40% of a 100k-node run).
/// Memory: one `Vec` header per millisecond up to the farthest scheduled event; a bucket's
/// buffer is freed once it has been processed.
#[derive(Debug, Default)]
struct Calendar {
    base: u64,
    buckets: VecDeque<Vec<Action>>,
}

impl Calendar {
    fn push(&mut self, at: u64, action: Action) {
        let idx = (at.max(self.base) - self.base) as usize;
        if self.buckets.len() <= idx {
            self.buckets.resize_with(idx + 1, Vec::new);
        }
        self.buckets[idx].push(action);
    }

    /// The earliest non-empty bucket, taken out whole.
    fn pop_batch(&mut self) -> Option<(u64, Vec<Action>)> {
        loop {
            let front = self.buckets.front_mut()?;
            if !front.is_empty() {
                return Some((self.base, std::mem::take(front)));
            }
            self.buckets.pop_front();
            self.base += 1;
        }
    }
}

/// FxHash-style hasher for integer keys (deterministic, fast; keys are not adversarial here).
#[derive(Debug, Default, Clone, Copy)]
struct IntHasher(u64);
impl Hasher for IntHasher {
    fn finish(&self) -> u64 {
        mix64(self.0)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(*b)).wrapping_mul(0x517c_c1b7_2722_0a95);
        }
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}
type IntMap<K, V> = HashMap<K, V, BuildHasherDefault<IntHasher>>;

#[derive(Debug, Clone, Copy)]
struct MsgStat {
    origin: Id,
    published_at: u64,
    sends: u64,
    reached: u64,
}

/// Per-node bookkeeping kept by the simulator (not protocol state).
#[derive(Debug, Clone, Copy)]
struct Life {
    start: u64,
    death: u64,
    attached_mask: u64,
}

/// One simulation run.
#[derive(Debug)]
pub struct Sim {
    sc: Scenario,
    seed: u64,
    nodes: Vec<Option<Node<Id>>>,
    life: Vec<Life>,
    alive: Vec<Id>,
    alive_pos: Vec<u32>,
    queue: Calendar,
    now: u64,
    rng: Rng,
    membership_cfg: Arc<routefabric_overlay::membership::Config>,
    fanout_cfg: Arc<fanout::Config>,
    trees: Vec<TreeId<Id>>,
    initial: u32,
    out: Vec<OutEvent<Id>>,
    // metrics
    msgs: Vec<MsgStat>,
    words: usize,
    delivered_bits: Vec<u64>,
    latency_hist: Vec<u64>,
    hop_hist: Vec<u64>,
    join_hist: Vec<u64>,
    sends_per_node_msg: IntMap<u64, u32>,
    control_bytes: u64,
    payload_bytes: u64,
    duplicates: u64,
    events: u64,
    end: u64,
    trace: Option<Id>,
    kinds: Option<std::collections::BTreeMap<String, u64>>,
}

impl Sim {
    /// Prepares a run of `sc` (with `sc.nodes` readers).
    pub fn new(sc: Scenario) -> Self {
        let seed = sc.seed;
        let total_msgs = sc.writers * sc.messages_per_writer;
        let words = total_msgs.div_ceil(64).max(1);
        let initial = (sc.nodes + sc.writers) as u32;
        let trees = match sc.topology {
            Topology::PerWriter => (0..sc.writers as Id)
                .map(|w| TreeId {
                    channel: CHANNEL,
                    root: w,
                })
                .collect(),
            Topology::Shared => vec![TreeId {
                channel: CHANNEL,
                root: 0,
            }],
        };
        let last_publish = sc.publish_start()
            + (total_msgs as f64 * 1000.0 / sc.publish_rate_per_s.max(1e-9)) as u64;
        let end = last_publish + sc.drain_ms;
        Self {
            membership_cfg: Arc::new(sc.membership.clone()),
            fanout_cfg: Arc::new(sc.fanout.clone()),
            seed,
            nodes: Vec::with_capacity(initial as usize),
            life: Vec::with_capacity(initial as usize),
            alive: Vec::with_capacity(initial as usize),
            alive_pos: Vec::with_capacity(initial as usize),
            queue: Calendar::default(),
            now: 0,
            rng: Rng::derive(seed, u64::MAX),
            trees,
            initial,
            out: Vec::new(),
            msgs: Vec::with_capacity(total_msgs),
            words,
            delivered_bits: Vec::with_capacity(initial as usize * words),
            latency_hist: vec![0; LATENCY_BUCKETS],
            hop_hist: vec![0; HOP_BUCKETS],
            join_hist: vec![0; LATENCY_BUCKETS],
            sends_per_node_msg: IntMap::default(),
            control_bytes: 0,
            payload_bytes: 0,
            duplicates: 0,
            events: 0,
            end,
            trace: std::env::var("SIM_TRACE").ok().and_then(|v| v.parse().ok()),
            kinds: std::env::var_os("SIM_KINDS").map(|_| Default::default()),
            sc,
        }
    }

    fn push(&mut self, at: u64, action: Action) {
        self.queue.push(at, action);
    }

    fn latency(&self, a: Id, b: Id) -> u64 {
        let [lo, hi] = self.sc.link.latency_ms;
        if hi <= lo {
            return lo;
        }
        let (x, y) = if a < b { (a, b) } else { (b, a) };
        lo + mix64(self.seed ^ (u64::from(x) << 32 | u64::from(y))) % (hi - lo + 1)
    }

    fn start_time(&self, i: Id) -> u64 {
        if i < self.sc.writers as Id {
            return 0;
        }
        let readers = self.sc.nodes.max(1) as u64;
        let k = u64::from(i) - self.sc.writers as u64;
        self.sc.join_window_ms * k / readers
    }

    /// Runs to the end; `progress(now_ms, end_ms)` is called now and then.
    pub fn run(&mut self, mut progress: impl FnMut(u64, u64)) -> Report {
        let wall = std::time::Instant::now();
        // Writers start at 0, readers are chained (one pending start event at a time).
        for w in 0..self.sc.writers as Id {
            self.push(0, Action::Start(w));
        }
        if self.sc.nodes > 0 {
            let first = self.sc.writers as Id;
            self.push(self.start_time(first), Action::Start(first));
        }
        let start = self.sc.publish_start();
        let total = self.sc.writers * self.sc.messages_per_writer;
        for k in 0..total {
            let at = start + (k as f64 * 1000.0 / self.sc.publish_rate_per_s.max(1e-9)) as u64;
            let writer = (k % self.sc.writers) as Id;
            self.push(
                at,
                Action::Publish {
                    writer,
                    index: k as u32,
                },
            );
        }
        if let Some(c) = self.sc.churn.clone()
            && c.interval_ms > 0
            && c.fraction > 0.0
        {
            self.push(c.start_ms, Action::Churn);
        }
        if let Some(f) = self.sc.failure.clone() {
            self.push(f.at_ms, Action::Failure);
        }
        let mut tick = 0u64;
        while let Some((at, batch)) = self.queue.pop_batch() {
            if at > self.end {
                break;
            }
            self.now = at;
            self.events += batch.len() as u64;
            tick += 1;
            if tick.is_multiple_of(256) {
                progress(self.now, self.end);
            }
            let mut actions = batch.into_iter();
            loop {
                if let Some(ahead) = actions.as_slice().get(PREFETCH_AHEAD) {
                    self.prefetch(ahead);
                }
                if let Some(near) = actions.as_slice().get(PREFETCH_AHEAD / 3) {
                    self.prefetch_state(near);
                }
                let Some(action) = actions.next() else { break };
                self.dispatch(action);
            }
        }
        progress(self.end, self.end);
        if let Some(k) = &self.kinds {
            eprintln!("{k:#?}");
        }
        let wall_s = wall.elapsed().as_secs_f64();
        self.report(wall_s)
    }

    /// Start loading the state of the node an upcoming event is for: at a million nodes the run
    /// is bound by cache misses on node state, and the calendar knows the next events.
    fn prefetch(&self, action: &Action) {
        let node = match action {
            Action::Deliver { to, .. } => *to,
            Action::Timer { node, .. } | Action::PeerDown { node, .. } => *node,
            _ => return,
        };
        if let Some(slot) = self.nodes.get(node as usize) {
            prefetch_read(slot);
        }
    }

    /// Second stage: the node's slot is (probably) cached by now; fetch its heap blocks.
    fn prefetch_state(&self, action: &Action) {
        let node = match action {
            Action::Deliver { to, .. } => *to,
            Action::Timer { node, .. } | Action::PeerDown { node, .. } => *node,
            _ => return,
        };
        if let Some(Some(n)) = self.nodes.get(node as usize) {
            for (p, len) in n.state_blocks() {
                // The first few lines of each block: views are small, a tree's state is ~5 lines.
                for offset in (0..len.min(MAX_PREFETCH_BYTES)).step_by(64) {
                    prefetch_addr(p.wrapping_add(offset));
                }
            }
        }
    }

    fn dispatch(&mut self, action: Action) {
        match action {
            Action::Start(i) => {
                self.start_node(i);
                let next = i + 1;
                if i >= self.sc.writers as Id && next < self.initial {
                    self.push(self.start_time(next), Action::Start(next));
                }
            }
            Action::Deliver { from, to, message } => {
                if self.is_alive(to) {
                    self.feed(to, InEvent::Message { from, message });
                } else if self.is_alive(from) {
                    let at = self.now + self.sc.link.detect_ms;
                    self.push(
                        at,
                        Action::PeerDown {
                            node: from,
                            peer: to,
                        },
                    );
                }
            }
            Action::Timer { node, timer } => {
                if self.is_alive(node) {
                    self.feed(node, InEvent::TimerExpired(timer));
                }
            }
            Action::PeerDown { node, peer } => {
                if self.is_alive(node) && !self.is_alive(peer) {
                    self.feed(node, InEvent::PeerDown(peer));
                }
            }
            Action::Publish { writer, index } => {
                if !self.is_alive(writer) {
                    return;
                }
                let tree = match self.sc.topology {
                    Topology::PerWriter => TreeId {
                        channel: CHANNEL,
                        root: writer,
                    },
                    Topology::Shared => TreeId {
                        channel: CHANNEL,
                        root: 0,
                    },
                };
                let mut payload = vec![0u8; self.sc.payload_bytes.max(4)];
                payload[..4].copy_from_slice(&index.to_le_bytes());
                self.msgs.push(MsgStat {
                    origin: writer,
                    published_at: self.now,
                    sends: 0,
                    reached: 1,
                });
                debug_assert_eq!(self.msgs.len(), index as usize + 1);
                let c = fanout::Command::Publish {
                    tree,
                    payload: Bytes::from(payload),
                };
                self.feed(writer, InEvent::Command(Command::Fanout(c)));
            }
            Action::Churn => self.churn(),
            Action::Failure => {
                let Some(f) = self.sc.failure.clone() else {
                    return;
                };
                let readers: Vec<Id> = self
                    .alive
                    .iter()
                    .copied()
                    .filter(|i| *i >= self.sc.writers as Id)
                    .collect();
                let k = (readers.len() as f64 * f.fraction).round() as usize;
                let victims = self.sample(&readers, k);
                for v in victims {
                    self.kill(v);
                }
            }
        }
    }

    fn churn(&mut self) {
        let Some(c) = self.sc.churn.clone() else {
            return;
        };
        let readers: Vec<Id> = self
            .alive
            .iter()
            .copied()
            .filter(|i| *i >= self.sc.writers as Id)
            .collect();
        let k = ((readers.len() as f64 * c.fraction).round() as usize).max(1);
        for v in self.sample(&readers, k) {
            self.kill(v);
        }
        for _ in 0..k {
            let id = (self.nodes.len() as Id).max(self.initial);
            self.start_node(id);
        }
        let next = self.now + c.interval_ms;
        if next <= c.stop_ms {
            self.push(next, Action::Churn);
        }
    }

    fn sample(&mut self, from: &[Id], k: usize) -> Vec<Id> {
        let mut v = from.to_vec();
        let k = k.min(v.len());
        for i in 0..k {
            let j = i + self.rng.below(v.len() - i);
            v.swap(i, j);
        }
        v.truncate(k);
        v
    }

    fn is_alive(&self, i: Id) -> bool {
        matches!(self.nodes.get(i as usize), Some(Some(_)))
    }

    fn start_node(&mut self, i: Id) {
        let idx = i as usize;
        while self.nodes.len() <= idx {
            self.nodes.push(None);
            self.life.push(Life {
                start: u64::MAX,
                death: u64::MAX,
                attached_mask: 0,
            });
            self.alive_pos.push(u32::MAX);
            self.delivered_bits
                .extend(std::iter::repeat_n(0, self.words));
        }
        let rng = Rng::derive(self.seed, u64::from(i));
        let node = Node::new(i, self.membership_cfg.clone(), self.fanout_cfg.clone(), rng);
        self.nodes[idx] = Some(node);
        self.life[idx].start = self.now;
        self.alive_pos[idx] = self.alive.len() as u32;
        // Contact: a random node already running (the first node bootstraps alone).
        let contact = if self.alive.is_empty() {
            i
        } else {
            self.alive[self.rng.below(self.alive.len())]
        };
        self.alive.push(i);
        self.feed(i, InEvent::Command(Command::Join(contact)));
        for t in self.trees.clone() {
            self.feed(
                i,
                InEvent::Command(Command::Fanout(fanout::Command::Subscribe(t))),
            );
        }
    }

    fn kill(&mut self, i: Id) {
        let idx = i as usize;
        let Some(Some(node)) = self.nodes.get_mut(idx).map(Option::take) else {
            return;
        };
        self.life[idx].death = self.now;
        let pos = self.alive_pos[idx] as usize;
        self.alive.swap_remove(pos);
        if let Some(&moved) = self.alive.get(pos) {
            self.alive_pos[moved as usize] = pos as u32;
        }
        // Every open connection breaks: active view and tree links.
        let mut peers: Vec<Id> = node.membership().active_view().to_vec();
        peers.extend(node.fanout().tree_links());
        peers.sort_unstable();
        peers.dedup();
        let at = self.now + self.sc.link.detect_ms;
        for p in peers {
            self.push(at, Action::PeerDown { node: p, peer: i });
        }
    }

    fn feed(&mut self, i: Id, event: InEvent<Id>) {
        let trace = self.trace == Some(i);
        if trace {
            eprintln!("{} node {i} <- {event:?}", self.now);
        }
        let mut out = std::mem::take(&mut self.out);
        if let Some(Some(node)) = self.nodes.get_mut(i as usize) {
            node.handle_into(self.now, event, &mut out);
        }
        for o in out.drain(..) {
            if trace {
                eprintln!("{} node {i} -> {o:?}", self.now);
            }
            self.on_output(i, o);
        }
        self.out = out;
    }

    fn msg_index(p: &fanout::Publication<Id>) -> Option<usize> {
        let b: [u8; 4] = p.payload.get(..4)?.try_into().ok()?;
        Some(u32::from_le_bytes(b) as usize)
    }

    fn on_output(&mut self, i: Id, o: OutEvent<Id>) {
        match o {
            OutEvent::Send { to, message } => {
                if let Some(kinds) = self.kinds.as_mut() {
                    let d = format!("{message:?}");
                    let k: String = d
                        .split([' ', '{'])
                        .next()
                        .unwrap_or("")
                        .chars()
                        .take(40)
                        .collect();
                    *kinds.entry(k).or_insert(0) += 1;
                }
                if let Some(p) = message.publication() {
                    self.payload_bytes += p.payload.len() as u64;
                    if let Some(m) = Self::msg_index(p) {
                        if let Some(s) = self.msgs.get_mut(m) {
                            s.sends += 1;
                        }
                        let key = (u64::from(i) << 32) | m as u64;
                        *self.sends_per_node_msg.entry(key).or_insert(0) += 1;
                    }
                } else {
                    self.control_bytes += message.wire_size() as u64;
                }
                if self.sc.link.loss > 0.0 && self.rng.chance(self.sc.link.loss) {
                    if self.trace == Some(i) || self.trace == Some(to) {
                        eprintln!("{} dropped {i} -> {to}", self.now);
                    }
                    return;
                }
                let at = self.now + self.latency(i, to);
                if self.trace == Some(to) {
                    eprintln!("{} scheduled {i} -> {to} at {at}", self.now);
                }
                self.push(
                    at,
                    Action::Deliver {
                        from: i,
                        to,
                        message,
                    },
                );
            }
            OutEvent::ScheduleTimer { delay_ms, timer } => {
                self.push(self.now + delay_ms, Action::Timer { node: i, timer });
            }
            OutEvent::Emit(Event::Fanout(fanout::Event::Deliver {
                hops, publication, ..
            })) => {
                let Some(m) = Self::msg_index(&publication) else {
                    return;
                };
                let bit = i as usize * self.words + m / 64;
                let mask = 1u64 << (m % 64);
                let Some(word) = self.delivered_bits.get_mut(bit) else {
                    return;
                };
                if *word & mask != 0 {
                    self.duplicates += 1;
                    return;
                }
                *word |= mask;
                let Some(s) = self.msgs.get_mut(m) else {
                    return;
                };
                s.reached += 1;
                let lat = (self.now - s.published_at) as usize;
                if lat > 600 && self.trace.is_some() {
                    eprintln!(
                        "slow: node {i} msg {m} latency {lat} start {}",
                        self.life[i as usize].start
                    );
                }
                self.latency_hist[lat.min(LATENCY_BUCKETS - 1)] += 1;
                self.hop_hist[usize::from(hops).min(HOP_BUCKETS - 1)] += 1;
            }
            OutEvent::Emit(Event::Fanout(fanout::Event::Attached { tree, .. })) => {
                let Some(k) = self.trees.iter().position(|t| *t == tree) else {
                    return;
                };
                if k >= 64 {
                    return;
                }
                let life = &mut self.life[i as usize];
                if life.attached_mask & (1 << k) == 0 {
                    life.attached_mask |= 1 << k;
                    let d = (self.now - life.start) as usize;
                    self.join_hist[d.min(LATENCY_BUCKETS - 1)] += 1;
                }
            }
            OutEvent::Emit(_) => {}
        }
    }

    /// Read access for invariant checks in tests: the live nodes.
    pub fn live_nodes(&self) -> impl Iterator<Item = &Node<Id>> {
        self.nodes.iter().flatten()
    }

    /// Connected components of the live nodes' active views (1: one overlay; HyParView after a
    /// mass failure may split, which the trees survive through the root).
    fn membership_components(&self) -> usize {
        let mut seen = vec![false; self.nodes.len()];
        let mut components = 0;
        let mut stack = Vec::new();
        for (start, slot) in self.nodes.iter().enumerate() {
            if slot.is_none() || seen[start] {
                continue;
            }
            components += 1;
            seen[start] = true;
            stack.push(start);
            let mut size = 0usize;
            while let Some(x) = stack.pop() {
                size += 1;
                let Some(Some(node)) = self.nodes.get(x) else {
                    continue;
                };
                for &p in node.membership().active_view() {
                    let p = p as usize;
                    if matches!(self.nodes.get(p), Some(Some(_))) && !seen[p] {
                        seen[p] = true;
                        stack.push(p);
                    }
                }
            }
            if std::env::var_os("SIM_DEBUG").is_some() && size < 10 {
                let n = self.nodes[start].as_ref().map(|n| {
                    (
                        n.membership().active_view().to_vec(),
                        n.membership().passive_view().len(),
                    )
                });
                eprintln!("component of {size} from node {start}: {n:?}");
            }
        }
        components
    }

    fn report(&self, wall_s: f64) -> Report {
        let window = self.sc.delivery_window_ms;
        let mut expected = 0u64;
        let mut delivered = 0u64;
        for (m, s) in self.msgs.iter().enumerate() {
            for (v, life) in self.life.iter().enumerate() {
                if v as Id == s.origin || life.start > s.published_at {
                    continue;
                }
                if life.death < s.published_at + window {
                    continue;
                }
                expected += 1;
                if self.delivered_bits[v * self.words + m / 64] & (1 << (m % 64)) != 0 {
                    delivered += 1;
                } else if std::env::var_os("SIM_DEBUG").is_some() {
                    eprintln!(
                        "missing: node {v} (start {} death {}) msg {m} published {}",
                        life.start, life.death, s.published_at
                    );
                }
            }
        }
        let sends: u64 = self.msgs.iter().map(|s| s.sends).sum();
        let reached: u64 = self.msgs.iter().map(|s| s.reached.saturating_sub(1)).sum();
        let max_sends = self.sends_per_node_msg.values().copied().max().unwrap_or(0);
        if std::env::var_os("SIM_DEBUG").is_some() {
            for (k, v) in &self.sends_per_node_msg {
                if *v > self.sc.fanout.max_children as u32 {
                    eprintln!("node {} sent msg {} {v} times", k >> 32, k & 0xffff_ffff);
                }
            }
        }
        let mean_sends = if self.sends_per_node_msg.is_empty() {
            0.0
        } else {
            self.sends_per_node_msg
                .values()
                .map(|v| f64::from(*v))
                .sum::<f64>()
                / self.sends_per_node_msg.len() as f64
        };
        let live: Vec<&Node<Id>> = self.live_nodes().collect();
        let joined = live
            .iter()
            .filter(|n| self.trees.iter().all(|t| n.fanout().is_attached(t)))
            .count();
        Report {
            scenario: self.sc.name.clone(),
            seed: self.seed,
            nodes: self.sc.nodes,
            writers: self.sc.writers,
            messages: self.msgs.len(),
            live_nodes: live.len(),
            joined_ratio: ratio(joined as u64, live.len() as u64),
            membership_components: self.membership_components(),
            expected_deliveries: expected,
            delivered_ratio: ratio(delivered, expected),
            duplicates: self.duplicates,
            rmr: if reached == 0 {
                0.0
            } else {
                sends as f64 / reached as f64 - 1.0
            },
            ldh_max: hist_max(&self.hop_hist),
            ldh_p99: hist_quantile(&self.hop_hist, 0.99),
            latency_p50_ms: hist_quantile(&self.latency_hist, 0.50) as f64,
            latency_p99_ms: hist_quantile(&self.latency_hist, 0.99) as f64,
            max_sends_per_node_per_msg: u64::from(max_sends),
            mean_sends_per_node_per_msg: mean_sends,
            control_bytes_per_payload_byte: ratio(self.control_bytes, self.payload_bytes),
            join_time_p95_ms: hist_quantile(&self.join_hist, 0.95) as f64,
            sim_events: self.events,
            sim_ms: self.end,
            wall_s,
            peak_rss_bytes: crate::report::peak_rss_bytes(),
        }
    }
}

/// Bytes of one heap block prefetched at most.
const MAX_PREFETCH_BYTES: usize = 320;

/// Events looked ahead for prefetching (a few hundred ns of work each).
const PREFETCH_AHEAD: usize = 12;

#[cfg(target_arch = "x86_64")]
fn prefetch_read<T>(value: &T) {
    use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
    let p = std::ptr::from_ref(value).cast::<i8>();
    // SAFETY: SSE is part of the x86_64 baseline, and a prefetch is only a hint: it never
    // faults and never reads into the program, whatever the address.
    unsafe {
        let mut offset = 0;
        while offset < std::mem::size_of::<T>() {
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(offset));
            offset += 64;
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn prefetch_read<T>(_value: &T) {}

#[cfg(target_arch = "x86_64")]
fn prefetch_addr(p: *const u8) {
    use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
    // SAFETY: as in `prefetch_read`: a hint that never faults, whatever the address.
    unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast::<i8>()) }
}

#[cfg(not(target_arch = "x86_64"))]
fn prefetch_addr(_p: *const u8) {}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 1.0 } else { a as f64 / b as f64 }
}

fn hist_max(h: &[u64]) -> u64 {
    h.iter().rposition(|c| *c > 0).unwrap_or(0) as u64
}

fn hist_quantile(h: &[u64], q: f64) -> u64 {
    let total: u64 = h.iter().sum();
    if total == 0 {
        return 0;
    }
    let rank = ((total as f64) * q).ceil().max(1.0) as u64;
    let mut acc = 0;
    for (i, c) in h.iter().enumerate() {
        acc += c;
        if acc >= rank {
            return i as u64;
        }
    }
    hist_max(h)
}
