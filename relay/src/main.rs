//! The `relay` binary: configuration, logging, limits, then the library's server.

use anyhow::Context;
use clap::Parser;
use tracing::info;

// mimalloc: fan-out allocates and frees many small `Bytes` across threads, where it is both
// faster and leaner than glibc's allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let config = relay::Config::parse();
    relay::telemetry::logging::init(&config.log_format);
    let nofile =
        relay::edge::fd_limit::raise_nofile_limit().context("raising the open-files limit")?;
    let workers = relay::config::worker_count(config.worker_threads);
    let mut builder = if workers == 1 {
        // One core (`--worker-threads 1`, or the process pinned to one CPU): a current-thread
        // runtime. No work-stealing queues or cross-thread wake-ups to pay for: about 30% lower
        // median latency at 1-2M deliveries/s than a one-worker multi-thread runtime
        // (docs/PERFORMANCE.md).
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(workers);
        builder
    };
    builder
        .enable_all()
        .event_interval(config.event_interval.max(1));
    let runtime = builder.build().context("starting the runtime")?;
    // Every configuration problem (flag combinations, unreadable key or certificate files)
    // ends the process here, before anything listens: one line naming the flag, status 2,
    // as clap does for a malformed flag.
    let relay = match relay::Relay::try_new(config.clone()) {
        Ok(relay) => relay,
        Err(err) => {
            eprintln!("error: {err}");
            std::process::exit(2);
        }
    };
    runtime.block_on(async move {
        let listener = relay::server::bind(config.listen)
            .with_context(|| format!("binding {}", config.listen))?;
        let admin_listener = match config.admin_listen {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding the admin listener {addr}"))?,
            ),
            None => None,
        };
        info!(
            listen = %listener.local_addr()?,
            admin = admin_listener
                .as_ref()
                .and_then(|l| l.local_addr().ok())
                .map(|a| a.to_string())
                .unwrap_or_else(|| {
                    if config.admin_token.is_some() { "/admin/ on the main listener" } else { "off" }.into()
                }),
            nofile,
            capacity = relay::edge::fd_limit::connection_capacity(nofile),
            history = config.history,
            max_message_bytes = config.max_message_bytes,
            max_outbound_bytes = config.max_outbound_bytes,
            ping_interval = ?config.ping_interval,
            auth = config.auth_secret.is_some() || config.auth_public_key.is_some(),
            tls = config.tls_cert.is_some(),
            allowed_origins = config.allowed_origins.len(),
            message_rate = config.message_rate,
            max_connections_per_ip = config.max_connections_per_ip,
            cluster = config.redis_url.as_ref().map(|_| config.cluster_name.as_str()),
            "relay listening ({})",
            relay.history_mode()
        );
        // The admin listener outlives the main one: it stops only after the drain, so
        // `/readyz` there answers 503 while connections close.
        let (admin_stop, admin_stopped) = tokio::sync::oneshot::channel::<()>();
        let admin = admin_listener.map(|admin_listener| {
            let relay = relay.clone();
            tokio::spawn(async move {
                relay
                    .serve_admin(admin_listener, async {
                        let _ = admin_stopped.await;
                    })
                    .await;
            })
        });
        relay.serve(listener, relay::edge::shutdown::signal()).await?;
        let _ = admin_stop.send(());
        if let Some(admin) = admin {
            admin.await.context("admin listener task")?;
        }
        info!("relay stopped");
        anyhow::Ok(())
    })
}
