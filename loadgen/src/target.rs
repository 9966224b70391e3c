//! `--url` parsing, the loopback rule and its `--allow-remote` override, and the flags that say
//! how clients reach a target ([`TargetFlags`]: TLS, tokens, Origin).
//!
//! The guard runs on the URL's host as written, before any name lookup or connect: a host name
//! other than `localhost` is remote even if it would resolve to 127.0.0.1, so DNS can never
//! point the generator at another machine without `--allow-remote`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use serde::{Deserialize, Serialize};

use crate::auth::{JwtAlg, Secret, TokenIn, Tokens};
use crate::Error;

/// How clients reach the target(s): a deployment's TLS and authentication. One
/// `#[command(flatten)]` group of [`crate::Config`].
#[derive(Debug, Clone, Default, Args, Serialize, Deserialize)]
#[serde(default)]
pub struct TargetFlags {
    /// Allow targets that are not loopback (a host name other than localhost, or an address
    /// outside 127.0.0.0/8 and ::1). Only for a deployment you are responsible for.
    #[arg(long, env = "LOADGEN_ALLOW_REMOTE")]
    pub allow_remote: bool,

    /// PEM file of the CA certificate(s) to verify wss:// targets with, instead of the system
    /// roots (a private CA, a staging certificate).
    #[arg(long, env = "LOADGEN_CA_FILE")]
    pub ca_file: Option<PathBuf>,

    /// Do not verify the wss:// server certificate (any certificate is accepted; the report
    /// says `insecure: true`).
    #[arg(long, env = "LOADGEN_INSECURE")]
    pub insecure: bool,

    /// One token for every client (sent as --token-in says).
    #[arg(long, env = "LOADGEN_TOKEN", hide_env_values = true)]
    pub token: Option<Secret>,

    /// File with one token per line; client i uses line i modulo the number of lines.
    #[arg(long, env = "LOADGEN_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,

    /// Mint an HS256 JWT per client with this secret (sub = u{i}, exp past the run's end).
    #[arg(long, env = "LOADGEN_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<Secret>,

    /// Mint a JWT per client signed with this PEM private key (RS256 or ES256, see --jwt-alg).
    #[arg(long, env = "LOADGEN_JWT_PRIVATE_KEY")]
    pub jwt_private_key: Option<PathBuf>,

    /// JWT algorithm [default: HS256 with --jwt-secret; required with --jwt-private-key].
    #[arg(long, env = "LOADGEN_JWT_ALG", value_enum)]
    pub jwt_alg: Option<JwtAlg>,

    /// JSON object merged into every minted JWT's claims (its keys win), e.g.
    /// '{"aud":"chat","iss":"staging"}'.
    #[arg(long, env = "LOADGEN_JWT_CLAIMS")]
    pub jwt_claims: Option<String>,

    /// Where the token goes: the `token` query parameter, or a `Sec-WebSocket-Protocol` value
    /// next to `chatrelay` (what the relay's own browser client does).
    #[arg(long, env = "LOADGEN_TOKEN_IN", value_enum, default_value_t = TokenIn::Subprotocol)]
    pub token_in: TokenIn,

    /// Origin header to send with every upgrade (a relay with --allowed-origin wants one).
    #[arg(long, env = "LOADGEN_ORIGIN")]
    pub origin: Option<String>,
}

/// `ws://` or `wss://`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Ws,
    Wss,
}

/// One relay endpoint, already resolved to a socket address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub addr: SocketAddr,
    /// The `Host` header value (what the user wrote, so virtual hosts still match).
    pub host_header: String,
    /// Path and query of the upgrade request.
    pub path: String,
    /// The host as written, without brackets or port: the TLS server name (SNI).
    pub host: String,
    pub tls: bool,
    /// Not a loopback address: source-address spreading does not apply.
    pub remote: bool,
}

/// A URL taken apart, not yet resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub scheme: Scheme,
    pub host: String,
    pub port: u16,
    pub host_header: String,
    pub path: String,
    /// `localhost`, or an address in 127.0.0.0/8 or ::1 (then `Some`).
    pub loopback: Option<IpAddr>,
}

/// Parses `ws[s]://host[:port][/path][?query]` without resolving anything.
pub fn parse_url(url: &str) -> Result<Parsed, Error> {
    let bad = |reason: &str| Error::InvalidUrl {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let (scheme, rest) = if let Some(r) = url.strip_prefix("ws://") {
        (Scheme::Ws, r)
    } else if let Some(r) = url.strip_prefix("wss://") {
        (Scheme::Wss, r)
    } else {
        return Err(bad("only ws:// and wss:// URLs are supported"));
    };
    // A fragment is never sent; the authority ends at the path or the query.
    let rest = rest.split('#').next().unwrap_or_default();
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let path = match tail.chars().next() {
        None => "/".to_string(),
        Some('?') => format!("/{tail}"),
        Some(_) => tail.to_string(),
    };
    if authority.is_empty() {
        return Err(bad("missing host"));
    }
    if authority.contains('@') {
        return Err(bad(
            "user:password@ in the URL is not supported (use --token)",
        ));
    }
    if path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(bad("spaces or control characters in the path"));
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
    if host.is_empty() {
        return Err(bad("missing host"));
    }
    let port: u16 = match port {
        Some(p) => p.parse().map_err(|_| bad("port is not a number 0-65535"))?,
        None if scheme == Scheme::Wss => 443,
        None => 80,
    };
    let loopback = if host.eq_ignore_ascii_case("localhost") {
        Some(IpAddr::V4(Ipv4Addr::LOCALHOST))
    } else {
        host.parse::<IpAddr>().ok().filter(IpAddr::is_loopback)
    };
    Ok(Parsed {
        scheme,
        host: host.to_string(),
        port,
        host_header: authority.to_string(),
        path,
        loopback,
    })
}

/// The loopback rule: a remote host needs `--allow-remote`. Looks at the URL only.
pub fn check(url: &str, allow_remote: bool) -> Result<Parsed, Error> {
    let p = parse_url(url)?;
    if p.loopback.is_none() && !allow_remote {
        return Err(Error::RemoteNotAllowed {
            url: url.to_string(),
            host: p.host,
        });
    }
    Ok(p)
}

/// Parses `url`, applies the loopback rule, then resolves the host (remote targets only:
/// loopback hosts are addresses already). A name with several addresses uses the first.
pub fn parse(url: &str, allow_remote: bool) -> Result<Target, Error> {
    let p = check(url, allow_remote)?;
    let addr = match p.loopback {
        Some(ip) => SocketAddr::new(ip, p.port),
        None => match p.host.parse::<IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, p.port),
            Err(_) => (p.host.as_str(), p.port)
                .to_socket_addrs()
                .map_err(|e| Error::Resolve {
                    host: p.host.clone(),
                    reason: e.to_string(),
                })?
                .next()
                .ok_or_else(|| Error::Resolve {
                    host: p.host.clone(),
                    reason: "no addresses".into(),
                })?,
        },
    };
    Ok(Target {
        addr,
        host_header: p.host_header,
        path: p.path,
        host: p.host,
        tls: p.scheme == Scheme::Wss,
        remote: p.loopback.is_none(),
    })
}

/// Combinations that need the targets: spreading over 127.0.0.x source addresses only works
/// towards loopback (a remote target is unreachable from them).
pub fn check_targets(targets: &[Target], source_ips: Option<u8>) -> Result<(), Error> {
    if source_ips.is_some() {
        if let Some(t) = targets.iter().find(|t| t.remote) {
            return Err(Error::Config(format!(
                "--source-ips binds clients to 127.0.0.x, which cannot reach the remote target {}; \
                 drop --source-ips (spread load over several generator machines instead)",
                t.host_header
            )));
        }
    }
    Ok(())
}

/// How clients reach and authenticate to the targets, derived once per process from the
/// [`TargetFlags`].
#[derive(Debug, Clone)]
pub struct Access {
    /// The TLS client configuration; `None` when no target is `wss://`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub insecure: bool,
    pub tokens: Tokens,
    pub token_in: TokenIn,
    pub origin: Option<String>,
}

impl Access {
    /// `token_exp` is the `exp` (Unix seconds) of minted tokens.
    pub fn new(flags: &TargetFlags, targets: &[Target], token_exp: u64) -> Result<Access, Error> {
        let tls = if targets.iter().any(|t| t.tls) {
            Some(crate::tls::client_config(flags)?)
        } else {
            None
        };
        if let Some(o) = &flags.origin {
            if o.is_empty() || o.bytes().any(|b| b < b' ' || b == 0x7f) {
                return Err(Error::Config(
                    "--origin must be a non-empty value without control characters".into(),
                ));
            }
        }
        Ok(Access {
            tls,
            insecure: flags.insecure,
            tokens: Tokens::new(flags, token_exp)?,
            token_in: flags.token_in,
            origin: flags.origin.clone(),
        })
    }
}

/// The report's `target` section: how the run reached the relays.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetReport {
    /// Some target is not a loopback address (`--allow-remote`).
    pub remote: bool,
    /// Some target is `wss://`.
    pub tls: bool,
    /// Certificates were not verified (`--insecure`).
    pub insecure: bool,
    pub ca_file: Option<String>,
    /// none, token, token-file, jwt.
    pub auth: String,
    pub jwt_alg: Option<String>,
    /// query or subprotocol; null without a token.
    pub token_in: Option<String>,
    pub origin: Option<String>,
}

impl TargetReport {
    pub fn new(flags: &TargetFlags, targets: &[Target]) -> TargetReport {
        let tls = targets.iter().any(|t| t.tls);
        let auth = Tokens::kind(flags);
        TargetReport {
            remote: targets.iter().any(|t| t.remote),
            tls,
            insecure: tls && flags.insecure,
            ca_file: flags
                .ca_file
                .as_ref()
                .filter(|_| tls)
                .map(|p| p.display().to_string()),
            auth: auth.to_string(),
            jwt_alg: (auth == "jwt").then(|| format!("{:?}", JwtAlg::of(flags))),
            token_in: (auth != "none").then(|| {
                match flags.token_in {
                    TokenIn::Query => "query",
                    TokenIn::Subprotocol => "subprotocol",
                }
                .to_string()
            }),
            origin: flags.origin.clone(),
        }
    }

    /// The table's lines about the targets (below the `targets:` line).
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        let tls = match (self.tls, self.insecure, &self.ca_file) {
            (false, _, _) => "plain ws".to_string(),
            (true, true, _) => "TLS, certificate NOT verified".to_string(),
            (true, false, Some(ca)) => format!("TLS verified against {ca}"),
            (true, false, None) => "TLS verified against the system roots".to_string(),
        };
        let mut auth = self.auth.clone();
        if let Some(alg) = &self.jwt_alg {
            auth = format!("jwt {alg}, one per client");
        }
        if let Some(at) = &self.token_in {
            auth = format!("{auth} in the {at}");
        }
        let _ = writeln!(
            out,
            "  transport: {tls}   auth: {auth}{}{}",
            self.origin
                .as_ref()
                .map(|o| format!("   origin: {o}"))
                .unwrap_or_default(),
            if self.remote {
                "   (remote target)"
            } else {
                ""
            }
        );
        if self.insecure {
            let _ = writeln!(
                out,
                "  ** WARNING: --insecure: the server's TLS certificate was not verified **"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_loopback_forms() {
        let t = parse("ws://127.0.0.1:8080/ws", false).expect("v4");
        assert_eq!(t.addr, "127.0.0.1:8080".parse().expect("addr"));
        assert_eq!(t.path, "/ws");
        assert_eq!(t.host_header, "127.0.0.1:8080");
        assert!(!t.tls && !t.remote);
        let t = parse("ws://[::1]:9000", false).expect("v6");
        assert_eq!(t.addr, "[::1]:9000".parse().expect("addr"));
        assert_eq!(t.path, "/");
        assert_eq!(t.host, "::1");
        let t = parse("wss://localhost/ws?room=a", false).expect("wss");
        assert_eq!(t.addr, "127.0.0.1:443".parse().expect("addr"));
        assert!(t.tls);
        assert_eq!(
            (t.host.as_str(), t.path.as_str()),
            ("localhost", "/ws?room=a")
        );
        assert_eq!(
            parse("ws://localhost:1?x=1", false).expect("query").path,
            "/?x=1"
        );
        assert!(parse("ws://127.9.8.7:1/ws", false).is_ok());
    }

    #[test]
    fn refuses_other_hosts_without_allow_remote() {
        for url in [
            "ws://10.0.0.1:80/ws",
            "ws://example.com/ws",
            "wss://example.com/ws",
            "ws://[2001:db8::1]:80/",
            "ws://0.0.0.0:80/",
            // A name is remote even if it would resolve to loopback: nothing is looked up.
            "ws://localhost.example.invalid/ws",
            "ws://no-such-host.invalid/ws",
        ] {
            match parse(url, false) {
                Err(Error::RemoteNotAllowed { .. }) => {}
                other => panic!("{url}: {other:?}"),
            }
        }
        let msg = parse("ws://192.0.2.1/ws", false)
            .expect_err("remote")
            .to_string();
        assert!(msg.contains("--allow-remote"), "{msg}");
        assert!(msg.contains("192.0.2.1"), "{msg}");
    }

    #[test]
    fn the_guard_reads_the_url_only() {
        // `check` with the flag classifies without resolving (nothing is connected either).
        let p = check("wss://staging.example.com/ws", true).expect("allowed");
        assert_eq!(p.loopback, None);
        assert_eq!(p.port, 443);
        assert_eq!(check("ws://LOCALHOST:9/", false).expect("loopback").port, 9);
    }

    #[test]
    fn refuses_malformed_urls() {
        for url in [
            "http://127.0.0.1/",
            "ws://",
            "ws://127.0.0.1:99999/",
            "ws://user:pw@127.0.0.1/",
            "ws://[::1/",
            "ws://127.0.0.1/a b",
        ] {
            assert!(
                matches!(parse(url, false), Err(Error::InvalidUrl { .. })),
                "{url}"
            );
        }
    }

    #[test]
    fn source_ips_stay_a_loopback_feature() {
        // Targets built by hand: no test ever resolves or connects to a remote address.
        let local = parse("ws://127.0.0.1:1/ws", false).expect("loopback");
        let remote = Target {
            addr: "192.0.2.1:80".parse().expect("addr"),
            host_header: "192.0.2.1".into(),
            path: "/ws".into(),
            host: "192.0.2.1".into(),
            tls: false,
            remote: true,
        };
        assert!(check_targets(std::slice::from_ref(&local), Some(2)).is_ok());
        assert!(check_targets(&[local.clone(), remote.clone()], None).is_ok());
        let err = check_targets(&[local, remote], Some(2)).expect_err("refused");
        assert!(err.to_string().contains("--source-ips"), "{err}");
    }
}
