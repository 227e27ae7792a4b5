//! The frame protocol: its name and its framing.
//!
//! A frame stream is a libp2p substream negotiated as [`PROTOCOL_NAME`] that carries frames in one
//! direction only (the opener writes, the acceptor reads). Each frame is a **4-byte big-endian
//! unsigned length** followed by that many bytes of payload. The payload is opaque here: the node
//! encodes core frames (CBOR) itself.
//!
//! A fixed-width prefix rather than a varint: it costs at most 3 bytes more per frame, and a reader
//! learns the whole announced length from one `read_exact`, so a prefix above the receiver's
//! maximum is recognised before a single payload byte is buffered.

use std::io;

use bytes::Bytes;
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;

/// Name of the frame protocol negotiated with multistream-select.
pub const PROTOCOL_NAME: StreamProtocol = StreamProtocol::new("/routefabric/frame/0.1.0");

/// Bytes of the length prefix in front of every frame.
pub const LENGTH_PREFIX_BYTES: usize = 4;

/// Chunk in which the payload of a rejected frame is read and dropped.
const DISCARD_CHUNK_BYTES: usize = 8 * 1024;

/// Why a received frame was not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// The length prefix announced more than the receiver's `max_frame_bytes`; the announced bytes
    /// were read and dropped without being buffered, and the stream goes on with the next frame.
    Oversized {
        /// Length the sender announced.
        len: u64,
        /// The receiver's limit.
        max: usize,
    },
}

/// One result of reading a frame stream.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// A whole frame within the limit.
    Frame(Bytes),
    /// A frame that was read past and dropped.
    Rejected(RejectReason),
}

/// Errors of the frame protocol.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The frame is larger than the 4-byte length prefix can announce.
    #[error("frame of {len} bytes does not fit a 32-bit length prefix; split it")]
    TooLong {
        /// Length of the frame.
        len: usize,
    },
    /// The stream failed or ended in the middle of a frame.
    #[error("frame stream failed: {0}; the stream is dropped and reopened for the next frame")]
    Io(#[from] io::Error),
}

/// Appends one frame (prefix and payload) to `buf`, so that a batch of small frames goes out in
/// one write instead of two muxer frames per frame.
pub(crate) fn encode_frame(buf: &mut Vec<u8>, frame: &[u8]) -> Result<(), ProtocolError> {
    let len =
        u32::try_from(frame.len()).map_err(|_| ProtocolError::TooLong { len: frame.len() })?;
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(frame);
    Ok(())
}

/// Writes an encoded batch and flushes it.
pub(crate) async fn write_batch<S>(stream: &mut S, batch: &[u8]) -> Result<(), ProtocolError>
where
    S: AsyncWrite + Unpin,
{
    stream.write_all(batch).await?;
    stream.flush().await?;
    Ok(())
}

/// Reads the next frame. A clean end of stream before a prefix is `Ok(None)`; an end inside a
/// frame is an error. A frame longer than `max` is read in fixed chunks and dropped.
pub(crate) async fn read_frame<S>(
    stream: &mut S,
    max: usize,
) -> Result<Option<Inbound>, ProtocolError>
where
    S: AsyncRead + Unpin,
{
    let mut prefix = [0u8; LENGTH_PREFIX_BYTES];
    // Read the first byte alone so that a clean close between frames is told apart from a
    // truncated prefix.
    let n = stream.read(&mut prefix[..1]).await?;
    if n == 0 {
        return Ok(None);
    }
    stream.read_exact(&mut prefix[1..]).await?;
    let len = u32::from_be_bytes(prefix);
    let len_usize = usize::try_from(len).unwrap_or(usize::MAX);
    if len_usize > max {
        discard(stream, u64::from(len)).await?;
        return Ok(Some(Inbound::Rejected(RejectReason::Oversized {
            len: u64::from(len),
            max,
        })));
    }
    let mut payload = vec![0u8; len_usize];
    stream.read_exact(&mut payload).await?;
    Ok(Some(Inbound::Frame(Bytes::from(payload))))
}

/// Reads and drops exactly `len` bytes, one fixed-size chunk at a time.
async fn discard<S>(stream: &mut S, mut len: u64) -> io::Result<()>
where
    S: AsyncRead + Unpin,
{
    let mut chunk = [0u8; DISCARD_CHUNK_BYTES];
    while len > 0 {
        let want = usize::try_from(len).map_or(DISCARD_CHUNK_BYTES, |l| l.min(DISCARD_CHUNK_BYTES));
        let buf = chunk.get_mut(..want).unwrap_or_default();
        let n = stream.read(buf).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        len = len.saturating_sub(n as u64);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use futures::executor::block_on;
    use futures::io::Cursor;

    use super::*;

    fn encode(frames: &[&[u8]]) -> Vec<u8> {
        let mut batch = Vec::new();
        for f in frames {
            encode_frame(&mut batch, f).unwrap();
        }
        let mut out = Cursor::new(Vec::new());
        block_on(write_batch(&mut out, &batch)).unwrap();
        out.into_inner()
    }

    #[test]
    fn round_trip_and_clean_end() {
        let wire = encode(&[b"hello", b"", b"world"]);
        assert_eq!(wire.len(), 3 * LENGTH_PREFIX_BYTES + 10);
        let mut r = Cursor::new(wire);
        block_on(async {
            for want in [&b"hello"[..], b"", b"world"] {
                match read_frame(&mut r, 16).await.unwrap() {
                    Some(Inbound::Frame(f)) => assert_eq!(&f[..], want),
                    other => panic!("unexpected {other:?}"),
                }
            }
            assert!(read_frame(&mut r, 16).await.unwrap().is_none());
        });
    }

    #[test]
    fn oversized_frame_is_skipped_and_the_next_one_read() {
        let big = vec![7u8; 50_000];
        let wire = encode(&[&big, b"next"]);
        let mut r = Cursor::new(wire);
        block_on(async {
            match read_frame(&mut r, 1000).await.unwrap() {
                Some(Inbound::Rejected(RejectReason::Oversized { len, max })) => {
                    assert_eq!((len, max), (50_000, 1000));
                }
                other => panic!("unexpected {other:?}"),
            }
            match read_frame(&mut r, 1000).await.unwrap() {
                Some(Inbound::Frame(f)) => assert_eq!(&f[..], b"next"),
                other => panic!("unexpected {other:?}"),
            }
        });
    }

    #[test]
    fn truncated_frames_are_errors() {
        let mut wire = encode(&[b"hello"]);
        wire.truncate(LENGTH_PREFIX_BYTES + 2);
        let mut r = Cursor::new(wire);
        assert!(block_on(read_frame(&mut r, 16)).is_err());

        let mut r = Cursor::new(vec![0u8, 0]);
        assert!(block_on(read_frame(&mut r, 16)).is_err());

        // An oversized frame cut short is an error too, not a silent skip.
        let mut r = Cursor::new(vec![0u8, 0, 1, 0, 1, 2, 3]);
        assert!(block_on(read_frame(&mut r, 16)).is_err());
    }
}
