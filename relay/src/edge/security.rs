//! The checks an upgrade request passes before it becomes a WebSocket: Origin, then the token.
//! Each failure is an HTTP status, never a WebSocket (see docs/PROTOCOL.md, "HTTP").

use hyper::header::{HeaderMap, ORIGIN, SEC_WEBSOCKET_PROTOCOL};
use hyper::StatusCode;
use tracing::debug;

use crate::config::Config;
use crate::edge::auth::{self, Identity, Verifier};
use crate::edge::forwarded::TrustedProxies;
use crate::error::Error;

/// One `--allowed-origin` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct OriginPattern {
    /// `https`, `http`, ...; `None` matches any scheme.
    scheme: Option<String>,
    /// Lowercase host; with `wildcard`, the suffix after `*.`.
    host: String,
    /// An explicit port other than the scheme's default; `None` matches only origins on the
    /// default port (which browsers leave out of `Origin`).
    port: Option<u16>,
    /// `*.example.com`: any subdomain of `example.com` (not `example.com` itself).
    wildcard: bool,
}

/// An `Origin` header as RFC 6454 serializes one: `scheme://host[:port]` and nothing else.
/// Comparing parsed parts (not raw strings) is what keeps `https://evil.com/.example.com` and
/// `https://a.example.com@evil.com` from passing `*.example.com`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Origin<'a> {
    scheme: &'a str,
    host: &'a str,
    port: Option<u16>,
}

impl<'a> Origin<'a> {
    /// Parses a lowercased origin; `None` for anything else (`null`, a path, userinfo, ...).
    fn parse(text: &'a str) -> Option<Self> {
        let (scheme, authority) = text.split_once("://")?;
        if !valid_scheme(scheme) {
            return None;
        }
        let (host, port) = split_host_port(authority)?;
        Some(Self {
            scheme,
            host,
            port: port.filter(|&p| Some(p) != default_port(scheme)),
        })
    }
}

fn valid_scheme(scheme: &str) -> bool {
    scheme.starts_with(|c: char| c.is_ascii_lowercase())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b))
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

/// Splits `host[:port]` (or `[v6]:port`), refusing anything that is not a plain host name or
/// address with an optional numeric port.
fn split_host_port(authority: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = match authority.strip_prefix('[') {
        Some(rest) => {
            let end = rest.find(']')?;
            let address = &rest[..end];
            if address.is_empty()
                || !address
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
            {
                return None;
            }
            let port = match &rest[end + 1..] {
                "" => None,
                after => Some(after.strip_prefix(':')?),
            };
            (&authority[..end + 2], port)
        }
        None => {
            let (host, port) = match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            };
            let label_ok = |l: &str| {
                !l.is_empty()
                    && l.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_".contains(&b))
            };
            if !host.split('.').all(label_ok) {
                return None;
            }
            (host, port)
        }
    };
    let port = match port {
        None => None,
        Some(digits) if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
            Some(digits.parse::<u16>().ok()?)
        }
        Some(_) => return None,
    };
    Some((host, port))
}

impl OriginPattern {
    fn parse(text: &str) -> Result<Self, Error> {
        let lower = text.trim().to_ascii_lowercase();
        let invalid = || {
            Error::Config(format!(
                "--allowed-origin {text:?}: expected e.g. https://chat.example.com, \
                 http://localhost:8080 or *.example.com"
            ))
        };
        let (scheme, rest) = match lower.split_once("://") {
            Some((scheme, rest)) if valid_scheme(scheme) => (Some(scheme), rest),
            Some(_) => return Err(invalid()),
            None => (None, lower.as_str()),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (wildcard, authority) = match rest.strip_prefix("*.") {
            Some(suffix) => (true, suffix),
            None => (false, rest),
        };
        let (host, port) = split_host_port(authority).ok_or_else(invalid)?;
        Ok(Self {
            scheme: scheme.map(str::to_owned),
            host: host.to_owned(),
            port: port.filter(|&p| scheme.is_none_or(|s| Some(p) != default_port(s))),
            wildcard,
        })
    }

    fn matches(&self, origin: &Origin<'_>) -> bool {
        if self.scheme.as_deref().is_some_and(|s| s != origin.scheme) {
            return false;
        }
        // Both sides have the default port taken out, so `https://a.example.com:443` is
        // `https://a.example.com`, as a browser would send it.
        if self.port != origin.port {
            return false;
        }
        if self.wildcard {
            origin
                .host
                .strip_suffix(self.host.as_str())
                .and_then(|sub| sub.strip_suffix('.'))
                .is_some_and(|sub| !sub.is_empty())
        } else {
            origin.host == self.host
        }
    }
}

/// Why an upgrade was refused before it happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// 403: `--allowed-origin` is set and the Origin is not one of them.
    Origin,
    /// 401: authentication is on and the token is missing, malformed, expired or forged.
    Unauthorized,
}

impl Refused {
    pub fn status(self) -> StatusCode {
        match self {
            Refused::Origin => StatusCode::FORBIDDEN,
            Refused::Unauthorized => StatusCode::UNAUTHORIZED,
        }
    }

    pub fn body(self) -> &'static str {
        match self {
            Refused::Origin => "origin not allowed\n",
            Refused::Unauthorized => "a valid token is required\n",
        }
    }
}

/// What an accepted upgrade carries into the connection.
#[derive(Debug, Default)]
pub struct Admitted {
    pub identity: Option<Identity>,
    /// The subprotocol to select in the 101 (the token came as one).
    pub subprotocol: Option<String>,
}

/// Origin allow-list, token verifier and trusted proxies; all off by default.
#[derive(Debug, Default)]
pub struct Security {
    origins: Vec<OriginPattern>,
    pub verifier: Option<Verifier>,
    /// `--trusted-proxy`: peers whose forwarding headers name the client.
    pub proxies: TrustedProxies,
}

impl Security {
    pub fn from_config(config: &Config) -> Result<Self, Error> {
        Ok(Self {
            origins: config
                .allowed_origins
                .iter()
                .filter(|o| !o.trim().is_empty())
                .map(|o| OriginPattern::parse(o))
                .collect::<Result<_, _>>()?,
            verifier: Verifier::from_config(config)?,
            proxies: TrustedProxies::new(&config.trusted_proxies),
        })
    }

    pub fn auth_enabled(&self) -> bool {
        self.verifier.is_some()
    }

    /// Checks an upgrade request's Origin and token.
    pub fn check(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
        peer: std::net::SocketAddr,
    ) -> Result<Admitted, Refused> {
        if !self.origins.is_empty() && !self.origin_allowed(headers) {
            debug!(peer = %peer, origin = ?headers.get(ORIGIN), "origin refused");
            return Err(Refused::Origin);
        }
        let Some(verifier) = &self.verifier else {
            return Ok(Admitted::default());
        };
        let protocols = auth::offered_protocols(
            headers
                .get_all(SEC_WEBSOCKET_PROTOCOL)
                .iter()
                .filter_map(|v| v.to_str().ok()),
        );
        let presented = auth::find_token(query, &protocols);
        let result = match &presented {
            None => Err(auth::Rejection::Missing),
            Some(p) => verifier.verify(p.token),
        };
        match result {
            Ok(identity) => Ok(Admitted {
                identity: Some(identity),
                subprotocol: presented.and_then(|p| p.subprotocol.map(str::to_owned)),
            }),
            Err(why) => {
                debug!(peer = %peer, reason = %why, "upgrade refused: token");
                Err(Refused::Unauthorized)
            }
        }
    }

    fn origin_allowed(&self, headers: &HeaderMap) -> bool {
        // Two Origin headers: a browser never sends that, and which one a proxy or a check
        // looks at would be a guess.
        let mut values = headers.get_all(ORIGIN).iter();
        let (Some(origin), None) = (values.next(), values.next()) else {
            return false;
        };
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        let origin = origin.trim().to_ascii_lowercase();
        let Some(origin) = Origin::parse(&origin) else {
            return false;
        };
        self.origins.iter().any(|p| p.matches(&origin))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn allowed(patterns: &[&str], origin: Option<&str>) -> bool {
        let security = Security {
            origins: patterns
                .iter()
                .map(|p| OriginPattern::parse(p).expect("valid pattern"))
                .collect(),
            ..Security::default()
        };
        let mut headers = HeaderMap::new();
        if let Some(origin) = origin {
            headers.insert(ORIGIN, HeaderValue::from_str(origin).expect("ascii"));
        }
        security.origin_allowed(&headers)
    }

    #[test]
    fn origin_patterns() {
        let exact = ["https://chat.example.com"];
        assert!(allowed(&exact, Some("https://chat.example.com")));
        assert!(allowed(&exact, Some("HTTPS://Chat.Example.com")));
        assert!(!allowed(&exact, Some("http://chat.example.com")));
        assert!(!allowed(&exact, Some("https://chat.example.com.evil.net")));
        assert!(!allowed(&exact, None));
        assert!(!allowed(&exact, Some("null")));
        let wild = ["*.example.com"];
        assert!(allowed(&wild, Some("https://a.example.com")));
        assert!(allowed(&wild, Some("http://a.b.example.com")));
        assert!(!allowed(&wild, Some("https://example.com")));
        assert!(!allowed(&wild, Some("https://badexample.com")));
        let port = ["http://localhost:8080"];
        assert!(allowed(&port, Some("http://localhost:8080")));
        assert!(!allowed(&port, Some("http://localhost:9090")));
        assert!(!allowed(&port, Some("http://localhost")));
        assert!(OriginPattern::parse("https://").is_err());
        assert!(OriginPattern::parse("a.*.com").is_err());
        assert!(OriginPattern::parse("https://a.example.com/path").is_err());
        assert!(OriginPattern::parse("https://user@a.example.com").is_err());
    }

    #[test]
    fn origins_match_by_parsed_parts_not_by_string() {
        let wild = ["*.example.com"];
        for hostile in [
            "https://evil.com/.example.com",
            "https://evil.com?.example.com",
            "https://evil.com#.example.com",
            "https://a.example.com@evil.com",
            "https://evil.com\\.example.com",
            "https://user@a.example.com",
            "https://a.example.com:evil",
            "https://a.example.com:99999",
            "https://a.example.com/",
            "https://.example.com",
            "https://a..example.com",
            "https://a.example.com, https://evil.com",
        ] {
            assert!(!allowed(&wild, Some(hostile)), "{hostile}");
        }
        // Ports: a pattern without one allows only the scheme's default port.
        assert!(!allowed(&wild, Some("https://a.example.com:8443")));
        assert!(allowed(&wild, Some("https://a.example.com:443")));
        assert!(allowed(
            &["*.example.com:8443"],
            Some("https://a.example.com:8443")
        ));
        assert!(allowed(
            &["https://*.example.com"],
            Some("https://a.example.com")
        ));
        assert!(!allowed(
            &["https://*.example.com"],
            Some("http://a.example.com")
        ));
        let v6 = ["http://[::1]:8080"];
        assert!(allowed(&v6, Some("http://[::1]:8080")));
        assert!(!allowed(&v6, Some("http://[::1]:8080@evil.com")));
    }

    #[test]
    fn two_origin_headers_are_refused() {
        let security = Security {
            origins: vec![OriginPattern::parse("https://chat.example.com").expect("valid")],
            ..Security::default()
        };
        let mut headers = HeaderMap::new();
        headers.append(ORIGIN, HeaderValue::from_static("https://chat.example.com"));
        assert!(security.origin_allowed(&headers));
        headers.append(ORIGIN, HeaderValue::from_static("https://chat.example.com"));
        assert!(!security.origin_allowed(&headers));
    }
}
