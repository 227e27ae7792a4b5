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

/// A `routefabric node` process with its console on a pipe and its output read line by line.
struct NodeProcess {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl NodeProcess {
    fn start(dir: &std::path::Path, name: &str, config: &str) -> NodeProcess {
        use std::io::BufRead;
        let path = dir.join(format!("{name}.toml"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&path, format!("key_file = {key:?}\n{config}")).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_routefabric"))
            .args(["node", "--config", path.to_str().unwrap()])
            .env("XDG_CACHE_HOME", dir)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        NodeProcess {
            child,
            stdin,
            lines,
            seen: Vec::new(),
        }
    }

    fn type_line(&mut self, line: &str) {
        use std::io::Write;
        writeln!(self.stdin, "{line}").unwrap();
    }

    /// The first line (from now on) containing `needle`, waiting up to `secs` seconds.
    fn wait_for(&mut self, needle: &str, secs: u64) -> Option<String> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            let Ok(line) = self.lines.recv_timeout(left) else {
                break;
            };
            self.seen.push(line.clone());
            if line.contains(needle) {
                return Some(line);
            }
        }
        None
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn two_node_processes_publish_subscribe_and_send_through_the_console() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = NodeProcess::start(dir.path(), "a", "listen = [\"/ip4/127.0.0.1/tcp/0\"]\n");
    let listening = a
        .wait_for("listening at ", 30)
        .expect("a prints its address");
    let addr = listening.rsplit(' ').next().unwrap().to_owned();
    let mut b = NodeProcess::start(
        dir.path(),
        "b",
        &format!(
            "listen = [\"/ip4/127.0.0.1/tcp/0\"]\nbootstrap = [{addr:?}]\n\
             [[subscribe]]\nchannel = \"news\"\nwriter = {addr:?}\n"
        ),
    );
    b.wait_for("listening at ", 30).expect("b starts");
    // Publish until b's subscription has attached (the tree forms within a second or so).
    let mut delivered = None;
    for k in 0..40 {
        a.type_line(&format!("publish news hello {k}"));
        delivered = b.wait_for("on news", 1);
        if delivered.is_some() {
            break;
        }
    }
    let delivered = delivered.unwrap_or_else(|| panic!("b got nothing: {:?}", b.seen));
    assert!(delivered.contains("hello"), "{delivered}");
    assert!(delivered.contains("Tree"), "{delivered}");

    let peer = addr.rsplit_once("/p2p/").unwrap().1.to_owned();
    b.type_line(&format!("send {peer} ping from b"));
    let outcome = b
        .wait_for("send 1 ", 15)
        .and_then(|_| b.wait_for("send 1 acknowledged", 15))
        .unwrap_or_else(|| panic!("no ACK: {:?}", b.seen));
    assert!(outcome.contains("hops"), "{outcome}");
    let got = a
        .wait_for("ping from b", 5)
        .unwrap_or_else(|| panic!("a got no ping: {:?}", a.seen));
    assert!(got.starts_with("delivered from "), "{got}");

    b.type_line("status");
    let status = b.wait_for("neighbours", 5).expect("status prints");
    assert!(status.contains("neighbours 1"), "{status}");
    b.type_line("take off");
    let error = b.wait_for("error:", 5).expect("a bad line is answered");
    assert!(error.contains("unknown command"), "{error}");
}
