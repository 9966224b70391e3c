//! Tokens for a relay with authentication: one for all clients (`--token`), one per line of a
//! file (`--token-file`), or a JWT minted per client (`--jwt-secret`, `--jwt-private-key`);
//! and where the upgrade request carries it (`--token-in`), with `--origin`.
//!
//! The relay takes a token from the `token` query parameter or from a `Sec-WebSocket-Protocol`
//! value that looks like a JWT (`docs/PROTOCOL.md`, Authentication). Its own browser client
//! uses the subprotocol, which is the default here too: it keeps tokens out of URLs, which
//! proxies and access logs record.

use std::borrow::Cow;
use std::sync::Arc;

use clap::ValueEnum;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::target::{Target, TargetFlags};
use crate::Error;

/// The subprotocol offered beside the token, as the relay's browser client does; the relay
/// selects it in the 101.
pub const SUBPROTOCOL: &str = "chatrelay";

/// A secret flag value: kept out of `Debug` output (the run's configuration is printed in
/// errors and crosses the worker pipe as JSON, where it must stay usable).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret(s)
    }
}

/// Where the upgrade request carries the token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenIn {
    /// `GET /ws?token=<token>`.
    Query,
    /// `Sec-WebSocket-Protocol: chatrelay, <token>`.
    #[default]
    Subprotocol,
}

/// The JWT signing algorithms the relay verifies (`--auth-algorithm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
pub enum JwtAlg {
    /// HMAC-SHA256 with --jwt-secret.
    #[value(name = "HS256", alias = "hs256")]
    HS256,
    /// RSA PKCS#1 v1.5 SHA-256 with --jwt-private-key (an RSA key, PEM).
    #[value(name = "RS256", alias = "rs256")]
    RS256,
    /// ECDSA P-256 SHA-256 with --jwt-private-key (a P-256 key, PKCS#8 PEM).
    #[value(name = "ES256", alias = "es256")]
    ES256,
}

impl JwtAlg {
    /// The algorithm a run uses: `--jwt-alg`, else HS256.
    pub fn of(flags: &TargetFlags) -> JwtAlg {
        flags.jwt_alg.unwrap_or(JwtAlg::HS256)
    }

    fn algorithm(self) -> Algorithm {
        match self {
            JwtAlg::HS256 => Algorithm::HS256,
            JwtAlg::RS256 => Algorithm::RS256,
            JwtAlg::ES256 => Algorithm::ES256,
        }
    }
}

/// Where each client's token comes from.
#[derive(Clone, Debug, Default)]
pub enum Tokens {
    /// Authentication off: no token.
    #[default]
    None,
    /// The same token for everyone.
    Fixed(Arc<str>),
    /// Client `i` uses `list[i % len]`.
    List(Arc<[String]>),
    /// A fresh JWT per client.
    Jwt(Arc<Minter>),
}

impl Tokens {
    /// Which source the flags select: `none`, `token`, `token-file` or `jwt`.
    pub fn kind(flags: &TargetFlags) -> &'static str {
        if flags.token.is_some() {
            "token"
        } else if flags.token_file.is_some() {
            "token-file"
        } else if flags.jwt_secret.is_some() || flags.jwt_private_key.is_some() {
            "jwt"
        } else {
            "none"
        }
    }

    pub fn new(flags: &TargetFlags, exp: u64) -> Result<Tokens, Error> {
        let cfg = |m: String| Error::Config(m);
        let given = [
            flags.token.is_some(),
            flags.token_file.is_some(),
            flags.jwt_secret.is_some(),
            flags.jwt_private_key.is_some(),
        ];
        if given.iter().filter(|g| **g).count() > 1 {
            return Err(cfg(
                "give one of --token, --token-file, --jwt-secret, --jwt-private-key".into(),
            ));
        }
        let jwt = flags.jwt_secret.is_some() || flags.jwt_private_key.is_some();
        if !jwt && (flags.jwt_alg.is_some() || flags.jwt_claims.is_some()) {
            return Err(cfg(
                "--jwt-alg and --jwt-claims need --jwt-secret or --jwt-private-key".into(),
            ));
        }
        let check = |what: &str, t: &str| {
            check_token(t, flags.token_in).map_err(|why| cfg(format!("{what}: {why}")))
        };
        if let Some(t) = &flags.token {
            check("--token", &t.0)?;
            return Ok(Tokens::Fixed(t.0.as_str().into()));
        }
        if let Some(path) = &flags.token_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| cfg(format!("reading --token-file {}: {e}", path.display())))?;
            let mut list = Vec::new();
            for (n, line) in text.lines().enumerate() {
                let t = line.trim();
                if t.is_empty() {
                    continue;
                }
                check(
                    &format!("--token-file {} line {}", path.display(), n + 1),
                    t,
                )?;
                list.push(t.to_string());
            }
            if list.is_empty() {
                return Err(cfg(format!(
                    "--token-file {} has no tokens",
                    path.display()
                )));
            }
            return Ok(Tokens::List(list.into()));
        }
        if jwt {
            return Ok(Tokens::Jwt(Arc::new(Minter::new(flags, exp)?)));
        }
        Ok(Tokens::None)
    }

    /// Client `id`'s token; an error only if minting fails.
    pub fn for_client(&self, id: u64) -> Result<Option<Cow<'_, str>>, String> {
        Ok(match self {
            Tokens::None => None,
            Tokens::Fixed(t) => Some(Cow::Borrowed(t.as_ref())),
            Tokens::List(l) => Some(Cow::Borrowed(l[(id % l.len() as u64) as usize].as_str())),
            Tokens::Jwt(m) => Some(Cow::Owned(m.mint(id)?)),
        })
    }
}

/// A token goes into a request line or a header as it is: refuse what would break either
/// (a CR/LF would even inject headers).
fn check_token(t: &str, at: TokenIn) -> Result<(), String> {
    if t.is_empty() {
        return Err("empty token".into());
    }
    if let Some(c) = t.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(format!(
            "the token has a {c:?}: only printable ASCII without spaces can be sent"
        ));
    }
    match at {
        // The relay takes the query value as it is (no percent-decoding): only what ends a
        // query parameter is a problem.
        TokenIn::Query if t.contains(['&', '#']) => Err(
            "the token has & or #, which end a query parameter; use --token-in subprotocol".into(),
        ),
        TokenIn::Subprotocol if t.contains(',') => {
            Err("a comma splits Sec-WebSocket-Protocol values; use --token-in query".into())
        }
        _ => Ok(()),
    }
}

/// Mints one JWT per client: `sub` = `u{i}` (what the client joins as), `iat` = now,
/// `exp` past the run's end, then the `--jwt-claims` object merged over them.
pub struct Minter {
    key: EncodingKey,
    header: Header,
    exp: u64,
    extra: Map<String, Value>,
}

impl std::fmt::Debug for Minter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Minter")
            .field("alg", &self.header.alg)
            .field("exp", &self.exp)
            .finish_non_exhaustive()
    }
}

impl Minter {
    pub fn new(flags: &TargetFlags, exp: u64) -> Result<Minter, Error> {
        let cfg = |m: String| Error::Config(m);
        let alg = JwtAlg::of(flags);
        let key = match (&flags.jwt_secret, &flags.jwt_private_key, alg) {
            (Some(s), _, JwtAlg::HS256) => {
                // The relay refuses shorter HS256 secrets at start: say so here instead of
                // letting every upgrade fail with 401.
                if s.0.len() < 32 {
                    return Err(cfg("--jwt-secret must be at least 32 bytes, as the relay's --auth-secret".into()));
                }
                EncodingKey::from_secret(s.0.as_bytes())
            }
            (Some(_), _, other) => {
                return Err(cfg(format!(
                    "--jwt-secret signs HS256 tokens, not {other:?}; use --jwt-private-key for {other:?}"
                )))
            }
            (None, Some(path), alg) => {
                let pem = std::fs::read(path).map_err(|e| {
                    cfg(format!("reading --jwt-private-key {}: {e}", path.display()))
                })?;
                let bad = |e: jsonwebtoken::errors::Error| {
                    cfg(format!("--jwt-private-key {}: {e}", path.display()))
                };
                match flags.jwt_alg {
                    Some(JwtAlg::RS256) => EncodingKey::from_rsa_pem(&pem).map_err(bad)?,
                    Some(JwtAlg::ES256) => EncodingKey::from_ec_pem(&pem).map_err(bad)?,
                    _ => {
                        return Err(cfg(format!(
                            "--jwt-private-key needs --jwt-alg RS256 or ES256 (not {alg:?})"
                        )))
                    }
                }
            }
            (None, None, _) => return Err(cfg("no JWT key given".into())),
        };
        let extra = match &flags.jwt_claims {
            None => Map::new(),
            Some(text) => match serde_json::from_str::<Value>(text) {
                Ok(Value::Object(m)) => m,
                Ok(_) => return Err(cfg("--jwt-claims must be a JSON object".into())),
                Err(e) => return Err(cfg(format!("--jwt-claims is not JSON: {e}"))),
            },
        };
        let minter = Minter {
            key,
            header: Header::new(alg.algorithm()),
            exp,
            extra,
        };
        // Sign once now: a key that cannot sign fails the run here, not in every client.
        minter.mint(0).map_err(cfg)?;
        Ok(minter)
    }

    pub fn mint(&self, id: u64) -> Result<String, String> {
        let mut claims = Map::new();
        claims.insert("sub".into(), Value::String(format!("u{id}")));
        claims.insert(
            "iat".into(),
            Value::from(crate::clock::now_ns() / 1_000_000_000),
        );
        claims.insert("exp".into(), Value::from(self.exp));
        for (k, v) in &self.extra {
            claims.insert(k.clone(), v.clone());
        }
        jsonwebtoken::encode(&self.header, &claims, &self.key)
            .map_err(|e| format!("minting a JWT: {e}"))
    }
}

/// The upgrade request of one client: the token where `--token-in` says, and `--origin`.
pub fn upgrade_request(
    target: &Target,
    key: &str,
    token: Option<&str>,
    token_in: TokenIn,
    origin: Option<&str>,
) -> Vec<u8> {
    let mut headers: Vec<(&str, Cow<'_, str>)> = Vec::with_capacity(2);
    let mut path = Cow::Borrowed(target.path.as_str());
    match (token, token_in) {
        (None, _) => {}
        (Some(t), TokenIn::Query) => {
            let sep = if target.path.contains('?') { '&' } else { '?' };
            path = Cow::Owned(format!("{}{sep}token={t}", target.path));
        }
        (Some(t), TokenIn::Subprotocol) => {
            headers.push((
                "Sec-WebSocket-Protocol",
                Cow::Owned(format!("{SUBPROTOCOL}, {t}")),
            ));
        }
    }
    if let Some(o) = origin {
        headers.push(("Origin", Cow::Borrowed(o)));
    }
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_ref())).collect();
    chatrelay_wsclient::upgrade_request_with(&target.host_header, &path, key, &headers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation};

    fn flags() -> TargetFlags {
        TargetFlags::default()
    }

    fn target(path: &str) -> Target {
        crate::target::parse(&format!("ws://127.0.0.1:1{path}"), false).expect("target")
    }

    #[test]
    fn token_sources_are_exclusive_and_checked() {
        let mut f = flags();
        f.token = Some(Secret("a.b.c".into()));
        f.jwt_secret = Some(Secret("x".repeat(32)));
        assert!(matches!(Tokens::new(&f, 0), Err(Error::Config(_))));
        f.jwt_secret = None;
        let t = Tokens::new(&f, 0).expect("fixed");
        assert_eq!(t.for_client(7).expect("token").as_deref(), Some("a.b.c"));
        f.token = Some(Secret("bad\r\nX-Evil: 1".into()));
        assert!(Tokens::new(&f, 0).is_err());
        f.token = Some(Secret("a&b".into()));
        f.token_in = TokenIn::Query;
        assert!(Tokens::new(&f, 0).is_err());
        let mut f = flags();
        f.jwt_claims = Some("{}".into());
        assert!(Tokens::new(&f, 0).is_err(), "claims without a key");
        f.jwt_claims = None;
        f.jwt_secret = Some(Secret("short".into()));
        assert!(Tokens::new(&f, 0).is_err(), "the relay wants 32 bytes");
    }

    #[test]
    fn token_file_is_used_in_turn() {
        let path = std::env::temp_dir().join(format!("loadgen-tokens-{}", std::process::id()));
        std::fs::write(&path, "t0\n\n t1 \nt2\n").expect("write");
        let mut f = flags();
        f.token_file = Some(path.clone());
        let t = Tokens::new(&f, 0).expect("list");
        let got: Vec<String> = (0..4)
            .map(|i| t.for_client(i).expect("ok").expect("some").into_owned())
            .collect();
        assert_eq!(got, ["t0", "t1", "t2", "t0"]);
        std::fs::write(&path, "\n\n").expect("write");
        assert!(Tokens::new(&f, 0).is_err(), "an empty file");
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn hs256_tokens_differ_per_client_and_merge_claims() {
        let secret = "s".repeat(32);
        let mut f = flags();
        f.jwt_secret = Some(Secret(secret.clone()));
        f.jwt_claims = Some(r#"{"aud":"chat","name":"load"}"#.into());
        let exp = crate::clock::now_ns() / 1_000_000_000 + 600;
        let t = Tokens::new(&f, exp).expect("jwt");
        let mut v = Validation::new(Algorithm::HS256);
        v.set_audience(&["chat"]);
        let key = DecodingKey::from_secret(secret.as_bytes());
        for id in [0u64, 41] {
            let tok = t.for_client(id).expect("mint").expect("some");
            let c = jsonwebtoken::decode::<Map<String, Value>>(&*tok, &key, &v).expect("verifies");
            assert_eq!(c.claims["sub"], format!("u{id}"));
            assert_eq!(c.claims["exp"], exp);
            assert_eq!(c.claims["name"], "load");
        }
        f.jwt_claims = Some("[1]".into());
        assert!(Tokens::new(&f, exp).is_err());
    }

    #[test]
    fn es256_with_a_pem_key() {
        let key = rcgen::KeyPair::generate().expect("P-256 key");
        let path = std::env::temp_dir().join(format!("loadgen-es256-{}.pem", std::process::id()));
        std::fs::write(&path, key.serialize_pem()).expect("write");
        let mut f = flags();
        f.jwt_private_key = Some(path.clone());
        assert!(Tokens::new(&f, 1).is_err(), "the algorithm must be named");
        f.jwt_alg = Some(JwtAlg::ES256);
        let exp = crate::clock::now_ns() / 1_000_000_000 + 600;
        let t = Tokens::new(&f, exp).expect("es256");
        let tok = t.for_client(3).expect("mint").expect("some");
        let dk = DecodingKey::from_ec_pem(key.public_key_pem().as_bytes()).expect("public key");
        let c = jsonwebtoken::decode::<Map<String, Value>>(
            &*tok,
            &dk,
            &Validation::new(Algorithm::ES256),
        )
        .expect("verifies");
        assert_eq!(c.claims["sub"], "u3");
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn request_carries_token_and_origin() {
        let req = |path: &str, at| {
            String::from_utf8(upgrade_request(
                &target(path),
                "k",
                Some("a.b.c"),
                at,
                Some("https://x.example"),
            ))
            .expect("ASCII")
        };
        let q = req("/ws", TokenIn::Query);
        assert!(q.starts_with("GET /ws?token=a.b.c HTTP/1.1\r\n"), "{q}");
        assert!(q.contains("\r\nOrigin: https://x.example\r\n"), "{q}");
        assert!(!q.contains("Sec-WebSocket-Protocol"), "{q}");
        assert!(req("/ws?room=1", TokenIn::Query).starts_with("GET /ws?room=1&token=a.b.c "));
        let s = req("/ws", TokenIn::Subprotocol);
        assert!(s.starts_with("GET /ws HTTP/1.1\r\n"), "{s}");
        assert!(
            s.contains("\r\nSec-WebSocket-Protocol: chatrelay, a.b.c\r\n"),
            "{s}"
        );
        let plain = upgrade_request(&target("/ws"), "k", None, TokenIn::Query, None);
        assert_eq!(
            plain,
            chatrelay_wsclient::upgrade_request("127.0.0.1:1", "/ws", "k")
        );
    }
}
