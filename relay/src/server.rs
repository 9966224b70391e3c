//! Accepting connections, serving HTTP until the upgrade, and the shutdown sequence.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::error::Error;
use crate::http;
use crate::hub::Hub;
use crate::stats::StatsSnapshot;

/// A relay node. Cheap to clone; clones share the node.
#[derive(Debug, Clone)]
pub struct Relay {
    hub: Arc<Hub>,
    config: Arc<Config>,
}

impl Relay {
    pub fn new(config: Config) -> Self {
        Self {
            hub: Arc::new(Hub::new(&config)),
            config: Arc::new(config),
        }
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.hub.stats.snapshot()
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// Serves `listener` until `shutdown` resolves, then closes every client with 1001 and
    /// waits up to `--shutdown-timeout` for them to go.
    pub async fn serve(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), Error> {
        // Every connection task holds a clone of `drain_tx`; when all are gone, `recv`
        // returns `None` (the mini-redis pattern).
        let (drain_tx, mut drain_rx) = mpsc::channel::<()>(1);
        let (stop_tx, stop_rx) = watch::channel(false);
        let housekeeping = tokio::spawn(self.hub.clone().housekeeping(stop_rx.clone()));
        let backplane = self
            .hub
            .backplane
            .as_ref()
            .and_then(|b| b.start(self.hub.clone(), stop_rx.clone()));
        tokio::pin!(shutdown);
        let mut backoff = Duration::from_millis(5);
        loop {
            let accepted = tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, peer)) => {
                    backoff = Duration::from_millis(5);
                    // Chat frames are small and latency-bound; Nagle would hold them back.
                    if let Err(err) = stream.set_nodelay(true) {
                        debug!(peer = %peer, error = %err, "set_nodelay failed");
                    }
                    let task = serve_http(
                        self.hub.clone(),
                        stream,
                        peer,
                        self.config.handshake_timeout,
                        stop_rx.clone(),
                        drain_tx.clone(),
                    );
                    tokio::spawn(task);
                }
                Err(err) => {
                    // Out of file descriptors (or a similar transient failure): accepting
                    // again at once would spin, so back off and let connections close.
                    warn!(error = %err, retry_in_ms = backoff.as_millis() as u64, "accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
        drop(listener);
        let open = self.hub.connection_count();
        info!(open, "shutting down: closing every connection with 1001");
        let _ = stop_tx.send(true);
        self.hub.begin_shutdown();
        drop(drain_tx);
        match tokio::time::timeout(self.config.shutdown_timeout, drain_rx.recv()).await {
            Ok(_) => info!("all connections closed"),
            Err(_) => warn!(
                remaining = self.hub.connection_count(),
                "shutdown timeout reached with connections still open"
            ),
        }
        housekeeping.abort();
        if let Some(backplane) = backplane {
            // Let it tell Redis this node's members are gone (bounded: Redis may be away).
            if tokio::time::timeout(Duration::from_secs(3), backplane)
                .await
                .is_err()
            {
                warn!("the Redis backplane did not finish its goodbye in time");
            }
        }
        Ok(())
    }
}

/// One TCP connection's HTTP phase, bounded by the handshake timeout.
async fn serve_http(
    hub: Arc<Hub>,
    stream: TcpStream,
    peer: std::net::SocketAddr,
    handshake_timeout: Duration,
    mut stop: watch::Receiver<bool>,
    drain: mpsc::Sender<()>,
) {
    let service = service_fn(move |req| http::route(req, hub.clone(), peer, drain.clone()));
    let connection = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    // The connection future resolves as soon as an upgrade hands the socket over, so the
    // timeout bounds exactly the time before the upgrade (or a plain HTTP exchange).
    tokio::select! {
        result = tokio::time::timeout(handshake_timeout, connection) => match result {
            Ok(Ok(())) => {}
            Ok(Err(err)) => debug!(peer = %peer, error = %err, "HTTP connection error"),
            Err(_) => debug!(peer = %peer, "handshake timeout: dropping connection"),
        },
        _ = stop.changed() => {}
    }
}

/// Runs a relay on `listener` until `shutdown` resolves (see [`Relay::serve`]).
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    Relay::new(config).serve(listener, shutdown).await
}
