//! Writing `--json`, `--hdr`, `--plot` and `--html`.

use std::path::Path;

use hdrhistogram::serialization::{Serializer, V2DeflateSerializer};

use crate::config::Config;
use crate::plot;
use crate::report::Report;
use crate::Error;

fn write(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    std::fs::write(path, bytes).map_err(|source| Error::Output {
        path: path.to_path_buf(),
        source,
    })
}

pub fn write_outputs(config: &Config, report: &Report) -> Result<(), Error> {
    if let Some(path) = &config.json {
        let mut json = serde_json::to_vec_pretty(report).map_err(|e| Error::Output {
            path: path.clone(),
            source: e.into(),
        })?;
        json.push(b'\n');
        write(path, &json)?;
    }
    let hist = report
        .latency_histogram
        .clone()
        .unwrap_or_else(crate::stats::new_histogram);
    if let Some(path) = &config.hdr {
        let mut buf = Vec::new();
        V2DeflateSerializer::new()
            .serialize(&hist, &mut buf)
            .map_err(|e| Error::Histogram(format!("{e:?}")))?;
        write(path, &buf)?;
    }
    if let Some(path) = &config.plot {
        let title = format!(
            "chatrelay {}: {} clients, {}/s, delivered {:.0}/s, p99 {:.2} ms",
            report.config.scenario,
            report.config.clients,
            report.config.rate,
            report.messages.delivered_per_second,
            report.latency_ms.p99
        );
        write(path, plot::percentile_svg(&hist, &title).as_bytes())?;
    }
    if let Some(path) = &config.observe.html {
        crate::html::write(path, report)?;
    }
    Ok(())
}
