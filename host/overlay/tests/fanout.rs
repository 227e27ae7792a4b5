//! Fanout behaviour on a small lossless network driven by a minimal in-test event loop.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use routefabric_overlay::fanout::{self, ChannelId, Event as FanoutEvent, TreeId};
use routefabric_overlay::{Command, Event, InEvent, Node, OutEvent, Rng, membership};

const SEED: u64 = 7;

/// Events ordered by (time, insertion number); 20 ms per hop.
struct Net {
    nodes: Vec<Node<u32>>,
    queue: BTreeMap<(u64, u64), (u32, InEvent<u32>)>,
    seq: u64,
    now: u64,
    events: Vec<(u64, u32, FanoutEvent<u32>)>,
    dead: Vec<u32>,
}

impl Net {
    fn new(n: u32, fanout_cfg: fanout::Config) -> Self {
        let m = Arc::new(membership::Config::default());
        let f = Arc::new(fanout_cfg);
        let nodes = (0..n)
            .map(|i| Node::new(i, m.clone(), f.clone(), Rng::derive(SEED, u64::from(i))))
            .collect();
        Self {
            nodes,
            queue: BTreeMap::new(),
            seq: 0,
            now: 0,
            events: Vec::new(),
            dead: Vec::new(),
        }
    }

    fn at(&mut self, at: u64, node: u32, ev: InEvent<u32>) {
        self.seq += 1;
        self.queue.insert((at, self.seq), (node, ev));
    }

    fn run_until(&mut self, end: u64) {
        while let Some(entry) = self.queue.first_entry() {
            if entry.key().0 > end {
                break;
            }
            let ((at, _), (node, ev)) = entry.remove_entry();
            self.now = at;
            if self.dead.contains(&node) {
                continue;
            }
            let out = self.nodes[node as usize].handle(at, ev);
            for o in out {
                match o {
                    OutEvent::Send { to, message } => self.at(
                        at + 20,
                        to,
                        InEvent::Message {
                            from: node,
                            message,
                        },
                    ),
                    OutEvent::ScheduleTimer { delay_ms, timer } => {
                        self.at(at + delay_ms, node, InEvent::TimerExpired(timer))
                    }
                    OutEvent::Emit(Event::Fanout(e)) => self.events.push((at, node, e)),
                    OutEvent::Emit(Event::Membership(_)) => {}
                }
            }
        }
    }
}

fn tree() -> TreeId<u32> {
    TreeId {
        channel: ChannelId(9),
        root: 0,
    }
}

fn build(n: u32, max_children: usize) -> Net {
    let cfg = fanout::Config {
        max_children,
        ..Default::default()
    };
    let mut net = Net::new(n, cfg);
    for i in 0..n {
        net.at(u64::from(i) * 5, i, InEvent::Command(Command::Join(0)));
        net.at(
            u64::from(i) * 5,
            i,
            InEvent::Command(fanout::Command::Subscribe(tree()).into()),
        );
    }
    net.run_until(5_000);
    net
}

#[test]
fn tree_is_bounded_acyclic_and_every_member_holds_its_token() {
    let n = 60;
    let net = build(n, 3);
    let t = tree();
    for i in 0..n {
        let f = net.nodes[i as usize].fanout();
        assert!(f.is_attached(&t), "node {i} not attached");
        assert!(f.children(&t).len() <= 3, "node {i} has too many children");
        for c in f.children(&t) {
            assert_eq!(
                net.nodes[*c as usize].fanout().parent(&t),
                Some(i),
                "child {c} of {i}"
            );
        }
        // Walk up: reaches the root within n steps (acyclic), and the path is the token.
        let mut path = vec![i];
        let mut cur = i;
        while let Some(p) = net.nodes[cur as usize].fanout().parent(&t) {
            path.push(p);
            cur = p;
            assert!(path.len() <= n as usize, "cycle through {i}");
        }
        assert_eq!(cur, 0);
        path.reverse();
        assert_eq!(f.route_token(&t), Some(path.clone()), "token of {i}");
        let observed = net.events.iter().rev().find_map(|(_, node, e)| match e {
            FanoutEvent::RouteToken { member, path, .. } if *node == i && *member == i => {
                Some(path.clone())
            }
            _ => None,
        });
        assert_eq!(observed, Some(path), "token observation of {i}");
    }
}

#[test]
fn publish_through_the_root_keeps_origin_and_timestamp() {
    let n = 30;
    let mut net = build(n, 4);
    let publisher = 17;
    let at = net.now + 10;
    let payload = Bytes::from_static(b"hello");
    let cmd = fanout::Command::Publish {
        tree: tree(),
        payload: payload.clone(),
    };
    net.at(at, publisher, InEvent::Command(cmd.into()));
    net.run_until(at + 2_000);
    let mut receivers = Vec::new();
    for (_, node, e) in &net.events {
        if let FanoutEvent::Deliver { publication, .. } = e {
            assert_eq!(publication.origin, publisher);
            assert_eq!(publication.timestamp_ms, at);
            assert_eq!(publication.payload, payload);
            receivers.push(*node);
        }
    }
    receivers.sort();
    let expected: Vec<u32> = (0..n).filter(|i| *i != publisher).collect();
    assert_eq!(
        receivers, expected,
        "every member but the publisher receives exactly once"
    );
}

#[test]
fn unicast_goes_through_the_common_ancestor_and_is_acknowledged() {
    let n = 40;
    let mut net = build(n, 3);
    let t = tree();
    let (src, dst) = (39, 25);
    let dst_token = net.nodes[dst as usize]
        .fanout()
        .route_token(&t)
        .expect("attached");
    let cmd = fanout::Command::Unicast {
        tree: t,
        dst,
        dst_token,
        id: 77,
        payload: Bytes::from_static(b"hi"),
    };
    let at = net.now + 10;
    net.at(at, src, InEvent::Command(cmd.into()));
    net.run_until(at + 3_000);
    let received = net.events.iter().any(|(_, node, e)| {
        *node == dst && matches!(e, FanoutEvent::UnicastReceived { src: s, .. } if *s == src)
    });
    assert!(received, "destination got the unicast");
    let acked = net
        .events
        .iter()
        .any(|(_, node, e)| *node == src && matches!(e, FanoutEvent::UnicastAcked { id: 77, .. }));
    assert!(acked, "source got the end-to-end ACK");
    let learnt = net.events.iter().any(|(_, node, e)| {
        *node == dst && matches!(e, FanoutEvent::RouteToken { member, .. } if *member == src)
    });
    assert!(learnt, "destination observed the source's route token");
}

#[test]
fn orphan_rejoins_and_keeps_its_children() {
    let n = 40;
    let mut net = build(n, 3);
    let t = tree();
    // A node with a parent other than the root and with children.
    let victim_parent = (1..n)
        .find(|i| {
            let f = net.nodes[*i as usize].fanout();
            !f.children(&t).is_empty() && f.parent(&t) != Some(0) && f.parent(&t).is_some()
        })
        .expect("a deep inner node");
    let gp = net.nodes[victim_parent as usize]
        .fanout()
        .parent(&t)
        .expect("parent");
    let children: Vec<u32> = net.nodes[victim_parent as usize]
        .fanout()
        .children(&t)
        .to_vec();
    // Its parent `gp` crashes: tell its neighbours (what the transport would do).
    let at = net.now + 10;
    for i in 0..n {
        if i != gp {
            net.at(at, i, InEvent::PeerDown(gp));
        }
    }
    net.dead.push(gp);
    net.run_until(at + 3_000);
    let f = net.nodes[victim_parent as usize].fanout();
    assert!(f.is_attached(&t), "orphan reattached");
    for c in children {
        assert_eq!(
            net.nodes[c as usize].fanout().parent(&t),
            Some(victim_parent),
            "child {c} kept"
        );
    }
}
