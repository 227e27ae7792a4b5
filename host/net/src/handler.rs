//! One connection: a long-lived outbound frame stream and a few inbound ones.
//!
//! Outbound, frames handed over by the [`Behaviour`](crate::Behaviour) wait in a queue and are
//! written in batches on one substream, opened on the first frame and reopened on the next frame
//! after a failure; one stream per connection is what keeps a sender's frames in order. Every
//! frame handed over is reported back exactly once, as sent or dropped ([`HandlerOut::Drained`]),
//! which is what the behaviour's per-peer queue bound counts.
//!
//! Inbound, up to `max_inbound_streams` substreams are read at once (more are reset); each yields
//! frames in order, and frames above the receiver's limit are skipped without being buffered.
//!
//! Frame streams are excluded from libp2p's keep-alive accounting: the connection lives while
//! frames flow or, with `idle_connection_timeout_ms` = 0, until it is closed on purpose.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use libp2p::core::upgrade::ReadyUpgrade;
use libp2p::swarm::handler::{
    ConnectionEvent, DialUpgradeError, FullyNegotiatedInbound, FullyNegotiatedOutbound,
};
use libp2p::swarm::{ConnectionHandler, ConnectionHandlerEvent, Stream, SubstreamProtocol};
use libp2p::{PeerId, StreamProtocol};
use tokio::time::{Instant, Sleep};

use crate::protocol::{self, Inbound, PROTOCOL_NAME, ProtocolError, RejectReason};

/// Most frames written in one batch (one write and one flush on the stream).
pub const WRITE_BATCH_FRAMES: usize = 64;

/// Batches stop growing past this many encoded bytes (a single larger frame still goes alone).
pub const WRITE_BATCH_BYTES: usize = 64 * 1024;

/// The part of the [`Config`](crate::Config) one connection needs.
#[derive(Debug, Clone)]
pub(crate) struct HandlerConfig {
    pub(crate) max_frame_bytes: usize,
    pub(crate) max_inbound_streams: usize,
    pub(crate) per_peer_queue: usize,
    /// `None`: never close for idleness.
    pub(crate) idle_timeout: Option<Duration>,
}

/// From the behaviour to one connection.
#[derive(Debug)]
pub enum HandlerIn {
    /// Queue a frame for the outbound stream.
    Send(Bytes),
}

/// From one connection to the behaviour.
#[derive(Debug)]
pub enum HandlerOut {
    /// A frame arrived.
    Frame(Bytes),
    /// A frame was rejected and skipped.
    Rejected(RejectReason),
    /// Frames handed over earlier left the queue: `sent` were written and flushed to the muxer,
    /// `dropped` were lost (stream failure, refused stream).
    Drained {
        /// Frames written.
        sent: usize,
        /// Frames lost.
        dropped: usize,
    },
}

type WriteFuture = BoxFuture<'static, Result<Stream, ProtocolError>>;
type ReadFuture = BoxFuture<'static, (Stream, Result<Option<Inbound>, ProtocolError>)>;

/// State of the outbound frame stream.
enum Outbound {
    /// No stream; one is requested when a frame is queued.
    Idle,
    /// A stream was requested and is being negotiated.
    Opening,
    /// An open stream with nothing being written.
    Ready(Stream),
    /// A batch of `frames` frames is being written.
    Writing { frames: usize, write: WriteFuture },
}

/// The [`ConnectionHandler`] of the frame protocol, one per connection.
pub struct Handler {
    peer: PeerId,
    config: HandlerConfig,
    queue: VecDeque<Bytes>,
    outbound: Outbound,
    inbound: FuturesUnordered<ReadFuture>,
    /// Drained frames not yet reported to the behaviour.
    unreported_sent: usize,
    unreported_dropped: usize,
    last_activity: Instant,
    /// Wakes the connection when the idle timeout may have passed, so that it asks
    /// [`ConnectionHandler::connection_keep_alive`] again.
    idle_timer: Option<Pin<Box<Sleep>>>,
}

impl std::fmt::Debug for Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handler")
            .field("peer", &self.peer)
            .field("queued", &self.queue.len())
            .field("inbound_streams", &self.inbound.len())
            .finish_non_exhaustive()
    }
}

impl Handler {
    pub(crate) fn new(peer: PeerId, config: HandlerConfig) -> Self {
        let last_activity = Instant::now();
        let idle_timer = config
            .idle_timeout
            .map(|t| Box::pin(tokio::time::sleep_until(last_activity + t)));
        Self {
            peer,
            config,
            queue: VecDeque::new(),
            outbound: Outbound::Idle,
            inbound: FuturesUnordered::new(),
            unreported_sent: 0,
            unreported_dropped: 0,
            last_activity,
            idle_timer,
        }
    }

    fn take_report(&mut self) -> Option<HandlerOut> {
        if self.unreported_sent == 0 && self.unreported_dropped == 0 {
            return None;
        }
        let report = HandlerOut::Drained {
            sent: self.unreported_sent,
            dropped: self.unreported_dropped,
        };
        self.unreported_sent = 0;
        self.unreported_dropped = 0;
        Some(report)
    }

    /// Moves the outbound stream forward; returns a stream request when one is needed.
    fn poll_outbound(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Option<SubstreamProtocol<ReadyUpgrade<StreamProtocol>, ()>> {
        loop {
            match std::mem::replace(&mut self.outbound, Outbound::Idle) {
                Outbound::Writing { frames, mut write } => match write.poll_unpin(cx) {
                    Poll::Ready(Ok(stream)) => {
                        self.unreported_sent += frames;
                        self.last_activity = Instant::now();
                        self.outbound = Outbound::Ready(stream);
                    }
                    Poll::Ready(Err(error)) => {
                        tracing::debug!(
                            peer = %self.peer, %error, frames, "frame stream write failed"
                        );
                        self.unreported_dropped += frames;
                        // Stay idle: the next queued frame opens a new stream.
                    }
                    Poll::Pending => {
                        self.outbound = Outbound::Writing { frames, write };
                        return None;
                    }
                },
                Outbound::Ready(mut stream) => {
                    if self.queue.is_empty() {
                        self.outbound = Outbound::Ready(stream);
                        return None;
                    }
                    let (frames, batch) = self.next_batch();
                    let write = async move {
                        protocol::write_batch(&mut stream, &batch).await?;
                        Ok(stream)
                    }
                    .boxed();
                    self.outbound = Outbound::Writing { frames, write };
                }
                Outbound::Idle => {
                    if self.queue.is_empty() {
                        return None;
                    }
                    self.outbound = Outbound::Opening;
                    return Some(SubstreamProtocol::new(ReadyUpgrade::new(PROTOCOL_NAME), ()));
                }
                Outbound::Opening => {
                    self.outbound = Outbound::Opening;
                    return None;
                }
            }
        }
    }

    /// Encodes up to [`WRITE_BATCH_FRAMES`] queued frames (at least one) into one buffer.
    fn next_batch(&mut self) -> (usize, Vec<u8>) {
        let mut batch = Vec::new();
        let mut frames = 0;
        while frames < WRITE_BATCH_FRAMES && (frames == 0 || batch.len() < WRITE_BATCH_BYTES) {
            let Some(frame) = self.queue.pop_front() else {
                break;
            };
            match protocol::encode_frame(&mut batch, &frame) {
                Ok(()) => frames += 1,
                Err(error) => {
                    // Unreachable while `max_frame_bytes` fits the prefix; counted, not panicked.
                    tracing::warn!(peer = %self.peer, %error, "frame dropped");
                    self.unreported_dropped += 1;
                }
            }
        }
        (frames, batch)
    }

    fn read_next(mut stream: Stream, max: usize) -> ReadFuture {
        async move {
            let result = protocol::read_frame(&mut stream, max).await;
            (stream, result)
        }
        .boxed()
    }

    /// The next inbound frame or rejection, if any.
    fn poll_inbound(&mut self, cx: &mut Context<'_>) -> Option<HandlerOut> {
        loop {
            let Poll::Ready(Some((stream, result))) = self.inbound.poll_next_unpin(cx) else {
                return None;
            };
            match result {
                Ok(Some(inbound)) => {
                    self.last_activity = Instant::now();
                    self.inbound
                        .push(Self::read_next(stream, self.config.max_frame_bytes));
                    return Some(match inbound {
                        Inbound::Frame(frame) => HandlerOut::Frame(frame),
                        Inbound::Rejected(reason) => HandlerOut::Rejected(reason),
                    });
                }
                Ok(None) => {
                    tracing::trace!(peer = %self.peer, "inbound frame stream closed by the remote");
                }
                Err(error) => {
                    tracing::debug!(peer = %self.peer, %error, "inbound frame stream failed");
                }
            }
        }
    }

    fn is_busy(&self) -> bool {
        !self.queue.is_empty()
            || matches!(self.outbound, Outbound::Opening | Outbound::Writing { .. })
    }

    /// Re-arms the idle timer at the current deadline when it fired early; never yields an event.
    fn poll_idle_timer(&mut self, cx: &mut Context<'_>) {
        let (Some(timeout), Some(timer)) = (self.config.idle_timeout, self.idle_timer.as_mut())
        else {
            return;
        };
        loop {
            if timer.as_mut().poll(cx).is_pending() {
                return;
            }
            let deadline = self.last_activity + timeout;
            if deadline <= Instant::now() {
                // Fired for real: the connection asks `connection_keep_alive` after this poll.
                // Re-arm far ahead so a fired timer is not polled in a loop.
                timer.as_mut().reset(Instant::now() + timeout);
                return;
            }
            timer.as_mut().reset(deadline);
        }
    }
}

impl ConnectionHandler for Handler {
    type FromBehaviour = HandlerIn;
    type ToBehaviour = HandlerOut;
    type InboundProtocol = ReadyUpgrade<StreamProtocol>;
    type OutboundProtocol = ReadyUpgrade<StreamProtocol>;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = ();

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol, Self::InboundOpenInfo> {
        SubstreamProtocol::new(ReadyUpgrade::new(PROTOCOL_NAME), ())
    }

    fn connection_keep_alive(&self) -> bool {
        match self.config.idle_timeout {
            None => true,
            Some(timeout) => self.is_busy() || self.last_activity.elapsed() < timeout,
        }
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<
        ConnectionHandlerEvent<Self::OutboundProtocol, Self::OutboundOpenInfo, Self::ToBehaviour>,
    > {
        if let Some(protocol) = self.poll_outbound(cx) {
            return Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest { protocol });
        }
        if let Some(report) = self.take_report() {
            return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(report));
        }
        if let Some(event) = self.poll_inbound(cx) {
            return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(event));
        }
        self.poll_idle_timer(cx);
        Poll::Pending
    }

    fn poll_close(&mut self, _: &mut Context<'_>) -> Poll<Option<Self::ToBehaviour>> {
        // Report what was already written; frames still queued are counted as dropped by the
        // behaviour when the connection is gone.
        Poll::Ready(self.take_report())
    }

    fn on_behaviour_event(&mut self, event: HandlerIn) {
        match event {
            HandlerIn::Send(frame) => {
                if self.queue.len() >= self.config.per_peer_queue {
                    // The behaviour bounds the queue already; this only guards the invariant.
                    self.unreported_dropped += 1;
                    return;
                }
                self.queue.push_back(frame);
                self.last_activity = Instant::now();
            }
        }
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<
            '_,
            Self::InboundProtocol,
            Self::OutboundProtocol,
            Self::InboundOpenInfo,
            Self::OutboundOpenInfo,
        >,
    ) {
        match event {
            ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound {
                protocol: mut stream,
                ..
            }) => {
                if self.inbound.len() >= self.config.max_inbound_streams {
                    tracing::debug!(
                        peer = %self.peer, "inbound frame stream refused: too many open"
                    );
                    drop(stream);
                    return;
                }
                stream.ignore_for_keep_alive();
                self.inbound
                    .push(Self::read_next(stream, self.config.max_frame_bytes));
            }
            ConnectionEvent::FullyNegotiatedOutbound(FullyNegotiatedOutbound {
                protocol: mut stream,
                ..
            }) => {
                if matches!(self.outbound, Outbound::Opening) {
                    stream.ignore_for_keep_alive();
                    self.outbound = Outbound::Ready(stream);
                }
            }
            ConnectionEvent::DialUpgradeError(DialUpgradeError { error, .. }) => {
                // The remote refused or could not negotiate a frame stream. Drop what is queued
                // rather than retry in a loop; the next frame tries a new stream.
                tracing::debug!(peer = %self.peer, %error, "could not open a frame stream");
                self.outbound = Outbound::Idle;
                self.unreported_dropped += self.queue.len();
                self.queue.clear();
            }
            _ => {}
        }
    }
}
