//! The plugin runtime end to end, with real components built from `plugins/` and
//! `tests/plugins/`.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap is a test that hides its failure

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use routefabric_builtin::{LOWEST_COST, STATIC_ROUTES};
use routefabric_core::NodeId;
use routefabric_core::plugin::{
    Action, CallError, Candidate, Decision, HostedProofSource, HostedRoutingPolicy, LinkSample,
    Native, NextHop, Observation, ProofSource, RoutePlan,
};
use routefabric_runtime::{
    LoadOutcome, PluginKind, Problem, Registry, Runtime, RuntimeConfig, SwapError, WasmProofSource,
    WasmRoutingPolicy,
};
use routefabric_tests::{BOMB_DEST, LOOP_DEST, PROBE_V1, PROBE_V2, TRAP_DEST, patch};

fn me() -> NodeId {
    NodeId::from_index(1)
}

fn id(n: u64) -> NodeId {
    NodeId::from_index(n)
}

/// One runtime for the tests that keep the default limits, with a private code cache.
fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<(Runtime, tempfile::TempDir)> = OnceLock::new();
    let (runtime, _dir) = RUNTIME.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        // Deadlines are wall-clock: on a busy machine a descheduled call can overrun 10 ms.
        // Only the deadline test runs with the default (on a runtime of its own).
        let config = RuntimeConfig {
            cache_dir: Some(dir.path().to_path_buf()),
            call_deadline: std::time::Duration::from_secs(1),
            ..RuntimeConfig::default()
        };
        (Runtime::new(config).expect("runtime"), dir)
    });
    runtime
}

fn probe(bytes: &[u8]) -> WasmProofSource {
    WasmProofSource::load(runtime(), "probe.wasm", bytes, &[], me()).expect("probe loads")
}

fn cost_of(source: &dyn HostedProofSource, dest: u64) -> u32 {
    source.query(0, &id(dest)).expect("query")[0].cost
}

fn link(peer: u64, up: bool, rtt_us: Option<u32>) -> Observation {
    Observation::Link(LinkSample {
        peer: id(peer),
        up,
        rtt_us,
        session: 7,
    })
}

#[test]
fn load_and_query_a_builtin_proof_source() {
    let config = static_routes::Config {
        routes: vec![static_routes::StaticRoute {
            dest: id(9),
            via: id(2),
            cost: 4_000,
            confidence: 0.75,
        }],
        ..static_routes::Config::default()
    };
    let config = routefabric_plugin_sdk_cbor(&config);
    let source = WasmProofSource::load(
        runtime(),
        "static-routes.wasm",
        STATIC_ROUTES.bytes,
        &config,
        me(),
    )
    .expect("loads");
    assert_eq!(source.info().name, "static-routes");
    assert_eq!(source.inspection().kind, PluginKind::ProofSource);
    let hops = source.query(0, &id(9)).unwrap();
    assert_eq!(
        hops,
        vec![NextHop {
            via: id(2),
            cost: 4_000,
            ttl_ms: 60_000,
            confidence: 0.75
        }]
    );
    let actions = source.observe(5, &[link(3, true, Some(250))]).unwrap();
    assert!(actions.contains(&Action::Offer {
        dest: id(3),
        hops: vec![NextHop {
            via: id(3),
            cost: 250,
            ttl_ms: 30_000,
            confidence: 1.0
        }]
    }));
    assert!(actions.iter().any(|a| matches!(a, Action::SetTimer { .. })));
    assert_eq!(source.stats().failed, 0);
}

fn routefabric_plugin_sdk_cbor<T: serde_like::Serialize>(value: &T) -> Vec<u8> {
    serde_like::encode(value)
}

/// The tests encode plugin configs the way the node does: CBOR.
mod serde_like {
    pub(crate) use serde::Serialize;

    pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
        let mut out = Vec::new();
        ciborium::into_writer(value, &mut out).expect("cbor");
        out
    }
}

#[test]
fn a_builtin_policy_decides_like_its_native_build() {
    let wasm = WasmRoutingPolicy::load(runtime(), "lowest-cost.wasm", LOWEST_COST.bytes, &[], me())
        .expect("loads");
    let native = Native::new(
        <lowest_cost::LowestCost as routefabric_core::plugin::RoutingPolicy>::init(&[], me())
            .unwrap(),
    );
    let candidates: Vec<Candidate> = [(4, 900, 1.0), (2, 100, 1.0), (3, 100, 0.9), (5, 50, 0.1)]
        .into_iter()
        .map(|(via, cost, confidence)| Candidate {
            hop: NextHop {
                via: id(via),
                cost,
                ttl_ms: 1_000,
                confidence,
            },
            source: "test".into(),
            link_rtt_us: Some(500),
        })
        .collect();
    let decision = wasm.choose(0, &id(9), &candidates).unwrap();
    assert_eq!(
        decision,
        Decision::Send(RoutePlan {
            hops: vec![id(5), id(2), id(3)],
            copies: 1
        })
    );
    assert_eq!(native.choose(0, &id(9), &candidates).unwrap(), decision);
    assert_eq!(wasm.choose(0, &id(9), &[]).unwrap(), Decision::Fallback);
}

#[test]
fn the_same_observation_stream_gives_the_same_answers_natively_and_in_wasm() {
    let wasm = WasmProofSource::load(
        runtime(),
        "static-routes.wasm",
        STATIC_ROUTES.bytes,
        &[],
        me(),
    )
    .unwrap();
    let native = Native::new(static_routes::StaticRoutes::init(&[], me()).unwrap());
    let batches: Vec<Vec<Observation>> = vec![
        vec![link(2, true, Some(900)), link(3, true, None)],
        vec![link(4, true, Some(120)), link(2, false, None)],
        vec![Observation::Timer(1), link(2, true, Some(880))],
        vec![Observation::Custom {
            kind: "x:unknown".into(),
            data: vec![1, 2],
        }],
    ];
    for (t, batch) in batches.iter().enumerate() {
        let now = t as u64 * 1_000;
        assert_eq!(
            wasm.observe(now, batch).unwrap(),
            native.observe(now, batch).unwrap()
        );
        for dest in 2..=5 {
            assert_eq!(
                wasm.query(now, &id(dest)).unwrap(),
                native.query(now, &id(dest)).unwrap()
            );
        }
    }
}

fn refusal(bytes: &[u8], file: &str) -> Problem {
    let err =
        WasmProofSource::load(runtime(), file, bytes, &[], me()).expect_err("must be refused");
    let line = err.to_string();
    assert!(line.starts_with(file), "the error names the file: {line}");
    assert!(!line.contains('\n'), "the error is one line: {line}");
    err.problem
}

#[test]
fn garbage_is_refused_as_not_wasm() {
    assert_eq!(
        refusal(b"definitely not a component", "garbage.wasm"),
        Problem::NotWasm
    );
    assert_eq!(refusal(&[], "empty.wasm"), Problem::NotWasm);
}

#[test]
fn a_core_module_is_refused() {
    // The smallest valid core module: magic + version 1.
    assert_eq!(
        refusal(b"\0asm\x01\0\0\0", "core.wasm"),
        Problem::CoreModule
    );
}

#[test]
fn a_truncated_component_is_refused_as_invalid() {
    let truncated = &PROBE_V1[..PROBE_V1.len() / 2];
    assert!(matches!(
        refusal(truncated, "half.wasm"),
        Problem::Invalid(_)
    ));
}

#[test]
fn a_component_of_no_plugin_world_is_refused() {
    // An empty component: valid, but exports nothing.
    assert!(matches!(
        refusal(b"\0asm\x0d\0\x01\0", "empty-component.wasm"),
        Problem::NotAPlugin { .. }
    ));
}

#[test]
fn a_component_of_the_wrong_world_is_refused() {
    assert_eq!(
        refusal(LOWEST_COST.bytes, "lowest-cost.wasm"),
        Problem::WrongWorld {
            expected: "proof-source",
            found: "routing-policy"
        }
    );
}

#[test]
fn an_incompatible_contract_version_is_refused() {
    let future = patch(
        PROBE_V1,
        "routefabric:plugin/proof@0.1.0",
        "routefabric:plugin/proof@0.9.0",
    );
    assert_eq!(
        refusal(&future, "future.wasm"),
        Problem::IncompatibleVersion {
            found: "0.9.0".into(),
            supported: "0.1.0"
        }
    );
}

#[test]
fn a_missing_export_is_refused() {
    // Rename the exported function `restore` (everywhere, consistently) to `restorx`.
    let renamed = patch(PROBE_V1, "restore", "restorx");
    match refusal(&renamed, "no-restore.wasm") {
        Problem::Contract(message) => assert!(message.contains("restore"), "{message}"),
        other => panic!("expected a contract error, got {other:?}"),
    }
}

#[test]
fn a_plugin_that_refuses_its_config_is_refused() {
    let err = WasmProofSource::load(runtime(), "probe.wasm", PROBE_V1, b"fail", me()).unwrap_err();
    assert_eq!(
        err.problem,
        Problem::Config("refused by its configuration".into())
    );
}

#[test]
fn a_trap_is_contained_and_the_instance_restarts() {
    let source = probe(PROBE_V1);
    source
        .observe(0, &[Observation::Timer(1), Observation::Timer(2)])
        .unwrap();
    match source.query(0, &id(TRAP_DEST)) {
        Err(CallError::Trapped { plugin, message }) => {
            assert_eq!(plugin, "probe");
            assert!(
                message.contains("probe asked to trap"),
                "message: {message:?}"
            );
        }
        other => panic!("expected a trap, got {other:?}"),
    }
    // First fault: the next call re-instantiates at once.
    assert_eq!(
        cost_of(&source, 5),
        1_000_000,
        "a fresh instance (no checkpoint yet)"
    );
    let stats = source.stats();
    assert_eq!((stats.traps, stats.restarts, stats.failed), (1, 1, 1));
}

/// A runtime of its own, for tests that change a limit.
fn runtime_with(config: RuntimeConfig) -> (Runtime, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = RuntimeConfig {
        cache_dir: Some(dir.path().to_path_buf()),
        ..config
    };
    (Runtime::new(config).unwrap(), dir)
}

#[test]
fn repeated_faults_back_off_and_calls_fail_cleanly_meanwhile() {
    // A backoff long enough that the calls below surely fall inside it, however loaded the
    // machine is.
    let backoff = Duration::from_millis(500);
    let (runtime, _dir) = runtime_with(RuntimeConfig {
        restart_backoff: backoff,
        ..RuntimeConfig::default()
    });
    let source = WasmProofSource::load(&runtime, "probe.wasm", PROBE_V1, &[], me()).unwrap();
    assert!(source.query(0, &id(TRAP_DEST)).is_err());
    // The restart at once succeeds, then it traps again: second fault in a row → backoff.
    assert!(source.query(0, &id(TRAP_DEST)).is_err());
    let retry_in = match source.query(0, &id(5)) {
        Err(CallError::Restarting { retry_in_ms, .. }) => {
            assert!(retry_in_ms <= backoff.as_millis() as u64);
            Duration::from_millis(retry_in_ms)
        }
        other => panic!("expected a clean failure during backoff, got {other:?}"),
    };
    assert!(matches!(
        source.query(0, &id(6)),
        Err(CallError::Restarting { .. })
    ));
    std::thread::sleep(retry_in + Duration::from_millis(20));
    assert_eq!(cost_of(&source, 5), 1_000_000);
    let stats = source.stats();
    assert_eq!((stats.traps, stats.restarts, stats.failed), (2, 2, 4));
}

#[test]
fn an_endless_loop_is_stopped_by_the_deadline() {
    let (runtime, _dir) = runtime_with(RuntimeConfig::default());
    let source = WasmProofSource::load(&runtime, "probe.wasm", PROBE_V1, &[], me()).unwrap();
    let deadline = runtime.config().call_deadline;
    assert_eq!(deadline, Duration::from_millis(10), "the default deadline");
    let started = Instant::now();
    let result = source.query(0, &id(LOOP_DEST));
    let took = started.elapsed();
    assert!(
        matches!(result, Err(CallError::Deadline { .. })),
        "{result:?}"
    );
    assert!(
        took < deadline * 10,
        "deadline {deadline:?} fired after {took:?}"
    );
    assert_eq!(cost_of(&source, 5), 1_000_000, "the plugin serves again");
    assert_eq!(source.stats().deadlines, 1);
}

#[test]
fn a_memory_bomb_hits_the_cap_and_the_host_survives() {
    // A long deadline so that only the memory cap can stop the bomb.
    let (runtime, _dir) = runtime_with(RuntimeConfig {
        memory_cap_bytes: 16 << 20,
        call_deadline: Duration::from_secs(5),
        ..RuntimeConfig::default()
    });
    let source = WasmProofSource::load(&runtime, "probe.wasm", PROBE_V1, &[], me()).unwrap();
    match source.query(0, &id(BOMB_DEST)) {
        Err(CallError::Trapped { message, .. }) => {
            assert!(message.contains("memory cap of 16 MiB"), "{message}")
        }
        other => panic!("expected the memory cap to stop it, got {other:?}"),
    }
    assert_eq!(cost_of(&source, 5), 1_000_000);
}

#[test]
fn state_survives_a_swap_through_snapshot_and_restore() {
    let source = probe(PROBE_V1);
    let seven: Vec<Observation> = (0..7).map(Observation::Timer).collect();
    source.observe(0, &seven).unwrap();
    assert_eq!(cost_of(&source, 5), 1_000_007);
    source.swap("probe-v2.wasm", PROBE_V2).expect("swap");
    assert_eq!(source.info().version, "0.2.0");
    assert_eq!(
        cost_of(&source, 5),
        2_000_007,
        "generation 2, seven observations carried over"
    );
    assert_eq!(source.stats().swaps, 1);
}

#[test]
fn a_swap_to_a_broken_file_is_refused_and_the_old_version_keeps_serving() {
    let source = probe(PROBE_V1);
    source.observe(0, &[Observation::Timer(1)]).unwrap();
    let err = source.swap("broken.wasm", b"\0asm garbage").unwrap_err();
    assert!(matches!(err, SwapError::Load(_)), "{err}");
    let err = source.swap("policy.wasm", LOWEST_COST.bytes).unwrap_err();
    assert!(err.to_string().contains("routing-policy"), "{err}");
    let err = source
        .swap("static-routes.wasm", STATIC_ROUTES.bytes)
        .unwrap_err();
    assert!(matches!(err, SwapError::OtherPlugin { .. }), "{err}");
    assert_eq!(cost_of(&source, 5), 1_000_001);
    assert_eq!(source.stats().swaps_refused, 3);
}

#[test]
fn hot_swap_under_four_busy_threads_loses_no_call() {
    let registry = Arc::new(Registry::new(runtime().clone(), me(), BTreeMap::new()));
    assert!(matches!(
        registry.load_bytes("probe.wasm", PROBE_V1).unwrap(),
        LoadOutcome::Added {
            kind: PluginKind::ProofSource,
            ..
        }
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicU64::new(0));
    // Threads that have had an answer from generation 1 / generation 2.
    let saw = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let registry = registry.clone();
            let stop = stop.clone();
            let failures = failures.clone();
            let saw = saw.clone();
            std::thread::spawn(move || {
                let mut generations = Vec::new();
                let mut calls = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let source = registry.proof_source("probe").expect("probe is loaded");
                    let ok = if calls.is_multiple_of(2) {
                        source
                            .query(calls, &id(t + 10))
                            .map(|h| h[0].cost / 1_000_000)
                    } else {
                        source
                            .observe(calls, &[Observation::Timer(calls)])
                            .map(|_| 0)
                    };
                    match ok {
                        Ok(0) => {}
                        Ok(generation) => {
                            if generations.last() != Some(&generation) {
                                generations.push(generation);
                                if let Some(count) = saw.get(generation as usize - 1) {
                                    count.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                        Err(e) => {
                            eprintln!("call failed: {e}");
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    calls += 1;
                }
                (generations, calls)
            })
        })
        .collect();
    let wait_for = |generation: usize| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while saw[generation].load(Ordering::Relaxed) < 4 {
            assert!(
                Instant::now() < deadline,
                "threads never saw generation {}",
                generation + 1
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    wait_for(0);
    let outcome = registry.load_bytes("probe-v2.wasm", PROBE_V2).unwrap();
    assert_eq!(
        outcome,
        LoadOutcome::Swapped {
            kind: PluginKind::ProofSource,
            name: "probe".into(),
            from: "0.1.0".into(),
            to: "0.2.0".into()
        }
    );
    wait_for(1);
    std::thread::sleep(Duration::from_millis(20));
    stop.store(true, Ordering::Relaxed);
    let mut total_calls = 0;
    for thread in threads {
        let (generations, calls) = thread.join().unwrap();
        assert_eq!(generations, vec![1, 2], "each thread sees v1, then only v2");
        total_calls += calls;
    }
    assert_eq!(failures.load(Ordering::Relaxed), 0);
    let source = registry.proof_source("probe").unwrap();
    // Every observation made on v1 before the swap and on v2 after it is counted: none lost.
    let observed = (source.query(0, &id(5)).unwrap()[0].cost % 1_000_000) as u64;
    let observes = source.stats().calls; // includes queries; only check the lower bound below
    assert!(observed > 0 && observed <= total_calls && observes >= total_calls);
    // Same bytes again: nothing to do.
    assert_eq!(
        registry.load_bytes("probe-v2.wasm", PROBE_V2).unwrap(),
        LoadOutcome::Unchanged {
            name: "probe".into()
        }
    );
}

#[test]
fn the_compiled_code_cache_serves_the_second_load() {
    let dir = tempfile::tempdir().unwrap();
    let config = RuntimeConfig {
        cache_dir: Some(dir.path().to_path_buf()),
        ..RuntimeConfig::default()
    };
    let first = Runtime::new(config.clone()).unwrap();
    let inspection = first.inspect("probe.wasm", PROBE_V1).unwrap();
    assert!(!inspection.from_cache);
    let second = Runtime::new(config).unwrap();
    let inspection = second.inspect("probe.wasm", PROBE_V1).unwrap();
    assert!(inspection.from_cache);
    assert_eq!(inspection.info.name, "probe");
    // A corrupt cache entry is dropped and the component recompiled.
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        std::fs::write(entry.unwrap().path(), b"corrupt").unwrap();
    }
    let inspection = second.inspect("probe.wasm", PROBE_V1).unwrap();
    assert!(!inspection.from_cache);
}

#[test]
fn a_plugin_folder_overrides_builtins_by_name() {
    let registry = Registry::new(runtime().clone(), me(), BTreeMap::new());
    for builtin in routefabric_builtin::ALL {
        registry
            .load_bytes(&format!("builtin:{}", builtin.file_name), builtin.bytes)
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("probe.wasm"), PROBE_V1).unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"not a plugin").unwrap();
    std::fs::write(dir.path().join("broken.wasm"), b"garbage").unwrap();
    let outcomes = registry.load_dir(dir.path()).unwrap();
    assert_eq!(outcomes.len(), 2, "only *.wasm files are loaded");
    assert!(outcomes[0].1.is_err(), "broken.wasm is refused");
    assert!(outcomes[1].1.is_ok(), "probe.wasm loads");
    let set = registry.plugins();
    assert_eq!(
        set.proof_sources.keys().collect::<Vec<_>>(),
        vec![
            "ack-trace",
            "dht-directory",
            "fanout-token",
            "probe",
            "static-routes"
        ]
    );
    assert_eq!(
        set.policies.keys().collect::<Vec<_>>(),
        vec!["expected-cost", "lowest-cost", "redundant"]
    );
}

#[test]
fn a_file_written_to_the_watched_folder_is_hot_swapped_in() {
    use routefabric_runtime::Watcher;
    let dir = tempfile::tempdir().unwrap();
    let registry = Arc::new(Registry::new(runtime().clone(), me(), BTreeMap::new()));
    std::fs::write(dir.path().join("probe.wasm"), PROBE_V1).unwrap();
    for (_, outcome) in registry.load_dir(dir.path()).unwrap() {
        outcome.unwrap();
    }
    let source = registry.proof_source("probe").unwrap();
    source
        .observe(0, &[Observation::Timer(1), Observation::Timer(2)])
        .unwrap();
    let (tx, rx) = std::sync::mpsc::sync_channel(16);
    let _watcher = Watcher::start(
        registry.clone(),
        dir.path(),
        Duration::from_millis(20),
        Some(tx),
    )
    .unwrap();
    let next = || {
        rx.recv_timeout(Duration::from_secs(30))
            .expect("a reload report")
    };

    // A broken file is refused; the running version keeps serving.
    std::fs::write(
        dir.path().join("broken.wasm"),
        b"\0asm\x0d\0\x01\0 truncated",
    )
    .unwrap();
    let (path, outcome) = next();
    assert!(path.ends_with("broken.wasm"));
    assert!(outcome.is_err());
    assert_eq!(cost_of(&*source, 5), 1_000_002);

    // A new version replaces the old in place (same handle), with its state.
    std::fs::write(dir.path().join("probe.wasm"), PROBE_V2).unwrap();
    let (_, outcome) = next();
    assert!(
        matches!(outcome, Ok(LoadOutcome::Swapped { ref to, .. }) if to == "0.2.0"),
        "{outcome:?}"
    );
    assert_eq!(cost_of(&*source, 5), 2_000_002);
}
