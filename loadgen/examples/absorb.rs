//! Absorb-rate benchmark: how many delivered messages per second one generator thread can take.
//!
//! A fake relay thread writes pre-built, relay-shaped message frames (64 KiB chunks, re-stamped
//! in place) to every client as fast as the sockets take them; the generator runs its normal
//! receive path on ONE runtime thread. Build with --release:
//!
//!     cargo run --release -p loadgen --example absorb -- [connections] [seconds]

// The fake relay is test code, not part of the library: the benchmark borrows it from there.
#[path = "../tests/support/fake/mod.rs"]
mod fake;

use std::time::Duration;

use fake::{FakeOptions, FakeRelay};
use loadgen::{Config, Scenario};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let connections: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(8);
    let seconds: f64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(5.0);
    let relay = FakeRelay::start(FakeOptions {
        blast_for: Some(Duration::from_secs_f64(seconds)),
        ..FakeOptions::default()
    })?;
    // Each client sends one message at the start (that starts its blast), then only receives.
    let config = Config {
        urls: vec![relay.url()],
        clients: connections,
        rooms: 1,
        rate: connections as f64 / (seconds + 1.0),
        duration: Duration::from_secs_f64(seconds + 1.0),
        drain: Duration::from_millis(500),
        scenario: Scenario::Fanout,
        threads: Some(1),
        no_progress: true,
        quiet: true,
        ..Config::default()
    };
    let report = loadgen::run(config)?;
    let delivered = report.messages.delivered;
    let blasted = relay.blasted.load(std::sync::atomic::Ordering::Relaxed);
    let cpu_s = report.loadgen.run_cpu_percent / 100.0 * (seconds + 1.0);
    println!("connections            {connections}");
    println!("blast time             {seconds:.1} s");
    println!("frames written         {blasted}");
    println!(
        "frames delivered       {delivered}  (dup {}, out of order {}, gaps {})",
        report.messages.duplicated, report.messages.out_of_order, report.messages.seq_gaps
    );
    println!(
        "wall rate              {:.2} M msg/s",
        delivered as f64 / seconds / 1e6
    );
    println!(
        "generator thread CPU   {cpu_s:.2} s ({:.0}% of one core)",
        report.loadgen.max_thread_cpu_percent
    );
    println!(
        "absorb rate per core   {:.2} M msg/s per CPU-second",
        delivered as f64 / cpu_s.max(1e-9) / 1e6
    );
    Ok(())
}
