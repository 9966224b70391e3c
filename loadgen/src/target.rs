//! `--url` parsing and the loopback-only rule.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::Error;

/// One relay endpoint, already resolved to a socket address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub addr: SocketAddr,
    /// The `Host` header value (what the user wrote, so virtual hosts still match).
    pub host_header: String,
    pub path: String,
}

/// Parses `ws://host[:port][/path]` and refuses anything that is not loopback.
///
/// Host names are not resolved (only `localhost`, which maps to 127.0.0.1), so DNS can never
/// point the generator at another machine.
pub fn parse(url: &str) -> Result<Target, Error> {
    let bad = |reason: &str| Error::InvalidUrl {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let rest = url
        .strip_prefix("ws://")
        .ok_or_else(|| bad("only ws:// URLs are supported (no TLS on loopback)"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(bad("missing host"));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let end = v6.find(']').ok_or_else(|| bad("unclosed [ in IPv6 host"))?;
        let host = &v6[..end];
        let port = match &v6[end + 1..] {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(|| bad("junk after ]"))?),
        };
        (host, port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port: u16 = match port {
        Some(p) => p.parse().map_err(|_| bad("port is not a number 0-65535"))?,
        None => 80,
    };
    let ip: IpAddr = if host.eq_ignore_ascii_case("localhost") {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        host.parse()
            .map_err(|_| Error::NotLoopback(host.to_string()))?
    };
    if !ip.is_loopback() {
        return Err(Error::NotLoopback(host.to_string()));
    }
    Ok(Target {
        addr: SocketAddr::new(ip, port),
        host_header: authority.to_string(),
        path: path.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_loopback_forms() {
        let t = parse("ws://127.0.0.1:8080/ws").expect("v4");
        assert_eq!(t.addr, "127.0.0.1:8080".parse().expect("addr"));
        assert_eq!(t.path, "/ws");
        assert_eq!(t.host_header, "127.0.0.1:8080");
        let t = parse("ws://[::1]:9000").expect("v6");
        assert_eq!(t.addr, "[::1]:9000".parse().expect("addr"));
        assert_eq!(t.path, "/");
        assert!(parse("ws://localhost:1/ws").is_ok());
        assert!(parse("ws://127.9.8.7:1/ws").is_ok());
    }

    #[test]
    fn refuses_other_hosts() {
        for url in [
            "ws://10.0.0.1:80/ws",
            "ws://example.com/ws",
            "ws://[2001:db8::1]:80/",
            "ws://0.0.0.0:80/",
        ] {
            assert!(matches!(parse(url), Err(Error::NotLoopback(_))), "{url}");
        }
        assert!(matches!(
            parse("wss://127.0.0.1/"),
            Err(Error::InvalidUrl { .. })
        ));
        assert!(matches!(
            parse("ws://127.0.0.1:99999/"),
            Err(Error::InvalidUrl { .. })
        ));
    }
}
