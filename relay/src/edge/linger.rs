//! The HTTP phase's socket wrapper: a closing connection's last bytes get time to leave.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

/// How long a connection the relay ends after its last answer keeps draining what the client
/// still sends (see [`Linger`]).
const LINGER: Duration = Duration::from_secs(2);

/// The HTTP phase's socket. When hyper has sent its last answer and shut the write side (a
/// `Connection: close`, the request budget spent) the client may still have pipelined
/// requests in flight: closing the socket with them unread makes the kernel send a reset,
/// which can destroy answers the client has not read yet. So on drop a socket whose write
/// side was shut is read and discarded until the client closes too, for at most 2 s
/// (`LINGER`; what Apache calls a lingering close). A socket dropped without that (the handshake
/// timeout, an upgrade, which takes the stream out with [`Linger::into_inner`]) just closes.
#[derive(Debug)]
pub struct Linger<S: AsyncRead + Unpin + Send + 'static> {
    io: Option<S>,
    shut: bool,
}

impl<S: AsyncRead + Unpin + Send + 'static> Linger<S> {
    pub fn new(io: S) -> Self {
        Self {
            io: Some(io),
            shut: false,
        }
    }

    /// The socket itself, for the WebSocket after an upgrade.
    pub fn into_inner(mut self) -> Option<S> {
        self.io.take()
    }

    fn io(&mut self) -> std::io::Result<&mut S> {
        self.io
            .as_mut()
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotConnected))
    }
}

impl<S: AsyncRead + Unpin + Send + 'static> Drop for Linger<S> {
    fn drop(&mut self) {
        let Some(mut io) = self.io.take().filter(|_| self.shut) else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let mut sink = [0u8; 4096];
                let drain = async {
                    use tokio::io::AsyncReadExt;
                    while matches!(io.read(&mut sink).await, Ok(n) if n > 0) {}
                };
                let _ = tokio::time::timeout(LINGER, drain).await;
            });
        }
    }
}

impl<S: AsyncRead + Unpin + Send + 'static> AsyncRead for Linger<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.io() {
            Ok(io) => std::pin::Pin::new(io).poll_read(cx, buf),
            Err(err) => std::task::Poll::Ready(Err(err)),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncWrite for Linger<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.io() {
            Ok(io) => std::pin::Pin::new(io).poll_write(cx, buf),
            Err(err) => std::task::Poll::Ready(Err(err)),
        }
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.io() {
            Ok(io) => std::pin::Pin::new(io).poll_write_vectored(cx, bufs),
            Err(err) => std::task::Poll::Ready(Err(err)),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.io.as_ref().is_some_and(AsyncWrite::is_write_vectored)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.io() {
            Ok(io) => std::pin::Pin::new(io).poll_flush(cx),
            Err(err) => std::task::Poll::Ready(Err(err)),
        }
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.shut = true;
        match self.io() {
            Ok(io) => std::pin::Pin::new(io).poll_shutdown(cx),
            Err(err) => std::task::Poll::Ready(Err(err)),
        }
    }
}
