//! The write side of a connection: everything queued goes out in vectored writes.

use std::collections::VecDeque;
use std::io::{self, IoSlice};

use bytes::Bytes;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::outbox::Outbox;

/// Frames per `writev`. 64 x 16-byte `IoSlice`s stay on the stack; the field notes measured
/// 16 frames per call already cutting the per-frame kernel cost 13x against one per call.
pub(crate) const MAX_SLICES: usize = 64;

/// Ring slots a drained queue keeps (4 x 32 bytes): the allocator's smallest ring.
pub const KEEP_SLOTS: usize = 4;

/// A connection's batch of frames taken from its outbox and not yet fully written.
#[derive(Debug, Default)]
pub struct Writer {
    pending: VecDeque<Bytes>,
    /// Bytes of `pending[0]` already written.
    offset: usize,
    /// Bytes written since the last [`Writer::take_written`]: the connection adds them to the
    /// node's counter once per wake-up, not once per frame.
    written: u64,
}

impl Writer {
    pub fn batch(&mut self) -> &mut VecDeque<Bytes> {
        &mut self.pending
    }

    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Appends a frame the writer adds by itself (the close frame).
    pub fn push(&mut self, frame: Bytes, outbox: &Outbox) {
        outbox.adopt(frame.len());
        self.pending.push_back(frame);
    }

    /// Drops unsent frames, except one already partly written: cutting a frame in half
    /// would corrupt the stream for the close frame that follows. Returns how many it dropped.
    pub fn discard(&mut self, outbox: &Outbox) -> usize {
        let keep = usize::from(self.offset > 0);
        let frames = self.pending.len().saturating_sub(keep);
        let dropped: usize = self.pending.iter().skip(keep).map(Bytes::len).sum();
        self.pending.truncate(keep);
        outbox.release(dropped);
        frames
    }

    /// Bytes written since the last call.
    pub fn take_written(&mut self) -> u64 {
        std::mem::take(&mut self.written)
    }

    /// Writes as much as the socket takes without blocking. `Ok(true)` when all is written.
    pub fn flush(&mut self, stream: &TcpStream, outbox: &Outbox) -> io::Result<bool> {
        while !self.pending.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let count = gather(&self.pending, self.offset, &mut slices);
            match stream.try_write_vectored(&slices[..count]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => self.advance(written, outbox),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(err) => return Err(err),
            }
        }
        // After a burst, give the large ring back: an idle connection should not keep it.
        // A small one stays, so a queue toggling between one frame and none (the common case
        // at light load) never allocates.
        if self.pending.capacity() > KEEP_SLOTS {
            self.pending = VecDeque::new();
        }
        Ok(true)
    }

    /// Writes everything pending to an async stream (the TLS path), then flushes it.
    ///
    /// Cancel-safe between writes: each completed write is accounted before the next await,
    /// and a write that has not completed took nothing. The plain-TCP path uses [`flush`]
    /// (`try_write_vectored`, no future per write) instead.
    ///
    /// [`flush`]: Writer::flush
    pub async fn write_to<W: AsyncWrite + Unpin>(
        &mut self,
        stream: &mut W,
        outbox: &Outbox,
    ) -> io::Result<()> {
        while !self.pending.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let count = gather(&self.pending, self.offset, &mut slices);
            match stream.write_vectored(&slices[..count]).await? {
                0 => return Err(io::ErrorKind::WriteZero.into()),
                written => self.advance(written, outbox),
            }
        }
        if self.pending.capacity() > KEEP_SLOTS {
            self.pending = VecDeque::new();
        }
        stream.flush().await
    }

    fn advance(&mut self, written: usize, outbox: &Outbox) {
        outbox.release(written);
        self.written += written as u64;
        consume(&mut self.pending, &mut self.offset, written);
    }
}

/// Points `slices` at the unwritten bytes of up to [`MAX_SLICES`] frames from the front of
/// `frames`, the first from `offset`; returns how many it filled. Shared by the TLS writer,
/// the benchmark's writer and the plain-TCP outbox.
pub(crate) fn gather<'a>(
    frames: &'a VecDeque<Bytes>,
    offset: usize,
    slices: &mut [IoSlice<'a>; MAX_SLICES],
) -> usize {
    let mut count = 0;
    for (slot, frame) in slices.iter_mut().zip(frames.iter()) {
        let start = if count == 0 { offset } else { 0 };
        *slot = IoSlice::new(&frame[start..]);
        count += 1;
    }
    count
}

/// Takes `written` bytes off the front of `frames`, `offset` bytes into the first of them.
pub(crate) fn consume(frames: &mut VecDeque<Bytes>, offset: &mut usize, mut written: usize) {
    while let Some(front) = frames.front() {
        let left = front.len() - *offset;
        if written < left {
            *offset += written;
            return;
        }
        written -= left;
        *offset = 0;
        frames.pop_front();
    }
}
