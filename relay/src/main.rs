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
            cluster = config.redis_url.as_ref().map(|_| config.cluster_name.as_str()),
            "relay listening ({})",
            if config.redis_url.is_some() { "cluster mode, Redis backplane" } else { "single node, in memory" }
        );
        relay::run(listener, config, relay::shutdown::signal()).await?;
        info!("relay stopped");
        anyhow::Ok(())
    })
}
