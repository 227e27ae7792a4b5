//! Native tests on realistic traces: a simulated network of instances whose messages are carried
//! by hand from `Action::Send` to the neighbour's `Observation::Message`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::*;

const SEED: u64 = 0x5eed_d1c7;

fn id(n: u64) -> NodeId {
    NodeId::from_index(n)
}

/// A random-looking id, as ed25519 keys are.
fn key(seed: u64, n: u64) -> NodeId {
    let s = mix(seed ^ n.wrapping_mul(0x2545_f491_4f6c_dd1d));
    NodeId::from_words([mix(s), mix(s ^ 1), mix(s ^ 2), mix(s ^ 3)])
}

fn link(peer: NodeId, up: bool, session: u64) -> Observation {
    Observation::Link(LinkSample {
        peer,
        up,
        rtt_us: Some(800),
        session,
    })
}

/// A table too small to hold the whole test network, so that lookups have work to do.
fn sparse(k: usize, cache_size: usize) -> Vec<u8> {
    cbor::encode(&Config {
        k,
        cache_size,
        ..Config::default()
    })
}

fn config(k: usize) -> Vec<u8> {
    cbor::encode(&Config {
        k,
        ..Config::default()
    })
}

/// The lookup messages among `actions` (requests and replies), decoded.
fn sends(actions: &[Action]) -> Vec<(NodeId, Message)> {
    messages(actions)
        .into_iter()
        .filter(|(_, m)| !matches!(m, Message::Poison(_)))
        .collect()
}

/// Every message among `actions`, decoded.
fn messages(actions: &[Action]) -> Vec<(NodeId, Message)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { to, data } => Some((*to, wire::decode(data, 1 << 20).unwrap())),
            _ => None,
        })
        .collect()
}

/// The poison notices among `actions`: to whom, about which contacts.
fn poisons(actions: &[Action]) -> Vec<(NodeId, Vec<NodeId>)> {
    messages(actions)
        .into_iter()
        .filter_map(|(to, m)| match m {
            Message::Poison(p) => Some((to, p.ids.into_iter().map(NodeId::from).collect())),
            _ => None,
        })
        .collect()
}

fn offered(actions: &[Action], dest: NodeId) -> Option<Vec<NextHop>> {
    actions.iter().rev().find_map(|a| match a {
        Action::Offer { dest: d, hops } if *d == dest => Some(hops.clone()),
        _ => None,
    })
}

/// Instances on a simulated network. Messages arrive instantly and in order; timers fire in time
/// order when no message is in flight.
struct Net {
    ids: Vec<NodeId>,
    index: BTreeMap<NodeId, usize>,
    nodes: Vec<DhtDirectory>,
    links: BTreeSet<(usize, usize)>,
    queue: VecDeque<(usize, Observation)>,
    timers: BTreeMap<(Millis, u64), (usize, u64)>,
    timer_seq: u64,
    now: Millis,
    /// Offers and withdrawals of each node, with their time.
    routes: Vec<Vec<(Millis, Action)>>,
    /// Each node's route store, as the host keeps it: hops upserted by neighbour, withdrawn by
    /// destination, dropped with their link, valid for their TTL.
    stores: Vec<BTreeMap<NodeId, Vec<(NextHop, Millis)>>>,
    messages: u64,
}

impl Net {
    fn new(n: usize, config: &[u8]) -> Net {
        let ids: Vec<NodeId> = (0..n as u64).map(|i| key(SEED, i)).collect();
        let nodes = ids
            .iter()
            .map(|id| DhtDirectory::init(config, *id).unwrap())
            .collect();
        Net {
            index: ids.iter().enumerate().map(|(i, id)| (*id, i)).collect(),
            ids,
            nodes,
            links: BTreeSet::new(),
            queue: VecDeque::new(),
            timers: BTreeMap::new(),
            timer_seq: 0,
            now: 0,
            routes: vec![Vec::new(); n],
            stores: vec![BTreeMap::new(); n],
            messages: 0,
        }
    }

    fn ring(n: usize, config: &[u8]) -> Net {
        let mut net = Net::new(n, config);
        for i in 0..n {
            net.connect(i, (i + 1) % n);
        }
        net.settle();
        net
    }

    fn observe(&mut self, i: usize, observations: Vec<Observation>) -> Vec<Action> {
        let actions = self.nodes[i].observe(self.now, &observations);
        for action in &actions {
            match action {
                Action::Send { to, data } => {
                    let j = self.index[to];
                    assert!(
                        self.links.contains(&(i.min(j), i.max(j))),
                        "sends only to neighbours"
                    );
                    self.messages += 1;
                    let message = PeerMessage {
                        sender: self.ids[i],
                        data: data.clone(),
                    };
                    self.queue.push_back((j, Observation::Message(message)));
                }
                Action::SetTimer { token, after_ms } => {
                    self.timer_seq += 1;
                    let at = self.now + u64::from(*after_ms);
                    self.timers.insert((at, self.timer_seq), (i, *token));
                }
                Action::Offer { dest, hops } => {
                    let stored = self.stores[i].entry(*dest).or_default();
                    for hop in hops {
                        stored.retain(|(h, _)| h.via != hop.via);
                        stored.push((*hop, self.now));
                    }
                    self.routes[i].push((self.now, action.clone()));
                }
                Action::Withdraw(dest) => {
                    self.stores[i].remove(dest);
                    self.routes[i].push((self.now, action.clone()));
                }
            }
        }
        actions
    }

    fn connect(&mut self, a: usize, b: usize) {
        self.links.insert((a.min(b), a.max(b)));
        let (ia, ib) = (self.ids[a], self.ids[b]);
        self.observe(a, vec![link(ib, true, 1)]);
        self.observe(b, vec![link(ia, true, 1)]);
    }

    fn disconnect(&mut self, a: usize, b: usize) {
        self.links.remove(&(a.min(b), a.max(b)));
        for (x, y) in [(a, b), (b, a)] {
            let gone = self.ids[y];
            for hops in self.stores[x].values_mut() {
                hops.retain(|(h, _)| h.via != gone);
            }
        }
        let (ia, ib) = (self.ids[a], self.ids[b]);
        self.observe(a, vec![link(ib, false, 1)]);
        self.observe(b, vec![link(ia, false, 1)]);
    }

    /// Deliver messages until none is in flight.
    fn settle(&mut self) {
        let mut steps = 0;
        while let Some((to, observation)) = self.queue.pop_front() {
            steps += 1;
            assert!(steps < 1_000_000, "a message storm");
            if let Observation::Message(m) = &observation {
                let from = self.index[&m.sender];
                if !self.links.contains(&(from.min(to), from.max(to))) {
                    continue; // the link went down in flight
                }
            }
            self.observe(to, vec![observation]);
        }
    }

    /// Run timers and the messages they cause until `until`.
    fn run_until(&mut self, until: Millis) {
        self.settle();
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > until {
                break;
            }
            let ((at, _), (i, token)) = entry.remove_entry();
            self.now = at;
            self.observe(i, vec![Observation::Timer(token)]);
            self.settle();
        }
        self.now = until;
    }

    /// The best next hop in node `at`'s route store toward `dest`, as the host would pick it.
    fn stored(&self, at: usize, dest: usize) -> Option<NextHop> {
        self.stores[at]
            .get(&self.ids[dest])?
            .iter()
            .filter(|(h, offered)| self.now < offered + u64::from(h.ttl_ms))
            .map(|(h, _)| *h)
            .min_by_key(|h| (h.cost, h.via))
    }

    /// Carry a message from `from` to `dest` as the host would: along the best next hop of each
    /// node's route store, a node without one reporting a miss and waiting for its lookup. The
    /// hop count if it arrives.
    fn deliver(&mut self, from: usize, dest: usize) -> Result<usize, Undelivered> {
        let mut at = from;
        let mut seen = BTreeSet::new();
        while at != dest {
            if !seen.insert(at) {
                return Err(Undelivered::Loop);
            }
            if self.stored(at, dest).is_none() {
                self.observe(at, vec![Observation::Miss(self.ids[dest])]);
                self.settle();
            }
            let hop = self.stored(at, dest).ok_or(Undelivered::NoRoute)?;
            if hop.cost >= 1_000_000 {
                return Err(Undelivered::NoRoute); // only a guess: the lookup failed
            }
            let next = self.index[&hop.via];
            assert!(
                self.links.contains(&(at.min(next), at.max(next))),
                "via a neighbour"
            );
            at = next;
        }
        Ok(seen.len())
    }
}

/// The wire id of the (last) walk `p` sent through `to`.
fn walk_to(p: &DhtDirectory, to: NodeId) -> u64 {
    p.lookups
        .iter()
        .flat_map(|(id, l)| {
            l.queries
                .iter()
                .enumerate()
                .filter(move |(_, q)| q.to == to)
                .map(move |(i, _)| (id << WALK_BITS) | i as u64)
        })
        .last()
        .expect("a walk through that neighbour")
}

/// Why a message did not arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Undelivered {
    /// A node on the way found no route: the host falls back to the overlay.
    NoRoute,
    /// The routes sent it round in a circle: never acceptable.
    Loop,
}

fn ring_distance(n: usize, a: usize, b: usize) -> usize {
    let d = a.abs_diff(b);
    d.min(n - d)
}

#[test]
fn a_miss_is_looked_up_across_a_ring_of_30_and_the_answer_routes() {
    const N: usize = 30;
    // Buckets of 3 and a cache of 8 keep the tables sparse (30 nodes would fit whole in buckets
    // of 20), so far destinations are ones the origin does not know and the lookup has to walk.
    let mut net = Net::ring(N, &sparse(3, 8));
    net.run_until(120_000); // four refresh rounds
    let sizes: Vec<usize> = net.nodes.iter().map(|n| n.contacts()).collect();
    assert!(
        sizes.iter().all(|s| (4..N).contains(s)),
        "tables: {sizes:?}"
    );

    let unknown: Vec<usize> = (8..=22)
        .filter(|&d| net.nodes[0].query(net.now, &net.ids[d]).is_empty())
        .collect();
    assert!(
        unknown.len() >= 3,
        "far nodes unknown to node 0: {unknown:?}"
    );
    let (mut found, mut tried) = (Vec::new(), 0);
    for &far in &unknown {
        let dest = net.ids[far];
        if !net.nodes[0].query(net.now, &dest).is_empty() {
            continue; // learned on an earlier lookup's way
        }
        tried += 1;
        let before = (net.messages, net.nodes[0].stats());
        let actions = net.observe(0, vec![Observation::Miss(dest)]);

        // While the lookup runs: the neighbours toward the closest contacts, as weak guesses.
        let guesses = offered(&actions, dest).expect("guesses offered");
        assert!(
            !guesses.is_empty() && guesses.len() <= 2,
            "a ring node has two neighbours"
        );
        for g in &guesses {
            assert_eq!(g.confidence, 0.1);
            assert!(g.cost >= 1_000_000, "a guess costs more than any proof");
            assert!([net.ids[1], net.ids[N - 1]].contains(&g.via));
        }
        let walks = sends(&actions);
        assert!((1..=3).contains(&walks.len()), "α walks: {walks:?}");

        let mark = net.routes[0].len();
        net.settle();
        // At most max_queries_per_lookup walks of 16 hops out and back, and their notices.
        let messages = net.messages - before.0;
        assert!(messages <= 6 * 2 * 16 * 2, "bounded: {messages} messages");
        assert_eq!(net.nodes[0].lookups(), 0, "nothing left in flight");
        let log: Vec<&Action> = net.routes[0][mark..].iter().map(|(_, a)| a).collect();
        // The guesses are withdrawn first, whatever the outcome.
        let withdrawn = log.iter().position(|a| **a == Action::Withdraw(dest));
        assert!(withdrawn.is_some(), "{far}: guesses not withdrawn: {log:?}");
        let stats = net.nodes[0].stats();
        if stats.found == before.1.found {
            assert_eq!(stats.failed, before.1.failed + 1);
            assert!(net.nodes[0].query(net.now, &dest).is_empty());
            continue;
        }
        let answer = log
            .iter()
            .rposition(|a| matches!(a, Action::Offer { dest: d, .. } if *d == dest))
            .expect("the answer is offered");
        assert!(
            withdrawn < Some(answer),
            "answer offered after the withdrawal"
        );
        let Action::Offer { hops, .. } = log[answer] else {
            unreachable!()
        };
        let best = hops[0];
        // Exact, though maybe second-hand and aged on the way: 0.6 at most, above a guess.
        assert!(best.confidence <= 0.6 && best.confidence > 0.1, "{best:?}");
        assert!(best.cost < 1_000_000);
        let length = (best.cost / HOP_COST_US) as usize;
        assert!(
            length >= ring_distance(N, 0, far) && length <= 32,
            "{length} hops"
        );
        // A second miss for the same destination needs no lookup: the route is offered again.
        let again = net.observe(0, vec![Observation::Miss(dest)]);
        assert!(sends(&again).is_empty());
        assert!(offered(&again, dest).is_some());
        found.push(far);
    }
    assert!(
        !found.is_empty() && found.len() * 4 >= tried * 3,
        "found {found:?} of {tried} tried among {unknown:?}"
    );
    // The answers are real routes: a message sent along them arrives without a loop, nodes on
    // the way looking up what they do not know.
    let mut arrived = 0;
    for &far in &found {
        match net.deliver(0, far) {
            Ok(hops) => {
                assert!(
                    hops <= N - ring_distance(N, 0, far),
                    "0 → {far}: {hops} hops"
                );
                arrived += 1;
            }
            Err(Undelivered::NoRoute) => {} // a lookup on the way failed: the overlay's turn
            Err(Undelivered::Loop) => panic!("0 → {far} looped"),
        }
    }
    assert!(
        arrived * 4 >= found.len() * 3,
        "{arrived} of {found:?} arrived"
    );
}

#[test]
fn messages_on_a_line_arrive_with_lookups_on_demand_and_never_loop() {
    // A line is the hardest topology for greedy walks: one way in, one way out. With buckets of 3
    // and a cache of 4, no table holds the line, so deliveries need lookups on the way.
    const N: usize = 16;
    let mut net = Net::new(N, &sparse(3, 4));
    for i in 0..N - 1 {
        net.connect(i, i + 1);
    }
    net.run_until(90_000);
    let mut arrived = 0;
    for a in 0..N {
        for b in (0..N).filter(|b| *b != a) {
            match net.deliver(a, b) {
                Ok(hops) => {
                    assert_eq!(hops, a.abs_diff(b), "a line has one path");
                    arrived += 1;
                }
                Err(Undelivered::NoRoute) => {}
                Err(Undelivered::Loop) => panic!("{a} → {b} looped"),
            }
            net.run_until(net.now + 1_000);
        }
    }
    let (found, failed) = net.nodes.iter().fold((0, 0), |(f, x), n| {
        (f + n.stats().found, x + n.stats().failed)
    });
    assert!(found >= 10, "the deliveries needed lookups: {found}");
    assert!(
        arrived * 10 >= N * (N - 1) * 9,
        "{arrived} of {} arrived; lookups found {found}, failed {failed}",
        N * (N - 1)
    );
}

#[test]
fn a_lost_link_withdraws_the_routes_through_it() {
    let mut net = Net::ring(12, &config(20));
    net.run_until(60_000);
    let (one, eleven) = (net.ids[1], net.ids[11]);
    let through_one: Vec<NodeId> = (1..12)
        .map(|d| net.ids[d])
        .filter(|d| net.nodes[0].query(net.now, d).iter().any(|h| h.via == one))
        .collect();
    assert!(through_one.len() >= 4, "{through_one:?}");
    let mark = net.routes[0].len();
    net.disconnect(0, 1);
    let after: Vec<Action> = net.routes[0][mark..]
        .iter()
        .map(|(_, a)| a.clone())
        .collect();
    for dest in &through_one {
        // Withdrawn, or re-offered with only the ways that are left.
        let last = after.iter().rev().find(|a| match a {
            Action::Withdraw(d) => d == dest,
            Action::Offer { dest: d, .. } => d == dest,
            _ => false,
        });
        match last {
            Some(Action::Withdraw(_)) => {}
            Some(Action::Offer { hops, .. }) => assert!(hops.iter().all(|h| h.via == eleven)),
            other => panic!("{dest:?} not updated: {other:?}"),
        }
        assert!(
            net.nodes[0]
                .query(net.now, dest)
                .iter()
                .all(|h| h.via == eleven)
        );
    }
}

#[test]
fn a_restarted_neighbour_loses_what_it_taught() {
    let me = id(1);
    let mut p = DhtDirectory::init(&[], me).unwrap();
    p.observe(0, &[link(id(2), true, 1)]);
    let reply = wire::encode(&Message::Found(Found {
        origin: me.into(),
        lookup: walk_to(&p, id(2)),
        target: me.into(),
        entries: vec![Entry(id(2).into(), 0, 0), Entry(id(7).into(), 1, 0)],
    }));
    let actions = p.observe(
        1,
        &[Observation::Message(PeerMessage {
            sender: id(2),
            data: reply,
        })],
    );
    assert_eq!(offered(&actions, id(7)).unwrap()[0].via, id(2));
    let actions = p.observe(2, &[link(id(2), true, 2)]);
    assert!(actions.contains(&Action::Withdraw(id(7))));
    assert!(p.query(2, &id(7)).is_empty());
    // And the new instance is asked for its table again.
    assert_eq!(sends(&actions).len(), 1);
}

#[test]
fn hostile_messages_are_ignored_and_counted() {
    let me = id(1);
    let mut p = DhtDirectory::init(&[], me).unwrap();
    p.observe(0, &[link(id(2), true, 1)]);
    let before = p.snapshot();
    let from = |sender: NodeId, data: Vec<u8>| Observation::Message(PeerMessage { sender, data });
    let mut huge = vec![wire::WIRE_VERSION];
    huge.resize(1 << 20, 0x41);
    let garbage: Vec<Observation> = vec![
        from(id(2), Vec::new()),
        from(id(2), vec![0xff; 40]),
        from(id(2), vec![wire::WIRE_VERSION, 0xff, 0x13, 0x37]),
        from(
            id(2),
            vec![
                wire::WIRE_VERSION,
                0x9b,
                0xff,
                0xff,
                0xff,
                0xff,
                0xff,
                0xff,
                0xff,
                0xff,
            ],
        ),
        from(id(2), huge),
        // Replies nobody asked for, strangers.
        from(
            id(2),
            wire::encode(&Message::Found(Found {
                origin: me.into(),
                lookup: 99,
                target: id(9).into(),
                entries: vec![Entry(id(9).into(), 1, 0)],
            })),
        ),
        from(
            id(2),
            wire::encode(&Message::Found(Found {
                origin: id(5).into(),
                lookup: 99,
                target: id(9).into(),
                entries: vec![Entry(id(9).into(), 1, 0)],
            })),
        ),
        from(id(66), vec![wire::WIRE_VERSION]),
    ];
    let actions = p.observe(1, &garbage);
    assert!(actions.is_empty(), "{actions:?}");
    let stats = p.stats();
    assert_eq!(stats.bad_version, 2);
    assert_eq!(stats.malformed, 2);
    assert_eq!(stats.oversized, 1);
    assert_eq!(stats.unexpected, 2);
    assert_eq!(stats.invalid, 0);
    assert_eq!(stats.not_neighbour, 1);
    assert_eq!(p.snapshot(), before, "nothing learned");
    assert_eq!(p.contacts(), 0);

    // A well-formed request with absurd fields is answered within bounds, never forwarded
    // past the configured budget, and its hop count is not believed past max_hops.
    let request = wire::encode(&Message::Find(Find {
        origin: id(40).into(),
        lookup: 7,
        target: id(41).into(),
        budget: 255,
        travelled: 200,
        aim_distance: Distance([u64::MAX; 4]),
        aim_hops: 255,
    }));
    let actions = p.observe(2, &[from(id(2), request)]);
    assert!(actions.is_empty(), "travelled past max_hops: {actions:?}");
    assert_eq!(p.stats().invalid, 1);
}

#[test]
fn requests_are_answered_with_the_k_closest_leaving_out_the_sender() {
    let me = id(1);
    let cfg = config(4);
    let mut p = DhtDirectory::init(&cfg, me).unwrap();
    p.observe(0, &[link(id(2), true, 1), link(id(3), true, 1)]);
    // Teach contacts 16..24 through 3 (a reply to our exchange with 3).
    let exchange = walk_to(&p, id(3));
    let entries = (16..24).map(|n| Entry(id(n).into(), 2, 0)).collect();
    let reply = wire::encode(&Message::Found(Found {
        origin: me.into(),
        lookup: exchange,
        target: me.into(),
        entries,
    }));
    p.observe(
        1,
        &[Observation::Message(PeerMessage {
            sender: id(3),
            data: reply,
        })],
    );
    assert!(p.contacts() >= 4);
    // 2 asks for 17, with budget 0: we answer k = 4 entries, closest first, 17 itself first.
    let ask = |sender: u64, budget: u8| {
        Observation::Message(PeerMessage {
            sender: id(sender),
            data: wire::encode(&Message::Find(Find {
                origin: id(50).into(),
                lookup: 1,
                target: id(17).into(),
                budget,
                travelled: 2,
                aim_distance: Distance([u64::MAX; 4]),
                aim_hops: 9,
            })),
        })
    };
    let actions = p.observe(2, &[ask(2, 0)]);
    let replies = sends(&actions);
    let Some((to, Message::Found(found))) = replies.first() else {
        panic!("{replies:?}")
    };
    assert_eq!(*to, id(2));
    assert_eq!(found.entries.len(), 4);
    assert_eq!(NodeId::from(found.entries[0].0), id(17));
    assert_eq!(found.entries[0].1, 3, "two hops from 3, three from us");
    let distances: Vec<Distance> = found
        .entries
        .iter()
        .map(|e| Distance::between(&NodeId::from(e.0), &id(17)))
        .collect();
    assert!(distances.windows(2).all(|w| w[0] < w[1]));
    // We learned the way back to the origin, 50, through 2.
    assert_eq!(p.query(2, &id(50))[0].via, id(2));
    assert_eq!(p.query(2, &id(50))[0].cost, 3 * HOP_COST_US);
    // Asked by 3, through which every route to 17 goes: split horizon leaves them out.
    let actions = p.observe(3, &[ask(3, 0)]);
    let Some((_, Message::Found(found))) = sends(&actions).into_iter().next() else {
        panic!()
    };
    assert!(found.entries.iter().all(|e| NodeId::from(e.0) != id(17)));
}

#[test]
fn a_walk_is_forwarded_only_while_it_makes_progress() {
    let me = id(1);
    let mut p = DhtDirectory::init(&[], me).unwrap();
    p.observe(0, &[link(id(2), true, 1), link(id(3), true, 1)]);
    let exchange = walk_to(&p, id(3));
    // Through 3: 0x100 at 4 hops.
    let reply = wire::encode(&Message::Found(Found {
        origin: me.into(),
        lookup: exchange,
        target: me.into(),
        entries: vec![Entry(id(0x100).into(), 3, 0)],
    }));
    p.observe(
        1,
        &[Observation::Message(PeerMessage {
            sender: id(3),
            data: reply,
        })],
    );
    let target = id(0x101);
    let find = |aim: Distance, aim_hops: u8| {
        Observation::Message(PeerMessage {
            sender: id(2),
            data: wire::encode(&Message::Find(Find {
                origin: id(60).into(),
                lookup: u64::from(aim_hops),
                target: target.into(),
                budget: 8,
                travelled: 1,
                aim_distance: aim,
                aim_hops,
            })),
        })
    };
    let d = Distance::between(&id(0x100), &target);
    // The sender aimed at 0x100 with 4 hops left from us: we know it in 4, so we forward to 3.
    let actions = p.observe(2, &[find(d, 4)]);
    let out = sends(&actions);
    assert!(
        matches!(&out[..], [(to, Message::Find(f))] if *to == id(3) && f.aim_hops == 3 && f.budget == 7 && f.travelled == 2),
        "{out:?}"
    );
    // The sender believed it was closer than we know: we stop and answer.
    let actions = p.observe(3, &[find(d, 3)]);
    assert!(matches!(&sends(&actions)[..], [(to, Message::Found(_))] if *to == id(2)));
    // The reply to the forwarded walk goes back to 2, one hop longer; a reply from anyone else
    // is not ours to pass on.
    let answer = |sender: u64| {
        Observation::Message(PeerMessage {
            sender: id(sender),
            data: wire::encode(&Message::Found(Found {
                origin: id(60).into(),
                lookup: 4,
                target: target.into(),
                entries: vec![Entry(target.into(), 2, 500)],
            })),
        })
    };
    let actions = p.observe(4, &[answer(2)]);
    assert!(sends(&actions).is_empty());
    assert_eq!(p.stats().unexpected, 1);
    let actions = p.observe(4, &[answer(3)]);
    let back = sends(&actions);
    let [(to, Message::Found(f))] = &back[..] else {
        panic!("{back:?}")
    };
    assert_eq!(*to, id(2));
    assert_eq!(f.entries, vec![Entry(target.into(), 3, 500)]);
    // …and we learned the target on the way: 3 hops through 3, 500 ms old.
    let hop = p.query(4, &target)[0];
    assert_eq!((hop.via, hop.cost), (id(3), 3 * HOP_COST_US));
    // A second reply for the same walk is not forwarded twice.
    let actions = p.observe(5, &[answer(3)]);
    assert!(sends(&actions).is_empty());
}

#[test]
fn lookups_are_bounded_deduplicated_and_time_out_to_a_withdrawal() {
    let me = id(1);
    let cfg = cbor::encode(&Config {
        max_lookups: 2,
        ..Config::default()
    });
    let mut p = DhtDirectory::init(&cfg, me).unwrap();
    p.observe(0, &[link(id(2), true, 1)]);
    let first = p.observe(1, &[Observation::Miss(id(100)), Observation::Miss(id(100))]);
    assert_eq!(sends(&first).len(), 1, "deduplicated");
    assert_eq!(offered(&first, id(100)).unwrap()[0].via, id(2));
    p.observe(1, &[Observation::Miss(id(101))]);
    let third = p.observe(1, &[Observation::Miss(id(102))]);
    assert!(sends(&third).is_empty());
    assert_eq!(p.stats().misses_dropped, 1);
    // Nobody answers: the walks time out (there is no other neighbour to ask), the guesses go.
    let token = first
        .iter()
        .find_map(|a| match a {
            Action::SetTimer { token, .. } if *token & LOOKUP_TIMER != 0 => Some(*token),
            _ => None,
        })
        .unwrap();
    let actions = p.observe(5_001, &[Observation::Timer(token)]);
    assert!(actions.contains(&Action::Withdraw(id(100))));
    assert!(p.query(5_001, &id(100)).is_empty());
    assert_eq!(p.stats().failed, 1);
    // Backed off for a while, then tried again.
    let actions = p.observe(6_000, &[Observation::Miss(id(100))]);
    assert!(sends(&actions).is_empty());
    let actions = p.observe(40_000, &[Observation::Miss(id(100))]);
    assert_eq!(sends(&actions).len(), 1);
}

#[test]
fn exact_routes_decay_and_expire() {
    let mut net = Net::ring(8, &config(20));
    net.run_until(31_000);
    let (dest, hop) = (2..=6)
        .map(|d| net.ids[d])
        .find_map(|d| net.nodes[0].query(net.now, &d).first().map(|h| (d, *h)))
        .expect("node 0 knows someone beyond its neighbours");
    assert!(hop.confidence <= 0.6 && hop.confidence > 0.45, "{hop:?}");
    assert!(hop.cost >= 2 * HOP_COST_US);
    // Cut node 0 off its ring and let time pass: the routes it learned age out.
    let mut alone = DhtDirectory::init(&config(20), net.ids[0]).unwrap();
    alone.restore(&net.nodes[0].snapshot()).unwrap();
    let later = alone.query(net.now + 120_000, &dest)[0];
    assert!(
        (later.confidence - hop.confidence / 2.0).abs() < 0.02,
        "{later:?}"
    );
    let gone = net.now + 600_000;
    assert!(alone.query(gone, &dest).is_empty());
    let actions = alone.observe(gone, &[Observation::Timer(REFRESH_TIMER)]);
    assert!(actions.contains(&Action::Withdraw(dest)));
    assert_eq!(alone.contacts(), 0);
}

#[test]
fn state_moves_through_snapshot_and_restore() {
    let mut net = Net::ring(10, &config(20));
    net.run_until(60_000);
    let old = &net.nodes[0];
    let mut new = DhtDirectory::init(&config(20), net.ids[0]).unwrap();
    new.restore(&old.snapshot()).unwrap();
    assert_eq!(new.contacts(), old.contacts());
    for dest in 1..10 {
        let d = net.ids[dest];
        assert_eq!(new.query(net.now, &d), net.nodes[0].query(net.now, &d));
    }
    // A smaller table in the new version's config: the restore honours it.
    let mut small = DhtDirectory::init(&sparse(1, 0), net.ids[0]).unwrap();
    small.restore(&net.nodes[0].snapshot()).unwrap();
    assert!(small.contacts() < net.nodes[0].contacts());
    assert!(new.restore(b"\x00garbage").is_err());
    assert!(new.restore(&cbor::encode(&7u8)).is_err());
}

#[test]
fn configuration_is_checked() {
    assert!(DhtDirectory::init(&[], id(1)).is_ok());
    for bad in [
        Config {
            k: 0,
            ..Config::default()
        },
        Config {
            k: 65,
            ..Config::default()
        },
        Config {
            alpha: 0,
            ..Config::default()
        },
        Config {
            forward_budget: 40,
            ..Config::default()
        },
        Config {
            exact_confidence: 1.5,
            ..Config::default()
        },
        Config {
            guess_confidence: f32::NAN,
            ..Config::default()
        },
        Config {
            route_ttl_ms: 0,
            ..Config::default()
        },
        Config {
            route_ttl_ms: 7_200_000,
            ..Config::default()
        },
    ] {
        assert!(
            DhtDirectory::init(&cbor::encode(&bad), id(1)).is_err(),
            "{bad:?}"
        );
    }
    // Fields left out take their defaults.
    #[derive(Serialize)]
    struct Partial {
        k: usize,
    }
    let p = DhtDirectory::init(&cbor::encode(&Partial { k: 8 }), id(1)).unwrap();
    assert_eq!(
        p.config,
        Config {
            k: 8,
            ..Config::default()
        }
    );
}

#[test]
fn routes_are_poisoned_back_and_on_loss() {
    let me = id(1);
    let mut p = DhtDirectory::init(&[], me).unwrap();
    p.observe(0, &[link(id(2), true, 1), link(id(3), true, 1)]);
    let reply = |p: &DhtDirectory, via: u64, entries: Vec<Entry>| {
        let data = wire::encode(&Message::Found(Found {
            origin: me.into(),
            lookup: walk_to(p, id(via)),
            target: me.into(),
            entries,
        }));
        Observation::Message(PeerMessage {
            sender: id(via),
            data,
        })
    };
    // 9 is reached through 2: 2 is asked not to reach 9 through us (poisoned reverse).
    let answer = reply(&p, 2, vec![Entry(id(9).into(), 1, 0)]);
    let actions = p.observe(1, &[answer]);
    assert_eq!(poisons(&actions), vec![(id(2), vec![id(9)])]);
    // Through 3: 9 farther (the best way stays through 2), 8 new.
    let answer = reply(
        &p,
        3,
        vec![Entry(id(9).into(), 3, 0), Entry(id(8).into(), 1, 0)],
    );
    let actions = p.observe(2, &[answer]);
    assert_eq!(poisons(&actions), vec![(id(3), vec![id(8)])]);
    // 2 goes down: 9's best way is now through 3, which is told; the store drops the old way.
    let actions = p.observe(3, &[link(id(2), false, 1)]);
    assert!(poisons(&actions).contains(&(id(3), vec![id(9)])));
    let withdraw = actions.iter().position(|a| *a == Action::Withdraw(id(9)));
    let offer = actions.iter().position(
        |a| matches!(a, Action::Offer { dest, hops } if *dest == id(9) && hops[0].via == id(3)),
    );
    assert!(withdraw.is_some() && withdraw < offer, "{actions:?}");
    // 3 asks us not to reach 8 and 9 through it: nothing is left, so both are withdrawn and the
    // neighbours are told we lost them.
    let poison = Observation::Message(PeerMessage {
        sender: id(3),
        data: wire::encode(&Message::Poison(Poison {
            ids: vec![id(8).into(), id(9).into()],
        })),
    });
    let actions = p.observe(4, &[poison]);
    assert!(actions.contains(&Action::Withdraw(id(8))));
    assert!(actions.contains(&Action::Withdraw(id(9))));
    assert_eq!(poisons(&actions), vec![(id(3), vec![id(8), id(9)])]);
    assert_eq!(p.contacts(), 0);
    // A poison about routes we do not have through the sender changes nothing.
    let again = Observation::Message(PeerMessage {
        sender: id(3),
        data: wire::encode(&Message::Poison(Poison {
            ids: vec![id(8).into()],
        })),
    });
    assert!(p.observe(5, &[again]).is_empty());
}
