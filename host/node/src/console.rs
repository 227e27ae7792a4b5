//! The line console of `routefabric node`: what a person (or a script) types on standard input,
//! and how deliveries and send results are printed on standard output.
//!
//! ```text
//! publish CHANNEL TEXT…        publish TEXT on CHANNEL (this node's tree of it)
//! subscribe CHANNEL WRITER     join WRITER's tree of CHANNEL (WRITER: /…/p2p/<peer id>)
//! send PEER TEXT…              a directed send with end-to-end ACK (PEER: node id hex,
//!                              peer id or /…/p2p/<peer id>)
//! status                       neighbours, routes and counters
//! help                         this list
//! ```
//!
//! Standard input is read on its own thread into a bounded channel; a line longer than
//! [`MAX_LINE`] is refused whole; the end of input leaves the node running (it stops on Ctrl-C).

use std::io::{BufRead, Read};

use routefabric_core::{NodeId, PeerRef};
use routefabric_net::PeerId;
use tokio::sync::mpsc;

use routefabric_node::actor::Report;
use routefabric_node::engine::{Delivery, SendOutcome};

/// Longest console line, bytes.
pub(crate) const MAX_LINE: usize = 64 << 10;
/// Lines read ahead of the node.
const LINE_QUEUE: usize = 64;

/// What a console line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Line {
    /// Publish `text` on `channel`.
    Publish {
        /// Channel name.
        channel: String,
        /// The payload.
        text: String,
    },
    /// Join `writer`'s tree of `channel`.
    Subscribe {
        /// Channel name.
        channel: String,
        /// The writer.
        writer: PeerRef,
    },
    /// A directed send of `text` to `dest`.
    Send {
        /// The destination.
        dest: NodeId,
        /// The payload.
        text: String,
    },
    /// Print the node's state.
    Status,
    /// Print the commands.
    Help,
}

/// The commands, for `help` and for errors.
pub(crate) const HELP: &str = "commands: publish CHANNEL TEXT… | subscribe CHANNEL WRITER-MULTIADDR | \
send PEER TEXT… (PEER: node id hex, peer id or multiaddr) | status | help";

/// Parse one line; `Ok(None)` for a blank one.
pub(crate) fn parse(line: &str) -> Result<Option<Line>, String> {
    let line = line.trim();
    let (word, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    let rest = rest.trim_start();
    let two = |what: &str| -> Result<(String, String), String> {
        match rest.split_once(char::is_whitespace) {
            Some((a, b)) if !b.trim().is_empty() => Ok((a.to_owned(), b.trim().to_owned())),
            _ => Err(format!("{word} needs {what}")),
        }
    };
    Ok(Some(match word {
        "" => return Ok(None),
        "publish" => {
            let (channel, text) = two("a channel and a text")?;
            Line::Publish { channel, text }
        }
        "subscribe" => {
            let (channel, writer) = two("a channel and the writer's /…/p2p/<peer id> address")?;
            Line::Subscribe {
                channel,
                writer: crate::node_cmd::peer_ref(&writer).map_err(|e| format!("{e:#}"))?,
            }
        }
        "send" => {
            let (peer, text) = two("a peer and a text")?;
            Line::Send {
                dest: node_id(&peer)?,
                text,
            }
        }
        "status" => Line::Status,
        "help" => Line::Help,
        other => return Err(format!("unknown command {other:?}; {HELP}")),
    }))
}

/// A node id from 64 hex digits, a peer id (`12D3KooW…`) or a multiaddr ending in `/p2p/…`.
pub(crate) fn node_id(text: &str) -> Result<NodeId, String> {
    if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        let mut id = [0u8; 32];
        for (byte, pair) in id.iter_mut().zip(text.as_bytes().chunks_exact(2)) {
            let digits = std::str::from_utf8(pair).map_err(|e| e.to_string())?;
            *byte = u8::from_str_radix(digits, 16).map_err(|e| e.to_string())?;
        }
        return Ok(NodeId(id));
    }
    let peer = text.rsplit_once("/p2p/").map_or(text, |(_, p)| p);
    let peer: PeerId = peer
        .parse()
        .map_err(|_| format!("{text:?} is neither a node id (64 hex digits) nor a peer id"))?;
    routefabric_net::node_id_of(&peer).map_err(|e| format!("{text:?}: {e}"))
}

/// Read standard input on a thread of its own; lines (or a refusal of one) arrive on the
/// returned channel, which closes at the end of input.
pub(crate) fn stdin_lines() -> mpsc::Receiver<Result<String, String>> {
    let (tx, rx) = mpsc::channel(LINE_QUEUE);
    let spawned = std::thread::Builder::new()
        .name("routefabric-console".into())
        .spawn(move || {
            let stdin = std::io::stdin();
            let mut input = stdin.lock();
            loop {
                let mut buf = Vec::new();
                let read = (&mut input)
                    .take(MAX_LINE as u64 + 1)
                    .read_until(b'\n', &mut buf);
                let line = match read {
                    Ok(0) | Err(_) => return,
                    Ok(_) if buf.len() > MAX_LINE && buf.last() != Some(&b'\n') => {
                        skip_line(&mut input);
                        Err(format!("line longer than {MAX_LINE} bytes refused"))
                    }
                    Ok(_) => String::from_utf8(buf).map_err(|_| "line is not UTF-8".to_owned()),
                };
                if tx.blocking_send(line).is_err() {
                    return;
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("no console: {e}");
    }
    rx
}

/// Lines waiting for the terminal; more are dropped (and counted) rather than waited for.
const PRINT_QUEUE: usize = 1_024;

/// Standard output on a thread of its own behind a bounded queue: printing never blocks the
/// node, and a closed output (`| head`) ends the printing, not the node.
#[derive(Debug, Clone)]
pub(crate) struct Printer {
    lines: std::sync::mpsc::SyncSender<String>,
    dropped: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Printer {
    /// Start the printing thread.
    pub(crate) fn start() -> Printer {
        let (tx, rx) = std::sync::mpsc::sync_channel::<String>(PRINT_QUEUE);
        let dropped = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let seen = dropped.clone();
        let spawned = std::thread::Builder::new()
            .name("routefabric-printer".into())
            .spawn(move || {
                use std::io::Write;
                let mut reported = 0;
                for line in rx {
                    let mut out = std::io::stdout().lock();
                    let lost = seen.load(std::sync::atomic::Ordering::Relaxed);
                    if lost > reported {
                        let _ = writeln!(
                            out,
                            "({} lines not printed: output too slow)",
                            lost - reported
                        );
                        reported = lost;
                    }
                    if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
                        return; // the reader went away
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("no output thread: {e}");
        }
        Printer { lines: tx, dropped }
    }

    /// Print `line`, or count it as dropped when the terminal lags.
    pub(crate) fn print(&self, line: String) {
        if let Err(std::sync::mpsc::TrySendError::Full(_)) = self.lines.try_send(line) {
            self.dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Whether to read a console from standard input: not when it is the terminal of a shell that
/// runs us in the background (`routefabric node &`), where reading would stop the whole process
/// (SIGTTIN). Anything else — a terminal in the foreground, a pipe, a file, `/dev/null` — is read.
pub(crate) fn foreground() -> bool {
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() {
        return true;
    }
    // /proc/self/stat: "pid (comm) state ppid pgrp session tty_nr tpgid …"; comm may hold spaces
    // and parentheses, so fields are counted after the last ')'.
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return true; // not Linux: assume the foreground
    };
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    match (fields.get(2), fields.get(5)) {
        (Some(pgrp), Some(tpgid)) => pgrp == tpgid,
        _ => true,
    }
}

/// Read and forget the rest of an overlong line, a bounded chunk at a time.
fn skip_line(input: &mut impl BufRead) {
    let mut chunk = Vec::new();
    loop {
        chunk.clear();
        match input.take(MAX_LINE as u64).read_until(b'\n', &mut chunk) {
            Ok(n) if n > 0 && chunk.last() != Some(&b'\n') => continue,
            _ => return,
        }
    }
}

/// One line for a delivery: origin, how it came, and the payload (as text when it is UTF-8).
pub(crate) fn delivery_line(d: &Delivery) -> String {
    let origin = d.origin.to_hex();
    let what = match std::str::from_utf8(&d.payload) {
        Ok(text) if text.chars().count() <= 200 => format!("{text:?}"),
        Ok(_) | Err(_) => format!("<{} bytes>", d.payload.len()),
    };
    let channel = d
        .channel
        .as_deref()
        .map_or(String::new(), |c| format!(" on {c}"));
    format!(
        "delivered from {}{channel} ({:?}, {} hops): {what}",
        &origin[..16],
        d.plane,
        d.hops
    )
}

/// One line for a send's outcome.
pub(crate) fn outcome_line(tag: u64, outcome: &SendOutcome) -> String {
    match outcome {
        SendOutcome::Acked { rtt_ms, hops, fast } => format!(
            "send {tag} acknowledged in {rtt_ms} ms over {hops} hops ({} path)",
            if *fast { "fast" } else { "safe" }
        ),
        SendOutcome::Failed => format!("send {tag} failed: no acknowledgement after every attempt"),
    }
}

/// The `status` lines.
pub(crate) fn status_lines(me: &PeerRef, multiaddr: &str, report: &Report) -> String {
    let s = &report.stats;
    format!(
        "node {} at {multiaddr}\n  neighbours {}, routes {}, frames dropped {}\n  \
         published {}, broadcast delivered {}, directed sent {} (acked {}, failed {}; fast {}, \
         safe {}), directed delivered {}, relayed {}\n  envelopes rejected {}, malformed frames \
         {}, oversized frames {}, bans {}, plugin errors {}",
        me.id.to_hex(),
        report.neighbours,
        report.routes,
        report.frames_dropped,
        s.published,
        s.broadcast_delivered,
        s.directed_sent,
        s.directed_acked,
        s.directed_failed,
        s.fast_path,
        s.fallback,
        s.directed_delivered,
        s.relayed,
        s.rejects.total(),
        s.malformed_frames,
        s.oversized_frames,
        s.bans,
        s.plugin_errors,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_into_commands_or_one_clear_error() {
        assert_eq!(parse("   "), Ok(None));
        assert_eq!(
            parse("publish news hello  world"),
            Ok(Some(Line::Publish {
                channel: "news".into(),
                text: "hello  world".into()
            }))
        );
        assert_eq!(parse("status"), Ok(Some(Line::Status)));
        assert!(parse("publish news").unwrap_err().contains("needs"));
        assert!(
            parse("fly away")
                .unwrap_err()
                .starts_with("unknown command")
        );
        let id = NodeId([0xab; 32]);
        assert_eq!(
            parse(&format!("send {} hi", id.to_hex())),
            Ok(Some(Line::Send {
                dest: id,
                text: "hi".into()
            }))
        );
        assert!(parse("send nobody hi").unwrap_err().contains("neither"));
        assert!(parse("subscribe news /ip4/1.2.3.4/tcp/1").is_err());
    }

    #[test]
    fn peer_ids_and_multiaddrs_name_the_same_node() {
        let keys = routefabric_core::envelope::Keypair::from_secret([5; 32]);
        let peer = routefabric_net::peer_id_of(&keys.id()).unwrap();
        assert_eq!(node_id(&peer.to_string()), Ok(keys.id()));
        assert_eq!(
            node_id(&format!("/ip4/127.0.0.1/tcp/9/p2p/{peer}")),
            Ok(keys.id())
        );
        assert_eq!(node_id(&keys.id().to_hex()), Ok(keys.id()));
    }
}
