//! `loadgen`: see `loadgen --help` and loadgen/README.md.

use anyhow::Context;
use clap::Parser;

fn main() -> anyhow::Result<()> {
    let config = loadgen::Config::parse();
    if config.worker {
        return loadgen::process::worker_main().context("worker process");
    }
    let quiet = config.quiet;
    let report = loadgen::run(config).context("load test failed")?;
    if !quiet {
        print!("{}", loadgen::report::render_table(&report));
    }
    Ok(())
}
