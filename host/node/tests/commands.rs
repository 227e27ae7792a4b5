//! `routefabric demo` and `routefabric node` as a user runs them.

#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};

fn routefabric(args: &[&str], cache: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_routefabric"))
        .args(args)
        .env("XDG_CACHE_HOME", cache)
        .output()
        .unwrap()
}

#[test]
fn a_small_demo_delivers_everything_and_says_so_in_json() {
    let cache = tempfile::tempdir().unwrap();
    let out = routefabric(
        &[
            "demo",
            "--nodes",
            "5",
            "--messages",
            "10",
            "--directed",
            "8",
            "--json",
        ],
        cache.path(),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["nodes"], 5);
    assert_eq!(v["broadcast_sent"], 20);
    assert_eq!(v["broadcast_delivered_ratio"], 1.0);
    assert_eq!(v["directed_sent"], 8);
    assert_eq!(v["directed_acked_ratio"], 1.0);
    assert!(v["fast_path"].as_u64().unwrap() > 0);
    assert!(v["swaps"].as_u64().unwrap() >= 1);
    for key in ["fallback", "latency_p50_ms", "latency_p99_ms"] {
        assert!(v.get(key).is_some(), "missing {key}");
    }
}

#[test]
fn a_bad_node_config_fails_in_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("node.toml");
    let key = dir.path().join("node.key");
    std::fs::write(
        &config,
        format!(
            "listen = [\"/ip4/127.0.0.1/tcp/0\"]\nbootstrap = [\"not an address\"]\nkey_file = {:?}\n",
            key.to_str().unwrap()
        ),
    )
    .unwrap();
    let out = routefabric(&["node", "--config", config.to_str().unwrap()], dir.path());
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not an address"), "{stderr}");
    assert!(
        !key.exists(),
        "a config that fails leaves no key file behind"
    );
    std::fs::write(&config, "listen_on = 3\n").unwrap();
    let out = routefabric(&["node", "--config", config.to_str().unwrap()], dir.path());
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("node.toml"), "{stderr}");
}
