//! Seeded small versions of the scenarios, with property checks on delivery, redundancy and the
//! overlay invariants. Debug builds run these in seconds.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use routefabric_overlay::fanout::{ChannelId, TreeId};
use routefabric_sim::engine::Sim;
use routefabric_sim::scenario::{Churn, Failure, Scenario, Topology};

const SEED: u64 = 42;

fn base(nodes: usize) -> Scenario {
    Scenario {
        name: "test".into(),
        seed: SEED,
        nodes,
        writers: 1,
        messages_per_writer: 10,
        join_window_ms: 1_000,
        publish_start_ms: Some(3_000),
        drain_ms: 4_000,
        ..Scenario::default()
    }
}

fn run(sc: Scenario) -> (routefabric_sim::report::Report, Sim) {
    let mut sim = Sim::new(sc);
    let report = sim.run(|_, _| {});
    (report, sim)
}

#[test]
fn smoke_delivers_everything_with_no_redundancy() {
    let (r, _) = run(base(300));
    assert_eq!(r.delivered_ratio, 1.0, "{r:?}");
    assert!(r.rmr <= 0.01, "{r:?}");
    assert_eq!(r.duplicates, 0);
    assert!(
        r.ldh_max <= 3,
        "300 readers at 16 children per node: depth ≤ 3 ({r:?})"
    );
    assert!(r.max_sends_per_node_per_msg <= 16, "{r:?}");
    assert_eq!(r.joined_ratio, 1.0);
}

#[test]
fn membership_invariants_hold_after_quiescence() {
    let (_, sim) = run(base(300));
    let cfg = routefabric_overlay::membership::Config::default();
    let active: BTreeMap<u32, BTreeSet<u32>> = sim
        .live_nodes()
        .map(|n| {
            (
                n.id(),
                n.membership().active_view().iter().copied().collect(),
            )
        })
        .collect();
    for n in sim.live_nodes() {
        let m = n.membership();
        assert!(m.active_view().len() <= cfg.active_view_capacity);
        assert!(m.passive_view().len() <= cfg.passive_view_capacity);
        assert!(!m.active_view().is_empty(), "node {} isolated", n.id());
        for p in m.active_view() {
            assert!(
                !m.passive_view().contains(p),
                "{p} in both views of {}",
                n.id()
            );
            assert!(
                active[p].contains(&n.id()),
                "active link {} -> {p} not symmetric",
                n.id()
            );
        }
    }
    // Connected: BFS over active links reaches every node.
    let mut seen = BTreeSet::from([0u32]);
    let mut queue = VecDeque::from([0u32]);
    while let Some(x) = queue.pop_front() {
        for y in &active[&x] {
            if seen.insert(*y) {
                queue.push_back(*y);
            }
        }
    }
    assert_eq!(seen.len(), active.len(), "membership graph is connected");
}

#[test]
fn tree_invariants_hold_per_writer_trees() {
    let sc = Scenario {
        writers: 3,
        ..base(200)
    };
    let (r, sim) = run(sc);
    assert_eq!(r.delivered_ratio, 1.0, "{r:?}");
    let nodes: BTreeMap<u32, _> = sim.live_nodes().map(|n| (n.id(), n)).collect();
    for root in 0..3u32 {
        let t = TreeId {
            channel: ChannelId(1),
            root,
        };
        for (id, n) in &nodes {
            let f = n.fanout();
            assert!(f.is_attached(&t), "{id} attached to {root}'s tree");
            assert!(f.children(&t).len() <= 16);
            let mut cur = *id;
            let mut path = vec![cur];
            while let Some(p) = nodes[&cur].fanout().parent(&t) {
                assert!(
                    nodes[&p].fanout().children(&t).contains(&cur),
                    "{p} lists child {cur}"
                );
                path.push(p);
                cur = p;
                assert!(path.len() <= nodes.len(), "cycle");
            }
            assert_eq!(cur, root);
            path.reverse();
            assert_eq!(f.route_token(&t), Some(path), "token of {id}");
        }
    }
}

#[test]
fn churn_and_loss_small() {
    let sc = Scenario {
        nodes: 39,
        messages_per_writer: 90,
        link: routefabric_sim::scenario::Link {
            latency_ms: [10, 50],
            loss: 0.1,
            detect_ms: 100,
        },
        churn: Some(Churn {
            interval_ms: 200,
            fraction: 0.05,
            start_ms: 3_000,
            stop_ms: 6_000,
        }),
        fanout: routefabric_overlay::fanout::Config {
            join_timeout_ms: 200,
            ..Default::default()
        },
        ..base(39)
    };
    let (r, _) = run(sc);
    assert!(r.delivered_ratio >= 0.999, "{r:?}");
    assert!(r.rmr <= 0.25, "{r:?}");
    assert_eq!(r.duplicates, 0);
}

#[test]
fn mass_failure_small() {
    let sc = Scenario {
        messages_per_writer: 5,
        publish_rate_per_s: 10.0,
        publish_start_ms: Some(8_000),
        link: routefabric_sim::scenario::Link {
            detect_ms: 500,
            ..Default::default()
        },
        failure: Some(Failure {
            at_ms: 3_000,
            fraction: 0.9,
        }),
        ..base(1_999)
    };
    let (r, _) = run(sc);
    assert_eq!(r.live_nodes, 201);
    assert!(r.delivered_ratio >= 0.999, "{r:?}");
}

#[test]
fn many_writers_small() {
    let sc = Scenario {
        writers: 20,
        topology: Topology::Shared,
        messages_per_writer: 3,
        publish_rate_per_s: 100.0,
        ..base(20)
    };
    let (r, _) = run(sc);
    assert_eq!(r.delivered_ratio, 1.0, "{r:?}");
    assert!(r.rmr <= 0.3, "{r:?}");
}

#[test]
fn runs_are_deterministic() {
    let sc = Scenario {
        link: routefabric_sim::scenario::Link {
            loss: 0.05,
            ..Default::default()
        },
        ..base(100)
    };
    let (a, _) = run(sc.clone());
    let (b, _) = run(sc);
    assert_eq!(
        (
            a.sim_events,
            a.expected_deliveries,
            a.rmr,
            a.latency_p99_ms,
            a.control_bytes_per_payload_byte
        ),
        (
            b.sim_events,
            b.expected_deliveries,
            b.rmr,
            b.latency_p99_ms,
            b.control_bytes_per_payload_byte
        )
    );
}

#[test]
fn builtin_scenarios_parse() {
    for (name, _) in routefabric_sim::scenario::BUILTIN {
        let sc = Scenario::load(name).expect("parses");
        assert!(!sc.name.is_empty());
    }
    assert!(Scenario::load("no-such-scenario").is_err());
}
