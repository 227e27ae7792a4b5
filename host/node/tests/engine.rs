#![allow(clippy::unwrap_used)]
//! Several engines in one process, joined by a deterministic in-memory network (1 ms links,
//! instant connections), with the first-party plugins running natively.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use routefabric_core::envelope::{Envelope, Keypair, Kind};
use routefabric_core::plugin::{
    HostedProofSource, HostedRoutingPolicy, Native, ProofSource, RoutingPolicy,
};
use routefabric_core::{NodeId, PeerRef};
use routefabric_node::engine::{
    Command, Delivery, Engine, EngineConfig, Input, Output, Plane, Plugins, SendOutcome,
};
use routefabric_node::frame::{AckBody, Directed, Frame};

const T0: u64 = 1_800_000_000_000;

struct TestPlugins {
    sources: Vec<(String, Arc<dyn HostedProofSource>)>,
    policies: BTreeMap<String, Arc<dyn HostedRoutingPolicy>>,
    active: Mutex<Option<String>>,
}

impl Plugins for TestPlugins {
    fn proof_sources(&self) -> Vec<(String, Arc<dyn HostedProofSource>)> {
        self.sources.clone()
    }
    fn policy(&self) -> Option<(String, Arc<dyn HostedRoutingPolicy>)> {
        let name = self.active.lock().unwrap().clone()?;
        let p = self.policies.get(&name)?.clone();
        Some((name, p))
    }
}

fn plugins(me: NodeId) -> Arc<TestPlugins> {
    let ack: Arc<dyn HostedProofSource> = Arc::new(Native::new(
        ack_trace::AckTraceSource::init(&[], me).unwrap(),
    ));
    let tokens: Arc<dyn HostedProofSource> = Arc::new(Native::new(
        fanout_token::FanoutToken::init(&[], me).unwrap(),
    ));
    let lowest: Arc<dyn HostedRoutingPolicy> =
        Arc::new(Native::new(lowest_cost::LowestCost::init(&[], me).unwrap()));
    let expected: Arc<dyn HostedRoutingPolicy> = Arc::new(Native::new(
        expected_cost::ExpectedCost::init(&[], me).unwrap(),
    ));
    Arc::new(TestPlugins {
        sources: vec![("ack-trace".into(), ack), ("fanout-token".into(), tokens)],
        policies: [
            ("lowest-cost".to_owned(), lowest),
            ("expected-cost".to_owned(), expected),
        ]
        .into_iter()
        .collect(),
        active: Mutex::new(Some("lowest-cost".into())),
    })
}

enum Event {
    Input(usize, Input),
}

struct Net {
    engines: Vec<Engine>,
    plugins: Vec<Arc<TestPlugins>>,
    index: HashMap<NodeId, usize>,
    links: BTreeSet<(usize, usize)>,
    queue: BTreeMap<(u64, u64), Event>,
    seq: u64,
    now: u64,
    deliveries: Vec<(usize, Delivery)>,
    results: Vec<(usize, u64, SendOutcome)>,
    bans: Vec<(usize, NodeId)>,
}

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 10_000 + i as u16))
}

impl Net {
    fn new(n: usize) -> Net {
        let mut net = Net {
            engines: Vec::new(),
            plugins: Vec::new(),
            index: HashMap::new(),
            links: BTreeSet::new(),
            queue: BTreeMap::new(),
            seq: 0,
            now: T0,
            deliveries: Vec::new(),
            results: Vec::new(),
            bans: Vec::new(),
        };
        for i in 0..n {
            let keys = Keypair::from_secret([i as u8 + 1; 32]);
            let p = plugins(keys.id());
            let engine = Engine::new(
                keys,
                addr(i),
                T0,
                i as u64,
                EngineConfig::default(),
                p.clone(),
            );
            net.index.insert(engine.me().id, i);
            net.engines.push(engine);
            net.plugins.push(p);
        }
        net
    }

    fn id(&self, i: usize) -> NodeId {
        self.engines[i].me().id
    }

    fn me(&self, i: usize) -> PeerRef {
        self.engines[i].me()
    }

    fn push(&mut self, at: u64, event: Event) {
        self.seq += 1;
        self.queue.insert((at, self.seq), event);
    }

    fn input(&mut self, i: usize, input: Input) {
        self.push(self.now, Event::Input(i, input));
    }

    fn connect(&mut self, a: usize, b: usize) {
        let key = (a.min(b), a.max(b));
        if self.links.insert(key) {
            let (ia, ib) = (self.id(a), self.id(b));
            self.push(
                self.now,
                Event::Input(
                    a,
                    Input::PeerUp {
                        peer: ib,
                        addr: Some(addr(b)),
                    },
                ),
            );
            self.push(
                self.now,
                Event::Input(
                    b,
                    Input::PeerUp {
                        peer: ia,
                        addr: Some(addr(a)),
                    },
                ),
            );
        }
    }

    fn disconnect(&mut self, a: usize, b: usize) {
        if self.links.remove(&(a.min(b), a.max(b))) {
            let (ia, ib) = (self.id(a), self.id(b));
            self.push(self.now, Event::Input(a, Input::PeerDown(ib)));
            self.push(self.now, Event::Input(b, Input::PeerDown(ia)));
        }
    }

    fn run_until(&mut self, end: u64) {
        while let Some((&(at, seq), _)) = self.queue.iter().next() {
            if at > end {
                break;
            }
            let Some(Event::Input(i, input)) = self.queue.remove(&(at, seq)) else {
                break;
            };
            self.now = at;
            let outputs = self.engines[i].handle(at, input);
            for o in outputs {
                match o {
                    Output::Send { to, frame } => {
                        let Some(&j) = self.index.get(&to.id) else {
                            continue;
                        };
                        self.connect(i, j);
                        let from = self.id(i);
                        self.push(at + 1, Event::Input(j, Input::Frame { from, bytes: frame }));
                    }
                    Output::Timer { delay_ms, timer } => {
                        self.push(at + delay_ms, Event::Input(i, Input::Timer(timer)))
                    }
                    Output::Deliver(d) => self.deliveries.push((i, d)),
                    Output::SendResult { tag, outcome } => self.results.push((i, tag, outcome)),
                    Output::Ban(peer) => self.bans.push((i, peer)),
                }
            }
        }
        self.now = end;
    }

    /// Nodes 1.. join through node 0, one every 10 ms, then settle.
    fn join_all(&mut self) {
        self.input(0, Input::Command(Command::Start { contact: None }));
        for i in 1..self.engines.len() {
            let contact = self.me(0);
            self.input(
                i,
                Input::Command(Command::Start {
                    contact: Some(contact),
                }),
            );
            let t = self.now + 10;
            self.run_until(t);
        }
        let t = self.now + 2_000;
        self.run_until(t);
    }

    /// Hand node `to` a frame as if neighbour `from` had sent it.
    fn inject(&mut self, to: usize, from: NodeId, frame: &Frame) {
        let bytes = frame.encode();
        self.input(to, Input::Frame { from, bytes });
    }

    fn send(&mut self, from: usize, to: usize, tag: u64) {
        let dest = self.id(to);
        self.input(
            from,
            Input::Command(Command::Send {
                dest,
                payload: vec![tag as u8; 100],
                tag,
            }),
        );
    }
}

#[test]
fn nodes_join_into_a_connected_overlay() {
    let mut net = Net::new(12);
    net.join_all();
    for (i, e) in net.engines.iter().enumerate() {
        let active = e.overlay().membership().active_view().len();
        assert!(active >= 1, "node {i} has no active peer");
    }
    // Connected: a walk over links reaches everyone.
    let mut seen = BTreeSet::from([0usize]);
    let mut stack = vec![0usize];
    while let Some(a) = stack.pop() {
        for &(x, y) in &net.links {
            let other = if x == a {
                y
            } else if y == a {
                x
            } else {
                continue;
            };
            if seen.insert(other) {
                stack.push(other);
            }
        }
    }
    assert_eq!(seen.len(), 12);
}

#[test]
fn publications_reach_every_subscriber_once_with_the_origins_signature() {
    let mut net = Net::new(10);
    net.join_all();
    let writer = net.me(3);
    for i in 0..10 {
        net.input(
            i,
            Input::Command(Command::Subscribe {
                channel: "news".into(),
                writer,
            }),
        );
    }
    let t = net.now + 1_000;
    net.run_until(t);
    for k in 0..20u8 {
        net.input(
            3,
            Input::Command(Command::Publish {
                channel: "news".into(),
                payload: vec![k; 64],
            }),
        );
        let t = net.now + 5;
        net.run_until(t);
    }
    let t = net.now + 2_000;
    net.run_until(t);
    let mut per_node = vec![0usize; 10];
    for (i, d) in &net.deliveries {
        assert_eq!(d.origin, net.id(3));
        assert_eq!(d.channel.as_deref(), Some("news"));
        assert_eq!(d.plane, Plane::Tree);
        assert!(d.timestamp_ms >= T0);
        per_node[*i] += 1;
    }
    let mut expected = vec![20; 10];
    expected[3] = 0; // the writer does not deliver to itself
    assert_eq!(
        per_node, expected,
        "every other subscriber gets each message once"
    );
}

#[test]
fn directed_sends_fall_back_first_then_take_the_fast_path() {
    let mut net = Net::new(10);
    net.join_all();
    // A pair that is not directly linked.
    let (a, b) = (0..10)
        .flat_map(|a| (0..10).map(move |b| (a, b)))
        .find(|&(a, b)| a != b && !net.links.contains(&(a.min(b), a.max(b))))
        .unwrap();
    net.send(a, b, 1);
    let t = net.now + 500;
    net.run_until(t);
    net.send(a, b, 2);
    let t = net.now + 500;
    net.run_until(t);
    let outcomes: Vec<_> = net
        .results
        .iter()
        .filter(|r| r.0 == a)
        .map(|r| (r.1, r.2.clone()))
        .collect();
    assert_eq!(outcomes.len(), 2, "{outcomes:?}");
    match &outcomes[0].1 {
        SendOutcome::Acked { fast, .. } => assert!(!fast, "no proof yet: the safe path"),
        other => panic!("{other:?}"),
    }
    match &outcomes[1].1 {
        SendOutcome::Acked { fast, hops, .. } => {
            assert!(fast, "the first ACK's trace is a proof");
            assert!(*hops >= 2);
        }
        other => panic!("{other:?}"),
    }
    let got: Vec<_> = net
        .deliveries
        .iter()
        .filter(|(i, d)| *i == b && d.channel.is_none())
        .collect();
    assert_eq!(got.len(), 2, "each message delivered once");
    assert_eq!(got[0].1.plane, Plane::Flood);
    assert_eq!(got[1].1.plane, Plane::Fast);
    assert_eq!(net.engines[a].stats().fast_path, 1);
    assert_eq!(net.engines[a].stats().fallback, 1);
}

#[test]
fn a_lost_fast_path_is_retried_on_the_safe_path() {
    let mut net = Net::new(8);
    net.join_all();
    let (a, b) = (0..8)
        .flat_map(|a| (0..8).map(move |b| (a, b)))
        .find(|&(a, b)| a != b && !net.links.contains(&(a.min(b), a.max(b))))
        .unwrap();
    net.send(a, b, 1);
    let t = net.now + 500;
    net.run_until(t);
    // The route learned goes through the first relay: drop that link silently on the relay's
    // side by cutting the relay from b (the relay forwards into the void and the ACK never comes).
    net.results.clear();
    let relay_to_b: Vec<(usize, usize)> = net
        .links
        .iter()
        .filter(|&&(x, y)| x == b || y == b)
        .copied()
        .collect();
    // Cut all but one of b's links so the old proof is likely stale; b stays reachable.
    for &(x, y) in relay_to_b.iter().skip(1) {
        net.disconnect(x, y);
    }
    net.send(a, b, 2);
    let t = net.now + 5_000;
    net.run_until(t);
    let r: Vec<_> = net
        .results
        .iter()
        .filter(|r| r.0 == a && r.1 == 2)
        .collect();
    assert_eq!(r.len(), 1);
    assert!(matches!(r[0].2, SendOutcome::Acked { .. }), "{:?}", r[0].2);
}

#[test]
fn forged_and_garbage_frames_are_refused_counted_and_the_sender_banned() {
    let mut net = Net::new(4);
    net.join_all();
    let (a, b) = (1usize, 2usize);
    net.connect(a, b);
    let t = net.now + 10;
    net.run_until(t);
    // Node a claims to relay a message "from" node 3 that node a signed itself.
    let mallory = Keypair::from_secret([2; 32]);
    let victim = net.id(3);
    let forged = mallory.seal(&Envelope {
        origin: victim,
        timestamp_ms: net.now,
        seq: 1,
        kind: Kind::Direct { dest: net.id(b) },
        payload: b"pay mallory".to_vec(),
    });
    let frame = Frame::Directed(Box::new(Directed {
        origin: victim,
        dest: net.id(b),
        id: 1,
        attempt: 0,
        flood: false,
        ttl: 4,
        trace: vec![victim, net.id(a)],
        envelope: forged,
    }));
    let from = net.id(a);
    net.inject(b, from, &frame);
    let t = net.now + 10;
    net.run_until(t);
    assert_eq!(net.engines[b].stats().rejects.bad_signature, 1);
    assert!(
        net.deliveries
            .iter()
            .all(|(i, d)| *i != b || d.payload != b"pay mallory")
    );
    for _ in 0..20 {
        net.input(
            b,
            Input::Frame {
                from,
                bytes: vec![0xff, 0x00, 0x13],
            },
        );
    }
    let t = net.now + 10;
    net.run_until(t);
    assert_eq!(net.engines[b].stats().malformed_frames, 20);
    assert!(
        net.bans.contains(&(b, from)),
        "a peer that keeps sending garbage is banned"
    );
}

#[test]
fn swapping_the_policy_changes_who_decides() {
    let mut net = Net::new(8);
    net.join_all();
    let (a, b) = (0..8)
        .flat_map(|a| (0..8).map(move |b| (a, b)))
        .find(|&(a, b)| a != b && !net.links.contains(&(a.min(b), a.max(b))))
        .unwrap();
    for tag in 0..3 {
        net.send(a, b, tag);
        let t = net.now + 300;
        net.run_until(t);
    }
    assert!(
        net.engines[a]
            .stats()
            .decisions
            .get("lowest-cost")
            .copied()
            .unwrap_or(0)
            >= 1
    );
    for p in &net.plugins {
        *p.active.lock().unwrap() = Some("expected-cost".into());
    }
    for tag in 3..6 {
        net.send(a, b, tag);
        let t = net.now + 300;
        net.run_until(t);
    }
    let decisions = &net.engines[a].stats().decisions;
    assert!(
        decisions.get("expected-cost").copied().unwrap_or(0) >= 1,
        "{decisions:?}"
    );
    let acked = net
        .results
        .iter()
        .filter(|r| r.0 == a && matches!(r.2, SendOutcome::Acked { .. }))
        .count();
    assert_eq!(acked, 6, "nothing lost across the swap");
}

/// The identifier of `node`'s `n`-th directed send or publication since boot `T0`.
fn seq(n: u64) -> u64 {
    T0 * 1_000 + n
}

/// Two nodes that are not linked, and a neighbour of the first.
fn unlinked_pair_and_a_neighbour(net: &Net) -> (usize, usize, usize) {
    let n = net.engines.len();
    let linked = |a: usize, b: usize| net.links.contains(&(a.min(b), a.max(b)));
    let (a, b) = (0..n)
        .flat_map(|a| (0..n).map(move |b| (a, b)))
        .find(|&(a, b)| a != b && !linked(a, b))
        .unwrap();
    let m = (0..n).find(|&m| m != a && m != b && linked(a, m)).unwrap();
    (a, b, m)
}

#[test]
fn an_ack_signed_by_anyone_but_the_destination_is_refused() {
    let mut net = Net::new(8);
    net.join_all();
    let (a, b, m) = unlinked_pair_and_a_neighbour(&net);
    net.send(a, b, 7);
    // The neighbour m acknowledges in b's place, with a path ending at itself.
    let mallory = Keypair::from_secret([m as u8 + 1; 32]);
    let body = AckBody {
        id: seq(1),
        attempt: 0,
        path: vec![net.id(a), net.id(m)],
        flood: false,
    };
    let mut payload = Vec::new();
    ciborium::into_writer(&body, &mut payload).unwrap();
    let forged = mallory.seal(&Envelope {
        origin: net.id(m),
        timestamp_ms: net.now,
        seq: 1,
        kind: Kind::Direct { dest: net.id(a) },
        payload,
    });
    let from = net.id(m);
    net.inject(a, from, &Frame::Ack(forged));
    let t = net.now + 2_000;
    net.run_until(t);
    assert_eq!(net.engines[a].stats().rejects.bad_signature, 1);
    let outcomes: Vec<_> = net.results.iter().filter(|r| r.0 == a).collect();
    assert_eq!(outcomes.len(), 1, "{outcomes:?}");
    match &outcomes[0].2 {
        SendOutcome::Acked { hops, .. } => assert!(*hops >= 2, "b's own ACK, over {hops} hops"),
        other => panic!("{other:?}"),
    }
    assert!(
        net.deliveries
            .iter()
            .any(|(i, d)| *i == b && d.payload == vec![7u8; 100])
    );
}

#[test]
fn forged_copies_sent_ahead_do_not_keep_the_real_message_out() {
    let mut net = Net::new(10);
    net.join_all();
    let (a, b, _) = unlinked_pair_and_a_neighbour(&net);
    // Before a's first send leaves, every other node is handed a forged copy with the header the
    // real one will carry (origin a, its next sequence number, attempt 0) by one of its
    // neighbours: if copies were de-duplicated before verification, the real one would be
    // dropped everywhere.
    let mallory = Keypair::from_secret([99; 32]);
    let origin = net.id(a);
    let links: Vec<(usize, usize)> = net.links.iter().copied().collect();
    for node in (0..10).filter(|&n| n != a) {
        let other = |&(x, y): &(usize, usize)| match (x == node, y == node) {
            (true, false) if y != a => Some(y),
            (false, true) if x != a => Some(x),
            _ => None,
        };
        let Some(neighbour) = links.iter().find_map(other) else {
            continue;
        };
        let forged = mallory.seal(&Envelope {
            origin,
            timestamp_ms: net.now,
            seq: seq(1),
            kind: Kind::Direct { dest: net.id(b) },
            payload: b"forged".to_vec(),
        });
        let frame = Frame::Directed(Box::new(Directed {
            origin,
            dest: net.id(b),
            id: seq(1),
            attempt: 0,
            flood: true,
            ttl: 0,
            trace: vec![origin, net.id(neighbour)],
            envelope: forged,
        }));
        let from = net.id(neighbour);
        net.inject(node, from, &frame);
    }
    net.send(a, b, 3);
    let t = net.now + 2_000;
    net.run_until(t);
    let refused: u64 = net
        .engines
        .iter()
        .map(|e| e.stats().rejects.bad_signature)
        .sum();
    assert!(refused >= 8, "forged copies refused: {refused}");
    let got: Vec<_> = net
        .deliveries
        .iter()
        .filter(|(i, d)| *i == b && d.channel.is_none())
        .map(|(_, d)| d.payload.clone())
        .collect();
    assert_eq!(got, vec![vec![3u8; 100]], "the real message, once");
    // The first attempt itself got through: a retry (after the ACK timeout) would have hidden
    // a first copy kept out by the forgeries.
    let ack_timeout = EngineConfig::default().ack_timeout_ms;
    match net.results.iter().find(|r| r.0 == a).map(|r| &r.2) {
        Some(SendOutcome::Acked { rtt_ms, .. }) => assert!(
            *rtt_ms < ack_timeout,
            "acknowledged after {rtt_ms} ms: the first attempt was lost"
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_full_trace_is_dropped_without_blaming_the_relay() {
    let mut net = Net::new(6);
    net.join_all();
    let (a, b, m) = unlinked_pair_and_a_neighbour(&net);
    // A validly signed message from a whose trace is one hop short of the cap reaches m.
    let keys = Keypair::from_secret([a as u8 + 1; 32]);
    let max = EngineConfig::default().max_trace;
    let envelope = keys.seal(&Envelope {
        origin: net.id(a),
        timestamp_ms: net.now,
        seq: 5,
        kind: Kind::Direct { dest: net.id(b) },
        payload: b"long way".to_vec(),
    });
    let mut trace = vec![net.id(a)];
    trace.extend((0..max - 3).map(|k| Keypair::from_secret([200 + k as u8; 32]).id()));
    trace.push(net.id(a));
    assert_eq!(trace.len(), max - 1);
    let frame = Frame::Directed(Box::new(Directed {
        origin: net.id(a),
        dest: net.id(b),
        id: 5,
        attempt: 0,
        flood: true,
        ttl: 200,
        trace,
        envelope,
    }));
    let from = net.id(a);
    net.inject(m, from, &frame);
    let t = net.now + 100;
    net.run_until(t);
    let stats = net.engines[m].stats();
    assert_eq!(stats.trace_full, 1);
    assert_eq!(
        stats.relayed, 0,
        "not passed on to be refused by the next node"
    );
    assert_eq!(stats.malformed_frames, 0);
}
