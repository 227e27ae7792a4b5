//! Byte counting below encryption and multiplexing.
//!
//! [`CountingStream`] wraps each raw TCP socket *before* the noise and yamux upgrades, so the
//! counts include every byte on the wire above TCP/IP: multistream-select negotiation, noise
//! handshakes and record overhead, yamux headers and window updates, ping, identify and frames.
//! QUIC connections are not counted: quinn owns its UDP socket, and counting there would need a
//! wrapper around the socket rather than a stream (see [`WireBytes`]).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use futures::{AsyncRead, AsyncWrite};
use libp2p::Transport;
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::Boxed;
use libp2p::core::upgrade::Version;
use libp2p::identity::Keypair;
use libp2p::{PeerId, noise, tcp, yamux};

/// Bytes read from and written to TCP sockets since the counters were created.
///
/// Only TCP is counted; bytes of QUIC connections are not included.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WireBytes {
    /// Bytes read from sockets.
    pub read: u64,
    /// Bytes written to sockets.
    pub written: u64,
}

impl WireBytes {
    /// Bytes counted since an earlier snapshot (saturating, so a snapshot taken from other
    /// counters gives zero rather than a wrap-around).
    pub fn since(&self, earlier: WireBytes) -> WireBytes {
        WireBytes {
            read: self.read.saturating_sub(earlier.read),
            written: self.written.saturating_sub(earlier.written),
        }
    }
}

/// Shared counters of one transport (every connection of one swarm adds to them).
#[derive(Debug, Clone, Default)]
pub(crate) struct WireCounters(Arc<Counts>);

#[derive(Debug, Default)]
struct Counts {
    read: AtomicU64,
    written: AtomicU64,
}

impl WireCounters {
    /// A snapshot of the counts.
    pub(crate) fn snapshot(&self) -> WireBytes {
        WireBytes {
            read: self.0.read.load(Ordering::Relaxed),
            written: self.0.written.load(Ordering::Relaxed),
        }
    }
}

/// A stream that adds the bytes it reads and writes to shared counters.
#[derive(Debug)]
pub(crate) struct CountingStream<S> {
    inner: S,
    counters: WireCounters,
}

impl<S> CountingStream<S> {
    pub(crate) fn new(inner: S, counters: WireCounters) -> Self {
        Self { inner, counters }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for CountingStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(n)) = result {
            this.counters.0.read.fetch_add(n as u64, Ordering::Relaxed);
        }
        result
    }

    fn poll_read_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &mut [io::IoSliceMut<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.inner).poll_read_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = result {
            this.counters.0.read.fetch_add(n as u64, Ordering::Relaxed);
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for CountingStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = result {
            this.counters
                .0
                .written
                .fetch_add(n as u64, Ordering::Relaxed);
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = result {
            this.counters
                .0
                .written
                .fetch_add(n as u64, Ordering::Relaxed);
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

/// Errors building the counted TCP transport.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The noise configuration could not be made from the keypair.
    #[error("cannot set up noise encryption with this key: {0}; check the node's key file")]
    Noise(#[from] noise::Error),
}

/// TCP with every socket counted, then noise and yamux: the same stack as
/// `SwarmBuilder::with_tcp`, with the counter slipped in under the upgrades.
pub(crate) fn counted_tcp(
    keypair: &Keypair,
    counters: WireCounters,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, TransportError> {
    let config = tcp::Config::default().nodelay(true);
    Ok(tcp::tokio::Transport::new(config)
        .map(move |stream, _| CountingStream::new(stream, counters))
        .upgrade(Version::V1Lazy)
        .authenticate(noise::Config::new(keypair)?)
        .multiplex(yamux::Config::default())
        .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
        .boxed())
}

#[cfg(test)]
mod tests {
    use futures::executor::block_on;
    use futures::io::{AsyncReadExt, AsyncWriteExt, Cursor};

    use super::*;

    #[test]
    fn counts_both_directions() {
        let counters = WireCounters::default();
        let mut s = CountingStream::new(Cursor::new(vec![1u8; 10]), counters.clone());
        let mut buf = [0u8; 4];
        block_on(async {
            s.read_exact(&mut buf).await.unwrap();
            s.write_all(b"abcdefgh").await.unwrap();
        });
        let now = counters.snapshot();
        assert_eq!(
            now,
            WireBytes {
                read: 4,
                written: 8
            }
        );
        assert_eq!(
            now.since(WireBytes {
                read: 1,
                written: 10
            }),
            WireBytes {
                read: 3,
                written: 0
            }
        );
    }
}
