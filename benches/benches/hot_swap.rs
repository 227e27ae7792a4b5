//! Time from a plugin file landing in a watched folder to the new version answering queries.
//!
//! Each round writes the other generation of the `probe` test plugin into the folder (to a temporary
//! name, then renamed, as deployment tools do) and polls `query` until the new generation answers.
//! Two regimes are measured in one run:
//!
//! * `cold`: the compiled-code cache is disabled, so every new file is compiled — the case of a
//!   plugin version never seen before;
//! * `warm`: the cache is on and both generations are in it — the case of a rollback or of a
//!   second node on the same machine.
//!
//! Prints the median, p90 and max over the rounds (default 25; set `ROUTEFABRIC_SWAPS`), and the
//! number of failed calls (must be 0).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use routefabric_benches::percentile;
use routefabric_core::NodeId;
use routefabric_core::plugin::HostedProofSource;
use routefabric_runtime::{Registry, Runtime, RuntimeConfig, Watcher};
use routefabric_tests::{PROBE_V1, PROBE_V2};

/// The watcher's debounce, as the node uses it (a renamed-in file skips it).
const DEBOUNCE: Duration = Duration::from_millis(20);

fn measure(label: &str, cache: Option<std::path::PathBuf>, rounds: usize) {
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: cache,
        ..RuntimeConfig::default()
    })
    .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let me = NodeId::from_index(1);
    let registry = Arc::new(Registry::new(runtime, me, BTreeMap::new()));
    std::fs::write(dir.path().join("probe.wasm"), PROBE_V1).expect("write");
    for (path, outcome) in registry.load_dir(dir.path()).expect("read folder") {
        outcome.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    let _watcher = Watcher::start(registry.clone(), dir.path(), DEBOUNCE, None).expect("watcher");
    let source = registry.proof_source("probe").expect("probe loaded");
    let dest = NodeId::from_index(5);
    let generation = |s: &dyn HostedProofSource| s.query(0, &dest).map(|h| h[0].cost / 1_000_000);

    // Warm-up: both generations once (fills the cache in the warm regime).
    let mut times_ms = Vec::with_capacity(rounds);
    let mut failed = 0u64;
    for round in 0..rounds + 2 {
        let (bytes, expected) = if round % 2 == 0 {
            (PROBE_V2, 2)
        } else {
            (PROBE_V1, 1)
        };
        let tmp = dir.path().join(".probe.wasm.tmp");
        std::fs::write(&tmp, bytes).expect("write");
        let landed = Instant::now();
        std::fs::rename(&tmp, dir.path().join("probe.wasm")).expect("rename");
        loop {
            match generation(&*source) {
                Ok(g) if g == expected => break,
                Ok(_) => {}
                Err(_) => failed += 1,
            }
            assert!(
                landed.elapsed() < Duration::from_secs(30),
                "swap never happened"
            );
            std::thread::sleep(Duration::from_micros(200));
        }
        if round >= 2 {
            times_ms.push(landed.elapsed().as_secs_f64() * 1e3);
        }
    }
    times_ms.sort_by(f64::total_cmp);
    println!(
        "{label:<5} {rounds:>3} swaps: median {:>6.1} ms   p90 {:>6.1} ms   max {:>6.1} ms   failed calls {failed}",
        percentile(&times_ms, 50.0),
        percentile(&times_ms, 90.0),
        percentile(&times_ms, 100.0),
    );
}

fn main() {
    // `cargo test --benches` runs bench targets with `--bench` absent; keep that quick.
    let is_bench = std::env::args().any(|a| a == "--bench");
    let rounds = std::env::var("ROUTEFABRIC_SWAPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if is_bench { 25 } else { 2 });
    println!(
        "file lands in the plugin folder → new version answers (probe plugin, {} KiB)",
        PROBE_V1.len() / 1024
    );
    measure("cold", None, rounds);
    let cache = tempfile::tempdir().expect("temp dir");
    measure("warm", Some(cache.path().to_path_buf()), rounds);
}
