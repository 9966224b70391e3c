//! Process limits: the open-files limit decides how many clients one relay can hold.

/// File descriptors kept back from the connection budget for the listener, logs, and the
/// runtime's own (epoll, eventfd, signal pipe).
const RESERVED_FDS: u64 = 64;

/// Raises the soft open-files limit to the hard limit; returns the resulting soft limit.
pub fn raise_nofile_limit() -> std::io::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
}

/// Connections this process can hold with `nofile` file descriptors.
pub fn connection_capacity(nofile: u64) -> u64 {
    nofile.saturating_sub(RESERVED_FDS)
}

/// Connections this process can hold under its current soft open-files limit.
pub fn current_capacity() -> u64 {
    let soft = rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft);
    connection_capacity(soft)
}
