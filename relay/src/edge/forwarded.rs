//! Client addresses behind reverse proxies (`--trusted-proxy`).
//!
//! Behind nginx every TCP peer is nginx, so every per-address budget would count all users
//! as one. When the peer is a trusted proxy the relay takes the client's address from
//! `X-Forwarded-For` (or, without one, RFC 7239 `Forwarded: for=`). Both are lists that each
//! proxy appends to, and anything left of the last trusted proxy's entry is whatever the
//! client wrote: so the list is read from the right, skipping addresses that are themselves
//! trusted proxies, and the first other address is the client. A header that cannot be read
//! that far gives the peer's own address, never a guess. From a peer that is not trusted
//! (and with no `--trusted-proxy` at all) the headers are ignored.
//!
//! `X-Forwarded-For` wins over `Forwarded` because it is what nginx, HAProxy, Envoy and the
//! cloud load balancers append by default; a proxy that sets only `Forwarded` must strip a
//! client's `X-Forwarded-For` (docs/SECURITY.md).

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

pub use crate::config::Cidr;

use hyper::header::{HeaderMap, HeaderName, FORWARDED};

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The `--trusted-proxy` ranges; empty (the default) trusts no one.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    ranges: Vec<Cidr>,
}

impl TrustedProxies {
    pub fn new(ranges: &[Cidr]) -> Self {
        Self {
            ranges: ranges.to_vec(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.ranges.iter().any(|range| range.contains(ip))
    }

    /// The client's address for a request from `peer` (see the module documentation).
    pub fn client_addr(&self, peer: SocketAddr, headers: &HeaderMap) -> SocketAddr {
        if !self.is_trusted(peer.ip()) {
            return peer;
        }
        let walked = if headers.contains_key(&X_FORWARDED_FOR) {
            self.walk(headers, &X_FORWARDED_FOR, Some)
        } else if headers.contains_key(FORWARDED) {
            self.walk(headers, &FORWARDED, forwarded_for)
        } else {
            None
        };
        walked.unwrap_or(peer)
    }

    /// Walks the comma-separated entries of every `name` header from the right; `node`
    /// picks the address text out of one entry. `None`: no usable client address.
    fn walk<'h>(
        &self,
        headers: &'h HeaderMap,
        name: &HeaderName,
        node: impl Fn(&'h str) -> Option<&'h str>,
    ) -> Option<SocketAddr> {
        let mut leftmost_trusted = None;
        // Several headers of one name are one list, in order (RFC 9110 section 5.3).
        for value in headers.get_all(name).iter().rev() {
            let value = value.to_str().ok()?;
            for entry in value.rsplit(',') {
                let addr = node(entry.trim()).and_then(parse_node)?;
                if !self.is_trusted(addr.ip()) {
                    return Some(addr);
                }
                leftmost_trusted = Some(addr);
            }
        }
        // Every hop was a trusted proxy: the first of them is as close to the client as known.
        leftmost_trusted
    }
}

/// The `for=` value of one `Forwarded` element (`for=192.0.2.60;proto=https`), unquoted.
fn forwarded_for(element: &str) -> Option<&str> {
    element.split(';').find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        name.trim().eq_ignore_ascii_case("for").then(|| {
            let value = value.trim();
            value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value)
        })
    })
}

/// `192.0.2.60`, `192.0.2.60:4711`, `2001:db8::1`, `[2001:db8::1]` or `[2001:db8::1]:4711`;
/// `unknown` and obfuscated names (`_hidden`) are no address. The port is 0 when absent.
fn parse_node(text: &str) -> Option<SocketAddr> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip.to_canonical(), 0));
    }
    if let Some(rest) = text.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        let ip = ip.parse::<Ipv6Addr>().ok()?;
        let port = match after {
            "" => 0,
            after => after.strip_prefix(':')?.parse().ok()?,
        };
        return Some(SocketAddr::new(IpAddr::V6(ip).to_canonical(), port));
    }
    let addr = text.parse::<std::net::SocketAddrV4>().ok()?;
    Some(SocketAddr::new(IpAddr::V4(*addr.ip()), addr.port()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn proxies(ranges: &[&str]) -> TrustedProxies {
        let ranges: Vec<Cidr> = ranges.iter().map(|r| r.parse().expect("valid")).collect();
        TrustedProxies::new(&ranges)
    }

    fn client(trusted: &TrustedProxies, peer: &str, headers: &[(&str, &str)]) -> String {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_str(value).expect("value"),
            );
        }
        let peer: SocketAddr = peer.parse().expect("peer");
        trusted.client_addr(peer, &map).to_string()
    }

    #[test]
    fn ranges_parse_and_match() {
        let range: Cidr = "10.0.0.0/8".parse().expect("valid");
        assert!(range.contains([10, 1, 2, 3].into()));
        assert!(!range.contains([11, 0, 0, 1].into()));
        assert!(
            range.contains("::ffff:10.0.0.1".parse().expect("v6")),
            "IPv4-mapped"
        );
        let one: Cidr = "192.0.2.7".parse().expect("bare IP");
        assert!(one.contains([192, 0, 2, 7].into()));
        assert!(!one.contains([192, 0, 2, 8].into()));
        let v6: Cidr = "fd00::/8".parse().expect("v6 range");
        assert!(v6.contains("fd12::1".parse().expect("v6")));
        assert!(!v6.contains("fe80::1".parse().expect("v6")));
        let everything: Cidr = "0.0.0.0/0".parse().expect("v4 all");
        assert!(everything.contains([8, 8, 8, 8].into()));
        assert!(!everything.contains("::1".parse().expect("v6")));
        for bad in [
            "10.0.0.0/33",
            "fd00::/129",
            "10.0.0.1/8",
            "nginx",
            "10.0.0.0/",
            "",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        let typo = "10.0.0.1/8".parse::<Cidr>().expect_err("host bits");
        assert!(typo.contains("10.0.0.0/8"), "{typo}");
    }

    #[test]
    fn the_client_is_the_first_untrusted_address_from_the_right() {
        let trusted = proxies(&["10.0.0.0/8", "fd00::/8"]);
        let xff = |v| client(&trusted, "10.0.0.1:5000", &[("x-forwarded-for", v)]);
        assert_eq!(xff("203.0.113.9"), "203.0.113.9:0");
        assert_eq!(xff("198.51.100.1, 203.0.113.9, 10.0.0.2"), "203.0.113.9:0");
        assert_eq!(
            xff("garbage, 203.0.113.9"),
            "203.0.113.9:0",
            "left of it is never read"
        );
        assert_eq!(xff("203.0.113.9:4711"), "203.0.113.9:4711");
        assert_eq!(xff("[2001:db8::1]:4711, fd00::2"), "[2001:db8::1]:4711");
        assert_eq!(xff("2001:db8::1"), "[2001:db8::1]:0");
        assert_eq!(
            xff("10.0.0.9, 10.0.0.8"),
            "10.0.0.9:0",
            "all trusted: the first"
        );
        for malformed in [
            "",
            "unknown",
            "203.0.113.9, nonsense",
            "203.0.113.9, ",
            "1.2.3.4.5",
        ] {
            assert_eq!(xff(malformed), "10.0.0.1:5000", "{malformed:?}");
        }
        // Two headers are one list, in order.
        let two = client(
            &trusted,
            "10.0.0.1:5000",
            &[
                ("x-forwarded-for", "203.0.113.9"),
                ("x-forwarded-for", "10.0.0.3"),
            ],
        );
        assert_eq!(two, "203.0.113.9:0");
    }

    #[test]
    fn forwarded_is_read_when_there_is_no_x_forwarded_for() {
        let trusted = proxies(&["10.0.0.0/8"]);
        let fwd = |v| client(&trusted, "10.0.0.1:5000", &[("forwarded", v)]);
        assert_eq!(fwd("for=203.0.113.9"), "203.0.113.9:0");
        assert_eq!(
            fwd("For=\"203.0.113.9:4711\";proto=https"),
            "203.0.113.9:4711"
        );
        assert_eq!(
            fwd("for=198.51.100.1, for=\"[2001:db8:cafe::17]:4711\";by=10.0.0.1, for=10.0.0.2"),
            "[2001:db8:cafe::17]:4711"
        );
        assert_eq!(
            fwd("proto=https;for=203.0.113.9;by=10.0.0.1"),
            "203.0.113.9:0"
        );
        for malformed in ["for=unknown", "for=_hidden", "proto=https", "for=\"[::1\""] {
            assert_eq!(fwd(malformed), "10.0.0.1:5000", "{malformed:?}");
        }
        let both = client(
            &trusted,
            "10.0.0.1:5000",
            &[
                ("forwarded", "for=198.51.100.1"),
                ("x-forwarded-for", "203.0.113.9"),
            ],
        );
        assert_eq!(both, "203.0.113.9:0", "X-Forwarded-For wins");
    }

    #[test]
    fn headers_from_an_untrusted_peer_are_ignored() {
        let header = [("x-forwarded-for", "203.0.113.9")];
        assert_eq!(
            client(&proxies(&[]), "10.0.0.1:5000", &header),
            "10.0.0.1:5000"
        );
        assert_eq!(
            client(&proxies(&["10.0.0.2"]), "10.0.0.1:5000", &header),
            "10.0.0.1:5000"
        );
        assert_eq!(
            client(&proxies(&["10.0.0.1"]), "10.0.0.1:5000", &[]),
            "10.0.0.1:5000"
        );
    }
}
