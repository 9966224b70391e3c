//! `--metrics-url`: the relay's own numbers, read from its Prometheus `/metrics` page, for
//! deployments the generator has no shell on (where `--server-pid` cannot work).
//!
//! [`Watch`] scrapes every URL once right before the send phase, every second during it (on a
//! thread of its own, so a slow relay never delays the coordinator's pacing), and once after
//! the drain. [`Watch::finish`] turns the samples into a [`RelayMetrics`]: the relay's delivery
//! count over the run (checked against the clients' own count), its CPU and RSS when it exports
//! them, open connections, and connections closed by code.
//!
//! The HTTP client is deliberately tiny: one `GET` per connection (`Connection: close`) over a
//! tokio `TcpStream`, HTTP/1.1 with `Content-Length`, chunked or read-to-end bodies. Plain
//! `http://` only: the loadgen has no TLS stack of its own. Everything the peer sends is
//! bounded (size, time) and parsed without panicking.

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::clock::now_ns;

/// Limit for one scrape: connect, request and the whole response.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);
/// Scrapes during the send phase.
pub const SCRAPE_INTERVAL: Duration = Duration::from_secs(1);
/// A response larger than this is refused (the relay's page is ~7 KB; this only stops a peer
/// that never ends its body from growing our memory).
const MAX_RESPONSE: usize = 16 * 1024 * 1024;
/// Delivery cross-check tolerance, as a fraction of the clients' count.
const TOLERANCE: f64 = 0.001;
/// Samples kept in the report (one a second: an hour's worth).
const MAX_SAMPLES: usize = 3600;

/// The metric names read from the page.
pub const DELIVERED: &str = "relay_messages_delivered_total";
pub const CONNECTIONS_OPEN: &str = "relay_connections_open";
pub const CONNECTIONS_CLOSED: &str = "relay_connections_closed_total";
pub const CONNECTIONS_REJECTED: &str = "relay_connections_rejected_total";
/// The standard Prometheus process metrics; the relay exports them only if its build does.
pub const PROCESS_CPU: &str = "process_cpu_seconds_total";
pub const PROCESS_RSS: &str = "process_resident_memory_bytes";

/// Why a scrape failed; reported, never fatal to the run.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    #[error("invalid metrics url {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("GET {url}: {source}")]
    Io {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("GET {url}: no complete answer within 2 s")]
    Timeout { url: String },
    #[error("GET {url}: {reason}")]
    Http { url: String, reason: String },
}

/// A parsed `http://host:port/path` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsUrl {
    pub raw: String,
    /// `host:port`, for connecting and for the `Host` header.
    pub authority: String,
    pub path: String,
}

impl MetricsUrl {
    pub fn parse(raw: &str) -> Result<MetricsUrl, ScrapeError> {
        let bad = |reason: &str| ScrapeError::Url {
            url: raw.to_string(),
            reason: reason.to_string(),
        };
        if raw.starts_with("https://") {
            return Err(bad(
                "https is not supported (plain http only): scrape the relay's admin listener or a plain-http address",
            ));
        }
        let rest = raw
            .strip_prefix("http://")
            .ok_or_else(|| bad("must start with http://"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/metrics"),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(bad("needs a host[:port] and no user info"));
        }
        // A bracketed IPv6 literal carries colons of its own: the port follows the ']'.
        let has_port = match authority.rfind(']') {
            Some(end) => authority[end..].contains(':'),
            None => authority.contains(':'),
        };
        let authority = if has_port {
            let port = authority.rsplit(':').next().unwrap_or("");
            if port.parse::<u16>().is_err() {
                return Err(bad("the port is not a number 0-65535"));
            }
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("the path has spaces or control characters"));
        }
        Ok(MetricsUrl {
            raw: raw.to_string(),
            authority,
            path: path.to_string(),
        })
    }
}

/// `GET url` with an optional bearer token; returns the body of a 200 answer.
pub async fn get(url: &MetricsUrl, token: Option<&str>) -> Result<String, ScrapeError> {
    match tokio::time::timeout(SCRAPE_TIMEOUT, get_inner(url, token)).await {
        Ok(r) => r,
        Err(_) => Err(ScrapeError::Timeout {
            url: url.raw.clone(),
        }),
    }
}

async fn get_inner(url: &MetricsUrl, token: Option<&str>) -> Result<String, ScrapeError> {
    let io = |source| ScrapeError::Io {
        url: url.raw.clone(),
        source,
    };
    let mut stream = TcpStream::connect(url.authority.as_str())
        .await
        .map_err(io)?;
    let host = url.authority.trim_end_matches(":80");
    let mut req = format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: chatrelay-loadgen\r\nAccept: text/plain\r\nConnection: close\r\n",
        url.path
    );
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await.map_err(io)?;
    // Connection: close, so the answer ends at EOF at the latest; bounded by MAX_RESPONSE.
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = stream.read(&mut chunk).await.map_err(io)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_RESPONSE {
            return Err(ScrapeError::Http {
                url: url.raw.clone(),
                reason: format!("answer larger than {MAX_RESPONSE} bytes"),
            });
        }
        if response_complete(&buf) {
            break;
        }
    }
    parse_response(&buf).map_err(|reason| ScrapeError::Http {
        url: url.raw.clone(),
        reason,
    })
}

/// True once `buf` holds a whole response with a known length (so we need not wait for EOF).
fn response_complete(buf: &[u8]) -> bool {
    let Some(head_end) = find(buf, b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let body = &buf[head_end + 4..];
    if let Some(len) = header(&head, "content-length").and_then(|v| v.parse::<usize>().ok()) {
        return body.len() >= len;
    }
    if header(&head, "transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        return find(body, b"\r\n0\r\n\r\n").is_some() || body.starts_with(b"0\r\n\r\n");
    }
    false
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

/// The value of header `name` in a lower-cased head.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == name).then(|| v.trim())
    })
}

/// Parses a complete HTTP/1.1 response; returns the body of a 200, else why not.
pub fn parse_response(buf: &[u8]) -> Result<String, String> {
    let head_end = find(buf, b"\r\n\r\n").ok_or("the answer ended inside its headers")?;
    let head_raw = String::from_utf8_lossy(&buf[..head_end]);
    let status_line = head_raw.lines().next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    let status = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(format!("not an HTTP/1.x answer: {:?}", clip(status_line)));
    }
    if status != "200" {
        let hint = match status {
            "401" | "403" => " (a token is needed: --admin-token)",
            "404" => " (no such path: the relay serves /metrics)",
            _ => "",
        };
        return Err(format!("answered {:?}{hint}", clip(status_line)));
    }
    let head = head_raw.to_ascii_lowercase();
    let body = &buf[head_end + 4..];
    let body = if header(&head, "transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        dechunk(body)?
    } else if let Some(len) = header(&head, "content-length") {
        let len: usize = len.parse().map_err(|_| "bad Content-Length")?;
        body.get(..len)
            .ok_or("the body ended before its Content-Length")?
            .to_vec()
    } else {
        body.to_vec()
    };
    String::from_utf8(body).map_err(|_| "the body is not UTF-8".to_string())
}

fn dechunk(mut b: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = find(b, b"\r\n").ok_or("a chunk size line is cut off")?;
        let size_text = String::from_utf8_lossy(&b[..line_end]);
        let size_hex = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16).map_err(|_| "bad chunk size")?;
        b = &b[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        let data = b.get(..size).ok_or("a chunk is cut off")?;
        out.extend_from_slice(data);
        b = b.get(size + 2..).ok_or("a chunk is cut off")?;
    }
}

fn clip(s: &str) -> String {
    s.chars().take(120).collect()
}

/// One series of the text exposition: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Series<'a> {
    pub name: &'a str,
    /// The text between the braces (empty without labels).
    pub labels: &'a str,
    pub value: f64,
}

impl Series<'_> {
    /// The value of label `key`, if present (escapes inside the value are left as they are).
    pub fn label(&self, key: &str) -> Option<&str> {
        let mut rest = self.labels;
        while !rest.is_empty() {
            let eq = rest.find('=')?;
            let k = rest[..eq].trim().trim_start_matches(',').trim();
            let after = rest[eq + 1..].trim_start().strip_prefix('"')?;
            let end = closing_quote(after)?;
            if k == key {
                return Some(&after[..end]);
            }
            rest = after[end + 1..].trim_start_matches(|c: char| c == ',' || c.is_whitespace());
        }
        None
    }
}

/// Index of the first unescaped `"` in `s`.
fn closing_quote(s: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            '\\' if !escaped => escaped = true,
            '"' if !escaped => return Some(i),
            _ => escaped = false,
        }
    }
    None
}

/// Parses the Prometheus text format (0.0.4); lines that do not parse are skipped, since one
/// odd line of a peer's page must not cost us the rest.
pub fn parse_exposition(text: &str) -> Vec<Series<'_>> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Series<'_>> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = &line[..name_end];
    let (labels, rest) = if line[name_end..].starts_with('{') {
        let inner = &line[name_end + 1..];
        let close = label_block_end(inner)?;
        (&inner[..close], &inner[close + 1..])
    } else {
        ("", &line[name_end..])
    };
    let value = rest.split_whitespace().next()?.parse::<f64>().ok()?;
    Some(Series {
        name,
        labels,
        value,
    })
}

/// Index of the `}` closing a label block, skipping braces inside quoted values.
fn label_block_end(s: &str) -> Option<usize> {
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            '\\' if in_quotes && !escaped => {
                escaped = true;
                continue;
            }
            '"' if !escaped => in_quotes = !in_quotes,
            '}' if !in_quotes => return Some(i),
            _ => {}
        }
        escaped = false;
    }
    None
}

/// What one scrape (summed over every `--metrics-url`) says.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Numbers {
    pub delivered: Option<f64>,
    pub cpu_seconds: Option<f64>,
    pub rss_bytes: Option<f64>,
    pub connections_open: Option<f64>,
    /// `relay_connections_closed_total` by its `code` label.
    pub closed: BTreeMap<String, f64>,
    /// `relay_connections_rejected_total` by its `reason` label.
    pub rejected: BTreeMap<String, f64>,
}

impl Numbers {
    pub fn from_text(text: &str) -> Numbers {
        let mut n = Numbers::default();
        for s in parse_exposition(text) {
            let add = |slot: &mut Option<f64>| *slot = Some(slot.unwrap_or(0.0) + s.value);
            match s.name {
                DELIVERED => add(&mut n.delivered),
                PROCESS_CPU => add(&mut n.cpu_seconds),
                PROCESS_RSS => add(&mut n.rss_bytes),
                CONNECTIONS_OPEN => add(&mut n.connections_open),
                CONNECTIONS_CLOSED => {
                    let code = s.label("code").unwrap_or("?").to_string();
                    *n.closed.entry(code).or_default() += s.value;
                }
                CONNECTIONS_REJECTED => {
                    let reason = s.label("reason").unwrap_or("?").to_string();
                    *n.rejected.entry(reason).or_default() += s.value;
                }
                _ => {}
            }
        }
        n
    }

    /// Adds another relay's numbers (several `--metrics-url`s are one deployment).
    fn add(&mut self, o: &Numbers) {
        fn sum(a: &mut Option<f64>, b: Option<f64>) {
            if let Some(b) = b {
                *a = Some(a.unwrap_or(0.0) + b);
            }
        }
        sum(&mut self.delivered, o.delivered);
        sum(&mut self.cpu_seconds, o.cpu_seconds);
        sum(&mut self.rss_bytes, o.rss_bytes);
        sum(&mut self.connections_open, o.connections_open);
        for (k, v) in &o.closed {
            *self.closed.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &o.rejected {
            *self.rejected.entry(k.clone()).or_default() += v;
        }
    }
}

/// Scrapes every URL and sums them; the first failure fails the whole sample (a partial sum
/// would look like a drop in the counters).
pub async fn scrape_all(urls: &[MetricsUrl], token: Option<&str>) -> Result<Numbers, String> {
    let mut total = Numbers::default();
    for u in urls {
        let text = get(u, token).await.map_err(|e| e.to_string())?;
        total.add(&Numbers::from_text(&text));
    }
    Ok(total)
}

/// Scrapes once from a synchronous caller (a runtime of its own for the call).
pub fn scrape_blocking(urls: &[MetricsUrl], token: Option<&str>) -> Result<Numbers, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting a runtime for the scrape: {e}"))?;
    rt.block_on(scrape_all(urls, token))
}

/// One scrape as the report keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Before,
    During,
    After,
}

#[derive(Debug, Clone)]
struct Sample {
    t_ns: u64,
    phase: Phase,
    numbers: Result<Numbers, String>,
}

/// The relay as its `/metrics` saw the run (`relay_metrics` in the JSON report).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RelayMetrics {
    pub urls: Vec<String>,
    /// Successful and failed scrapes.
    pub scrapes: u64,
    pub failed_scrapes: u64,
    /// The first scrape error, if any.
    pub error: Option<String>,
    /// The relay's delivery count over the run against the clients' count; null when the
    /// scrapes before or after failed or the relay does not export it.
    pub delivered: Option<DeliveryCheck>,
    /// `process_cpu_seconds_total` over the run (null: not exported, "n/a").
    pub cpu_seconds: Option<f64>,
    /// The same as % of one core over the wall time between the first and last scrape.
    pub cpu_percent: Option<f64>,
    /// `process_resident_memory_bytes` after the drain, and the highest seen (null: not exported).
    pub rss_bytes: Option<u64>,
    pub rss_max_bytes: Option<u64>,
    /// `relay_connections_open` before the send phase, the highest seen, after the drain.
    pub connections_open_before: Option<u64>,
    pub connections_open_max: Option<u64>,
    pub connections_open_after: Option<u64>,
    /// `relay_connections_closed_total` increase over the run, by code (codes with 0 left out).
    pub closed_by_code: BTreeMap<String, u64>,
    /// `relay_connections_rejected_total` increase from a scrape before the ramp-up (refusals
    /// happen while connecting) to the one after the drain, by reason (0s left out).
    pub rejected_by_reason: BTreeMap<String, u64>,
    /// Every successful scrape, seconds from the first.
    pub samples: Vec<MetricsSample>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeliveryCheck {
    /// `relay_messages_delivered_total` after the drain minus before the send phase.
    pub relay: u64,
    /// Frames the clients received: delivered + duplicated + foreign.
    pub loadgen: u64,
    /// relay - loadgen.
    pub difference: i64,
    pub tolerance: u64,
    /// How much more the relay may count: frames it queued to connections that were going
    /// away and never wrote (a reconnect storm's dropped clients; 0 otherwise).
    #[serde(default)]
    pub allowance: u64,
    pub matches: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MetricsSample {
    pub t_s: f64,
    pub phase: Phase,
    pub delivered: Option<f64>,
    pub connections_open: Option<f64>,
    pub rss_bytes: Option<f64>,
    pub cpu_seconds: Option<f64>,
}

/// The scraping of one run: [`Watch::begin`] before the send phase, [`Watch::finish`] after
/// the drain.
pub struct Watch {
    urls: Vec<MetricsUrl>,
    token: Option<String>,
    running: Option<(mpsc::Sender<()>, JoinHandle<Vec<Sample>>)>,
    /// What the scraper thread collected, once [`Watch::end`] stopped it.
    samples: Vec<Sample>,
    /// The scrape before the ramp-up ([`Watch::before_ramp`]).
    at_start: Option<Numbers>,
}

impl Watch {
    /// Parses the URLs (a bad one is a configuration error: nothing has started yet).
    pub fn new(urls: &[String], token: Option<&str>) -> Result<Watch, crate::Error> {
        let urls = urls
            .iter()
            .map(|u| MetricsUrl::parse(u).map_err(|e| crate::Error::Config(e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Watch {
            urls,
            token: token.map(str::to_string),
            running: None,
            samples: Vec::new(),
            at_start: None,
        })
    }

    pub fn enabled(&self) -> bool {
        !self.urls.is_empty()
    }

    /// Scrapes once before the first connection, for the connections the relay refuses during
    /// the ramp-up (a failure here shows again in the later scrapes, so it is not kept).
    pub fn before_ramp(&mut self) {
        if self.enabled() {
            self.at_start = scrape_blocking(&self.urls, self.token.as_deref()).ok();
        }
    }

    /// Takes the baseline scrape (returns once it is done or failed), then keeps scraping
    /// every second on a thread of its own until [`Watch::finish`].
    pub fn begin(&mut self) {
        if !self.enabled() {
            return;
        }
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let (first_tx, first_rx) = mpsc::sync_channel::<()>(1);
        let urls = self.urls.clone();
        let token = self.token.clone();
        let spawned = std::thread::Builder::new()
            .name("loadgen-scrape".into())
            .spawn(move || scrape_loop(&urls, token.as_deref(), &first_tx, &stop_rx));
        match spawned {
            Ok(handle) => {
                // Bounded: the first scrape gives up after SCRAPE_TIMEOUT per URL.
                let _ = first_rx.recv();
                self.running = Some((stop_tx, handle));
            }
            Err(e) => eprintln!("loadgen: cannot start the metrics scraper: {e}"),
        }
    }

    /// Stops the per-second scrapes and takes the last one (right after the drain: the
    /// clients close their connections once it is over).
    pub fn end(&mut self) {
        if let Some((stop, handle)) = self.running.take() {
            let _ = stop.send(());
            // The thread only panics on a bug of ours; its samples are then lost, not the run.
            self.samples = handle.join().unwrap_or_default();
        }
    }

    /// The relay's numbers over the run, compared with `loadgen_seen` (frames the clients
    /// received; the relay may count up to `allowance` more); `None` without `--metrics-url`.
    pub fn finish(mut self, loadgen_seen: u64, allowance: u64) -> Option<RelayMetrics> {
        if !self.enabled() {
            return None;
        }
        self.end();
        Some(summarise(
            self.urls.iter().map(|u| u.raw.clone()).collect(),
            self.at_start.as_ref(),
            &self.samples,
            loadgen_seen,
            allowance,
        ))
    }
}

fn scrape_loop(
    urls: &[MetricsUrl],
    token: Option<&str>,
    first: &mpsc::SyncSender<()>,
    stop: &mpsc::Receiver<()>,
) -> Vec<Sample> {
    let mut samples = Vec::new();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            samples.push(Sample {
                t_ns: now_ns(),
                phase: Phase::Before,
                numbers: Err(format!("starting the scraper's runtime: {e}")),
            });
            let _ = first.send(());
            return samples;
        }
    };
    let take = |phase: Phase, samples: &mut Vec<Sample>| {
        let numbers = rt.block_on(scrape_all(urls, token));
        if let Err(e) = &numbers {
            if !samples.iter().any(|s: &Sample| s.numbers.is_err()) {
                eprintln!("loadgen: metrics scrape failed: {e}");
            }
        }
        if samples.len() < MAX_SAMPLES {
            samples.push(Sample {
                t_ns: now_ns(),
                phase,
                numbers,
            });
        }
    };
    take(Phase::Before, &mut samples);
    let _ = first.send(());
    let mut next = now_ns() + SCRAPE_INTERVAL.as_nanos() as u64;
    loop {
        let wait = Duration::from_nanos(next.saturating_sub(now_ns()));
        match stop.recv_timeout(wait) {
            Err(mpsc::RecvTimeoutError::Timeout) => {
                take(Phase::During, &mut samples);
                next += SCRAPE_INTERVAL.as_nanos() as u64;
                // After a slow scrape, go on from now instead of firing a burst.
                next = next.max(now_ns());
            }
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                take(Phase::After, &mut samples);
                return samples;
            }
        }
    }
}

fn summarise(
    urls: Vec<String>,
    at_start: Option<&Numbers>,
    samples: &[Sample],
    loadgen_seen: u64,
    allowance: u64,
) -> RelayMetrics {
    let ok: Vec<(&Sample, &Numbers)> = samples
        .iter()
        .filter_map(|s| s.numbers.as_ref().ok().map(|n| (s, n)))
        .collect();
    let error = samples
        .iter()
        .find_map(|s| s.numbers.as_ref().err().cloned());
    let before = samples
        .iter()
        .find(|s| s.phase == Phase::Before)
        .and_then(|s| s.numbers.as_ref().ok());
    let after = samples
        .iter()
        .rfind(|s| s.phase == Phase::After)
        .and_then(|s| s.numbers.as_ref().ok());
    let t_first = ok.first().map(|(s, _)| s.t_ns).unwrap_or(0);
    let both = before.zip(after);
    let delivered = both
        .and_then(|(b, a)| Some((b.delivered?, a.delivered?)))
        .map(|(b, a)| delivery_check((a - b).max(0.0) as u64, loadgen_seen, allowance));
    let cpu_seconds = both.and_then(|(b, a)| Some((a.cpu_seconds? - b.cpu_seconds?).max(0.0)));
    let wall_s = match (
        samples.iter().find(|s| s.phase == Phase::Before),
        samples.iter().rfind(|s| s.phase == Phase::After),
    ) {
        (Some(b), Some(a)) => a.t_ns.saturating_sub(b.t_ns) as f64 / 1e9,
        _ => 0.0,
    };
    let closed_by_code = both
        .map(|(b, a)| increase(&b.closed, &a.closed))
        .unwrap_or_default();
    let rejected_by_reason = at_start
        .zip(after)
        .map(|(s, a)| increase(&s.rejected, &a.rejected))
        .unwrap_or_default();
    let max_of = |f: fn(&Numbers) -> Option<f64>| {
        ok.iter()
            .filter_map(|(_, n)| f(n))
            .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))))
            .map(|v| v as u64)
    };
    RelayMetrics {
        urls,
        scrapes: ok.len() as u64,
        failed_scrapes: (samples.len() - ok.len()) as u64,
        error,
        delivered,
        cpu_seconds,
        cpu_percent: cpu_seconds
            .filter(|_| wall_s > 0.0)
            .map(|c| c / wall_s * 100.0),
        rss_bytes: after.and_then(|a| a.rss_bytes).map(|v| v as u64),
        rss_max_bytes: max_of(|n| n.rss_bytes),
        connections_open_before: before.and_then(|b| b.connections_open).map(|v| v as u64),
        connections_open_max: max_of(|n| n.connections_open),
        connections_open_after: after.and_then(|a| a.connections_open).map(|v| v as u64),
        closed_by_code,
        rejected_by_reason,
        samples: ok
            .iter()
            .map(|(s, n)| MetricsSample {
                t_s: s.t_ns.saturating_sub(t_first) as f64 / 1e9,
                phase: s.phase,
                delivered: n.delivered,
                connections_open: n.connections_open,
                rss_bytes: n.rss_bytes,
                cpu_seconds: n.cpu_seconds,
            })
            .collect(),
    }
}

/// Per-label increase of a counter between two scrapes (labels that did not grow left out).
fn increase(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .filter_map(|(k, v)| {
            let d = v - before.get(k).copied().unwrap_or(0.0);
            (d > 0.0).then(|| (k.clone(), d as u64))
        })
        .collect()
}

/// The relay's count against the clients': equal within [`TOLERANCE`] (rounded up), the
/// relay's up to `allowance` higher besides.
pub fn delivery_check(relay: u64, loadgen: u64, allowance: u64) -> DeliveryCheck {
    let tolerance = (loadgen as f64 * TOLERANCE).ceil() as u64;
    let difference = relay as i64 - loadgen as i64;
    let matches = if difference >= 0 {
        difference.unsigned_abs() <= tolerance + allowance
    } else {
        difference.unsigned_abs() <= tolerance
    };
    DeliveryCheck {
        relay,
        loadgen,
        difference,
        tolerance,
        allowance,
        matches,
    }
}

fn opt_u64(v: Option<u64>) -> String {
    v.map_or_else(|| "n/a".to_string(), |v| v.to_string())
}

fn mib(v: Option<u64>) -> String {
    v.map_or_else(
        || "n/a (not exported)".to_string(),
        |v| format!("{:.1} MiB", v as f64 / 1048576.0),
    )
}

/// The RELAY METRICS section of the table.
pub fn render_table(out: &mut String, m: &RelayMetrics) {
    use std::fmt::Write as _;
    let _ = writeln!(out, "\nRELAY METRICS ({})", m.urls.join(", "));
    let _ = writeln!(
        out,
        "  scrapes {} ok, {} failed",
        m.scrapes, m.failed_scrapes
    );
    if let Some(e) = &m.error {
        let _ = writeln!(out, "  scrape error: {e}");
    }
    match &m.delivered {
        Some(d) if d.matches => {
            let allowance = if d.allowance > 0 {
                format!(", up to {} more for connections going away", d.allowance)
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "  delivered: relay {} = clients {} (difference {}, tolerance {}{allowance})",
                d.relay, d.loadgen, d.difference, d.tolerance
            );
        }
        Some(d) => {
            let _ = writeln!(
                out,
                "  ** DELIVERY MISMATCH: relay counted {} deliveries, the clients received {} (difference {}, tolerance {}) **",
                d.relay, d.loadgen, d.difference, d.tolerance
            );
        }
        None => {
            let _ = writeln!(out, "  delivered: n/a (no {DELIVERED} before and after)");
        }
    }
    let cpu = match (m.cpu_seconds, m.cpu_percent) {
        (Some(s), Some(p)) => format!("{s:.2} s ({p:.0}% of one core)"),
        (Some(s), None) => format!("{s:.2} s"),
        _ => format!("n/a ({PROCESS_CPU} not exported)"),
    };
    let _ = writeln!(
        out,
        "  cpu {cpu}   rss {}   rss max {}",
        mib(m.rss_bytes),
        mib(m.rss_max_bytes)
    );
    let _ = writeln!(
        out,
        "  connections open: before {}  max {}  after {}",
        opt_u64(m.connections_open_before),
        opt_u64(m.connections_open_max),
        opt_u64(m.connections_open_after)
    );
    if !m.closed_by_code.is_empty() {
        let _ = writeln!(
            out,
            "  closed during the run by code: {:?}",
            m.closed_by_code
        );
    }
    if !m.rejected_by_reason.is_empty() {
        let _ = writeln!(
            out,
            "  connections refused by reason: {:?}",
            m.rejected_by_reason
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = "# HELP relay_connections_open WebSocket connections open now.\n\
# TYPE relay_connections_open gauge\n\
relay_connections_open 12\n\
relay_connections_closed_total{code=\"4008\",reason=\"slow_consumer\"} 3\n\
relay_connections_closed_total{code=\"client\",reason=\"client_closed\"} 40\n\
relay_connections_rejected_total{reason=\"connection_limit\"} 2\n\
relay_messages_delivered_total 1234\n\
weird{a=\"x}y\",b=\"q\\\"z\"} 7 1700000000\n\
not a metric line\n\
process_resident_memory_bytes 1.048576e6\n";

    #[test]
    fn parses_the_exposition() {
        let n = Numbers::from_text(PAGE);
        assert_eq!(n.connections_open, Some(12.0));
        assert_eq!(n.delivered, Some(1234.0));
        assert_eq!(n.rss_bytes, Some(1048576.0));
        assert_eq!(n.cpu_seconds, None);
        assert_eq!(n.closed.get("4008"), Some(&3.0));
        assert_eq!(n.closed.get("client"), Some(&40.0));
        assert_eq!(n.rejected.get("connection_limit"), Some(&2.0));
        let s = parse_exposition(PAGE);
        let weird = s.iter().find(|s| s.name == "weird").expect("weird line");
        assert_eq!(weird.value, 7.0);
        assert_eq!(weird.label("a"), Some("x}y"));
        assert_eq!(weird.label("b"), Some("q\\\"z"));
        assert_eq!(weird.label("c"), None);
    }

    #[test]
    fn parses_responses() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        assert!(response_complete(ok));
        assert_eq!(parse_response(ok).as_deref(), Ok("hello"));
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n";
        assert!(response_complete(chunked));
        assert_eq!(parse_response(chunked).as_deref(), Ok("abcde"));
        let unauthorized = b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n";
        assert!(parse_response(unauthorized)
            .unwrap_err()
            .contains("--admin-token"));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Le").is_err());
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort").is_err());
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").is_err()
        );
    }

    #[test]
    fn parses_urls() {
        let u = MetricsUrl::parse("http://127.0.0.1:9090/metrics").expect("url");
        assert_eq!(u.authority, "127.0.0.1:9090");
        assert_eq!(u.path, "/metrics");
        let u = MetricsUrl::parse("http://relay.example").expect("url");
        assert_eq!(u.authority, "relay.example:80");
        assert_eq!(u.path, "/metrics");
        let u = MetricsUrl::parse("http://[::1]:8080/m").expect("url");
        assert_eq!(u.authority, "[::1]:8080");
        assert!(MetricsUrl::parse("https://x/metrics")
            .unwrap_err()
            .to_string()
            .contains("https"));
        assert!(MetricsUrl::parse("ftp://x").is_err());
        assert!(MetricsUrl::parse("http://x:99999/").is_err());
        assert!(MetricsUrl::parse("http://u@x/").is_err());
    }

    #[test]
    fn delivery_tolerance() {
        assert!(delivery_check(1000, 1000, 0).matches);
        assert!(delivery_check(100_100, 100_000, 0).matches);
        assert!(!delivery_check(100_101, 100_000, 0).matches);
        assert!(!delivery_check(0, 10, 0).matches);
        assert!(delivery_check(0, 0, 0).matches);
        // An allowance widens the check upwards only.
        assert!(delivery_check(100_150, 100_000, 50).matches);
        assert!(!delivery_check(100_151, 100_000, 50).matches);
        assert!(!delivery_check(99_899, 100_000, 50).matches);
    }

    #[test]
    fn unreachable_scrape_is_an_error_not_a_panic() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        let url = MetricsUrl::parse(&format!("http://127.0.0.1:{port}/metrics")).expect("url");
        let e = scrape_blocking(&[url], None).expect_err("nothing listens");
        assert!(e.contains("GET http://127.0.0.1"), "{e}");
    }
}
