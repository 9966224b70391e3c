//! Accepting connections, serving HTTP until the upgrade, and the shutdown sequence.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use crate::chat::backend::Backend;
use crate::chat::hub::Hub;
use crate::cluster::Backplane;
use crate::config::Config;
use crate::edge::admission::{Admission, Held, Permit, Refusal};
use crate::edge::http;
use crate::edge::linger::Linger;
use crate::edge::security::Security;
use crate::edge::tls;
use crate::error::Error;
use crate::hooks::gate::HttpGate;
use crate::hooks::webhook::Webhook;
use crate::ops::admin::AdminSettings;
use crate::routes::Node;
use crate::store::Store;
use crate::telemetry::metrics::hooks::HookKind;
use crate::telemetry::metrics::Rejection;
use crate::telemetry::stats::StatsSnapshot;

/// A relay node. Cheap to clone; clones share the node.
#[derive(Clone)]
pub struct Relay {
    node: Arc<Node>,
    config: Arc<Config>,
    /// Set with `--tls-cert`/`--tls-key`: every accepted connection speaks TLS first.
    tls: Option<TlsAcceptor>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("node", &self.node)
            .field("config", &self.config)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Relay {
    /// A relay for `config`.
    ///
    /// # Panics
    /// If the files the configuration names (auth key, TLS certificate and key) cannot be
    /// loaded; [`Relay::try_new`] returns that as an error instead.
    pub fn new(config: Config) -> Self {
        match Self::try_new(config) {
            Ok(relay) => relay,
            Err(err) => panic!("{err}"),
        }
    }

    /// A relay for `config`, loading the auth key and TLS files it names.
    pub fn try_new(config: Config) -> Result<Self, Error> {
        // Here and not in `Hub::new`, which benchmarks use: installing it calibrates a clock.
        let _ = crate::telemetry::metrics::install_process_recorder();
        config.validate().map_err(Error::Config)?;
        // Files the flags name are read before the data directory is touched: a bad flag
        // never leaves a database or a lock behind.
        let security = Security::from_config(&config)?;
        let tls = tls::acceptor_from_config(&config)?;
        let mut hub = Hub::new(&config);
        let pool = crate::hooks::http::Pool::from_config(&config)?;
        if let Some(gate) = HttpGate::from_config(&config, &pool, &hub.metrics.hooks)? {
            hub.gate = Some(Arc::new(gate));
        }
        let backplane = Backplane::from_config(&config, &hub.node_tag).map(Arc::new);
        if let Some(backplane) = &backplane {
            hub.backend = Backend::Remote(backplane.clone());
        }
        // One node keeps its history on disk unless told not to; a cluster keeps it in Redis.
        let store = if backplane.is_none() && !config.memory {
            let store = Arc::new(Store::open(&config)?);
            hub.backend = Backend::Durable(store.clone());
            Some(store)
        } else {
            None
        };
        // The webhooks hear every room's events through the hub's tap; with a store, their
        // delivery follows its log.
        let feed = store
            .clone()
            .map(|store| store as Arc<dyn crate::chat::tap::LogFeed>);
        let webhook = Webhook::from_config(
            &config,
            &pool,
            hub.metrics.hooks.of(HookKind::Webhook).clone(),
            &hub.node_tag,
            feed,
        )?;
        if let Some(webhook) = &webhook {
            hub.tap = Some(webhook.clone());
        }
        let node = Node {
            hub: Arc::new(hub),
            backplane,
            store,
            webhook,
            admission: Arc::new(Admission::new(
                &config,
                crate::edge::fd_limit::current_capacity() as usize,
            )),
            security,
            admin: AdminSettings::from(&config),
        };
        Ok(Self {
            node: Arc::new(node),
            config: Arc::new(config),
            tls,
        })
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.node.hub.stats.snapshot()
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.node.hub
    }

    /// Where this node keeps its rooms' history, in words (the start-up line).
    pub fn history_mode(&self) -> String {
        match (&self.node.backplane, &self.node.store) {
            (Some(_), _) => "cluster mode, Redis backplane".into(),
            (None, Some(store)) => {
                format!("single node, history on disk in {}", store.dir().display())
            }
            (None, None) => "single node, in memory".into(),
        }
    }

    /// Blocks until every message accepted so far is stored and appended to its room (queued
    /// for its members); at once without history on disk. For tests and tools, off the event loop.
    pub fn store_barrier(&self) {
        if let Some(store) = &self.node.store {
            store.barrier();
        }
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
        let hub = &self.node.hub;
        let token_leeway = self.node.security.verifier.as_ref().map(|v| v.leeway_secs);
        let housekeeping = tokio::spawn(hub.clone().housekeeping(token_leeway, stop_rx.clone()));
        let flushers: Vec<_> = (0..hub.flush_list_count())
            .map(|slot| tokio::spawn(crate::chat::flusher::run(hub.clone(), slot)))
            .collect();
        let metrics_upkeep =
            tokio::spawn(crate::ops::exposition::upkeep(hub.clone(), stop_rx.clone()));
        let departures = tokio::spawn(hub.clone().run_departures());
        let backplane = self
            .node
            .backplane
            .as_ref()
            .and_then(|b| b.start(hub.clone(), stop_rx.clone()));
        if let Some(store) = &self.node.store {
            store.start(hub)?;
        }
        let (webhook_stop, webhook_stop_rx) = watch::channel(false);
        let webhook = self
            .node
            .webhook
            .as_ref()
            .map(|webhook| webhook.start(webhook_stop_rx));
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
                    // A trusted proxy carries many users: its requests are admitted by the
                    // client address each one names (see `admission`).
                    let proxied = self.node.security.proxies.is_trusted(peer.ip());
                    let admitted = if proxied {
                        self.node.admission.admit_proxy()
                    } else {
                        self.node.admission.admit(peer.ip())
                    };
                    if let Err(refusal) = admitted {
                        debug!(peer = %peer, ?refusal, "connection refused by a limit");
                    }
                    let task = serve_http(
                        self.node.clone(),
                        stream,
                        Peer {
                            addr: peer,
                            proxied,
                        },
                        self.tls.clone(),
                        self.config.handshake_timeout,
                        http::RequestBudget::new(
                            self.config.http_requests_per_connection,
                            self.config.http_request_rate,
                        ),
                        stop_rx.clone(),
                        drain_tx.clone(),
                        admitted,
                    );
                    tokio::spawn(task);
                }
                Err(err) => {
                    hub.metrics.rejected(Rejection::AcceptError);
                    // Out of file descriptors (or a similar transient failure): accepting
                    // again at once would spin, so back off and let connections close.
                    warn!(error = %err, retry_in_ms = backoff.as_millis() as u64, "accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
        drop(listener);
        let open = hub.connection_count();
        info!(open, "shutting down: closing every connection with 1001");
        let _ = stop_tx.send(true);
        if let Some(store) = self.node.store.clone() {
            // Messages accepted so far are stored and appended before the 1001 closes go into
            // the queues, so they reach their members first (bounded: a slow disk must not
            // hold the shutdown past its timeout).
            let stored = tokio::task::spawn_blocking(move || store.barrier());
            if tokio::time::timeout(self.config.shutdown_timeout, stored)
                .await
                .is_err()
            {
                warn!("the history store did not catch up before the shutdown timeout");
            }
        }
        hub.begin_shutdown();
        drop(drain_tx);
        match tokio::time::timeout(self.config.shutdown_timeout, drain_rx.recv()).await {
            Ok(_) => info!("all connections closed"),
            Err(_) => warn!(
                remaining = hub.connection_count(),
                "shutdown timeout reached with connections still open"
            ),
        }
        if let Some(task) = webhook {
            // After the drain, so what it published still goes out (memory); before the
            // store stops, so the writer keeps the last cursor (durable).
            let _ = webhook_stop.send(true);
            // Bounded: the backend may be away (what is left is logged and counted).
            if tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
            {
                warn!("the webhook task did not finish in time");
            }
        }
        if let Some(store) = self.node.store.clone() {
            // What clients sent during the drain is stored before the exit (the writer stops
            // after its queue; nothing more is taken).
            if tokio::task::spawn_blocking(move || store.stop())
                .await
                .is_err()
            {
                warn!("the history store's writer did not stop cleanly");
            }
        }
        housekeeping.abort();
        for flusher in flushers {
            flusher.abort();
        }
        metrics_upkeep.abort();
        departures.abort();
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

    /// Serves the admin API, `/metrics`, `/healthz` and `/readyz` on `listener` (the
    /// `--admin-listen` address) until `shutdown` resolves. Resolve it after [`Relay::serve`]
    /// returns, so `/readyz` keeps answering 503 while connections drain.
    pub async fn serve_admin(&self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        crate::ops::admin::serve(
            self.node.hub.clone(),
            self.node.admin.clone(),
            listener,
            shutdown,
        )
        .await;
    }
}

/// The TCP peer of a connection, and whether it is a `--trusted-proxy`.
#[derive(Debug, Clone, Copy)]
struct Peer {
    addr: std::net::SocketAddr,
    proxied: bool,
}

/// The client behind one request: the peer itself, or behind a trusted proxy the address its
/// headers name, now counted under the per-address limits (or the refusal to answer with).
fn client_of(
    node: &Node,
    peer: Peer,
    held: &Held,
    headers: &hyper::HeaderMap,
) -> Result<std::net::SocketAddr, Refusal> {
    if !peer.proxied {
        return Ok(peer.addr);
    }
    let client = node.security.proxies.client_addr(peer.addr, headers);
    if let Err(refusal) = held.permit.assign(client.ip()) {
        node.hub.metrics.rejected(refusal.into());
        debug!(peer = %peer.addr, client = %client, ?refusal, "request refused by a limit");
        return Err(refusal);
    }
    Ok(client)
}

/// One TCP connection's HTTP phase (after its TLS handshake, with TLS), bounded as a whole
/// by the handshake timeout.
#[allow(
    clippy::too_many_arguments,
    reason = "one call site; a struct would only rename the arguments"
)]
async fn serve_http(
    node: Arc<Node>,
    stream: TcpStream,
    peer: Peer,
    tls: Option<TlsAcceptor>,
    handshake_timeout: Duration,
    budget: http::RequestBudget,
    mut stop: watch::Receiver<bool>,
    drain: mpsc::Sender<()>,
    admitted: Result<Permit, Refusal>,
) {
    let deadline = tokio::time::Instant::now() + handshake_timeout;
    let hub_for_metrics = node.hub.clone();
    if let Err(refusal) = admitted {
        node.hub.metrics.rejected(refusal.into());
    }
    let held = admitted.map(|permit| Arc::new(Held { permit, drain }));
    let budget = Arc::new(budget);
    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let (node, held, budget) = (node.clone(), held.clone(), budget.clone());
        async move {
            let held = match held {
                Ok(held) => held,
                Err(refusal) => return Ok(http::refused(refusal)),
            };
            let (start, last) = budget.charge(tokio::time::Instant::now());
            if let Some(start) = start {
                tokio::time::sleep_until(start).await;
            }
            let mut response = match client_of(&node, peer, &held, req.headers()) {
                Ok(client) => crate::routes::route(req, node, client, held).await?,
                Err(refusal) => http::refused(refusal),
            };
            if last {
                http::close_after(&mut response);
            }
            Ok(response)
        }
    });
    let served = async {
        match tls {
            None => serve_io(stream, service).await,
            Some(acceptor) => match acceptor.accept(stream).await {
                Ok(tls_stream) => serve_io(tls_stream, service).await,
                Err(err) => debug!(peer = %peer.addr, error = %err, "TLS handshake failed"),
            },
        }
    };
    // The connection future resolves as soon as an upgrade hands the socket over, so the
    // timeout bounds exactly the time before the upgrade (or a plain HTTP exchange).
    tokio::select! {
        result = tokio::time::timeout_at(deadline, served) => if result.is_err() {
            hub_for_metrics.metrics.rejected(Rejection::HandshakeTimeout);
            debug!(peer = %peer.addr, "handshake timeout: dropping connection");
        },
        _ = stop.changed() => {}
    }
}

async fn serve_io<I, S>(io: I, service: S)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = hyper::Response<http::Body>,
            Error = std::convert::Infallible,
        > + Send,
    S::Future: Send + 'static,
{
    let connection = http::http1_builder()
        .serve_connection(TokioIo::new(Linger::new(io)), service)
        .with_upgrades();
    if let Err(err) = connection.await {
        debug!(error = %err, "HTTP connection error");
    }
}

/// Pending connections the kernel queues before `accept`. tokio's default (1024) overflows in
/// a connect storm (thousands of clients reconnecting at once after a deploy): each dropped
/// SYN is retried by the client only a second later. The kernel caps it at
/// `net.core.somaxconn` (4096 on current kernels).
const LISTEN_BACKLOG: u32 = 8192;

/// Binds the relay's listener (with `SO_REUSEADDR`, so a restart does not wait out
/// `TIME_WAIT`) and a backlog sized for reconnect storms.
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Runs a relay on `listener` until `shutdown` resolves (see [`Relay::serve`]).
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    Relay::try_new(config)?.serve(listener, shutdown).await
}
