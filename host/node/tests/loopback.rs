#![allow(clippy::unwrap_used)]
//! Real nodes on 127.0.0.1: TCP, noise, yamux, the embedded WebAssembly plugins.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use routefabric_core::envelope::{Envelope, Keypair, Kind};
use routefabric_core::{NodeId, PeerRef};
use routefabric_net::Underlay;
use routefabric_node::actor::{self, AppEvent, NodeHandle, NodeSpec, wall_ms};
use routefabric_node::engine::{Command, EngineConfig, Plane, SendOutcome};
use routefabric_node::frame::{Directed, Frame};
use routefabric_node::plugins::{RegistryPlugins, builtin_registry};
use routefabric_runtime::{Registry, Runtime, RuntimeConfig};
use tokio::sync::mpsc;
use tokio::time::timeout;

fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        Runtime::new(RuntimeConfig {
            // Debug builds on a shared machine: generous, so no call fails on a busy core.
            call_deadline: Duration::from_secs(1),
            ..RuntimeConfig::default()
        })
        .unwrap()
    })
}

fn keys(i: u8) -> Keypair {
    Keypair::from_secret([i.wrapping_add(100); 32])
}

struct TestNode {
    handle: NodeHandle,
    registry: Arc<Registry>,
    events: mpsc::Receiver<AppEvent>,
}

async fn start(i: u8) -> TestNode {
    start_on(
        i,
        vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        actor::Transport::Tcp,
    )
    .await
    .unwrap()
}

async fn start_on(
    i: u8,
    listen: Vec<routefabric_net::Multiaddr>,
    transport: actor::Transport,
) -> Result<TestNode, actor::NodeError> {
    let keys = keys(i);
    let registry = builtin_registry(runtime(), keys.id()).unwrap();
    let (tx, events) = mpsc::channel(4_096);
    let spec = NodeSpec {
        keys,
        listen,
        engine: EngineConfig::default(),
        net: routefabric_net::Config::default(),
        plugins: Arc::new(RegistryPlugins(registry.clone())),
        seed: u64::from(i),
        advertise: None,
        transport,
    };
    let handle = actor::spawn(spec, tx).await?;
    Ok(TestNode {
        handle,
        registry,
        events,
    })
}

/// The first node founds the overlay, the others join through it.
async fn join(nodes: &[TestNode]) {
    nodes[0]
        .handle
        .command(Command::Start { contact: None })
        .await
        .unwrap();
    let contact = nodes[0].handle.me();
    for node in &nodes[1..] {
        node.handle
            .command(Command::Start {
                contact: Some(contact),
            })
            .await
            .unwrap();
    }
    for node in nodes {
        wait_for_neighbours(&node.handle).await;
    }
}

async fn network(n: u8) -> Vec<TestNode> {
    let mut nodes = Vec::new();
    for i in 0..n {
        nodes.push(start(i).await);
    }
    join(&nodes).await;
    nodes
}

async fn wait_for_neighbours(node: &NodeHandle) {
    for _ in 0..200 {
        if node.report().await.unwrap().neighbours > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{:?} found no neighbour in 5 s", node.me());
}

async fn next_result(node: &mut TestNode, tag: u64) -> SendOutcome {
    loop {
        let event = timeout(Duration::from_secs(10), node.events.recv())
            .await
            .expect("a send result within 10 s")
            .unwrap();
        if let AppEvent::SendResult { tag: t, outcome } = event
            && t == tag
        {
            return outcome;
        }
    }
}

async fn send(nodes: &mut [TestNode], a: usize, b: usize, tag: u64) -> SendOutcome {
    let dest = nodes[b].handle.me().id;
    nodes[a]
        .handle
        .command(Command::Send {
            dest,
            payload: vec![7; 100],
            tag,
        })
        .await
        .unwrap();
    next_result(&mut nodes[a], tag).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_broadcast_directed_and_a_policy_swap_lose_nothing() {
    let mut nodes = network(6).await;
    let writer = nodes[1].handle.me();
    for node in &nodes {
        node.handle
            .command(Command::Subscribe {
                channel: "news".into(),
                writer,
            })
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for k in 0..10u8 {
        nodes[1]
            .handle
            .command(Command::Publish {
                channel: "news".into(),
                payload: vec![k; 200],
            })
            .await
            .unwrap();
    }
    for (i, node) in nodes.iter_mut().enumerate() {
        if i == 1 {
            continue;
        }
        let mut got = 0;
        while got < 10 {
            let event = timeout(Duration::from_secs(10), node.events.recv())
                .await
                .unwrap_or_else(|_| panic!("node {i} got {got} of 10 publications"))
                .unwrap();
            if let AppEvent::Deliver(d) = event {
                assert_eq!(d.origin, writer.id, "the origin's identity, not a relay's");
                assert_eq!(d.plane, Plane::Tree);
                assert_eq!(d.channel.as_deref(), Some("news"));
                got += 1;
            }
        }
    }
    // Directed sends: every pair from node 0, the policy swapped halfway on every node.
    let mut fast = 0;
    let mut before_swap = Default::default();
    for (tag, b) in (1..6).chain(1..6).enumerate() {
        if tag == 5 {
            for n in &nodes {
                n.registry.select_policy("expected-cost").unwrap();
            }
            before_swap = nodes[0].handle.report().await.unwrap().stats.decisions;
        }
        match send(&mut nodes, 0, b, tag as u64).await {
            SendOutcome::Acked { fast: f, .. } => fast += usize::from(f),
            SendOutcome::Failed => panic!("send {tag} to node {b} failed"),
        }
    }
    assert!(fast > 0, "a neighbour or a learned proof gives a fast path");
    let after = nodes[0].handle.report().await.unwrap().stats.decisions;
    assert_eq!(
        after.get("lowest-cost"),
        before_swap.get("lowest-cost"),
        "after the swap the old policy decides nothing: {before_swap:?} → {after:?}"
    );
    for n in &nodes {
        n.handle.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_forged_and_oversized_frames_are_refused_and_the_node_carries_on() {
    let mut nodes = network(3).await;
    let target = nodes[2].handle.me();
    // A rogue peer with its own underlay and a larger frame limit than the node's.
    let mallory = Keypair::from_secret([66; 32]);
    let mut rogue = Underlay::new(
        mallory.secret(),
        routefabric_net::Config {
            max_frame_bytes: 8 << 20,
            ..Default::default()
        },
    )
    .unwrap();
    rogue.dial(actor::dial_addr(&target)).unwrap();
    timeout(Duration::from_secs(5), async {
        loop {
            if let routefabric_net::Event::PeerUp { .. } = rogue.next_event().await {
                break;
            }
        }
    })
    .await
    .unwrap();
    let victim: NodeId = nodes[0].handle.me().id;
    let forged = mallory.seal(&Envelope {
        origin: victim,
        timestamp_ms: wall_ms(),
        seq: 1,
        kind: Kind::Direct { dest: target.id },
        payload: b"pay mallory".to_vec(),
    });
    let frame = Frame::Directed(Box::new(Directed {
        origin: victim,
        dest: target.id,
        id: 1,
        attempt: 0,
        flood: false,
        ttl: 3,
        trace: vec![victim, mallory.id()],
        envelope: forged,
    }));
    rogue.send(target.id, frame.encode()).unwrap();
    rogue.send(target.id, vec![0xff; 64]).unwrap();
    rogue.send(target.id, vec![0u8; 2 << 20]).unwrap(); // over the node's 1 MiB limit
    // Keep the rogue's connection driven while the node reads.
    let drive = tokio::spawn(async move {
        loop {
            let _ = rogue.next_event().await;
        }
    });
    let (mut rejected, mut oversized) = (0, 0);
    for _ in 0..200 {
        let r = nodes[2].handle.report().await.unwrap();
        rejected = r.stats.rejects.bad_signature + r.stats.malformed_frames;
        oversized = r.stats.oversized_frames;
        if rejected >= 2 && oversized >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        rejected, 2,
        "the forged envelope and the garbage frame are counted"
    );
    assert_eq!(oversized, 1, "the oversized frame is counted");
    // The node is still up and still delivers.
    assert!(matches!(
        send(&mut nodes, 0, 2, 99).await,
        SendOutcome::Acked { .. }
    ));
    drive.abort();
    for n in &nodes {
        n.handle.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_restarts_is_learned_again() {
    let mut nodes = network(4).await;
    assert!(matches!(
        send(&mut nodes, 0, 3, 1).await,
        SendOutcome::Acked { .. }
    ));
    // Node 3 stops and comes back with the same key on a new port.
    nodes[3].handle.shutdown().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let restarted = start(3).await;
    let contact: PeerRef = nodes[1].handle.me();
    restarted
        .handle
        .command(Command::Start {
            contact: Some(contact),
        })
        .await
        .unwrap();
    wait_for_neighbours(&restarted.handle).await;
    nodes[3] = restarted;
    for tag in 2..5 {
        match send(&mut nodes, 0, 3, tag).await {
            SendOutcome::Acked { .. } => {}
            SendOutcome::Failed => panic!("the restarted node was not reached (send {tag})"),
        }
    }
    for n in &nodes {
        n.handle.shutdown().await;
    }
}

/// A port free on 127.0.0.1 for both TCP and UDP just now.
fn free_port() -> u16 {
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_that_dial_over_quic_join_and_deliver_without_a_tcp_byte() {
    let mut nodes = Vec::new();
    for i in 0..3 {
        // The port is free when chosen; another test may take it before the node binds it.
        let mut tries = 0;
        let node = loop {
            let port = free_port();
            let listen = vec![
                format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap(),
                format!("/ip4/127.0.0.1/udp/{port}/quic-v1")
                    .parse()
                    .unwrap(),
            ];
            match start_on(30 + i, listen, actor::Transport::Quic).await {
                Ok(node) => break node,
                Err(e) if tries < 3 => {
                    tries += 1;
                    eprintln!("port {port} was taken ({e}); another");
                }
                Err(e) => panic!("{e}"),
            }
        };
        nodes.push(node);
    }
    join(&nodes).await;
    for tag in 0..3 {
        assert!(matches!(
            send(&mut nodes, 2, 1, tag).await,
            SendOutcome::Acked { .. }
        ));
    }
    for node in &nodes {
        let wire = node.handle.report().await.unwrap().wire;
        assert_eq!(
            (wire.written, wire.read),
            (0, 0),
            "every connection is QUIC (the counters see TCP only)"
        );
        node.handle.shutdown().await;
    }
}
