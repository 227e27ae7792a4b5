//! Route sources and policies give the same answers natively and as WebAssembly components, and
//! their offers land in one route store that a policy reads.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap is a test that hides its failure

use std::sync::OnceLock;

use routefabric_builtin::{
    ACK_TRACE, DHT_DIRECTORY, EXPECTED_COST, FANOUT_TOKEN, LOWEST_COST, REDUNDANT,
};
use routefabric_core::plugin::{
    AckTrace, Action, Candidate, Decision, HostedProofSource, HostedRoutingPolicy, LinkSample,
    Native, NextHop, Observation, PeerMessage, ProofSource, RouteToken, RoutingPolicy,
};
use routefabric_core::{NodeId, RouteStore, RouteStoreConfig};
use routefabric_runtime::{Runtime, RuntimeConfig, WasmProofSource, WasmRoutingPolicy};

fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<(Runtime, tempfile::TempDir)> = OnceLock::new();
    let (runtime, _dir) = RUNTIME.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        // Deadlines are wall-clock: on a busy machine a descheduled call can overrun 10 ms.
        // Only the deadline test runs with the default (on a runtime of its own).
        let config = RuntimeConfig {
            cache_dir: Some(dir.path().to_path_buf()),
            call_deadline: std::time::Duration::from_secs(1),
            ..RuntimeConfig::default()
        };
        (Runtime::new(config).unwrap(), dir)
    });
    runtime
}

fn id(n: u64) -> NodeId {
    NodeId::from_index(n)
}

/// A small deterministic generator (the stream must be the same on every run and machine).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, bound: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % bound
    }
}

const ME: u64 = 1;
const NODES: u64 = 24;
const NEIGHBOURS: [u64; 4] = [2, 3, 4, 5];

/// The traffic a node with 4 neighbours sees over ten minutes: links coming and going (with a
/// restart), ACK traces of messages it sent, relayed and acknowledged, refresh timers.
fn observation_stream(seed: u64) -> Vec<(u64, Vec<Observation>)> {
    let mut rng = Lcg(seed);
    let mut sessions = [1u64; 4];
    let mut batches = Vec::new();
    for step in 0..120u64 {
        let now = step * 5_000;
        let mut batch = Vec::new();
        if step == 0 || rng.next(10) == 0 {
            let n = rng.next(4) as usize;
            if step > 0 && rng.next(3) == 0 {
                sessions[n] += 1; // a restart
            }
            batch.push(Observation::Link(LinkSample {
                peer: id(NEIGHBOURS[n]),
                up: step == 0 || rng.next(4) != 0,
                rtt_us: Some(200 + rng.next(2_000) as u32),
                session: sessions[n],
            }));
        }
        for _ in 0..rng.next(6) {
            // A path through one of our neighbours, with this node somewhere on it.
            let len = 2 + rng.next(6) as usize;
            let mut path: Vec<NodeId> = Vec::with_capacity(len + 1);
            while path.len() < len {
                let n = id(6 + rng.next(NODES - 6));
                if !path.contains(&n) {
                    path.push(n);
                }
            }
            let at = rng.next(len as u64) as usize;
            path.insert(at, id(ME));
            let neighbour = id(NEIGHBOURS[rng.next(4) as usize]);
            if at + 1 < path.len() {
                path[at + 1] = neighbour;
            } else {
                path[at - 1] = neighbour;
            }
            let rtt_ms = (at == 0).then(|| 1 + rng.next(80) as u32);
            batch.push(Observation::Ack(AckTrace { path, rtt_ms }));
        }
        if step % 6 == 5 {
            batch.push(Observation::Timer(1));
        }
        batches.push((now, batch));
    }
    batches
}

/// Replay `stream` through a source's WASM and native builds: every batch must give the same
/// actions and every destination the same answer. Returns how many offers were made.
fn replay_both_ways<P: ProofSource + Send>(
    file: &str,
    bytes: &[u8],
    stream: Vec<(u64, Vec<Observation>)>,
) -> usize {
    let wasm = WasmProofSource::load(runtime(), file, bytes, &[], id(ME)).unwrap();
    let native = Native::new(P::init(&[], id(ME)).unwrap());
    let mut offers = 0;
    for (now, batch) in stream {
        let from_wasm = wasm.observe(now, &batch).unwrap();
        assert_eq!(
            from_wasm,
            native.observe(now, &batch).unwrap(),
            "actions at t={now}"
        );
        offers += from_wasm
            .iter()
            .filter(|a| matches!(a, Action::Offer { .. }))
            .count();
        for dest in 2..NODES {
            assert_eq!(
                wasm.query(now, &id(dest)).unwrap(),
                native.query(now, &id(dest)).unwrap()
            );
        }
    }
    assert_eq!(wasm.stats().failed, 0);
    offers
}

#[test]
fn ack_trace_replays_identically_natively_and_in_wasm() {
    let offers = replay_both_ways::<ack_trace::AckTraceSource>(
        "ack-trace.wasm",
        ACK_TRACE.bytes,
        observation_stream(7),
    );
    assert!(
        offers > 100,
        "the stream exercises the source: {offers} offers"
    );
}

/// Route tokens of two trees this node belongs to, as members join, move and leave.
fn token_stream(seed: u64) -> Vec<(u64, Vec<Observation>)> {
    let mut rng = Lcg(seed);
    let mut batches = Vec::new();
    for step in 0..100u64 {
        let now = step * 2_000;
        let mut batch = Vec::new();
        for _ in 0..1 + rng.next(5) {
            // Two trees: a writer's (root 30) and a shard's (root 31).
            let tree = rng.next(2);
            let root = 30 + tree;
            // Our own position: under a neighbour that is a child of the root, or deeper.
            let mut path = vec![id(root)];
            if rng.next(4) == 0 {
                path.push(id(NEIGHBOURS[rng.next(4) as usize]));
                path.push(id(ME));
            } else {
                let depth = 1 + rng.next(4) as usize;
                while path.len() <= depth {
                    let n = id(6 + rng.next(NODES - 6));
                    if !path.contains(&n) {
                        path.push(n);
                    }
                }
                if rng.next(3) == 0 {
                    let at = 1 + rng.next(path.len() as u64 - 1) as usize;
                    path.insert(at, id(ME));
                }
            }
            batch.push(Observation::Token(RouteToken {
                tree,
                path,
                issued_at_ms: now + rng.next(100),
            }));
        }
        if rng.next(12) == 0 {
            batch.push(Observation::Link(LinkSample {
                peer: id(NEIGHBOURS[rng.next(4) as usize]),
                up: false,
                rtt_us: None,
                session: 1,
            }));
        }
        if step % 7 == 6 {
            batch.push(Observation::Timer(1));
        }
        batches.push((now, batch));
    }
    batches
}

#[test]
fn fanout_token_replays_identically_natively_and_in_wasm() {
    let offers = replay_both_ways::<fanout_token::FanoutToken>(
        "fanout-token.wasm",
        FANOUT_TOKEN.bytes,
        token_stream(3),
    );
    assert!(
        offers > 50,
        "the stream exercises the source: {offers} offers"
    );
}

/// What node 1 saw over five minutes in a network of `dht-directory` instances: 22 nodes on a
/// ring, node 1 attached to four of them (one, node 5, without the plugin, so walks through it time
/// out), messages taking a 100 ms tick; misses for far nodes, a neighbour restarting, garbage on
/// the channel, refresh and lookup timers. Recorded from native instances with the defaults, so
/// node 1's replies answer the lookups it makes when replayed.
fn directory_stream() -> Vec<(u64, Vec<Observation>)> {
    use std::collections::BTreeMap;

    use dht_directory::DhtDirectory;

    const SILENT: u64 = 5;
    const TICK: u64 = 100;
    let ring: Vec<u64> = (2..NODES).filter(|n| *n != SILENT).collect();
    let mut links: Vec<(u64, u64)> = ring
        .iter()
        .zip(ring.iter().cycle().skip(1))
        .map(|(a, b)| (*a, *b))
        .collect();
    links.extend(NEIGHBOURS.iter().map(|n| (ME, *n)));
    let linked =
        |links: &[(u64, u64)], a: u64, b: u64| links.iter().any(|l| *l == (a, b) || *l == (b, a));
    let mut nodes: BTreeMap<u64, DhtDirectory> = (1..NODES)
        .filter(|n| *n != SILENT)
        .map(|n| (n, DhtDirectory::init(&[], id(n)).unwrap()))
        .collect();
    let mut inbox: BTreeMap<u64, Vec<Observation>> = BTreeMap::new();
    let mut timers: BTreeMap<(u64, u64), (u64, u64)> = BTreeMap::new();
    let up = |peer: u64, up: bool, session: u64| {
        Observation::Link(LinkSample {
            peer: id(peer),
            up,
            rtt_us: Some(300 + 100 * peer as u32),
            session,
        })
    };
    for &(a, b) in &links {
        inbox.entry(a).or_default().push(up(b, true, 1));
        inbox.entry(b).or_default().push(up(a, true, 1));
    }
    let mut stream = Vec::new();
    let mut seq = 0;
    for tick in 0..3_000u64 {
        let now = tick * TICK;
        let mut events: Vec<(u64, Observation)> = Vec::new();
        match now {
            20_000 | 45_000 | 70_000 => events.extend(
                (10..NODES)
                    .step_by(3)
                    .map(|n| (ME, Observation::Miss(id(n)))),
            ),
            50_000 => events.push((ME, Observation::Miss(id(2)))), // a neighbour: offered at once
            150_000 => {
                links.retain(|l| *l != (ME, 3));
                events.push((ME, up(3, false, 1)));
                events.push((3, up(ME, false, 1)));
            }
            160_000 => {
                // 3 comes back as a new instance (a restart: a new session).
                links.push((ME, 3));
                nodes.insert(3, DhtDirectory::init(&[], id(3)).unwrap());
                events.push((ME, up(3, true, 2)));
                events.extend(ring_neighbours(&ring, 3).map(|n| (3, up(n, true, 1))));
                events.push((3, up(ME, true, 1)));
            }
            200_000 => {
                let garbage = [vec![], vec![1, 0xff, 0x13], vec![9; 64], vec![1; 100_000]];
                events.extend(garbage.into_iter().map(|data| {
                    let message = PeerMessage {
                        sender: id(2),
                        data,
                    };
                    (ME, Observation::Message(message))
                }));
            }
            230_000 => events.extend((8..NODES).map(|n| (ME, Observation::Miss(id(n))))),
            _ => {}
        }
        for (n, observation) in events {
            inbox.entry(n).or_default().push(observation);
        }
        while let Some(entry) = timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let (node, token) = entry.remove();
            inbox
                .entry(node)
                .or_default()
                .push(Observation::Timer(token));
        }
        let batches = std::mem::take(&mut inbox);
        for (n, batch) in batches {
            let Some(node) = nodes.get_mut(&n) else {
                continue; // the silent neighbour
            };
            if batch.is_empty() {
                continue;
            }
            let actions = node.observe(now, &batch);
            if n == ME {
                stream.push((now, batch));
            }
            for action in actions {
                match action {
                    Action::Send { to, data } => {
                        let to = to.to_words()[3];
                        if linked(&links, n, to) {
                            let message = PeerMessage {
                                sender: id(n),
                                data,
                            };
                            inbox
                                .entry(to)
                                .or_default()
                                .push(Observation::Message(message));
                        }
                    }
                    Action::SetTimer { token, after_ms } => {
                        seq += 1;
                        timers.insert((now + u64::from(after_ms), seq), (n, token));
                    }
                    _ => {}
                }
            }
        }
    }
    stream
}

fn ring_neighbours(ring: &[u64], n: u64) -> impl Iterator<Item = u64> {
    let i = ring.iter().position(|x| *x == n).unwrap_or(0);
    let len = ring.len();
    [ring[(i + len - 1) % len], ring[(i + 1) % len]].into_iter()
}

#[test]
fn dht_directory_replays_identically_natively_and_in_wasm() {
    let stream = directory_stream();
    let count = |f: &dyn Fn(&Observation) -> bool| {
        stream.iter().flat_map(|(_, b)| b).filter(|o| f(o)).count()
    };
    assert!(count(&|o| matches!(o, Observation::Link(_))) >= 6);
    assert!(count(&|o| matches!(o, Observation::Miss(_))) >= 20);
    assert!(count(&|o| matches!(o, Observation::Message(_))) >= 100);
    assert!(count(&|o| matches!(o, Observation::Timer(1))) >= 9);
    assert!(
        count(&|o| matches!(o, Observation::Timer(t) if *t > 1)) >= 1,
        "a walk through the silent neighbour timed out"
    );
    let offers = replay_both_ways::<dht_directory::DhtDirectory>(
        "dht-directory.wasm",
        DHT_DIRECTORY.bytes,
        stream,
    );
    assert!(
        offers > 100,
        "the stream exercises the source: {offers} offers"
    );
}

#[test]
fn every_builtin_passes_plugin_check_in_its_world() {
    use routefabric_runtime::PluginKind::{ProofSource as Source, RoutingPolicy as Policy};
    let expected = [
        ("static-routes", Source),
        ("ack-trace", Source),
        ("fanout-token", Source),
        ("dht-directory", Source),
        ("lowest-cost", Policy),
        ("expected-cost", Policy),
        ("redundant", Policy),
    ];
    assert_eq!(routefabric_builtin::ALL.len(), expected.len());
    for (plugin, (name, kind)) in routefabric_builtin::ALL.iter().zip(expected) {
        let inspection = runtime().inspect(plugin.file_name, plugin.bytes).unwrap();
        assert_eq!(
            (inspection.info.name.as_str(), inspection.kind),
            (name, kind)
        );
        assert_eq!(
            inspection.contract_version,
            routefabric_runtime::CONTRACT_VERSION
        );
    }
}

fn candidate_sets(seed: u64) -> Vec<Vec<Candidate>> {
    let mut rng = Lcg(seed);
    (0..200)
        .map(|_| {
            (0..rng.next(9))
                .map(|_| Candidate {
                    hop: NextHop {
                        via: id(2 + rng.next(6)),
                        cost: rng.next(20_000) as u32,
                        ttl_ms: 1_000,
                        confidence: rng.next(1_001) as f32 / 1_000.0,
                    },
                    source: ["ack-trace", "static-routes"][rng.next(2) as usize].into(),
                    link_rtt_us: (rng.next(3) != 0).then(|| rng.next(5_000) as u32),
                })
                .collect()
        })
        .collect()
}

fn same_decisions<P: RoutingPolicy + Send>(bytes: &[u8]) {
    let wasm = WasmRoutingPolicy::load(runtime(), "policy.wasm", bytes, &[], id(ME)).unwrap();
    let native = Native::new(P::init(&[], id(ME)).unwrap());
    assert_eq!(wasm.info(), HostedRoutingPolicy::info(&native));
    for candidates in candidate_sets(11) {
        assert_eq!(
            wasm.choose(0, &id(99), &candidates).unwrap(),
            native.choose(0, &id(99), &candidates).unwrap()
        );
    }
}

#[test]
fn policies_decide_identically_natively_and_in_wasm() {
    same_decisions::<lowest_cost::LowestCost>(LOWEST_COST.bytes);
    same_decisions::<expected_cost::ExpectedCost>(EXPECTED_COST.bytes);
    same_decisions::<redundant::Redundant>(REDUNDANT.bytes);
}

#[test]
fn offers_from_a_wasm_source_feed_the_store_and_a_policy_reads_it() {
    let source =
        WasmProofSource::load(runtime(), "ack-trace.wasm", ACK_TRACE.bytes, &[], id(ME)).unwrap();
    let lowest =
        WasmRoutingPolicy::load(runtime(), "lowest.wasm", LOWEST_COST.bytes, &[], id(ME)).unwrap();
    let expected =
        WasmRoutingPolicy::load(runtime(), "expected.wasm", EXPECTED_COST.bytes, &[], id(ME))
            .unwrap();
    let mut store = RouteStore::new(id(ME), RouteStoreConfig::default());
    let sid = store.source("ack-trace");
    let neighbours = |n: &NodeId| NEIGHBOURS.iter().any(|&x| id(x) == *n);

    // Two ways to 9: two hops via 2 (sender's RTT 40 ms), three hops via 3.
    let traces = [
        Observation::Ack(AckTrace {
            path: vec![id(1), id(2), id(9)],
            rtt_ms: Some(40),
        }),
        Observation::Ack(AckTrace {
            path: vec![id(1), id(3), id(7), id(9)],
            rtt_ms: None,
        }),
        // A trace naming a non-neighbour as next hop: the store must refuse it.
        Observation::Ack(AckTrace {
            path: vec![id(1), id(66), id(8)],
            rtt_ms: None,
        }),
    ];
    for action in source.observe(0, &traces).unwrap() {
        if let Action::Offer { dest, hops } = action {
            store.offer(0, sid, dest, &hops, neighbours);
        }
    }
    let routes = store.query(1, &id(9)).to_vec();
    assert_eq!(routes.len(), 2);
    assert!(store.query(1, &id(8)).is_empty());
    assert!(
        store
            .source_counters(sid)
            .unwrap()
            .rejected(routefabric_core::route_store::Rejection::NotNeighbour)
            >= 1
    );

    let candidates: Vec<Candidate> = routes
        .iter()
        .map(|r| Candidate {
            hop: NextHop {
                via: r.via,
                cost: r.cost,
                ttl_ms: 1_000,
                confidence: r.confidence,
            },
            source: store.source_name(r.source).to_owned(),
            link_rtt_us: Some(if r.via == id(2) { 20_000 } else { 300 }),
        })
        .collect();
    // Lowest cost takes the 3-hop route (3,000 µs < 40,000 µs measured); expected cost agrees
    // here, and both fall back when nothing is known.
    let first = |d: Decision| match d {
        Decision::Send(plan) => plan.hops[0],
        other => panic!("{other:?}"),
    };
    assert_eq!(first(lowest.choose(1, &id(9), &candidates).unwrap()), id(3));
    assert_eq!(
        first(expected.choose(1, &id(9), &candidates).unwrap()),
        id(3)
    );
    assert_eq!(lowest.choose(1, &id(42), &[]).unwrap(), Decision::Fallback);

    // The neighbour 3 goes down: its routes leave the store, the policy now picks 2.
    store.link_down(&id(3));
    let left: Vec<Candidate> = store
        .query(2, &id(9))
        .iter()
        .map(|r| Candidate {
            hop: NextHop {
                via: r.via,
                cost: r.cost,
                ttl_ms: 1_000,
                confidence: r.confidence,
            },
            source: "ack-trace".into(),
            link_rtt_us: None,
        })
        .collect();
    assert_eq!(first(lowest.choose(2, &id(9), &left).unwrap()), id(2));
}

#[test]
fn selecting_another_policy_changes_the_next_decision() {
    use routefabric_runtime::{DEFAULT_POLICY, Registry};
    let registry = Registry::new(runtime().clone(), id(ME), Default::default());
    for plugin in routefabric_builtin::ALL {
        registry.load_bytes(plugin.file_name, plugin.bytes).unwrap();
    }
    // Via 2: cheap but unsure. Via 3: dearer but sure, on a fast link.
    let candidates = [
        Candidate {
            hop: NextHop {
                via: id(2),
                cost: 1_000,
                ttl_ms: 1_000,
                confidence: 0.2,
            },
            source: "ack-trace".into(),
            link_rtt_us: Some(300),
        },
        Candidate {
            hop: NextHop {
                via: id(3),
                cost: 2_000,
                ttl_ms: 1_000,
                confidence: 1.0,
            },
            source: "fanout-token".into(),
            link_rtt_us: Some(300),
        },
    ];
    let decide = || {
        registry
            .active_policy()
            .unwrap()
            .choose(0, &id(9), &candidates)
            .unwrap()
    };
    let plan = |d: Decision| match d {
        Decision::Send(plan) => (plan.hops[0], plan.copies),
        other => panic!("{other:?}"),
    };
    assert_eq!(registry.active_policy().unwrap().name(), DEFAULT_POLICY);
    assert_eq!(
        plan(decide()),
        (id(2), 1),
        "lowest cost takes the cheap route"
    );
    registry.select_policy("expected-cost").unwrap();
    assert_eq!(
        plan(decide()),
        (id(3), 1),
        "expected cost weighs the confidence"
    );
    registry.select_policy("redundant").unwrap();
    assert_eq!(plan(decide()), (id(3), 2), "redundant sends two copies");
    let err = registry.select_policy("nope").unwrap_err();
    assert!(err.to_string().contains("lowest-cost"), "{err}");
    assert_eq!(
        registry.active_policy().unwrap().name(),
        "redundant",
        "unchanged by the error"
    );
}
