//! How a connection's bytes meet its socket: the one place where plain TCP and TLS differ.
//!
//! Both transports share everything else: the connection task ([`crate::edge::driver`]), its
//! outbox and the flushers that write it ([`crate::chat::flusher`]). Plain TCP writes the queued
//! frames with one `writev`; TLS feeds them to rustls and writes the records it makes. Reads
//! go into the worker thread's scratch buffer either way, through rustls for TLS.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use rustls::ServerConnection;
use tokio::io::Interest;
use tokio::net::TcpStream;

/// Frames per `writev`. 64 x 16-byte `IoSlice`s stay on the stack; the field notes measured
/// 16 frames per call already cutting the per-frame kernel cost 13x against one per call.
pub(crate) const MAX_SLICES: usize = 64;

/// Plaintext room a TLS read needs before it reads more ciphertext: what one read can
/// decrypt at most (rustls reads 4 KiB on top of at most one incomplete record, 16 KiB and a
/// header), rounded up.
const TLS_READ_ROOM: usize = 24 * 1024;

/// `read_tls` calls per TLS read (each takes at most 4 KiB): records that decrypt to nothing
/// must not keep a worker reading one client for as long as it sends.
const TLS_READS: usize = 16;

/// How a write attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wrote {
    /// Everything queued is written.
    Drained,
    /// The socket would block; the connection's task now owns writing.
    Blocked,
    /// The socket failed (reset, broken pipe, a TLS error) or no socket is attached.
    Failed,
}

/// The transport of one connection, kept in its outbox's locked queue so the flushers and the
/// task reach it the same way.
#[derive(Debug, Default)]
pub(crate) enum Wire {
    #[default]
    Plain,
    Tls(Box<Tls>),
}

/// A TLS session over the raw socket, taken over from tokio-rustls after the upgrade.
#[derive(Debug)]
pub(crate) struct Tls {
    conn: ServerConnection,
    /// Plaintext bytes handed to rustls whose records are not all written yet: still part of
    /// the connection's queued bytes, so the slow-consumer cap counts what rustls buffers.
    in_flight: usize,
    /// Our close_notify is queued.
    notified: bool,
}

/// What a read produced.
pub(crate) struct Input {
    /// Plaintext bytes at the start of the scratch buffer.
    pub(crate) got: usize,
    /// The client ended its stream (FIN, or a TLS close_notify).
    pub(crate) eof: bool,
}

impl Wire {
    pub(crate) fn tls(conn: ServerConnection) -> Self {
        Wire::Tls(Box::new(Tls {
            conn,
            in_flight: 0,
            notified: false,
        }))
    }

    /// Bytes waiting below the queue (TLS records not yet written).
    pub(crate) fn has_output(&self) -> bool {
        match self {
            Wire::Plain => false,
            Wire::Tls(tls) => tls.conn.wants_write(),
        }
    }

    /// Queues what must precede the FIN once everything else is written (TLS: close_notify).
    /// Returns whether it queued anything, which must then be written first.
    pub(crate) fn finish(&mut self) -> bool {
        match self {
            Wire::Plain => false,
            Wire::Tls(tls) if tls.notified => false,
            Wire::Tls(tls) => {
                tls.notified = true;
                tls.conn.send_close_notify();
                true
            }
        }
    }

    /// Writes queued frames until they and what rustls holds are written, or the socket would
    /// block. Returns the outcome and the (plaintext) bytes that left the queue's count.
    pub(crate) fn write(
        &mut self,
        socket: &TcpStream,
        frames: &mut VecDeque<Bytes>,
        offset: &mut usize,
        queued: &AtomicUsize,
    ) -> (Wrote, u64) {
        match self {
            Wire::Plain => write_plain(socket, frames, offset, queued),
            Wire::Tls(tls) => tls.write(socket, frames, offset, queued),
        }
    }

    /// Reads from the socket into `out` (plain: one `read`; TLS: ciphertext through rustls).
    pub(crate) fn read(&mut self, socket: &TcpStream, out: &mut [u8]) -> io::Result<Input> {
        match self {
            Wire::Plain => read_plain(socket, out),
            Wire::Tls(tls) => tls.read(socket, out),
        }
    }
}

fn write_plain(
    socket: &TcpStream,
    frames: &mut VecDeque<Bytes>,
    offset: &mut usize,
    queued: &AtomicUsize,
) -> (Wrote, u64) {
    let mut total = 0u64;
    while !frames.is_empty() {
        let mut slices = [IoSlice::new(&[]); MAX_SLICES];
        let count = gather(frames, *offset, &mut slices);
        match socket.try_write_vectored(&slices[..count]) {
            Ok(0) => return (Wrote::Failed, total),
            Ok(written) => {
                queued.fetch_sub(written, Ordering::Relaxed);
                total += written as u64;
                consume(frames, offset, written);
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return (Wrote::Blocked, total),
            Err(_) => return (Wrote::Failed, total),
        }
    }
    (Wrote::Drained, total)
}

fn read_plain(socket: &TcpStream, out: &mut [u8]) -> io::Result<Input> {
    let mut got = 0;
    let result = socket.try_io(Interest::READABLE, || {
        let n = Io(socket).read(out)?;
        got = n;
        // A short read emptied the socket: report it as "would block" so tokio clears the
        // readiness now instead of after one more `recv` that finds nothing (what tokio's own
        // `poll_read` does; a byte that arrives meanwhile raises a new edge-triggered event,
        // so nothing is missed).
        if n > 0 && n < out.len() {
            Err(io::ErrorKind::WouldBlock.into())
        } else {
            Ok(n)
        }
    });
    match result {
        Ok(0) => Ok(Input { got: 0, eof: true }),
        Ok(n) => Ok(Input { got: n, eof: false }),
        Err(err) if err.kind() == io::ErrorKind::WouldBlock => Ok(Input { got, eof: false }),
        Err(err) => Err(err),
    }
}

impl Tls {
    fn write(
        &mut self,
        socket: &TcpStream,
        frames: &mut VecDeque<Bytes>,
        offset: &mut usize,
        queued: &AtomicUsize,
    ) -> (Wrote, u64) {
        loop {
            // Feed only while rustls' outgoing buffer has room (its buffer limit makes the
            // writer take less, then nothing): frames wait in the queue, where a slow
            // consumer's discard can still drop them, not in rustls.
            while !frames.is_empty() {
                let mut slices = [IoSlice::new(&[]); MAX_SLICES];
                let count = gather(frames, *offset, &mut slices);
                match self.conn.writer().write_vectored(&slices[..count]) {
                    Ok(0) => break,
                    Ok(fed) => {
                        self.in_flight += fed;
                        consume(frames, offset, fed);
                    }
                    Err(_) => return (Wrote::Failed, 0),
                }
            }
            if !self.conn.wants_write() {
                // Every record is written: only now do its bytes leave the count.
                let released = std::mem::take(&mut self.in_flight);
                queued.fetch_sub(released, Ordering::Relaxed);
                if frames.is_empty() {
                    return (Wrote::Drained, released as u64);
                }
                // rustls took nothing yet wants to write nothing: it is closed for writing.
                return (Wrote::Failed, released as u64);
            }
            match socket.try_io(Interest::WRITABLE, || self.conn.write_tls(&mut Io(socket))) {
                Ok(0) => return (Wrote::Failed, 0),
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return (Wrote::Blocked, 0),
                Err(_) => return (Wrote::Failed, 0),
            }
        }
    }

    fn read(&mut self, socket: &TcpStream, out: &mut [u8]) -> io::Result<Input> {
        let mut got = 0;
        let mut eof = false;
        let mut blocked = false;
        let mut reads = 0;
        loop {
            while got < out.len() {
                match self.conn.reader().read(&mut out[got..]) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(n) => got += n,
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                    Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => {
                        eof = true;
                        break;
                    }
                    Err(err) => return Err(err),
                }
            }
            // Stop before a read could decrypt more than `out` has room for (or after
            // `TLS_READS`): the socket stays readable, so the task comes back for the rest.
            if eof || blocked || reads == TLS_READS || out.len() - got < TLS_READ_ROOM {
                return Ok(Input { got, eof });
            }
            reads += 1;
            match socket.try_io(Interest::READABLE, || self.conn.read_tls(&mut Io(socket))) {
                // rustls notes the EOF; the plaintext loop then reports it.
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => blocked = true,
                Err(err) => return Err(err),
            }
            if let Err(err) = self.conn.process_new_packets() {
                // rustls queued an alert saying why: send it if the socket takes it now.
                let _ = socket.try_io(Interest::WRITABLE, || self.conn.write_tls(&mut Io(socket)));
                return Err(io::Error::new(io::ErrorKind::InvalidData, err));
            }
        }
    }
}

/// Takes the plaintext rustls decrypted but tokio-rustls did not hand out yet (bytes that
/// came right behind the upgrade request), so the connection task starts with all of it.
pub(crate) fn take_plaintext(conn: &mut ServerConnection, into: &mut Vec<u8>) {
    let mut chunk = [0u8; 4096];
    while let Ok(n) = conn.reader().read(&mut chunk) {
        if n == 0 {
            break;
        }
        into.extend_from_slice(&chunk[..n]);
    }
}

/// The socket as `std::io` for rustls and `read`, without tokio's readiness (callers go through
/// `try_io`, which keeps it).
struct Io<'a>(&'a TcpStream);

impl Read for Io<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*socket2::SockRef::from(self.0)).read(buf)
    }
}

impl Write for Io<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*socket2::SockRef::from(self.0)).write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        (&*socket2::SockRef::from(self.0)).write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Points `slices` at the unwritten bytes of up to [`MAX_SLICES`] frames from the front of
/// `frames`, the first from `offset`; returns how many it filled.
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
