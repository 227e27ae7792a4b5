//! `routefabric node --config node.toml`: one node, for real.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use routefabric_core::PeerRef;
use routefabric_core::envelope::Keypair;
use routefabric_net::{Multiaddr, PeerId};
use routefabric_node::actor::{self, AppEvent, NodeSpec};
use routefabric_node::engine::{Command, EngineConfig};
use routefabric_node::plugins::{RegistryPlugins, builtin_registry};

use crate::console;
use routefabric_runtime::{Runtime, RuntimeConfig, Watcher};
use serde::Deserialize;
use tokio::sync::mpsc;

/// Options of `routefabric node`.
#[derive(Debug, Args)]
pub(crate) struct NodeArgs {
    /// The node's configuration (TOML); every field has a default, so it may be omitted.
    #[arg(long)]
    config: Option<PathBuf>,
}

/// A node's configuration file. Every field has a default (written in its doc).
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct NodeConfig {
    /// Listen addresses. Default `["/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"]`.
    /// Which TCP one is advertised: see `advertise`.
    listen: Vec<String>,
    /// The TCP address other nodes are told to dial, `/ip4|ip6/…/tcp/…`. Default: the first
    /// TCP listen address that comes up, preferring one that is neither loopback nor unspecified.
    /// Set it behind NAT or port forwarding.
    advertise: Option<String>,
    /// How to dial peers: `"tcp"` or `"quic"` (at the UDP port with the number of the peer's
    /// TCP port, falling back to TCP). Default `"tcp"`.
    transport: actor::Transport,
    /// Peers to join through: multiaddrs ending in `/p2p/<peer id>` (as printed by a running
    /// node). Default none: this node founds a network.
    bootstrap: Vec<String>,
    /// The node's secret key; created (mode 0600) when absent. Default `routefabric.key`.
    key_file: PathBuf,
    /// A folder of `.wasm` plugins loaded over the built-in ones and watched for hot swaps.
    /// Default none.
    plugin_dir: Option<PathBuf>,
    /// The routing policy to start with. Default `lowest-cost`.
    policy: String,
    /// Channels to subscribe to, each with its writer's multiaddr (`/…/p2p/<peer id>`).
    subscribe: Vec<Subscription>,
    /// Engine settings (overlay, route store, envelopes, directed delivery).
    engine: EngineConfig,
    /// Underlay settings (frame size, queues, ping, bans).
    net: routefabric_net::Config,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Subscription {
    channel: String,
    writer: String,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            listen: vec![
                "/ip4/0.0.0.0/tcp/4001".into(),
                "/ip4/0.0.0.0/udp/4001/quic-v1".into(),
            ],
            advertise: None,
            transport: actor::Transport::Tcp,
            bootstrap: Vec::new(),
            key_file: PathBuf::from("routefabric.key"),
            plugin_dir: None,
            policy: "lowest-cost".into(),
            subscribe: Vec::new(),
            engine: EngineConfig::default(),
            net: routefabric_net::Config::default(),
        }
    }
}

/// A peer's id and address from `/ip4/…/tcp/…/p2p/<peer id>`.
pub(crate) fn peer_ref(addr: &str) -> anyhow::Result<PeerRef> {
    let parsed: Multiaddr = addr
        .parse()
        .with_context(|| format!("{addr:?} is not a multiaddr"))?;
    let socket = actor::socket_addr(&parsed)
        .with_context(|| format!("{addr:?} has no /ip4|ip6/…/tcp/… part"))?;
    let peer = addr
        .rsplit_once("/p2p/")
        .map(|(_, p)| p)
        .with_context(|| format!("{addr:?} does not end in /p2p/<peer id>"))?;
    let peer: PeerId = peer
        .parse()
        .with_context(|| format!("{peer:?} is not a peer id"))?;
    let id = routefabric_net::node_id_of(&peer)
        .with_context(|| format!("{peer} is not an ed25519 peer id"))?;
    Ok(PeerRef { id, addr: socket })
}

fn load_key(path: &Path) -> anyhow::Result<Keypair> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let secret: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
                anyhow::anyhow!(
                    "{} holds {} bytes, not a 32-byte secret key: move it away to create a new one",
                    path.display(),
                    bytes.len()
                )
            })?;
            Ok(Keypair::from_secret(secret))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut secret = [0u8; 32];
            getrandom::fill(&mut secret)
                .map_err(|e| anyhow::anyhow!("no randomness for a new key: {e}"))?;
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)?;
            }
            write_secret(path, &secret)
                .with_context(|| format!("cannot write the new key to {}", path.display()))?;
            eprintln!("created a new key in {}", path.display());
            Ok(Keypair::from_secret(secret))
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

#[cfg(unix)]
fn write_secret(path: &Path, secret: &[u8; 32]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(secret)
}

#[cfg(not(unix))]
fn write_secret(path: &Path, secret: &[u8; 32]) -> std::io::Result<()> {
    std::fs::write(path, secret)
}

pub(crate) fn run(args: NodeArgs) -> anyhow::Result<ExitCode> {
    let config: NodeConfig = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            toml::from_str(&text)
                .with_context(|| format!("{} is not a valid node config", path.display()))?
        }
        None => NodeConfig::default(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(node(config))
}

async fn node(config: NodeConfig) -> anyhow::Result<ExitCode> {
    let listen: Vec<Multiaddr> = config
        .listen
        .iter()
        .map(|a| {
            a.parse()
                .with_context(|| format!("listen address {a:?} is not a multiaddr"))
        })
        .collect::<anyhow::Result<_>>()?;
    let advertise = config
        .advertise
        .as_deref()
        .map(|a| {
            let parsed: Multiaddr = a
                .parse()
                .with_context(|| format!("advertise address {a:?} is not a multiaddr"))?;
            actor::socket_addr(&parsed)
                .with_context(|| format!("advertise address {a:?} is not /ip4|ip6/…/tcp/…"))
        })
        .transpose()?;
    let bootstrap: Vec<PeerRef> = config
        .bootstrap
        .iter()
        .map(|a| peer_ref(a))
        .collect::<anyhow::Result<_>>()?;
    let subscriptions: Vec<(String, PeerRef)> = config
        .subscribe
        .iter()
        .map(|s| Ok((s.channel.clone(), peer_ref(&s.writer)?)))
        .collect::<anyhow::Result<_>>()?;
    // Only once the whole config made sense: touch the key file.
    let keys = load_key(&config.key_file)?;
    let runtime =
        Runtime::new(RuntimeConfig::default()).context("cannot start the plugin runtime")?;
    let registry =
        builtin_registry(&runtime, keys.id()).context("the built-in plugins did not load")?;
    let _watcher = match &config.plugin_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            for (path, outcome) in registry
                .load_dir(dir)
                .with_context(|| format!("cannot read {}", dir.display()))?
            {
                if let Err(e) = outcome {
                    eprintln!("{}: {e}", path.display());
                }
            }
            Some(Watcher::start(
                registry.clone(),
                dir,
                Duration::from_millis(50),
                None,
            )?)
        }
        None => None,
    };
    registry.select_policy(&config.policy)?;
    let (tx, mut events) = mpsc::channel(4_096);
    let spec = NodeSpec {
        keys,
        listen,
        engine: config.engine,
        net: config.net,
        plugins: Arc::new(RegistryPlugins(registry)),
        seed: actor::wall_ms(),
        advertise,
        transport: config.transport,
    };
    let node = actor::spawn(spec, tx).await?;
    println!(
        "node {} listening at {}",
        node.me().id.to_hex(),
        node.multiaddr()
    );
    node.command(Command::Start {
        contact: bootstrap.first().copied(),
    })
    .await?;
    for (channel, writer) in subscriptions {
        node.command(Command::Subscribe { channel, writer }).await?;
    }
    // Deliveries and outcomes are printed by a task of their own, through a bounded printer
    // that drops lines rather than wait: the node never waits on the terminal, and nothing the
    // console awaits can wait on the node's event queue.
    let printer = console::Printer::start();
    let drain = {
        let printer = printer.clone();
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                match event {
                    AppEvent::Deliver(d) => {
                        tracing::info!(
                            origin = %d.origin, channel = ?d.channel, hops = d.hops,
                            plane = ?d.plane, bytes = d.payload.len(), "delivered"
                        );
                        printer.print(console::delivery_line(&d));
                    }
                    AppEvent::SendResult { tag, outcome } => {
                        tracing::info!(tag, ?outcome, "send finished");
                        printer.print(console::outcome_line(tag, &outcome));
                    }
                }
            }
        })
    };
    let mut lines = if console::foreground() {
        printer.print("type `help` for the console's commands".to_owned());
        Some(console::stdin_lines())
    } else {
        printer.print("started in the background: no console (Ctrl-C or a signal stops it)".into());
        None
    };
    let mut next_tag = 0u64;
    loop {
        let line = async {
            match lines.as_mut() {
                Some(lines) => lines.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            line = line => {
                let Some(line) = line else {
                    // End of input: keep running until Ctrl-C.
                    lines = None;
                    continue;
                };
                match line.and_then(|l| console::parse(&l)) {
                    Ok(None) => {}
                    Ok(Some(console::Line::Publish { channel, text })) => {
                        node.command(Command::Publish { channel, payload: text.into_bytes() }).await?;
                    }
                    Ok(Some(console::Line::Subscribe { channel, writer })) => {
                        node.command(Command::Subscribe { channel, writer }).await?;
                    }
                    Ok(Some(console::Line::Send { dest, text })) => {
                        next_tag += 1;
                        node.command(Command::Send { dest, payload: text.into_bytes(), tag: next_tag }).await?;
                        printer.print(format!("send {next_tag} queued"));
                    }
                    Ok(Some(console::Line::Status)) => {
                        let report = node.report().await?;
                        let at = node.multiaddr().to_string();
                        printer.print(console::status_lines(&node.me(), &at, &report));
                    }
                    Ok(Some(console::Line::Help)) => printer.print(console::HELP.to_owned()),
                    Err(e) => printer.print(format!("error: {e}")),
                }
            },
        }
    }
    drain.abort();
    let report = node.report().await?;
    eprintln!("stopping: {:?}", report.stats);
    node.shutdown().await;
    Ok(ExitCode::SUCCESS)
}
