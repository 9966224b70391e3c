//! `hostile`: the hostile-load suite (see `hostile --help` and loadgen/README.md).

use anyhow::Context;
use clap::Parser;

fn main() -> anyhow::Result<()> {
    let cfg = loadgen::hostile::HostileConfig::parse();
    let report = loadgen::hostile::run(&cfg).context("hostile-load suite")?;
    if let Some(path) = &cfg.json {
        let json = serde_json::to_string_pretty(&report).context("serializing the report")?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    if !cfg.quiet {
        print!("{}", report.table());
    }
    if !report.pass {
        std::process::exit(1);
    }
    Ok(())
}
