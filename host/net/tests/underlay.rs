#![allow(clippy::unwrap_used)]
//! Two or three underlays on loopback: connection, ordered delivery over TCP and QUIC, oversized
//! frames, backpressure, bans, wire byte counts and link samples.

use std::time::Duration;

use routefabric_net::{Config, Event, Multiaddr, RejectReason, SendError, Underlay};

/// Upper bound on any wait in these tests; they finish far sooner unless something is broken.
const PATIENCE: Duration = Duration::from_secs(20);

fn tcp() -> Multiaddr {
    "/ip4/127.0.0.1/tcp/0".parse().unwrap()
}

fn quic() -> Multiaddr {
    "/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap()
}

fn underlay(seed: u8, config: Config) -> Underlay {
    Underlay::new([seed; 32], config).unwrap()
}

/// Listens on `addr` and returns the bound address.
async fn listen(node: &mut Underlay, addr: Multiaddr) -> Multiaddr {
    node.listen(addr).unwrap();
    tokio::time::timeout(PATIENCE, async {
        loop {
            if let Event::Listening(addr) = node.next_event().await {
                return addr;
            }
        }
    })
    .await
    .unwrap()
}

/// Drives both underlays until `done` returns true for an event of `a` (`true` in the pair) or
/// `b` (`false`). Events before that are passed to `done` too.
async fn drive(a: &mut Underlay, b: &mut Underlay, mut done: impl FnMut(bool, Event) -> bool) {
    tokio::time::timeout(PATIENCE, async {
        loop {
            let (from_a, event) = tokio::select! {
                e = a.next_event() => (true, e),
                e = b.next_event() => (false, e),
            };
            if done(from_a, event) {
                return;
            }
        }
    })
    .await
    .unwrap()
}

/// Connects `b` to `a` over `addr` and waits for `PeerUp` on both sides.
async fn connect(a: &mut Underlay, b: &mut Underlay, addr: Multiaddr) {
    let (a_id, b_id) = (a.local_id(), b.local_id());
    let a_addr = listen(a, addr).await;
    b.dial(a_addr).unwrap();
    let (mut a_up, mut b_up) = (false, false);
    drive(a, b, |from_a, event| {
        if let Event::PeerUp { peer, .. } = event {
            if from_a {
                assert_eq!(peer, b_id);
                a_up = true;
            } else {
                assert_eq!(peer, a_id);
                b_up = true;
            }
        }
        a_up && b_up
    })
    .await;
}

async fn thousand_frames_in_order(addr: Multiaddr) {
    let mut a = underlay(1, Config::default());
    let mut b = underlay(2, Config::default());
    connect(&mut a, &mut b, addr).await;
    let a_id = a.local_id();
    let b_id = b.local_id();
    for i in 0u32..1000 {
        b.send(a_id, i.to_be_bytes().to_vec()).unwrap();
    }
    let mut next = 0u32;
    drive(&mut a, &mut b, |from_a, event| {
        if let (true, Event::Frame { from, frame }) = (from_a, event) {
            assert_eq!(from, b_id);
            assert_eq!(&frame[..], &next.to_be_bytes()[..], "frames out of order");
            next += 1;
        }
        next == 1000
    })
    .await;
    assert_eq!(a.frame_counts().received, 1000);
}

#[tokio::test]
async fn tcp_peers_come_up_and_frames_arrive_in_order() {
    thousand_frames_in_order(tcp()).await;
}

#[tokio::test]
async fn quic_peers_come_up_and_frames_arrive_in_order() {
    thousand_frames_in_order(quic()).await;
}

#[tokio::test]
async fn oversized_frame_is_rejected_and_the_connection_survives() {
    let small = Config {
        max_frame_bytes: 1024,
        ..Config::default()
    };
    let large = Config {
        max_frame_bytes: 256 * 1024,
        ..Config::default()
    };
    let mut a = underlay(1, small);
    let mut b = underlay(2, large);
    connect(&mut a, &mut b, tcp()).await;
    let (a_id, b_id) = (a.local_id(), b.local_id());

    // The sender checks its own limit at once.
    assert_eq!(
        b.send(a_id, vec![0u8; 256 * 1024 + 1]),
        Err(SendError::Oversized {
            len: 256 * 1024 + 1,
            max: 256 * 1024
        })
    );
    b.send(a_id, b"before".to_vec()).unwrap();
    b.send(a_id, vec![9u8; 200 * 1024]).unwrap();
    b.send(a_id, b"after".to_vec()).unwrap();

    let mut seen = Vec::new();
    drive(&mut a, &mut b, |from_a, event| {
        match (from_a, event) {
            (true, Event::Frame { from, frame }) => {
                assert_eq!(from, b_id);
                seen.push(String::from_utf8(frame.to_vec()).unwrap());
            }
            (true, Event::FrameRejected { peer, reason }) => {
                assert_eq!(peer, b_id);
                assert_eq!(
                    reason,
                    RejectReason::Oversized {
                        len: 200 * 1024,
                        max: 1024
                    }
                );
                seen.push("rejected".to_owned());
            }
            (_, Event::PeerDown { .. }) => panic!("the connection must survive"),
            _ => {}
        }
        seen.len() == 3
    })
    .await;
    assert_eq!(seen, ["before", "rejected", "after"]);
    assert_eq!(a.frame_counts().rejected, 1);
    assert_eq!(a.frame_counts().received, 2);
    assert!(a.is_connected(&b_id));
}

#[tokio::test]
async fn full_queue_fails_fast_instead_of_blocking() {
    let config = Config {
        per_peer_queue: 4,
        ..Config::default()
    };
    let mut a = underlay(1, Config::default());
    let mut b = underlay(2, config);
    connect(&mut a, &mut b, tcp()).await;
    let a_id = a.local_id();

    let results: Vec<_> = (0..1000)
        .map(|i: u32| b.send(a_id, i.to_be_bytes().to_vec()))
        .collect();
    assert!(results[..4].iter().all(Result::is_ok));
    assert!(results[4..].iter().all(|r| *r == Err(SendError::QueueFull)));

    // Once written, the queue has room again and the accepted frames arrive.
    let mut received = 0;
    drive(&mut a, &mut b, |from_a, event| {
        if from_a && matches!(event, Event::Frame { .. }) {
            received += 1;
        }
        received == 4
    })
    .await;
    // Written frames are reported back to the sender's queue asynchronously: poll until free.
    tokio::time::timeout(PATIENCE, async {
        while b.frame_counts().sent < 4 {
            tokio::select! {
                _ = a.next_event() => {}
                _ = b.next_event() => {}
            }
        }
    })
    .await
    .unwrap();
    assert!(b.send(a_id, b"more".to_vec()).is_ok());

    let stranger = underlay(3, Config::default()).local_id();
    assert_eq!(
        b.send(stranger, b"x".to_vec()),
        Err(SendError::NotConnected)
    );
}

#[tokio::test]
async fn banned_peer_is_disconnected_and_refused() {
    let mut a = underlay(1, Config::default());
    let mut b = underlay(2, Config::default());
    let a_addr = listen(&mut a, tcp()).await;
    b.dial(a_addr.clone()).unwrap();
    let (a_id, b_id) = (a.local_id(), b.local_id());
    let mut ups = 0;
    drive(&mut a, &mut b, |_, event| {
        ups += usize::from(matches!(event, Event::PeerUp { .. }));
        ups == 2
    })
    .await;

    a.ban(b_id, Duration::from_secs(600)).unwrap();
    assert!(a.is_banned(&b_id));
    let mut downs = 0;
    drive(&mut a, &mut b, |_, event| {
        downs += usize::from(matches!(event, Event::PeerDown { .. }));
        downs == 2
    })
    .await;
    assert!(!a.is_connected(&b_id));
    assert!(!b.is_connected(&a_id));

    // B dials again: A refuses after the handshake, so B sees the connection end (or the dial
    // fail) and A never reports the peer.
    b.dial(a_addr).unwrap();
    drive(&mut a, &mut b, |from_a, event| {
        if from_a {
            assert!(
                !matches!(event, Event::PeerUp { .. }),
                "banned peer came up: {event:?}"
            );
        }
        !from_a && matches!(event, Event::PeerDown { .. } | Event::DialFailed { .. })
    })
    .await;
    assert!(!a.is_connected(&b_id));
}

#[tokio::test]
async fn ban_expires() {
    let mut a = underlay(1, Config::default());
    let mut b = underlay(2, Config::default());
    let a_addr = listen(&mut a, tcp()).await;
    let b_id = b.local_id();
    a.ban(b_id, Duration::from_millis(200)).unwrap();
    // Wait for the expiry by driving A (its timer lifts the ban).
    tokio::time::timeout(PATIENCE, async {
        while a.is_banned(&b_id) {
            tokio::select! {
                _ = a.next_event() => {}
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
    })
    .await
    .unwrap();
    b.dial(a_addr).unwrap();
    drive(&mut a, &mut b, |from_a, event| {
        from_a && matches!(event, Event::PeerUp { peer, .. } if peer == b_id)
    })
    .await;
}

#[tokio::test]
async fn wire_bytes_grow_with_traffic_and_exceed_the_payload() {
    let mut a = underlay(1, Config::default());
    let mut b = underlay(2, Config::default());
    connect(&mut a, &mut b, tcp()).await;
    let a_id = a.local_id();
    let (a_before, b_before) = (a.wire_bytes(), b.wire_bytes());
    assert!(
        a_before.read > 0 && b_before.written > 0,
        "handshakes are counted"
    );

    const FRAMES: usize = 200;
    const SIZE: usize = 1000;
    for _ in 0..FRAMES {
        b.send(a_id, vec![7u8; SIZE]).unwrap();
    }
    let mut received = 0;
    drive(&mut a, &mut b, |from_a, event| {
        if from_a && matches!(event, Event::Frame { .. }) {
            received += 1;
        }
        received == FRAMES
    })
    .await;
    let payload = (FRAMES * SIZE) as u64;
    let written = b.wire_bytes().since(b_before).written;
    let read = a.wire_bytes().since(a_before).read;
    assert!(written > payload, "written {written} <= payload {payload}");
    assert!(read > payload, "read {read} <= payload {payload}");
}

#[tokio::test]
async fn ping_round_trips_become_link_samples() {
    let config = Config {
        ping_interval_ms: 50,
        ..Config::default()
    };
    let mut a = underlay(1, config.clone());
    let mut b = underlay(2, config);
    connect(&mut a, &mut b, tcp()).await;
    let (a_id, b_id) = (a.local_id(), b.local_id());
    let (mut a_sample, mut b_sample) = (false, false);
    drive(&mut a, &mut b, |from_a, event| {
        if let Event::LinkSample { peer, .. } = event {
            if from_a {
                assert_eq!(peer, b_id);
                a_sample = true;
            } else {
                assert_eq!(peer, a_id);
                b_sample = true;
            }
        }
        a_sample && b_sample
    })
    .await;
}

#[tokio::test]
async fn disconnect_brings_the_peer_down() {
    let mut a = underlay(1, Config::default());
    let mut b = underlay(2, Config::default());
    connect(&mut a, &mut b, tcp()).await;
    let b_id = b.local_id();
    assert!(a.disconnect(b_id));
    let mut downs = 0;
    drive(&mut a, &mut b, |_, event| {
        downs += usize::from(matches!(event, Event::PeerDown { .. }));
        downs == 2
    })
    .await;
    assert!(!a.disconnect(b_id));
    assert_eq!(a.send(b_id, b"x".to_vec()), Err(SendError::NotConnected));
}

#[tokio::test]
async fn idle_connections_close_when_configured() {
    let config = Config {
        idle_connection_timeout_ms: 300,
        ..Config::default()
    };
    let mut a = underlay(1, config.clone());
    let mut b = underlay(2, config);
    connect(&mut a, &mut b, tcp()).await;
    let a_id = a.local_id();
    b.send(a_id, b"one frame".to_vec()).unwrap();
    let (mut frame, mut downs) = (false, 0);
    drive(&mut a, &mut b, |_, event| {
        match event {
            Event::Frame { .. } => frame = true,
            Event::PeerDown { .. } => downs += 1,
            _ => {}
        }
        downs == 2
    })
    .await;
    assert!(frame);
}

#[tokio::test]
async fn every_accepted_frame_is_reported_sent_or_dropped() {
    let mut a = underlay(1, Config::default());
    let mut b = underlay(2, Config::default());
    connect(&mut a, &mut b, tcp()).await;
    let a_id = a.local_id();
    for i in 0u32..1000 {
        b.send(a_id, i.to_be_bytes().to_vec()).unwrap();
    }
    // Close before the frames had a chance to leave.
    assert!(b.disconnect(a_id));
    let mut dropped_events = 0;
    let mut b_down = false;
    drive(&mut a, &mut b, |from_a, event| {
        match (from_a, event) {
            (false, Event::FramesDropped { peer, count }) => {
                assert_eq!(peer, a_id);
                dropped_events += count;
            }
            (false, Event::PeerDown { .. }) => b_down = true,
            _ => {}
        }
        b_down
    })
    .await;
    let counts = b.frame_counts();
    assert_eq!(counts.sent + counts.dropped, 1000, "{counts:?}");
    assert_eq!(counts.dropped, dropped_events as u64);
    assert!(counts.dropped > 0);
}
