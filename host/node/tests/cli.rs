//! The `routefabric` binary as a user runs it.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap is a test that hides its failure

use std::process::{Command, Output};

fn routefabric(args: &[&str]) -> Output {
    let cache = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_routefabric"))
        .args(args)
        // A private compiled-code cache: tests never touch the user's.
        .env("XDG_CACHE_HOME", cache.path())
        .output()
        .unwrap()
}

fn json(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn plugin_check_names_the_world_of_every_builtin() {
    for (name, world) in [
        ("static-routes", "proof-source"),
        ("ack-trace", "proof-source"),
        ("fanout-token", "proof-source"),
        ("dht-directory", "proof-source"),
        ("lowest-cost", "routing-policy"),
        ("expected-cost", "routing-policy"),
        ("redundant", "routing-policy"),
    ] {
        let out = routefabric(&["plugin", "check", &format!("builtin:{name}"), "--json"]);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v = json(&out);
        assert_eq!(v["ok"], true);
        assert_eq!(v["world"], world);
        assert_eq!(v["name"], name);
        assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));

        let text = routefabric(&["plugin", "check", &format!("builtin:{name}")]);
        let stdout = String::from_utf8_lossy(&text.stdout);
        assert!(stdout.contains(&format!("world     {world}")), "{stdout}");
    }
}

#[test]
fn plugin_check_refuses_a_bad_file_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"not a component").unwrap();
    let path = garbage.to_str().unwrap();

    let out = routefabric(&["plugin", "check", path]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains(path) && stderr.contains("not a WebAssembly file"),
        "{stderr}"
    );

    let out = routefabric(&["plugin", "check", path, "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let v = json(&out);
    assert_eq!(v["ok"], false);
    assert_eq!(v["file"], path);

    let missing = routefabric(&["plugin", "check", "builtin:nope"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no built-in plugin named `nope`"));
}

#[test]
fn exported_builtins_check_from_files() {
    let dir = tempfile::tempdir().unwrap();
    let out = routefabric(&["plugin", "export", dir.path().to_str().unwrap()]);
    assert!(out.status.success());
    let file = dir.path().join("lowest-cost.wasm");
    let out = routefabric(&["plugin", "check", file.to_str().unwrap(), "--json"]);
    assert!(out.status.success());
    assert_eq!(json(&out)["world"], "routing-policy");
}
