//! The plugin contract, host side: the Rust shape of the WIT package `routefabric:plugin@0.1.0`
//! (see `wit/` at the repository root) and the traits plugins implement.
//!
//! A plugin's logic is written once against [`ProofSource`] or [`RoutingPolicy`]. It then runs
//! either natively (wrapped in [`Native`]) or compiled to a WebAssembly component through the
//! plugin SDK and loaded by the runtime; the host holds both through [`HostedProofSource`] /
//! [`HostedRoutingPolicy`], so every caller is indifferent to where the logic runs.

use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::NodeId;

/// Milliseconds on the caller's clock. The core never reads a clock itself.
pub type Millis = u64;

/// One candidate next hop toward a destination. See `next-hop` in `wit/types.wit`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct NextHop {
    /// The neighbour to hand the message to.
    pub via: NodeId,
    /// Expected cost through `via`; lower is better (first-party unit: microseconds, or 1,000 per
    /// hop where no latency is known).
    pub cost: u32,
    /// Validity after the offer, in milliseconds; > 0.
    pub ttl_ms: u32,
    /// Confidence in [0, 1].
    pub confidence: f32,
}

/// The trace an end-to-end ACK carried back: `path[0]` sent the message, the last entry acked it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckTrace {
    /// Every node the message crossed, in order.
    pub path: Vec<NodeId>,
    /// Round trip measured by the observer when it is the original sender.
    pub rtt_ms: Option<u32>,
}

/// A fanout-tree route token: the path from the tree's root to one member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteToken {
    /// The tree of the token: the host's identifier of one (channel, root) pair, opaque to
    /// plugins.
    pub tree: u64,
    /// `path[0]` is the root, the last entry is the member.
    pub path: Vec<NodeId>,
    /// Issue time on the issuer's clock.
    pub issued_at_ms: Millis,
}

/// What the host learned about the direct link to a neighbour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkSample {
    /// The neighbour.
    pub peer: NodeId,
    /// Whether the link is up.
    pub up: bool,
    /// Measured round trip in microseconds.
    pub rtt_us: Option<u32>,
    /// The neighbour's session number; changes when it restarts.
    pub session: u64,
}

/// Bytes from the same plugin on another node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerMessage {
    /// The node whose instance sent them.
    pub sender: NodeId,
    /// Plugin-defined payload.
    pub data: Vec<u8>,
}

/// Something the host saw that may carry routing knowledge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Observation {
    /// An acknowledgement trace of a directed message.
    Ack(AckTrace),
    /// A fanout route token.
    Token(RouteToken),
    /// A link came up, went down or was measured.
    Link(LinkSample),
    /// A message from this plugin on another node.
    Message(PeerMessage),
    /// A timer the plugin set fired; the value is its token.
    Timer(u64),
    /// The host needed a route toward this destination and the route store had none: a
    /// directory-style source can look it up and offer what it finds.
    Miss(NodeId),
    /// An observation kind newer than the plugin's contract; plugins should ignore unknown kinds.
    Custom {
        /// Namespaced kind.
        kind: String,
        /// Kind-specific payload.
        data: Vec<u8>,
    },
}

/// What a proof source asks the host to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Action {
    /// Upsert next hops toward `dest` into the route store.
    Offer {
        /// The destination.
        dest: NodeId,
        /// The candidates.
        hops: Vec<NextHop>,
    },
    /// Remove every route this source offered toward a destination.
    Withdraw(NodeId),
    /// Send bytes to this plugin on a neighbour.
    Send {
        /// The neighbour.
        to: NodeId,
        /// The payload.
        data: Vec<u8>,
    },
    /// Deliver [`Observation::Timer`]`(token)` after `after_ms`.
    SetTimer {
        /// Returned when the timer fires.
        token: u64,
        /// Delay in milliseconds.
        after_ms: u32,
    },
}

impl Action {
    /// What brings the route store in line with a source's current `hops` toward `dest`: an
    /// offer, or a withdrawal when none are left.
    pub fn offer_or_withdraw(dest: NodeId, hops: Vec<NextHop>) -> Action {
        if hops.is_empty() {
            Action::Withdraw(dest)
        } else {
            Action::Offer { dest, hops }
        }
    }
}

/// `confidence` after `age_ms`, halving every `half_life_ms` (treated as at least 1 ms).
pub fn decayed_confidence(confidence: f32, age_ms: u64, half_life_ms: u32) -> f32 {
    let halvings = age_ms as f64 / f64::from(half_life_ms.max(1));
    (f64::from(confidence) * 0.5f64.powf(halvings)) as f32
}

/// A candidate as a routing policy sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// The stored next hop.
    pub hop: NextHop,
    /// Name of the proof source that offered it.
    pub source: String,
    /// Latest measured round trip on the link to `hop.via`, in microseconds.
    pub link_rtt_us: Option<u32>,
}

/// Next hops in order of preference; the first `copies` get a copy at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutePlan {
    /// Next hops, best first.
    pub hops: Vec<NodeId>,
    /// How many of the first hops are used at once (1 for an ordinary message).
    pub copies: u8,
}

/// A routing policy's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Decision {
    /// The fast path: send along these hops.
    Send(RoutePlan),
    /// Use the overlay (tree root proxy or bounded flood).
    Fallback,
    /// Do not send.
    Drop,
}

/// What a plugin says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginInfo {
    /// Stable name; a newer file with the same name replaces the running version.
    pub name: String,
    /// The plugin's own semver version.
    pub version: String,
    /// One line on what it does.
    pub description: String,
}

impl PluginInfo {
    /// Convenience constructor.
    pub fn new(name: &str, version: &str, description: &str) -> Self {
        PluginInfo {
            name: name.to_owned(),
            version: version.to_owned(),
            description: description.to_owned(),
        }
    }
}

/// A source of route proofs, as its author writes it. Sans-IO: every call gets the time, none
/// blocks. The same implementation runs natively ([`Native`]) or as a WASM component (export it
/// with the plugin SDK's `export_proof_source!`).
pub trait ProofSource: Sized {
    /// Name, version and purpose.
    fn info() -> PluginInfo;
    /// Build the source from its configuration (CBOR of the plugin's config section; empty if
    /// none) on the node `self_id`. An `Err` refuses the plugin with that reason.
    fn init(config: &[u8], self_id: NodeId) -> Result<Self, String>;
    /// Learn from a batch of observations seen at `now`.
    fn observe(&mut self, now: Millis, observations: &[Observation]) -> Vec<Action>;
    /// Current next hops toward `dest`, best first.
    fn query(&mut self, now: Millis, dest: &NodeId) -> Vec<NextHop>;
    /// Everything learned, for [`ProofSource::restore`] in a newer version.
    fn snapshot(&self) -> Vec<u8>;
    /// Take over state from a snapshot. On `Err` the host keeps the older version serving.
    fn restore(&mut self, state: &[u8]) -> Result<(), String>;
}

/// A routing policy, as its author writes it.
pub trait RoutingPolicy: Sized {
    /// Name, version and purpose.
    fn info() -> PluginInfo;
    /// Build the policy from its configuration; same contract as [`ProofSource::init`].
    fn init(config: &[u8], self_id: NodeId) -> Result<Self, String>;
    /// Decide how to send to `dest` given every live candidate (unsorted).
    fn choose(&mut self, now: Millis, dest: &NodeId, candidates: &[Candidate]) -> Decision;
}

/// Why a call into a plugin produced no answer. The node counts these and carries on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The plugin trapped (a panic, an out-of-bounds access, its memory cap); it will be
    /// re-instantiated.
    #[error("plugin `{plugin}` trapped: {message}")]
    Trapped {
        /// Plugin name.
        plugin: String,
        /// What wasmtime reported.
        message: String,
    },
    /// The call ran past its deadline and was interrupted; the plugin will be re-instantiated.
    #[error("plugin `{plugin}` ran past its {deadline_ms} ms deadline and was stopped")]
    Deadline {
        /// Plugin name.
        plugin: String,
        /// The configured per-call deadline.
        deadline_ms: u64,
    },
    /// The plugin faulted recently and is waiting out its restart backoff.
    #[error("plugin `{plugin}` is restarting after a fault; retry in {retry_in_ms} ms")]
    Restarting {
        /// Plugin name.
        plugin: String,
        /// Time until the next restart attempt.
        retry_in_ms: u64,
    },
    /// Re-instantiating the plugin after a fault failed.
    #[error("plugin `{plugin}` could not be restarted: {message}")]
    RestartFailed {
        /// Plugin name.
        plugin: String,
        /// Why.
        message: String,
    },
}

/// A proof source as the host holds it: native or WASM, callable from any thread, and allowed to
/// fail (a WASM plugin can trap or run out of time).
pub trait HostedProofSource: Send + Sync {
    /// Name, version and purpose of the version currently serving.
    fn info(&self) -> PluginInfo;
    /// See [`ProofSource::observe`].
    fn observe(&self, now: Millis, observations: &[Observation]) -> Result<Vec<Action>, CallError>;
    /// See [`ProofSource::query`].
    fn query(&self, now: Millis, dest: &NodeId) -> Result<Vec<NextHop>, CallError>;
}

/// A routing policy as the host holds it.
pub trait HostedRoutingPolicy: Send + Sync {
    /// Name, version and purpose of the version currently serving.
    fn info(&self) -> PluginInfo;
    /// See [`RoutingPolicy::choose`].
    fn choose(
        &self,
        now: Millis,
        dest: &NodeId,
        candidates: &[Candidate],
    ) -> Result<Decision, CallError>;
}

/// Runs a plugin's logic natively, behind the same host traits as a WASM component.
#[derive(Debug)]
pub struct Native<T> {
    inner: Mutex<T>,
}

impl<T> Native<T> {
    /// Wrap an initialised plugin.
    pub fn new(plugin: T) -> Self {
        Native {
            inner: Mutex::new(plugin),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        // A panic inside native plugin logic poisons the lock; the state is still the plugin's
        // best knowledge, so keep serving it rather than failing every later call.
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }

    /// Take the plugin back out.
    pub fn into_inner(self) -> T {
        self.inner.into_inner().unwrap_or_else(|e| e.into_inner())
    }
}

impl<T: ProofSource + Send> HostedProofSource for Native<T> {
    fn info(&self) -> PluginInfo {
        T::info()
    }

    fn observe(&self, now: Millis, observations: &[Observation]) -> Result<Vec<Action>, CallError> {
        Ok(self.with(|p| p.observe(now, observations)))
    }

    fn query(&self, now: Millis, dest: &NodeId) -> Result<Vec<NextHop>, CallError> {
        Ok(self.with(|p| p.query(now, dest)))
    }
}

impl<T: RoutingPolicy + Send> HostedRoutingPolicy for Native<T> {
    fn info(&self) -> PluginInfo {
        T::info()
    }

    fn choose(
        &self,
        now: Millis,
        dest: &NodeId,
        candidates: &[Candidate],
    ) -> Result<Decision, CallError> {
        Ok(self.with(|p| p.choose(now, dest, candidates)))
    }
}
