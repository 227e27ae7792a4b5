//! Sans-IO overlays of routefabric: [HyParView] membership and the fanout forest.
//!
//! This crate is the protocol half of the host: plain state machines with no sockets, clocks,
//! threads or OS randomness. A driver (the node's actor, or the simulator in `routefabric-sim`)
//! feeds [`InEvent`]s to [`Node::handle`] with the current time and carries out the returned
//! [`OutEvent`]s: messages to send, timers to fire later, and events for the application and
//! the route store. The same code therefore runs in a real node and in a deterministic simulation
//! of a million nodes.
//!
//! * [`membership`]: HyParView (Leitão, Pereira, Rodrigues, "HyParView: a membership protocol for
//!   reliable gossip-based broadcast", DSN 2007) — small active view, larger passive view, random
//!   walk joins, shuffles, repair.
//! * [`fanout`]: one explicit dissemination tree per (channel, root) on top of the membership, in
//!   the spirit of Plumtree's eager tree (Leitão, Pereira, Rodrigues, "Epidemic broadcast trees",
//!   SRDS 2007) with bounded fan-out, pull repair and route tokens.
//!
//! Layers have their own `InEvent`/`OutEvent`/`Timer`/`Message`/`Config`; this module joins them
//! with `From`.
//!
//! [HyParView]: https://asc.di.fct.unl.pt/~jleitao/pdf/dsn07-leitao.pdf

#![deny(missing_docs)]

pub mod fanout;
pub mod membership;
pub mod rng;

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use rng::Rng;

/// Node identifiers the overlays work with: a `u32` in the simulator, a 32-byte public key in
/// the node.
pub trait PeerId: Copy + Ord + Hash + Debug {}
impl<T: Copy + Ord + Hash + Debug> PeerId for T {}

/// Node id length assumed by the `wire_size` estimates (an ed25519 public key).
pub const WIRE_ID_LEN: usize = 32;

/// Where a layer puts its outputs. Implemented for `Vec<T>` of any type the layer's output
/// converts into, so a layer writes straight into its driver's buffer.
pub trait Outbox<E> {
    /// Queue one output.
    fn push(&mut self, event: E);
}

impl<E: Into<T>, T> Outbox<E> for Vec<T> {
    fn push(&mut self, event: E) {
        Vec::push(self, event.into());
    }
}

/// Configuration of both layers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Membership (HyParView) settings.
    pub membership: membership::Config,
    /// Fanout forest settings.
    pub fanout: fanout::Config,
}

/// Wire messages of all layers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message<P> {
    /// Membership layer.
    Membership(membership::Message<P>),
    /// Fanout layer.
    Fanout(fanout::Message<P>),
}

impl<P> Message<P> {
    /// Estimated encoded size in bytes (32-byte node ids).
    pub fn wire_size(&self) -> usize {
        1 + match self {
            Message::Membership(m) => m.wire_size(),
            Message::Fanout(m) => m.wire_size(),
        }
    }

    /// The publication carried, if this is a payload send.
    pub fn publication(&self) -> Option<&Arc<fanout::Publication<P>>> {
        match self {
            Message::Fanout(m) => m.publication(),
            Message::Membership(_) => None,
        }
    }
}

impl<P> From<membership::Message<P>> for Message<P> {
    fn from(m: membership::Message<P>) -> Self {
        Message::Membership(m)
    }
}

impl<P> From<fanout::Message<P>> for Message<P> {
    fn from(m: fanout::Message<P>) -> Self {
        Message::Fanout(m)
    }
}

/// Timers of all layers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Timer<P> {
    /// Membership layer.
    Membership(membership::Timer),
    /// Fanout layer.
    Fanout(fanout::Timer<P>),
}

/// Application commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command<P> {
    /// Join the membership overlay through a contact (the node itself for the first node).
    Join(P),
    /// A fanout command (subscribe, publish, unicast).
    Fanout(fanout::Command<P>),
}

impl<P> From<fanout::Command<P>> for Command<P> {
    fn from(c: fanout::Command<P>) -> Self {
        Command::Fanout(c)
    }
}

/// Inputs of a node.
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
    /// The transport lost (or could not open) the connection to this peer.
    PeerDown(P),
    /// An application command.
    Command(Command<P>),
}

/// Events for the application and the route store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<P> {
    /// Membership change.
    Membership(membership::Event<P>),
    /// Delivery, attachment, route token observation, unicast result.
    Fanout(fanout::Event<P>),
}

/// Outputs of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutEvent<P> {
    /// Send a message to a peer.
    Send {
        /// Receiver.
        to: P,
        /// The message.
        message: Message<P>,
    },
    /// Hand `timer` back as [`InEvent::TimerExpired`] after `delay_ms`.
    ScheduleTimer {
        /// Delay in milliseconds.
        delay_ms: u64,
        /// The timer.
        timer: Timer<P>,
    },
    /// An event for the application or the route store.
    Emit(Event<P>),
}

impl<P> From<membership::OutEvent<P>> for OutEvent<P> {
    fn from(e: membership::OutEvent<P>) -> Self {
        match e {
            membership::OutEvent::Send { to, message } => OutEvent::Send {
                to,
                message: message.into(),
            },
            membership::OutEvent::ScheduleTimer { delay_ms, timer } => OutEvent::ScheduleTimer {
                delay_ms,
                timer: Timer::Membership(timer),
            },
            membership::OutEvent::Emit(e) => OutEvent::Emit(Event::Membership(e)),
        }
    }
}

impl<P> From<fanout::OutEvent<P>> for OutEvent<P> {
    fn from(e: fanout::OutEvent<P>) -> Self {
        match e {
            fanout::OutEvent::Send { to, message } => OutEvent::Send {
                to,
                message: message.into(),
            },
            fanout::OutEvent::ScheduleTimer { delay_ms, timer } => OutEvent::ScheduleTimer {
                delay_ms,
                timer: Timer::Fanout(timer),
            },
            fanout::OutEvent::Emit(e) => OutEvent::Emit(Event::Fanout(e)),
        }
    }
}

/// One overlay node: membership and fanout forest over the same peers.
#[derive(Debug, Clone)]
pub struct Node<P> {
    me: P,
    membership: membership::Membership<P>,
    fanout: fanout::Fanout<P>,
}

impl<P: PeerId> Node<P> {
    /// A node `me`. `config` is shared (an `Arc`, so a million nodes hold one copy); `rng` is its
    /// own seeded stream (see [`Rng::derive`]).
    pub fn new(
        me: P,
        membership: Arc<membership::Config>,
        fanout: Arc<fanout::Config>,
        rng: Rng,
    ) -> Self {
        Self {
            me,
            membership: membership::Membership::new(me, membership, rng),
            fanout: fanout::Fanout::new(me, fanout),
        }
    }

    /// This node's id.
    pub fn id(&self) -> P {
        self.me
    }

    /// Heap blocks (address, length) an event for this node is likely to touch (views, trees).
    /// A driver that knows its next events (the simulator) prefetches them: at a million nodes the
    /// run is bound by cache misses on node state. Only addresses, never dereferenced here.
    #[doc(hidden)]
    pub fn state_blocks(&self) -> [(*const u8, usize); 3] {
        let active = self.membership.active_view();
        let passive = self.membership.passive_view();
        [
            (active.as_ptr().cast(), std::mem::size_of_val(active)),
            (passive.as_ptr().cast(), std::mem::size_of_val(passive)),
            self.fanout.trees_block(),
        ]
    }

    /// The membership state.
    pub fn membership(&self) -> &membership::Membership<P> {
        &self.membership
    }

    /// The fanout state.
    pub fn fanout(&self) -> &fanout::Fanout<P> {
        &self.fanout
    }

    /// Process one input at `now_ms` (the driver's clock, in milliseconds) and return the outputs.
    pub fn handle(&mut self, now_ms: u64, event: InEvent<P>) -> Vec<OutEvent<P>> {
        let mut out = Vec::new();
        self.handle_into(now_ms, event, &mut out);
        out
    }

    /// Like [`Node::handle`], appending to a buffer the driver reuses.
    pub fn handle_into(&mut self, now_ms: u64, event: InEvent<P>, out: &mut Vec<OutEvent<P>>) {
        match event {
            InEvent::Message {
                from,
                message: Message::Membership(message),
            } => self.membership_event(membership::InEvent::Message { from, message }, now_ms, out),
            InEvent::Message {
                from,
                message: Message::Fanout(message),
            } => self
                .fanout
                .handle(now_ms, fanout::InEvent::Message { from, message }, out),
            InEvent::TimerExpired(Timer::Membership(t)) => {
                self.membership_event(membership::InEvent::TimerExpired(t), now_ms, out)
            }
            InEvent::TimerExpired(Timer::Fanout(t)) => {
                self.fanout
                    .handle(now_ms, fanout::InEvent::TimerExpired(t), out)
            }
            InEvent::PeerDown(peer) => {
                self.membership_event(membership::InEvent::PeerDown(peer), now_ms, out);
                self.fanout
                    .handle(now_ms, fanout::InEvent::PeerDown(peer), out);
            }
            InEvent::Command(Command::Join(contact)) => {
                self.membership_event(membership::InEvent::Join(contact), now_ms, out)
            }
            InEvent::Command(Command::Fanout(c)) => {
                if let fanout::Command::Subscribe(tree) = &c {
                    // A tree's root is a rendezvous every member knows: a good contact for
                    // rejoining the membership after a partition.
                    self.membership.add_contact(tree.root);
                }
                self.fanout.handle(now_ms, fanout::InEvent::Command(c), out)
            }
        }
    }

    fn membership_event(
        &mut self,
        event: membership::InEvent<P>,
        now_ms: u64,
        out: &mut Vec<OutEvent<P>>,
    ) {
        let start = out.len();
        self.membership.handle(now_ms, event, out);
        // A neighbour that just came up gets a digest of our trees.
        let end = out.len();
        for k in start..end {
            if let Some(OutEvent::Emit(Event::Membership(membership::Event::NeighborUp(p)))) =
                out.get(k)
            {
                let p = *p;
                self.fanout
                    .handle(now_ms, fanout::InEvent::NeighborUp(p), out);
            }
        }
    }
}
