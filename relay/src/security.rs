//! The checks an upgrade request passes before it becomes a WebSocket: Origin, then the token.
//! Each failure is an HTTP status, never a WebSocket (see docs/PROTOCOL.md, "HTTP").

use hyper::header::{HeaderMap, ORIGIN, SEC_WEBSOCKET_PROTOCOL};
use hyper::StatusCode;
use tracing::debug;

use crate::auth::{self, Identity, Verifier};
use crate::config::Config;
use crate::error::Error;

/// One `--allowed-origin` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct OriginPattern {
    /// `https`, `http`, ...; `None` matches any scheme.
    scheme: Option<String>,
    /// Lowercase host with an optional `:port`; with `wildcard`, the suffix after `*.`.
    host: String,
    /// `*.example.com`: any subdomain of `example.com` (not `example.com` itself).
    wildcard: bool,
}

impl OriginPattern {
    fn parse(text: &str) -> Result<Self, Error> {
        let text = text.trim().to_ascii_lowercase();
        let (scheme, rest) = match text.split_once("://") {
            Some((scheme, rest)) => (Some(scheme.to_owned()), rest.trim_end_matches('/')),
            None => (None, text.trim_end_matches('/')),
        };
        let rest = rest.to_owned();
        let (wildcard, host) = match rest.strip_prefix("*.") {
            Some(suffix) => (true, suffix.to_owned()),
            None => (false, rest),
        };
        if host.is_empty() || host.contains(['*', '/']) {
            return Err(Error::Config(format!(
                "--allowed-origin {text:?}: expected e.g. https://chat.example.com or *.example.com"
            )));
        }
        Ok(Self {
            scheme,
            host,
            wildcard,
        })
    }

    fn matches(&self, scheme: &str, host: &str) -> bool {
        if self.scheme.as_deref().is_some_and(|s| s != scheme) {
            return false;
        }
        if self.wildcard {
            host.len() > self.host.len() + 1
                && host.ends_with(&self.host)
                && host.as_bytes()[host.len() - self.host.len() - 1] == b'.'
        } else {
            host == self.host
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

/// Origin allow-list and token verifier; both off by default.
#[derive(Debug, Default)]
pub struct Security {
    origins: Vec<OriginPattern>,
    pub verifier: Option<Verifier>,
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
        let Some(origin) = headers.get(ORIGIN).and_then(|o| o.to_str().ok()) else {
            return false;
        };
        let origin = origin.trim().to_ascii_lowercase();
        let Some((scheme, host)) = origin.split_once("://") else {
            return false;
        };
        self.origins.iter().any(|p| p.matches(scheme, host))
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
            verifier: None,
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
        assert!(OriginPattern::parse("https://").is_err());
        assert!(OriginPattern::parse("a.*.com").is_err());
    }
}
