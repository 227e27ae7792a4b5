//! The fanout forest: one dissemination tree per (channel, root), built on the membership.
//!
//! Each member has one parent and a bounded number of children (the configured maximum, further
//! capped by an upload budget). A subscriber joins by asking the root (or any member); a full
//! member redirects it, round-robin, to one of its children, so the tree fills level by level and
//! its depth stays near log_f(n) (Plumtree's eager tree, Leitão et al. 2007, with the tree built
//! explicitly instead of pruned from a flood).
//!
//! * Data is pushed down; the root numbers every message of its tree (`tree_seq`) so that members
//!   find gaps and pull them from their parent (falling back to the root after a few tries).
//!   A member that is not the root publishes through the root; the [`Publication`] keeps its
//!   `origin`, `timestamp_ms` and `seq` untouched (signatures are checked end to end, never
//!   re-made by relays).
//! * On parent loss a member rejoins through its grandparent (taken from its route token), then
//!   through the root, and keeps its children: only the orphan moves, not its subtree.
//! * Every member knows its route token (the path root → member) and reports it as an
//!   observation for the route store. Unicast inside a tree goes up to the first ancestor that is
//!   on the destination's token and then down that token; the destination answers with an
//!   end-to-end ACK routed the same way.
//! * Every cache and queue is bounded by a [`Config`] field.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::{Outbox, PeerId, WIRE_ID_LEN};

/// Identifier of a channel (e.g. a hash of its name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ChannelId(pub u64);

/// One tree of the forest: a channel and the member at its root (a writer or a shard root).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TreeId<P> {
    /// The channel.
    pub channel: ChannelId,
    /// The root member.
    pub root: P,
}

/// A published message as its origin made it. Relays and roots never change it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Publication<P> {
    /// The author.
    pub origin: P,
    /// Author's clock when it published, in milliseconds.
    pub timestamp_ms: u64,
    /// Author's own sequence number.
    pub seq: u64,
    /// Opaque application bytes.
    pub payload: Bytes,
}

/// Fanout configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Upper bound on children per member. Default 16: depth ⌈log16 10⁶⌉ = 5 at a million
    /// readers, and 16 × 30 KiB/s = 480 KiB/s of upload, well inside Peerbit's 5 MB/s default
    /// budget (Peerbit's own maximum is 24).
    pub max_children: usize,
    /// Upload budget per member in bytes per second. Default 5,000,000 (Peerbit's default).
    pub upload_budget_bytes_per_s: u64,
    /// Expected stream rate of one tree in bytes per second; children are capped at
    /// `upload_budget / stream_rate`. Default 30,720 (30 msg/s of 1 KiB).
    pub stream_bytes_per_s: u64,
    /// Time to wait for an answer to a join request before trying the root again; doubled after
    /// each unanswered attempt (up to 2×, [`MAX_JOIN_BACKOFF_SHIFT`]). Default 500 ms: a join forwarded down five levels of
    /// 50 ms links is answered within 350 ms. Networks with short links and loss want less (the
    /// `churn-loss` scenario uses 200 ms).
    pub join_timeout_ms: u64,
    /// Times a join may be forwarded before it is refused (the joiner starts over at the root).
    /// Default 32.
    pub max_redirects: u8,
    /// Period of pull-repair requests while sequence numbers are missing. Default 200 ms
    /// (Peerbit's repair period).
    pub repair_interval_ms: u64,
    /// Repair requests sent to the parent before asking the root directly. Default 3.
    pub repair_attempts_before_root: u8,
    /// Sequence numbers asked for in one repair request. Default 64.
    pub repair_batch: usize,
    /// Messages kept per tree to answer repair requests. Default 256.
    pub cache_len: usize,
    /// Period of the `Have` digest a member sends its children while it pushes data. Default 200 ms.
    pub digest_interval_ms: u64,
    /// Delay before a member that heard of newer messages from a membership neighbour (not from
    /// its parent) asks for them. Default 1,000 ms: a deep branch legitimately lags a shallow
    /// neighbour by a few link latencies.
    pub neighbor_digest_delay_ms: u64,
    /// Digests sent after the stream went idle (they catch a lost last message). Default 2.
    pub idle_digests: u8,
    /// A fresh subscriber also receives messages published up to this long before it subscribed.
    /// Default 0 (only what is published from the subscription on).
    pub catch_up_ms: u64,
    /// Time a publication sent to the root waits for its acknowledgement before it is re-sent.
    /// Default 500 ms.
    pub publish_timeout_ms: u64,
    /// Publications awaiting the root's acknowledgement per member. Default 256.
    pub max_pending_publishes: usize,
    /// (origin, seq) pairs the root remembers to drop re-sent publications. Default 1,024.
    pub publish_dedup_len: usize,
    /// Time a unicast waits for its end-to-end ACK. Default 2,000 ms.
    pub unicast_timeout_ms: u64,
    /// Unicasts awaiting their ACK per member. Default 256.
    pub max_pending_unicasts: usize,
    /// Longest route token accepted. Default 32 (Peerbit's cap).
    pub max_token_len: usize,
    /// Other members a node remembers per tree (from tokens seen in unicasts). Default 64.
    pub subscriber_view_len: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_children: 16,
            upload_budget_bytes_per_s: 5_000_000,
            stream_bytes_per_s: 30 * 1024,
            join_timeout_ms: 500,
            max_redirects: 32,
            repair_interval_ms: 200,
            repair_attempts_before_root: 3,
            repair_batch: 64,
            cache_len: 256,
            digest_interval_ms: 200,
            neighbor_digest_delay_ms: 1_000,
            idle_digests: 2,
            catch_up_ms: 0,
            publish_timeout_ms: 500,
            max_pending_publishes: 256,
            publish_dedup_len: 1024,
            unicast_timeout_ms: 2_000,
            max_pending_unicasts: 256,
            max_token_len: 32,
            subscriber_view_len: 64,
        }
    }
}

impl Config {
    /// Children a member accepts: `max_children`, capped by the upload budget.
    pub fn child_capacity(&self) -> usize {
        let by_budget = self.upload_budget_bytes_per_s / self.stream_bytes_per_s.max(1);
        self.max_children
            .min(usize::try_from(by_budget).unwrap_or(usize::MAX))
            .max(1)
    }
}

/// A message routed along a tree to one member (or its ACK).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unicast<P> {
    /// Tree used for routing.
    pub tree: TreeId<P>,
    /// Identifier chosen by the source.
    pub id: u64,
    /// The source.
    pub src: P,
    /// The source's route token (root → src), for the reply.
    pub src_token: Vec<P>,
    /// The destination.
    pub dst: P,
    /// The destination's route token (root → dst).
    pub dst_token: Vec<P>,
    /// Hops travelled.
    pub hops: u16,
    /// `None` for an ACK.
    pub payload: Option<Bytes>,
}

/// Fanout wire messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message<P> {
    /// Ask to become a child. A full member forwards it to one of its children (round-robin),
    /// so it travels down to a free slot near the root; the member that takes the joiner answers
    /// it directly.
    Join {
        /// Tree.
        tree: TreeId<P>,
        /// The node that wants a parent.
        joiner: P,
        /// Joiner's attempt number, echoed in the answer (stale answers are ignored).
        attempt: u16,
        /// For a fresh subscriber: the time from which it wants messages.
        since_ms: Option<u64>,
        /// For a rejoining member: the first sequence number it misses.
        from_seq: u64,
        /// Times the request was forwarded so far.
        redirects: u8,
    },
    /// The sender is now the receiver's parent. Cached messages the joiner misses follow.
    Accept {
        /// Tree.
        tree: TreeId<P>,
        /// The joiner's attempt number.
        attempt: u16,
        /// The parent's route token (root → parent).
        token: Vec<P>,
        /// First sequence number the child should expect (meaningful for a fresh subscriber).
        start_seq: u64,
        /// Newest sequence number the parent knows of.
        latest: u64,
    },
    /// Not a member, detached, or the joiner is an ancestor: ask the root.
    Reject {
        /// Tree.
        tree: TreeId<P>,
        /// The joiner's attempt number.
        attempt: u16,
    },
    /// The sender is no longer the receiver's child (or never was).
    Leave {
        /// Tree.
        tree: TreeId<P>,
    },
    /// The parent's route token changed.
    Token {
        /// Tree.
        tree: TreeId<P>,
        /// The parent's new token (root → parent).
        token: Vec<P>,
    },
    /// Tree data (pushed down, or sent in answer to a repair request).
    Data {
        /// Tree.
        tree: TreeId<P>,
        /// Root-assigned sequence number within the tree.
        tree_seq: u64,
        /// Hops from the origin to the receiver.
        hops: u16,
        /// True when answering a repair request (accepted from any sender).
        repair: bool,
        /// The message, as its origin made it.
        publication: Arc<Publication<P>>,
    },
    /// A member that is not the root hands its publication to the root.
    Publish {
        /// Tree.
        tree: TreeId<P>,
        /// The message.
        publication: Arc<Publication<P>>,
    },
    /// The root has sequenced a publication.
    PublishAck {
        /// Tree.
        tree: TreeId<P>,
        /// Origin's sequence number.
        seq: u64,
        /// Root-assigned tree sequence number.
        tree_seq: u64,
    },
    /// Digest: the newest sequence number the sender has.
    Have {
        /// Tree.
        tree: TreeId<P>,
        /// Newest tree sequence number.
        latest: u64,
    },
    /// Pull repair of missed sequence numbers.
    RepairRequest {
        /// Tree.
        tree: TreeId<P>,
        /// Missing tree sequence numbers (at most `repair_batch`).
        seqs: Vec<u64>,
    },
    /// A routed unicast or its ACK.
    Unicast(Box<Unicast<P>>),
}

impl<P> Message<P> {
    /// Estimated encoded size in bytes with 32-byte node ids (tag, tree id, fields).
    pub fn wire_size(&self) -> usize {
        const TREE: usize = 8 + WIRE_ID_LEN;
        1 + TREE
            + match self {
                Message::Join { .. } => WIRE_ID_LEN + 2 + 9 + 8 + 1,
                Message::Accept { token, .. } => 2 + 16 + token.len() * WIRE_ID_LEN,
                Message::Reject { .. } => 2,
                Message::Leave { .. } => 0,
                Message::Token { token, .. } => 1 + token.len() * WIRE_ID_LEN,
                Message::Data { publication, .. } => {
                    8 + 2 + 1 + WIRE_ID_LEN + 16 + 64 + publication.payload.len()
                }
                Message::Publish { publication, .. } => {
                    WIRE_ID_LEN + 16 + 64 + publication.payload.len()
                }
                Message::PublishAck { .. } => 16,
                Message::Have { .. } => 8,
                Message::RepairRequest { seqs, .. } => 2 + seqs.len() * 8,
                Message::Unicast(u) => {
                    8 + 2
                        + 2 * WIRE_ID_LEN
                        + (u.src_token.len() + u.dst_token.len()) * WIRE_ID_LEN
                        + u.payload.as_ref().map_or(0, |p| p.len())
                }
            }
    }

    /// The publication this message carries, if it is a payload send (data or publish).
    pub fn publication(&self) -> Option<&Arc<Publication<P>>> {
        match self {
            Message::Data { publication, .. } | Message::Publish { publication, .. } => {
                Some(publication)
            }
            _ => None,
        }
    }
}

/// Timers of the fanout layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Timer<P> {
    /// A join attempt may have been lost.
    JoinTimeout {
        /// Tree.
        tree: TreeId<P>,
        /// Attempt the timer belongs to (stale timers are ignored).
        attempt: u16,
    },
    /// Send the next repair request if something is still missing.
    Repair {
        /// Tree.
        tree: TreeId<P>,
        /// Repair round the timer belongs to (stale timers are ignored).
        round: u16,
    },
    /// Send a `Have` digest to the children.
    Digest(TreeId<P>),
    /// Re-send a publication the root has not acknowledged.
    Publish {
        /// Tree.
        tree: TreeId<P>,
        /// Origin's sequence number.
        seq: u64,
    },
    /// A unicast's ACK is overdue.
    Unicast(u64),
}

/// Commands from the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command<P> {
    /// Join the tree (subscribe to the channel through that root).
    Subscribe(TreeId<P>),
    /// Leave the tree.
    Unsubscribe(TreeId<P>),
    /// Publish on the tree (as root directly, otherwise through the root).
    Publish {
        /// Tree.
        tree: TreeId<P>,
        /// Bytes to publish.
        payload: Bytes,
    },
    /// Send bytes to one member along the tree.
    Unicast {
        /// Tree.
        tree: TreeId<P>,
        /// Destination.
        dst: P,
        /// Destination's route token (root → dst), e.g. from the route store.
        dst_token: Vec<P>,
        /// Identifier reported back in [`Event::UnicastAcked`] / [`Event::UnicastFailed`].
        id: u64,
        /// Bytes to send.
        payload: Bytes,
    },
}

/// Inputs of the fanout state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InEvent<P> {
    /// A message from a peer.
    Message {
        /// Sender.
        from: P,
        /// The message.
        message: Message<P>,
    },
    /// A timer set earlier expired.
    TimerExpired(Timer<P>),
    /// The transport lost the connection to this peer.
    PeerDown(P),
    /// A membership neighbour came up: send it a digest of our trees.
    NeighborUp(P),
    /// An application command.
    Command(Command<P>),
}

/// Why a command could not be carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// Not subscribed to that tree: subscribe first.
    #[error("not subscribed to this tree: subscribe first")]
    NotSubscribed,
    /// Too many publications or unicasts waiting for an acknowledgement: retry later.
    #[error("too many messages wait for an acknowledgement: retry later")]
    Busy,
}

/// Events for the application and the route store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<P> {
    /// A publication reached this member (once per message).
    Deliver {
        /// Tree.
        tree: TreeId<P>,
        /// Tree sequence number.
        tree_seq: u64,
        /// Hops from the origin.
        hops: u16,
        /// The message as its origin made it.
        publication: Arc<Publication<P>>,
    },
    /// This member is attached (first time or after a repair).
    Attached {
        /// Tree.
        tree: TreeId<P>,
        /// New parent.
        parent: P,
    },
    /// Observation for the route store: the path root → `member` in `tree`.
    RouteToken {
        /// Tree.
        tree: TreeId<P>,
        /// The member the path leads to.
        member: P,
        /// Root first, `member` last.
        path: Vec<P>,
    },
    /// A unicast reached us.
    UnicastReceived {
        /// Tree.
        tree: TreeId<P>,
        /// Source.
        src: P,
        /// Hops travelled.
        hops: u16,
        /// Bytes.
        payload: Bytes,
    },
    /// The destination acknowledged our unicast.
    UnicastAcked {
        /// Identifier given in the command.
        id: u64,
        /// Hops the ACK travelled.
        hops: u16,
    },
    /// No ACK in time (or no route).
    UnicastFailed {
        /// Identifier given in the command.
        id: u64,
    },
    /// A command was refused.
    CommandFailed(CommandError),
}

/// Outputs of the fanout state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutEvent<P> {
    /// Send a message.
    Send {
        /// Receiver.
        to: P,
        /// Message.
        message: Message<P>,
    },
    /// Hand `timer` back after `delay_ms`.
    ScheduleTimer {
        /// Delay in milliseconds.
        delay_ms: u64,
        /// The timer.
        timer: Timer<P>,
    },
    /// An event for the application / route store.
    Emit(Event<P>),
}

/// Receive window over tree sequence numbers: everything below `base` is settled, bit `i` of
/// `bits` says whether `base + i` arrived. Missing numbers more than [`WINDOW`] behind are given up.
#[derive(Debug, Clone, Default)]
struct Window {
    base: u64,
    bits: u128,
    latest: u64,
}

/// Join timeouts double after each unanswered attempt, at most this many times (2×): enough to
/// let a busy root or a deep tree answer, short enough to ride out a lossy link.
pub const MAX_JOIN_BACKOFF_SHIFT: u8 = 1;

/// Smallest retransmission timeout of a repair request, in ms.
pub const MIN_REPAIR_RTO_MS: u64 = 40;

/// Width of the receive window (sequence numbers a member can still repair).
pub const WINDOW: u64 = 128;

impl Window {
    fn has(&self, s: u64) -> bool {
        s < self.base || (s - self.base < WINDOW && self.bits & (1u128 << (s - self.base)) != 0)
    }

    /// Marks `s` received; false if it was already settled.
    fn mark(&mut self, s: u64) -> bool {
        if self.has(s) {
            return false;
        }
        if s - self.base >= WINDOW {
            let shift = s - self.base - (WINDOW - 1);
            self.bits = if shift >= WINDOW {
                0
            } else {
                self.bits >> shift
            };
            self.base += shift;
        }
        self.bits |= 1u128 << (s - self.base);
        while self.bits & 1 == 1 {
            self.bits >>= 1;
            self.base += 1;
        }
        self.latest = self.latest.max(s);
        true
    }

    fn missing(&self, max: usize) -> Vec<u64> {
        let end = self.latest.min(self.base + WINDOW - 1);
        (self.base..=end)
            .filter(|s| !self.has(*s))
            .take(max)
            .collect()
    }

    fn start_at(&mut self, seq: u64) {
        self.base = seq.max(1);
        self.bits = 0;
    }
}

/// A join request as it travels down the tree.
#[derive(Debug, Clone, Copy)]
struct JoinRequest<P> {
    joiner: P,
    attempt: u16,
    since_ms: Option<u64>,
    from_seq: u64,
    redirects: u8,
}

#[derive(Debug, Clone)]
struct Joining<P> {
    target: P,
    attempt: u16,
    sent_at: u64,
}

#[derive(Debug, Clone)]
struct RootState<P> {
    next_seq: u64,
    /// Recently sequenced (origin, seq, tree_seq), oldest first.
    recent: VecDeque<(P, u64, u64)>,
}

#[derive(Debug, Clone)]
struct Tree<P> {
    id: TreeId<P>,
    parent: Option<P>,
    children: Vec<P>,
    /// Path root → parent (empty at the root).
    token: Vec<P>,
    joining: Option<Joining<P>>,
    attempts: u16,
    join_tries: u8,
    redirect_cursor: u16,
    since_ms: Option<u64>,
    window: Window,
    repair_armed: bool,
    repair_rounds: u8,
    repair_round_id: u16,
    /// Newest sequence number a membership neighbour (not the parent) announced, and when.
    heard_latest: u64,
    heard_at: u64,
    /// When the outstanding repair request left (0: none), for the round-trip estimate.
    repair_sent_at: u64,
    /// Smoothed round-trip time to the repair target in ms (0: no sample yet).
    srtt_ms: u32,
    digest_armed: bool,
    pushed_since_digest: bool,
    idle_left: u8,
    cache: VecDeque<(u64, u16, Arc<Publication<P>>)>,
    root: Option<Box<RootState<P>>>,
    /// Own publications waiting for the root's acknowledgement.
    pending_publishes: Vec<Arc<Publication<P>>>,
    /// Other members learnt from unicast tokens (bounded by `subscriber_view_len`).
    known: Vec<P>,
}

impl<P: PeerId> Tree<P> {
    fn attached(&self) -> bool {
        self.root.is_some() || (self.parent.is_some() && self.joining.is_none())
    }
}

/// Fanout state of one node: the trees it belongs to (usually a handful, kept in a small `Vec`).
#[derive(Debug, Clone)]
pub struct Fanout<P> {
    me: P,
    config: Arc<Config>,
    trees: Vec<Tree<P>>,
    next_seq: u64,
    pending_unicasts: Vec<u64>,
    now_ms: u64,
}

impl<P: PeerId> Fanout<P> {
    /// Fanout state of node `me`.
    pub fn new(me: P, config: Arc<Config>) -> Self {
        Self {
            me,
            config,
            trees: Vec::new(),
            next_seq: 1,
            pending_unicasts: Vec::new(),
            now_ms: 0,
        }
    }

    /// Trees this node belongs to.
    pub fn trees(&self) -> impl Iterator<Item = TreeId<P>> + '_ {
        self.trees.iter().map(|t| t.id)
    }

    pub(crate) fn trees_block(&self) -> (*const u8, usize) {
        (
            self.trees.as_ptr().cast(),
            std::mem::size_of_val(self.trees.as_slice()),
        )
    }

    /// Parent in `tree` (`None` at the root, while detached or when not a member).
    pub fn parent(&self, tree: &TreeId<P>) -> Option<P> {
        self.tree(tree).and_then(|t| t.parent)
    }

    /// Children in `tree`.
    pub fn children(&self, tree: &TreeId<P>) -> &[P] {
        self.tree(tree).map_or(&[], |t| &t.children)
    }

    /// True if this node has a path to the root of `tree` as far as it knows.
    pub fn is_attached(&self, tree: &TreeId<P>) -> bool {
        self.tree(tree).is_some_and(Tree::attached)
    }

    /// This node's route token in `tree` (root first, this node last), if attached.
    pub fn route_token(&self, tree: &TreeId<P>) -> Option<Vec<P>> {
        let t = self.tree(tree)?;
        if !t.attached() {
            return None;
        }
        let mut path = t.token.clone();
        path.push(self.me);
        Some(path)
    }

    /// The bounded subscriber view: ancestors, children and members learnt from tokens.
    pub fn subscribers(&self, tree: &TreeId<P>) -> Vec<P> {
        let Some(t) = self.tree(tree) else {
            return Vec::new();
        };
        let mut v: Vec<P> = t
            .token
            .iter()
            .chain(&t.children)
            .chain(&t.known)
            .copied()
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// Peers this node holds a tree connection to (parents and children of all trees).
    pub fn tree_links(&self) -> impl Iterator<Item = P> + '_ {
        self.trees
            .iter()
            .flat_map(|t| t.parent.iter().chain(&t.children).copied())
    }

    fn tree(&self, id: &TreeId<P>) -> Option<&Tree<P>> {
        self.trees.iter().find(|t| t.id == *id)
    }

    fn tree_index(&self, id: &TreeId<P>) -> Option<usize> {
        self.trees.iter().position(|t| t.id == *id)
    }

    /// Process one input at time `now_ms`; outputs are pushed to `out`.
    pub fn handle(&mut self, now_ms: u64, event: InEvent<P>, out: &mut impl Outbox<OutEvent<P>>) {
        self.now_ms = now_ms;
        match event {
            InEvent::Command(c) => self.on_command(now_ms, c, out),
            InEvent::Message { from, message } => self.on_message(now_ms, from, message, out),
            InEvent::TimerExpired(t) => self.on_timer(t, out),
            InEvent::PeerDown(peer) => self.peer_down(peer, out),
            InEvent::NeighborUp(peer) => {
                for t in &self.trees {
                    if t.window.latest > 0 && t.attached() {
                        let m = Message::Have {
                            tree: t.id,
                            latest: t.window.latest,
                        };
                        send(out, peer, m);
                    }
                }
            }
        }
    }

    fn on_command(&mut self, now_ms: u64, command: Command<P>, out: &mut impl Outbox<OutEvent<P>>) {
        match command {
            Command::Subscribe(id) => {
                if self.tree_index(&id).is_some() {
                    return;
                }
                let is_root = id.root == self.me;
                self.trees.push(Tree {
                    id,
                    parent: None,
                    children: Vec::new(),
                    token: Vec::new(),
                    joining: None,
                    attempts: 0,
                    join_tries: 0,
                    redirect_cursor: 0,
                    since_ms: Some(now_ms.saturating_sub(self.config.catch_up_ms)),
                    window: Window {
                        base: 1,
                        ..Window::default()
                    },
                    repair_armed: false,
                    repair_rounds: 0,
                    repair_round_id: 0,
                    heard_latest: 0,
                    heard_at: 0,
                    repair_sent_at: 0,
                    srtt_ms: 0,
                    digest_armed: false,
                    pushed_since_digest: false,
                    idle_left: 0,
                    cache: VecDeque::new(),
                    root: is_root.then(|| {
                        Box::new(RootState {
                            next_seq: 1,
                            recent: VecDeque::new(),
                        })
                    }),
                    pending_publishes: Vec::new(),
                    known: Vec::new(),
                });
                if is_root {
                    let m = self.me;
                    out.push(OutEvent::Emit(Event::RouteToken {
                        tree: id,
                        member: m,
                        path: vec![m],
                    }));
                } else {
                    let i = self.trees.len() - 1;
                    self.start_join(i, id.root, out);
                }
            }
            Command::Unsubscribe(id) => {
                if let Some(i) = self.tree_index(&id) {
                    let t = self.trees.swap_remove(i);
                    for p in t.parent.iter().chain(&t.children) {
                        send(out, *p, Message::Leave { tree: id });
                    }
                }
            }
            Command::Publish { tree, payload } => {
                let Some(i) = self.tree_index(&tree) else {
                    return emit(out, Event::CommandFailed(CommandError::NotSubscribed));
                };
                let seq = self.next_seq;
                let publication = Arc::new(Publication {
                    origin: self.me,
                    timestamp_ms: now_ms,
                    seq,
                    payload,
                });
                if self.trees[i].root.is_some() {
                    self.next_seq += 1;
                    self.sequence(i, publication, out);
                } else {
                    if self.trees[i].pending_publishes.len() >= self.config.max_pending_publishes {
                        return emit(out, Event::CommandFailed(CommandError::Busy));
                    }
                    self.next_seq += 1;
                    self.trees[i].pending_publishes.push(publication.clone());
                    send(out, tree.root, Message::Publish { tree, publication });
                    let delay_ms = self.config.publish_timeout_ms;
                    timer(out, delay_ms, Timer::Publish { tree, seq });
                }
            }
            Command::Unicast {
                tree,
                dst,
                dst_token,
                id,
                payload,
            } => {
                let Some(src_token) = self.route_token(&tree) else {
                    return emit(out, Event::UnicastFailed { id });
                };
                if self.pending_unicasts.len() >= self.config.max_pending_unicasts {
                    return emit(out, Event::CommandFailed(CommandError::Busy));
                }
                self.pending_unicasts.push(id);
                timer(out, self.config.unicast_timeout_ms, Timer::Unicast(id));
                let u = Unicast {
                    tree,
                    id,
                    src: self.me,
                    src_token,
                    dst,
                    dst_token,
                    hops: 0,
                    payload: Some(payload),
                };
                self.route_unicast(u, out);
            }
        }
    }

    /// Root only: number a publication and push it down.
    fn sequence(
        &mut self,
        i: usize,
        publication: Arc<Publication<P>>,
        out: &mut impl Outbox<OutEvent<P>>,
    ) -> u64 {
        let dedup_len = self.config.publish_dedup_len;
        let t = &mut self.trees[i];
        let Some(root) = t.root.as_mut() else {
            return 0;
        };
        if let Some(&(_, _, s)) = root
            .recent
            .iter()
            .find(|(o, q, _)| *o == publication.origin && *q == publication.seq)
        {
            return s;
        }
        let tree_seq = root.next_seq;
        root.next_seq += 1;
        if root.recent.len() >= dedup_len {
            root.recent.pop_front();
        }
        root.recent
            .push_back((publication.origin, publication.seq, tree_seq));
        t.window.mark(tree_seq);
        let from_origin = publication.origin != self.me;
        if from_origin {
            emit(
                out,
                Event::Deliver {
                    tree: t.id,
                    tree_seq,
                    hops: 1,
                    publication: publication.clone(),
                },
            );
        }
        let hops = u16::from(from_origin);
        self.store_and_push(i, tree_seq, hops, publication, None, out);
        tree_seq
    }

    fn store_and_push(
        &mut self,
        i: usize,
        tree_seq: u64,
        hops: u16,
        publication: Arc<Publication<P>>,
        from: Option<P>,
        out: &mut impl Outbox<OutEvent<P>>,
    ) {
        let cache_len = self.config.cache_len;
        let t = &mut self.trees[i];
        if t.cache.len() >= cache_len {
            t.cache.pop_front();
        }
        t.cache.push_back((tree_seq, hops, publication.clone()));
        let mut pushed = false;
        for &c in &t.children {
            if c == publication.origin || Some(c) == from {
                continue;
            }
            pushed = true;
            let message = Message::Data {
                tree: t.id,
                tree_seq,
                hops: hops.saturating_add(1),
                repair: false,
                publication: publication.clone(),
            };
            send(out, c, message);
        }
        if pushed {
            t.pushed_since_digest = true;
            if !t.digest_armed {
                t.digest_armed = true;
                timer(out, self.config.digest_interval_ms, Timer::Digest(t.id));
            }
        }
    }

    /// While joining, `from` pushed tree data to us: it holds us as a child and its
    /// Accept was lost. Ask it again right away (at most twice per join timeout) instead of
    /// waiting for the timeout and its back-off.
    fn parent_evidence(&mut self, i: usize, from: P, out: &mut impl Outbox<OutEvent<P>>) {
        let gap = self.config.join_timeout_ms / 2;
        let now = self.now_ms;
        let t = &mut self.trees[i];
        let Some(j) = &t.joining else { return };
        if j.target != from || now.saturating_sub(j.sent_at) >= gap {
            t.join_tries = 0;
            self.start_join(i, from, out);
        }
    }

    fn start_join(&mut self, i: usize, target: P, out: &mut impl Outbox<OutEvent<P>>) {
        let me = self.me;
        let t = &mut self.trees[i];
        t.attempts = t.attempts.wrapping_add(1);
        t.join_tries = t.join_tries.saturating_add(1);
        let attempt = t.attempts;
        // Back off exponentially: a deep tree or a busy root answers late, not never.
        let base = self.config.join_timeout_ms << (t.join_tries - 1).min(MAX_JOIN_BACKOFF_SHIFT);
        // Jitter (±25%, derived from our id and the attempt: no RNG needed, still reproducible)
        // keeps retries from locking into step with periodic events such as churn.
        let timeout = base * 3 / 4 + jitter(&(self.me, attempt), base / 2 + 1);
        t.joining = Some(Joining {
            target,
            attempt,
            sent_at: self.now_ms,
        });
        let message = Message::Join {
            tree: t.id,
            joiner: me,
            attempt,
            since_ms: t.since_ms,
            from_seq: t.window.base,
            redirects: 0,
        };
        send(out, target, message);
        timer(
            out,
            timeout,
            Timer::JoinTimeout {
                tree: t.id,
                attempt,
            },
        );
    }

    fn on_message(
        &mut self,
        now_ms: u64,
        from: P,
        message: Message<P>,
        out: &mut impl Outbox<OutEvent<P>>,
    ) {
        if from == self.me {
            return;
        }
        if let Message::Unicast(u) = message {
            return self.on_unicast(from, *u, out);
        }
        let tree = match &message {
            Message::Join { tree, .. }
            | Message::Accept { tree, .. }
            | Message::Reject { tree, .. }
            | Message::Leave { tree }
            | Message::Token { tree, .. }
            | Message::Data { tree, .. }
            | Message::Publish { tree, .. }
            | Message::PublishAck { tree, .. }
            | Message::Have { tree, .. }
            | Message::RepairRequest { tree, .. } => *tree,
            Message::Unicast(_) => return,
        };
        let Some(i) = self.tree_index(&tree) else {
            match message {
                Message::Join {
                    joiner, attempt, ..
                } => send(out, joiner, Message::Reject { tree, attempt }),
                Message::Data { repair: false, .. }
                | Message::Token { .. }
                | Message::Accept { .. } => send(out, from, Message::Leave { tree }),
                _ => {}
            }
            return;
        };
        match message {
            Message::Join {
                joiner,
                attempt,
                since_ms,
                from_seq,
                redirects,
                ..
            } => {
                let request = JoinRequest {
                    joiner,
                    attempt,
                    since_ms,
                    from_seq,
                    redirects,
                };
                self.on_join(i, request, out)
            }
            Message::Accept {
                attempt,
                token,
                start_seq,
                latest,
                ..
            } => self.on_accept(i, from, attempt, token, start_seq, latest, out),
            Message::Reject { attempt, .. } => {
                let t = &self.trees[i];
                if let Some(j) = t.joining.as_ref().filter(|j| j.attempt == attempt) {
                    // Start over at the root, unless that is where we asked (then the join
                    // timeout retries: a root refuses only in passing states).
                    if j.target != tree.root {
                        self.start_join(i, tree.root, out);
                    }
                }
            }
            Message::Leave { .. } => {
                self.trees[i].children.retain(|c| *c != from);
            }
            Message::Token { token, .. } => {
                if self.trees[i].parent != Some(from) {
                    return send(out, from, Message::Leave { tree });
                }
                if token.len() >= self.config.max_token_len || token.first() != Some(&tree.root) {
                    // A malformed or oversized path: do not store or pass it on.
                    return;
                }
                self.set_token(i, token, out);
            }
            Message::Data {
                tree_seq,
                hops,
                repair,
                publication,
                ..
            } => {
                let t = &mut self.trees[i];
                if repair && t.repair_sent_at > 0 {
                    let sample = u32::try_from(now_ms.saturating_sub(t.repair_sent_at))
                        .unwrap_or(u32::MAX)
                        .max(1);
                    t.srtt_ms = if t.srtt_ms == 0 {
                        sample
                    } else {
                        (7 * t.srtt_ms + sample) / 8
                    };
                    t.repair_sent_at = 0;
                }
                if !repair && t.parent != Some(from) {
                    if t.joining.is_none() {
                        send(out, from, Message::Leave { tree });
                    } else {
                        self.parent_evidence(i, from, out);
                    }
                }
                self.on_data(i, from, tree_seq, hops, publication, out);
            }
            Message::Publish { publication, .. } => {
                if self.trees[i].root.is_none() {
                    return;
                }
                let seq = publication.seq;
                let tree_seq = self.sequence(i, publication, out);
                send(
                    out,
                    from,
                    Message::PublishAck {
                        tree,
                        seq,
                        tree_seq,
                    },
                );
            }
            Message::PublishAck { seq, tree_seq, .. } => {
                if from != tree.root {
                    return;
                }
                let t = &mut self.trees[i];
                if let Some(k) = t.pending_publishes.iter().position(|p| p.seq == seq) {
                    let publication = t.pending_publishes.swap_remove(k);
                    if t.window.mark(tree_seq) {
                        // Keep our own message for repair requests of our children.
                        self.store_and_push(i, tree_seq, 0, publication, Some(tree.root), out);
                    }
                }
            }
            Message::Have { latest, .. } => {
                let now = self.now_ms;
                let t = &mut self.trees[i];
                if t.since_ms.is_some() || latest <= t.window.latest {
                    return;
                }
                if t.parent == Some(from) {
                    // The parent's digest follows its data on the same link: a gap is a loss.
                    t.window.latest = latest;
                    self.check_gaps(i, out);
                } else if latest > t.heard_latest {
                    // A neighbour may simply be closer to the root than we are: what it has is
                    // only worth asking for if it is still missing well after.
                    t.heard_latest = latest;
                    t.heard_at = now;
                    let delay = self.config.neighbor_digest_delay_ms;
                    self.arm_repair_later(i, delay, out);
                }
            }
            Message::RepairRequest { seqs, .. } => {
                let t = &self.trees[i];
                for s in seqs.into_iter().take(self.config.repair_batch) {
                    if let Some((_, hops, p)) = t.cache.iter().find(|(q, _, _)| *q == s) {
                        let message = Message::Data {
                            tree,
                            tree_seq: s,
                            hops: hops.saturating_add(1),
                            repair: true,
                            publication: p.clone(),
                        };
                        send(out, from, message);
                    }
                }
            }
            Message::Unicast(_) => {}
        }
    }

    fn on_join(&mut self, i: usize, mut r: JoinRequest<P>, out: &mut impl Outbox<OutEvent<P>>) {
        let cap = self.config.child_capacity();
        let max_token = self.config.max_token_len;
        let max_redirects = self.config.max_redirects;
        let batch = self.config.repair_batch;
        let me = self.me;
        let t = &mut self.trees[i];
        let tree = t.id;
        let joiner = r.joiner;
        if let (Some(since), true) = (r.since_ms, t.root.is_some()) {
            // The root holds every recent message: it turns the subscription time into the first
            // sequence number once, for whichever member ends up taking the joiner.
            r.from_seq = start_seq_for(t, since);
            r.since_ms = None;
        }
        if joiner == me {
            return;
        }
        if t.children.contains(&joiner) {
            // Our Accept was lost: answer again.
        } else if !t.attached() || t.token.contains(&joiner) || t.token.len() + 1 >= max_token {
            return send(
                out,
                joiner,
                Message::Reject {
                    tree,
                    attempt: r.attempt,
                },
            );
        } else if t.children.len() >= cap {
            if r.redirects >= max_redirects {
                return send(
                    out,
                    joiner,
                    Message::Reject {
                        tree,
                        attempt: r.attempt,
                    },
                );
            }
            let k = usize::from(t.redirect_cursor) % t.children.len();
            t.redirect_cursor = t.redirect_cursor.wrapping_add(1);
            let to = t.children[k];
            let message = Message::Join {
                tree,
                joiner,
                attempt: r.attempt,
                since_ms: r.since_ms,
                from_seq: r.from_seq,
                redirects: r.redirects.saturating_add(1),
            };
            return send(out, to, message);
        } else {
            t.children.push(joiner);
        }
        let mut token = t.token.clone();
        token.push(me);
        let start_seq = match r.since_ms {
            Some(since) => start_seq_for(t, since),
            None => r.from_seq,
        };
        let latest = t.window.latest;
        send(
            out,
            joiner,
            Message::Accept {
                tree,
                attempt: r.attempt,
                token,
                start_seq,
                latest,
            },
        );
        // Catch-up: what the joiner misses follows the Accept on the same link.
        for (s, hops, p) in t
            .cache
            .iter()
            .filter(|(s, _, _)| *s >= start_seq)
            .take(batch)
        {
            let message = Message::Data {
                tree,
                tree_seq: *s,
                hops: hops.saturating_add(1),
                repair: true,
                publication: p.clone(),
            };
            send(out, joiner, message);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_accept(
        &mut self,
        i: usize,
        from: P,
        attempt: u16,
        token: Vec<P>,
        start_seq: u64,
        latest: u64,
        out: &mut impl Outbox<OutEvent<P>>,
    ) {
        let me = self.me;
        let t = &mut self.trees[i];
        let tree = t.id;
        // Any answer while we look for a parent will do, even one to an attempt we gave up on.
        let _ = attempt;
        let expected = t.joining.is_some();
        let malformed =
            token.len() >= self.config.max_token_len || token.first() != Some(&tree.root);
        if !expected || malformed || token.contains(&me) {
            if t.parent != Some(from) {
                send(out, from, Message::Leave { tree });
            }
            return;
        }
        t.joining = None;
        t.join_tries = 0;
        t.parent = Some(from);
        t.repair_rounds = 0;
        if t.since_ms.take().is_some() {
            t.window.start_at(start_seq);
        }
        t.window.latest = t.window.latest.max(latest);
        emit(out, Event::Attached { tree, parent: from });
        self.set_token(i, token, out);
        // The catch-up follows the Accept: look for gaps only after it had time to arrive.
        if latest > 0 {
            self.arm_repair_later(i, self.config.repair_interval_ms, out);
        }
    }

    fn set_token(&mut self, i: usize, token: Vec<P>, out: &mut impl Outbox<OutEvent<P>>) {
        let me = self.me;
        let t = &mut self.trees[i];
        let tree = t.id;
        if token.contains(&me) {
            // We would be our own ancestor: leave and start over at the root.
            if let Some(p) = t.parent.take() {
                send(out, p, Message::Leave { tree });
            }
            return self.start_join(i, tree.root, out);
        }
        let mut own = token.clone();
        own.push(me);
        t.token = token;
        for &c in &t.children {
            send(
                out,
                c,
                Message::Token {
                    tree,
                    token: own.clone(),
                },
            );
        }
        emit(
            out,
            Event::RouteToken {
                tree,
                member: me,
                path: own,
            },
        );
    }

    fn on_data(
        &mut self,
        i: usize,
        from: P,
        tree_seq: u64,
        hops: u16,
        publication: Arc<Publication<P>>,
        out: &mut impl Outbox<OutEvent<P>>,
    ) {
        let t = &mut self.trees[i];
        if t.since_ms.is_some() || tree_seq == 0 {
            // Not attached yet: the Accept tells where our stream starts; repair fills in.
            t.window.latest = t.window.latest.max(tree_seq);
            return;
        }
        if !t.window.mark(tree_seq) {
            return;
        }
        if publication.origin == self.me {
            // Our own publication came back through repair (its acknowledgement was lost).
            t.pending_publishes.retain(|p| p.seq != publication.seq);
            return self.store_and_push(i, tree_seq, 0, publication, Some(from), out);
        }
        emit(
            out,
            Event::Deliver {
                tree: t.id,
                tree_seq,
                hops,
                publication: publication.clone(),
            },
        );
        self.store_and_push(i, tree_seq, hops, publication, Some(from), out);
        self.check_gaps(i, out);
    }

    fn arm_repair_later(&mut self, i: usize, delay: u64, out: &mut impl Outbox<OutEvent<P>>) {
        let t = &mut self.trees[i];
        if !t.repair_armed {
            t.repair_armed = true;
            t.repair_rounds = 0;
            t.repair_round_id = t.repair_round_id.wrapping_add(1);
            let round = t.repair_round_id;
            timer(out, delay, Timer::Repair { tree: t.id, round });
        }
    }

    fn check_gaps(&mut self, i: usize, out: &mut impl Outbox<OutEvent<P>>) {
        let t = &mut self.trees[i];
        let missing = !t.window.missing(1).is_empty();
        if !missing {
            // Settled (unless a neighbour's newer digest is still waiting for its check): a
            // pending repair timer becomes stale.
            if t.heard_latest <= t.window.latest {
                t.repair_armed = false;
            }
            return;
        }
        if t.repair_armed {
            return;
        }
        t.repair_armed = true;
        t.repair_rounds = 0;
        t.repair_round_id = t.repair_round_id.wrapping_add(1);
        self.send_repair(i, out);
    }

    /// Retransmission timeout of a repair request: twice the smoothed round trip plus a margin
    /// (TCP's rule of thumb), within [`MIN_REPAIR_RTO_MS`, `repair_interval_ms`].
    fn repair_rto(&self, t: &Tree<P>) -> u64 {
        let max = self.config.repair_interval_ms;
        if t.srtt_ms == 0 {
            return max;
        }
        (2 * u64::from(t.srtt_ms) + 20).clamp(MIN_REPAIR_RTO_MS.min(max), max)
    }

    fn send_repair(&mut self, i: usize, out: &mut impl Outbox<OutEvent<P>>) {
        let rto = self.repair_rto(&self.trees[i]);
        let now = self.now_ms;
        let delay = self.config.neighbor_digest_delay_ms;
        let t = &mut self.trees[i];
        if t.heard_latest > t.window.latest && now >= t.heard_at + delay {
            t.window.latest = t.heard_latest;
        }
        let seqs = t.window.missing(self.config.repair_batch);
        if seqs.is_empty() {
            if t.heard_latest > t.window.latest {
                // Heard of newer messages from a neighbour only recently: look again later.
                let round = t.repair_round_id;
                let wait = (t.heard_at + delay).saturating_sub(now).max(1);
                return timer(out, wait, Timer::Repair { tree: t.id, round });
            }
            t.repair_armed = false;
            return;
        }
        let to_root = t.repair_rounds >= self.config.repair_attempts_before_root;
        let target = match t.parent {
            Some(p) if t.joining.is_none() && !to_root => Some(p),
            _ if t.root.is_none() => Some(t.id.root),
            _ => None,
        };
        t.repair_rounds = t.repair_rounds.saturating_add(1);
        if let Some(to) = target {
            t.repair_sent_at = now;
            send(out, to, Message::RepairRequest { tree: t.id, seqs });
        }
        let round = t.repair_round_id;
        timer(out, rto, Timer::Repair { tree: t.id, round });
    }

    fn on_timer(&mut self, timer_ev: Timer<P>, out: &mut impl Outbox<OutEvent<P>>) {
        match timer_ev {
            Timer::JoinTimeout { tree, attempt } => {
                let Some(i) = self.tree_index(&tree) else {
                    return;
                };
                let t = &self.trees[i];
                if t.joining.as_ref().is_some_and(|j| j.attempt == attempt) {
                    self.start_join(i, tree.root, out);
                }
            }
            Timer::Repair { tree, round } => {
                if let Some(i) = self.tree_index(&tree) {
                    let t = &self.trees[i];
                    if t.repair_armed && t.repair_round_id == round {
                        self.send_repair(i, out);
                    }
                }
            }
            Timer::Digest(tree) => {
                let Some(i) = self.tree_index(&tree) else {
                    return;
                };
                let idle = self.config.idle_digests;
                let t = &mut self.trees[i];
                if t.pushed_since_digest {
                    t.pushed_since_digest = false;
                    t.idle_left = idle;
                } else if t.idle_left > 0 {
                    t.idle_left -= 1;
                } else {
                    t.digest_armed = false;
                    return;
                }
                for &c in &t.children {
                    send(
                        out,
                        c,
                        Message::Have {
                            tree,
                            latest: t.window.latest,
                        },
                    );
                }
                timer(out, self.config.digest_interval_ms, Timer::Digest(tree));
            }
            Timer::Publish { tree, seq } => {
                let Some(i) = self.tree_index(&tree) else {
                    return;
                };
                if let Some(p) = self.trees[i]
                    .pending_publishes
                    .iter()
                    .find(|p| p.seq == seq)
                {
                    send(
                        out,
                        tree.root,
                        Message::Publish {
                            tree,
                            publication: p.clone(),
                        },
                    );
                    timer(
                        out,
                        self.config.publish_timeout_ms,
                        Timer::Publish { tree, seq },
                    );
                }
            }
            Timer::Unicast(id) => {
                if let Some(k) = self.pending_unicasts.iter().position(|x| *x == id) {
                    self.pending_unicasts.swap_remove(k);
                    emit(out, Event::UnicastFailed { id });
                }
            }
        }
    }

    fn peer_down(&mut self, peer: P, out: &mut impl Outbox<OutEvent<P>>) {
        for i in 0..self.trees.len() {
            let t = &mut self.trees[i];
            t.children.retain(|c| *c != peer);
            t.known.retain(|c| *c != peer);
            let root = t.id.root;
            if t.parent == Some(peer) {
                t.parent = None;
                // Rejoin through the grandparent, keeping our children.
                let target = match t.token.len() {
                    n if n >= 2 => t.token[n - 2],
                    _ => root,
                };
                self.start_join(i, target, out);
            } else if t.joining.as_ref().is_some_and(|j| j.target == peer) && peer != root {
                self.start_join(i, root, out);
            }
        }
    }

    fn on_unicast(&mut self, _from: P, mut u: Unicast<P>, out: &mut impl Outbox<OutEvent<P>>) {
        u.hops = u.hops.saturating_add(1);
        if u.dst != self.me {
            return self.route_unicast(u, out);
        }
        let view_len = self.config.subscriber_view_len;
        if let Some(i) = self.tree_index(&u.tree) {
            let t = &mut self.trees[i];
            if !t.known.contains(&u.src) {
                if t.known.len() >= view_len {
                    t.known.remove(0);
                }
                t.known.push(u.src);
            }
        }
        if u.src_token.last() == Some(&u.src) {
            let path = u.src_token.clone();
            emit(
                out,
                Event::RouteToken {
                    tree: u.tree,
                    member: u.src,
                    path,
                },
            );
        }
        match u.payload.take() {
            Some(payload) => {
                emit(
                    out,
                    Event::UnicastReceived {
                        tree: u.tree,
                        src: u.src,
                        hops: u.hops,
                        payload,
                    },
                );
                let Some(my_token) = self.route_token(&u.tree) else {
                    return;
                };
                let ack = Unicast {
                    tree: u.tree,
                    id: u.id,
                    src: self.me,
                    src_token: my_token,
                    dst: u.src,
                    dst_token: u.src_token,
                    hops: 0,
                    payload: None,
                };
                self.route_unicast(ack, out);
            }
            None => {
                if let Some(k) = self.pending_unicasts.iter().position(|x| *x == u.id) {
                    self.pending_unicasts.swap_remove(k);
                    emit(
                        out,
                        Event::UnicastAcked {
                            id: u.id,
                            hops: u.hops,
                        },
                    );
                }
            }
        }
    }

    /// Up to the first ancestor on the destination's token, then down the token.
    fn route_unicast(&mut self, u: Unicast<P>, out: &mut impl Outbox<OutEvent<P>>) {
        if u.dst == self.me {
            return self.on_unicast(self.me, u, out);
        }
        let Some(t) = self.tree(&u.tree) else { return };
        let next = match u.dst_token.iter().position(|p| *p == self.me) {
            Some(k) => u
                .dst_token
                .get(k + 1)
                .copied()
                .filter(|n| t.children.contains(n)),
            None => t.parent,
        };
        if let Some(next) = next {
            send(out, next, Message::Unicast(Box::new(u)));
        }
        // No route (stale token or detached): the source's timeout reports the failure.
    }
}

/// First sequence number a subscriber that joined at `since_ms` should receive: after the newest
/// cached message published before it (best effort when the cache does not reach back that far).
fn start_seq_for<P: PeerId>(t: &Tree<P>, since_ms: u64) -> u64 {
    t.cache
        .iter()
        .rev()
        .find(|(_, _, p)| p.timestamp_ms < since_ms)
        .map(|(s, _, _)| s + 1)
        .or_else(|| t.cache.front().map(|(s, _, _)| *s))
        .unwrap_or(t.window.latest + 1)
}

/// A number in `0..range` derived from `key` (deterministic: the same run gives the same value).
fn jitter<K: std::hash::Hash>(key: &K, range: u64) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(key) % range.max(1)
}

fn send<P>(out: &mut impl Outbox<OutEvent<P>>, to: P, message: Message<P>) {
    out.push(OutEvent::Send { to, message });
}

fn timer<P>(out: &mut impl Outbox<OutEvent<P>>, delay_ms: u64, timer: Timer<P>) {
    out.push(OutEvent::ScheduleTimer { delay_ms, timer });
}

fn emit<P>(out: &mut impl Outbox<OutEvent<P>>, event: Event<P>) {
    out.push(OutEvent::Emit(event));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_settles_in_order_and_reports_gaps() {
        let mut w = Window {
            base: 1,
            ..Window::default()
        };
        assert!(w.mark(1));
        assert!(!w.mark(1), "a duplicate is not new");
        assert!(w.mark(3));
        assert_eq!(w.missing(10), vec![2]);
        assert!(w.mark(2));
        assert_eq!(w.base, 4);
        assert!(w.missing(10).is_empty());
        w.latest = 6;
        assert_eq!(w.missing(10), vec![4, 5, 6]);
        assert_eq!(w.missing(2), vec![4, 5], "bounded by the batch size");
    }

    #[test]
    fn window_gives_up_what_falls_out_of_it() {
        let mut w = Window {
            base: 1,
            ..Window::default()
        };
        assert!(w.mark(1 + WINDOW + 10));
        assert!(w.base > 1);
        assert!(w.has(5), "older than the window counts as settled");
        assert_eq!(w.missing(usize::MAX).len() as u64, WINDOW - 1);
    }

    #[test]
    fn child_capacity_respects_the_upload_budget() {
        let c = Config {
            max_children: 16,
            upload_budget_bytes_per_s: 100_000,
            stream_bytes_per_s: 30_000,
            ..Config::default()
        };
        assert_eq!(c.child_capacity(), 3);
        assert_eq!(Config::default().child_capacity(), 16);
    }
}
