//! Cost of calls into plugins through WebAssembly, next to the same logic called natively.
//!
//! * `query/8-hops`: `static-routes` configured with 8 routes to one destination;
//! * `observe/1000-links`: a batch of 1,000 link samples (each upserts a neighbour and returns an
//!   offer), reported per observation — almost pure marshalling, the worst case for WASM;
//! * `observe/1000-links-ignored`: the same batch fed to `fanout-token`, which ignores links that
//!   come up — the floor of the component boundary (lowering 1,000 observations, lifting an empty
//!   answer), against which the other observe figures can be read;
//! * `observe/1000-ack-traces`: `ack-trace` fed 1,000 traces of 6-node paths (each teaches five
//!   destinations), per observation — a source doing real work per observation;
//! * `observe/1000-dht-messages`: `dht-directory` on a node with 8 neighbours, fed what such a
//!   node sees: lookup requests from its neighbours (each teaches the way back to its origin and is
//!   answered with the 20 closest entries, or forwarded), a few link samples and route misses —
//!   per observation;
//! * `query/dht-directory` and the other learning sources: one query on the state the batches
//!   left;
//! * `choose/8-candidates`: `lowest-cost` over 8 candidates.
//!
//! Both sides go through the host traits (`HostedProofSource`, `HostedRoutingPolicy`), so the WASM
//! side includes everything a caller pays: the version lookup, the lock, the conversions, the
//! epoch deadline. A summary with the WASM/native ratios is printed at the end.

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput};
use routefabric_benches::criterion_median_ns;
use routefabric_builtin::{
    ACK_TRACE, DHT_DIRECTORY, EXPECTED_COST, FANOUT_TOKEN, LOWEST_COST, REDUNDANT, STATIC_ROUTES,
};
use routefabric_core::NodeId;
use routefabric_core::plugin::{
    AckTrace, Candidate, HostedProofSource, HostedRoutingPolicy, LinkSample, Native, NextHop,
    Observation, PeerMessage, ProofSource, RouteToken, RoutingPolicy,
};
use routefabric_runtime::{Runtime, RuntimeConfig, WasmProofSource, WasmRoutingPolicy};

const HOPS: u64 = 8;

/// Builds the batch of observations for one round.
type BatchOf = fn(u64) -> Vec<Observation>;

/// The WASM and the native build of one policy, labelled.
type PolicyPair<'a> = [(&'a str, &'a dyn HostedRoutingPolicy); 2];
const BATCH: u64 = 1_000;

fn id(n: u64) -> NodeId {
    NodeId::from_index(n)
}

fn cbor<T: serde::Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out).expect("cbor");
    out
}

fn static_routes_config() -> Vec<u8> {
    let routes = (0..HOPS)
        .map(|i| static_routes::StaticRoute {
            dest: id(1_000),
            via: id(10 + i),
            cost: 100 * (i as u32 + 1),
            confidence: 0.9,
        })
        .collect();
    cbor(&static_routes::Config {
        routes,
        ..static_routes::Config::default()
    })
}

fn link_batch(round: u64) -> Vec<Observation> {
    (0..BATCH)
        .map(|i| {
            Observation::Link(LinkSample {
                peer: id(100_000 + i),
                up: true,
                rtt_us: Some(500 + ((i + round) % 300) as u32),
                session: 1,
            })
        })
        .collect()
}

/// ACK traces of 6-node paths through this node (id 1) at a varying position: each teaches the
/// source about 5 destinations.
fn trace_batch(round: u64) -> Vec<Observation> {
    (0..BATCH)
        .map(|i| {
            let at = ((i + round) % 6) as usize;
            let mut path: Vec<NodeId> = (0..5).map(|k| id(10_000 + (i * 5 + k) % 4_000)).collect();
            path.insert(at, id(1));
            Observation::Ack(AckTrace {
                path,
                rtt_ms: (at == 0).then_some(20),
            })
        })
        .collect()
}

/// Route tokens of members of a 4-level tree this node (id 1) sits in at depth 1.
fn token_batch(round: u64) -> Vec<Observation> {
    (0..BATCH)
        .map(|i| {
            let member = 10_000 + (i + round) % 3_000;
            let mut path = vec![id(2), id(1)];
            path.extend([id(20 + member % 16), id(400 + member % 256), id(member)]);
            Observation::Token(RouteToken {
                tree: 7,
                path,
                issued_at_ms: round,
            })
        })
        .collect()
}

/// A node id as real ones are (ed25519 public keys): spread uniformly over the id space, which the
/// XOR metric of `dht-directory` relies on (`id(n)` puts every node in one corner of it).
fn key(n: u64) -> NodeId {
    let mix = |mut z: u64| {
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    NodeId::from_words([
        mix(n),
        mix(n ^ (1 << 62)),
        mix(n ^ (2 << 62)),
        mix(n ^ (3 << 62)),
    ])
}

/// What a `dht-directory` node with 8 neighbours (ids 2..=9) sees: lookup requests relayed by its
/// neighbours for 3,000 origins and 5,000 targets, a link sample every 50 observations and a
/// route miss every 100.
fn dht_batch(round: u64) -> Vec<Observation> {
    (0..BATCH)
        .map(|i| {
            let neighbour = id(2 + i % 8);
            if i % 50 == 0 {
                Observation::Link(LinkSample {
                    peer: id(2 + (i / 50) % 8),
                    up: true,
                    rtt_us: Some(400 + ((i + round) % 200) as u32),
                    session: 1,
                })
            } else if i % 100 == 7 {
                Observation::Miss(key(50_000 + (round * 10 + i / 100) % 400))
            } else {
                let origin = key(10_000 + (i * 7 + round) % 3_000);
                let target = key(20_000 + (i * 13 + round * 5) % 5_000);
                let data = dht_directory::lookup_request(
                    origin,
                    round * BATCH + i,
                    target,
                    8,
                    1 + (i % 5) as u8,
                );
                Observation::Message(PeerMessage {
                    sender: neighbour,
                    data,
                })
            }
        })
        .collect()
}

fn candidates() -> Vec<Candidate> {
    (0..HOPS)
        .map(|i| Candidate {
            hop: NextHop {
                via: id(10 + i),
                cost: 1_000 - 50 * i as u32,
                ttl_ms: 10_000,
                confidence: 0.5 + 0.05 * i as f32,
            },
            source: "static-routes".to_owned(),
            link_rtt_us: Some(400 + 10 * i as u32),
        })
        .collect()
}

fn main() {
    let cache = tempfile::tempdir().expect("temp dir");
    // A batch of 1,000 ACK traces takes a few ms; a 10 ms wall-clock deadline would fail the odd
    // call when the machine hiccups, and the restart backoff would then fail calls fast and skew
    // the medians. This measures cost, not deadlines (those have their own tests).
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(cache.path().to_path_buf()),
        call_deadline: std::time::Duration::from_millis(100),
        ..RuntimeConfig::default()
    })
    .expect("runtime");
    let me = id(1);
    let config = static_routes_config();
    let wasm_source = WasmProofSource::load(
        &runtime,
        "static-routes.wasm",
        STATIC_ROUTES.bytes,
        &config,
        me,
    )
    .expect("static-routes loads");
    let native_source =
        Native::new(static_routes::StaticRoutes::init(&config, me).expect("native init"));
    let sources: [(&str, &dyn HostedProofSource); 2] =
        [("wasm", &wasm_source), ("native", &native_source)];
    let wasm_acks = WasmProofSource::load(&runtime, "ack-trace.wasm", ACK_TRACE.bytes, &[], me)
        .expect("ack-trace loads");
    let native_acks = Native::new(ack_trace::AckTraceSource::init(&[], me).expect("native init"));
    let ack_sources: [(&str, &dyn HostedProofSource); 2] =
        [("wasm", &wasm_acks), ("native", &native_acks)];
    let wasm_tokens =
        WasmProofSource::load(&runtime, "fanout-token.wasm", FANOUT_TOKEN.bytes, &[], me)
            .expect("fanout-token loads");
    let native_tokens = Native::new(fanout_token::FanoutToken::init(&[], me).expect("native init"));
    let token_sources: [(&str, &dyn HostedProofSource); 2] =
        [("wasm", &wasm_tokens), ("native", &native_tokens)];
    let wasm_dht =
        WasmProofSource::load(&runtime, "dht-directory.wasm", DHT_DIRECTORY.bytes, &[], me)
            .expect("dht-directory loads");
    let native_dht = Native::new(dht_directory::DhtDirectory::init(&[], me).expect("native init"));
    let dht_sources: [(&str, &dyn HostedProofSource); 2] =
        [("wasm", &wasm_dht), ("native", &native_dht)];
    let wasm_policy =
        WasmRoutingPolicy::load(&runtime, "lowest-cost.wasm", LOWEST_COST.bytes, &[], me)
            .expect("lowest-cost loads");
    let native_policy = Native::new(lowest_cost::LowestCost::init(&[], me).expect("native init"));
    let policies: [(&str, &dyn HostedRoutingPolicy); 2] =
        [("wasm", &wasm_policy), ("native", &native_policy)];
    let wasm_expected =
        WasmRoutingPolicy::load(&runtime, "expected-cost.wasm", EXPECTED_COST.bytes, &[], me)
            .expect("expected-cost loads");
    let native_expected =
        Native::new(expected_cost::ExpectedCost::init(&[], me).expect("native init"));
    let wasm_redundant =
        WasmRoutingPolicy::load(&runtime, "redundant.wasm", REDUNDANT.bytes, &[], me)
            .expect("redundant loads");
    let native_redundant = Native::new(redundant::Redundant::init(&[], me).expect("native init"));
    let other_policies: [(&str, PolicyPair<'_>); 2] = [
        (
            "expected-cost",
            [("wasm", &wasm_expected), ("native", &native_expected)],
        ),
        (
            "redundant",
            [("wasm", &wasm_redundant), ("native", &native_redundant)],
        ),
    ];

    let mut c = Criterion::default().configure_from_args();

    {
        let mut group = c.benchmark_group("query");
        for (name, source) in sources {
            assert_eq!(
                source.query(0, &id(1_000)).expect("query").len(),
                HOPS as usize
            );
            group.bench_function(BenchmarkId::new(name, "8-hops"), |b| {
                b.iter(|| black_box(source.query(black_box(1), black_box(&id(1_000)))))
            });
        }
        group.finish();
    }
    {
        let mut group = c.benchmark_group("observe");
        group.throughput(Throughput::Elements(BATCH));
        let workloads: [(&str, BatchOf, _); 5] = [
            ("1000-links", link_batch, sources),
            ("1000-links-ignored", link_batch, token_sources),
            ("1000-ack-traces", trace_batch, ack_sources),
            ("1000-route-tokens", token_batch, token_sources),
            ("1000-dht-messages", dht_batch, dht_sources),
        ];
        for (label, batch, pair) in workloads {
            let batches: Vec<Vec<Observation>> = (0..4).map(batch).collect();
            for (name, source) in pair {
                let mut round = 0usize;
                group.bench_function(BenchmarkId::new(name, label), |b| {
                    b.iter(|| {
                        round += 1;
                        black_box(source.observe(round as u64, &batches[round % batches.len()]))
                    })
                });
            }
        }
        group.finish();
    }
    {
        // Queries of the learning sources, on the state the batches above left.
        let mut group = c.benchmark_group("query");
        // An origin the directory still holds (its table keeps a bounded share of the 3,000).
        let dht_dest = (10_000..13_000)
            .map(key)
            .find(|d| native_dht.query(5, d).is_ok_and(|hops| !hops.is_empty()))
            .unwrap_or(key(10_003));
        for (label, pair, dest) in [
            ("ack-trace", ack_sources, id(10_003)),
            ("fanout-token", token_sources, id(10_003)),
            ("dht-directory", dht_sources, dht_dest),
        ] {
            for (name, source) in pair {
                group.bench_function(BenchmarkId::new(name, label), |b| {
                    b.iter(|| black_box(source.query(black_box(5), black_box(&dest))))
                });
            }
        }
        group.finish();
    }
    {
        let mut group = c.benchmark_group("choose");
        let candidates = candidates();
        for (name, policy) in policies {
            group.bench_function(BenchmarkId::new(name, "8-candidates"), |b| {
                b.iter(|| black_box(policy.choose(1, black_box(&id(1_000)), &candidates)))
            });
        }
        for (label, pair) in other_policies {
            for (name, policy) in pair {
                group.bench_function(BenchmarkId::new(name, label), |b| {
                    b.iter(|| black_box(policy.choose(1, black_box(&id(1_000)), &candidates)))
                });
            }
        }
        group.finish();
    }
    c.final_summary();
    let failed = wasm_source.stats().failed
        + wasm_acks.stats().failed
        + wasm_dht.stats().failed
        + wasm_policy.stats().failed;

    let mut rows: BTreeMap<&str, (f64, f64, f64)> = BTreeMap::new();
    for (label, group, function, per) in [
        ("query static", "query", "8-hops", 1.0),
        ("observe links", "observe", "1000-links", BATCH as f64),
        (
            "observe floor",
            "observe",
            "1000-links-ignored",
            BATCH as f64,
        ),
        ("observe acks", "observe", "1000-ack-traces", BATCH as f64),
        (
            "observe tokens",
            "observe",
            "1000-route-tokens",
            BATCH as f64,
        ),
        ("observe dht", "observe", "1000-dht-messages", BATCH as f64),
        ("query acks", "query", "ack-trace", 1.0),
        ("query tokens", "query", "fanout-token", 1.0),
        ("query dht", "query", "dht-directory", 1.0),
        ("choose lowest", "choose", "8-candidates", 1.0),
        ("choose expect", "choose", "expected-cost", 1.0),
        ("choose redund", "choose", "redundant", 1.0),
    ] {
        let wasm = criterion_median_ns(group, &format!("wasm/{function}"));
        let native = criterion_median_ns(group, &format!("native/{function}"));
        if let (Some(w), Some(n)) = (wasm, native) {
            rows.insert(label, (w / per, n / per, w / n));
        }
    }
    if !rows.is_empty() {
        println!("\nsummary (medians of this run; observe is per observation)");
        println!(
            "{:<10} {:>14} {:>14} {:>12}",
            "call", "wasm", "native", "wasm/native"
        );
        for (group, (w, n, ratio)) in &rows {
            println!("{group:<14} {w:>11.1} ns {n:>11.1} ns {ratio:>11.2}×");
        }
        // What the guest spends on the work itself, once the boundary floor (lowering the
        // observations) is taken off the WASM figure.
        if let Some(&(floor, _, _)) = rows.get("observe floor") {
            println!("\nobserve above the boundary floor of {floor:.1} ns per observation:");
            for (group, (w, n, _)) in &rows {
                if group.starts_with("observe") && *group != "observe floor" {
                    let above = w - floor;
                    println!(
                        "{group:<14} {above:>11.1} ns {n:>11.1} ns {:>11.2}×",
                        above / n
                    );
                }
            }
        }
    }
    // A call interrupted by its deadline (the machine was busy) shows up here, not as a panic:
    // the figures above still hold for the calls that ran.
    println!("failed WASM calls during the run: {failed}");
}
