//! The standard Prometheus process metrics (`process_cpu_seconds_total`,
//! `process_resident_memory_bytes`, ...), read from `/proc/self` when `/metrics` is scraped.
//!
//! Read at scrape time only, so they cost nothing between scrapes; a scrape reads two small
//! files (`stat` and `status`, a few hundred bytes each), about the cost of the rest of the
//! page. They describe the whole process: every relay in a process shows the same values.
//!
//! `process_open_fds` is deliberately not exported: counting `/proc/self/fd` is a walk over
//! every open socket, and `/metrics` needs no token (see the module above);
//! `relay_connections_open` is the O(1) count of what those descriptors mostly are.
//!
//! On a system without `/proc` (not Linux) the series are left out, as the Prometheus client
//! libraries do; a reader treats their absence as "not exported".

use std::fmt::Write;

use super::names;

/// Clock ticks per second of `/proc/<pid>/stat` times. The kernel reports them in USER_HZ,
/// which is 100 on every Linux architecture (the Prometheus Go client's procfs assumes the
/// same); reading it would need `sysconf`, one more dependency for a constant.
const USER_HZ: f64 = 100.0;

/// What `/proc/self` says about this process now.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessNumbers {
    /// User plus system CPU time of every thread, in seconds.
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub threads: u64,
}

impl ProcessNumbers {
    /// Reads `/proc/self/stat` and `/proc/self/status`; `None` where they cannot be read.
    pub fn read() -> Option<ProcessNumbers> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        Self::parse(&stat, &status)
    }

    /// Parses the two files' text (separate from [`ProcessNumbers::read`] for the tests).
    pub fn parse(stat: &str, status: &str) -> Option<ProcessNumbers> {
        // The command name (field 2) is in parentheses and may hold spaces and ')': the
        // fields that follow start after the last ')'. There, utime and stime are fields 14
        // and 15 of the line, so the 12th and 13th after the name.
        let rest = &stat[stat.rfind(')')? + 1..];
        let mut fields = rest.split_whitespace();
        let utime: u64 = fields.nth(11)?.parse().ok()?;
        let stime: u64 = fields.next()?.parse().ok()?;
        let kib = |key: &str| -> Option<u64> {
            let line = status.lines().find(|l| l.starts_with(key))?;
            line[key.len()..]
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()
        };
        Some(ProcessNumbers {
            cpu_seconds: (utime + stime) as f64 / USER_HZ,
            resident_bytes: kib("VmRSS:")? * 1024,
            virtual_bytes: kib("VmSize:")? * 1024,
            threads: kib("Threads:").unwrap_or(0),
        })
    }

    /// The text exposition of these numbers.
    pub fn render(&self, out: &mut String) {
        let help = |name: &str| {
            names::PROCESS
                .iter()
                .find(|(n, _)| *n == name)
                .map_or("", |(_, h)| h)
        };
        let mut one = |name: &str, kind: &str, value: &dyn std::fmt::Display| {
            let _ = writeln!(
                out,
                "# HELP {name} {}\n# TYPE {name} {kind}\n{name} {value}",
                help(name)
            );
        };
        one(names::PROCESS_CPU_SECONDS, "counter", &self.cpu_seconds);
        one(names::PROCESS_RESIDENT_BYTES, "gauge", &self.resident_bytes);
        one(names::PROCESS_VIRTUAL_BYTES, "gauge", &self.virtual_bytes);
        one(names::PROCESS_THREADS, "gauge", &self.threads);
    }
}

/// Appends the process metrics to `out` (nothing where `/proc` is missing).
pub fn render(out: &mut String) {
    if let Some(numbers) = ProcessNumbers::read() {
        numbers.render(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_and_status() {
        // A command name with a space and a ')' in it, as a process may name itself.
        let stat = "4242 (relay) x) S 1 4242 4242 0 -1 4194304 500 0 0 0 250 75 0 0 20 0 9 0 \
                    67588 3133440 413 18446744073709551615";
        let status = "Name:\trelay\nVmSize:\t  204800 kB\nVmRSS:\t   10240 kB\nThreads:\t9\n";
        let n = ProcessNumbers::parse(stat, status).expect("parses");
        assert_eq!(n.cpu_seconds, 3.25);
        assert_eq!(n.resident_bytes, 10240 * 1024);
        assert_eq!(n.virtual_bytes, 204800 * 1024);
        assert_eq!(n.threads, 9);
        assert_eq!(ProcessNumbers::parse("4242 (relay", status), None);
        assert_eq!(ProcessNumbers::parse(stat, "Name:\trelay\n"), None);
    }

    #[test]
    fn this_process_is_readable_on_linux() {
        if !cfg!(target_os = "linux") {
            return;
        }
        let n = ProcessNumbers::read().expect("/proc/self is readable");
        assert!(n.resident_bytes > 1 << 20, "{n:?}");
        assert!(n.threads >= 1, "{n:?}");
        let mut out = String::new();
        n.render(&mut out);
        assert!(out.contains("# TYPE process_cpu_seconds_total counter\n"));
        assert!(out.contains(&format!(
            "process_resident_memory_bytes {}\n",
            n.resident_bytes
        )));
    }
}
