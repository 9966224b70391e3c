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
    relay::telemetry::init(&config.log_format);
    let nofile = relay::limits::raise_nofile_limit().context("raising the open-files limit")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        info!(
            listen = %listener.local_addr()?,
            nofile,
            capacity = relay::limits::connection_capacity(nofile),
            history = config.history,
            max_message_bytes = config.max_message_bytes,
            max_outbound_bytes = config.max_outbound_bytes,
            ping_interval = ?config.ping_interval,
            auth = config.auth_secret.is_some() || config.auth_public_key.is_some(),
            tls = config.tls_cert.is_some(),
            allowed_origins = config.allowed_origins.len(),
            message_rate = config.message_rate,
            max_connections_per_ip = config.max_connections_per_ip,
            "relay listening (single node, in memory)"
        );
        relay::run(listener, config, relay::shutdown::signal()).await?;
        info!("relay stopped");
        anyhow::Ok(())
    })
}
