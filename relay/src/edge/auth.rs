//! Authentication at the upgrade: a JWT from the `token` query parameter or a
//! `Sec-WebSocket-Protocol` value, verified before any WebSocket exists.
//!
//! The algorithm is pinned by configuration (`--auth-algorithm`): the token's own `alg` header
//! only has to match it, so `alg: none` and HS256-signed-with-the-public-key tokens fail.

use std::borrow::Cow;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

pub use crate::chat::client::Identity;
pub use crate::clock::now_secs;
use crate::config::Config;
use crate::error::Error;
use crate::protocol::name::{nfc, normalize_name};

/// The subprotocol the relay selects when a browser sends its token as a
/// `Sec-WebSocket-Protocol` value next to it (`new WebSocket(url, ["chatrelay", token])`).
pub const SUBPROTOCOL: &str = "chatrelay";

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    name: Option<String>,
    rooms: Option<Vec<String>>,
    exp: u64,
}

/// Why a token was refused (logged at debug level; the client only sees 401).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    Missing,
    Invalid(String),
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejection::Missing => f.write_str("no token"),
            Rejection::Invalid(why) => write!(f, "invalid token: {why}"),
        }
    }
}

/// The token verifier; `None` in [`crate::edge::security::Security`] when authentication is off.
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
    /// The leeway again, for the expiry check while connected.
    pub leeway_secs: u64,
    /// Keep each token's claims as JSON for the join hook (`--join-hook`).
    keep_claims: bool,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("algorithms", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// Builds the verifier from the configuration; `Ok(None)` when authentication is off.
    pub fn from_config(config: &Config) -> Result<Option<Self>, Error> {
        let (key, algorithm) = match (&config.auth_secret, &config.auth_public_key) {
            (None, None) => {
                if config.auth_algorithm.is_some() {
                    return Err(Error::Config(
                        "--auth-algorithm needs --auth-secret or --auth-public-key".into(),
                    ));
                }
                return Ok(None);
            }
            (Some(_), Some(_)) => {
                return Err(Error::Config(
                    "give --auth-secret or --auth-public-key, not both".into(),
                ))
            }
            (Some(secret), None) => {
                match config.auth_algorithm.as_deref() {
                    None | Some("HS256") => {}
                    Some(other) => {
                        return Err(Error::Config(format!(
                            "--auth-secret verifies HS256 tokens, not {other}"
                        )))
                    }
                }
                let secret = &secret.0;
                if secret.len() < 32 {
                    return Err(Error::Config(
                        "--auth-secret must be at least 32 bytes (256 bits) for HS256".into(),
                    ));
                }
                (
                    DecodingKey::from_secret(secret.as_bytes()),
                    Algorithm::HS256,
                )
            }
            (None, Some(path)) => {
                let pem = std::fs::read(path).map_err(|err| {
                    Error::Config(format!(
                        "reading --auth-public-key {}: {err}",
                        path.display()
                    ))
                })?;
                let bad_key = |err: jsonwebtoken::errors::Error| {
                    Error::Config(format!("--auth-public-key {}: {err}", path.display()))
                };
                match config.auth_algorithm.as_deref() {
                    Some("RS256") => (
                        DecodingKey::from_rsa_pem(&pem).map_err(bad_key)?,
                        Algorithm::RS256,
                    ),
                    Some("ES256") => (
                        DecodingKey::from_ec_pem(&pem).map_err(bad_key)?,
                        Algorithm::ES256,
                    ),
                    _ => {
                        return Err(Error::Config(
                            "--auth-public-key needs --auth-algorithm RS256 or ES256".into(),
                        ))
                    }
                }
            }
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = config.auth_leeway.as_secs();
        validation.set_required_spec_claims(&["exp", "sub"]);
        // Off by default in jsonwebtoken: a token issued for later (`nbf`) would otherwise
        // work at once. Optional claim: checked when present, with the same leeway as `exp`.
        validation.validate_nbf = true;
        match &config.auth_audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                validation.required_spec_claims.insert("aud".into());
            }
            // Without a configured audience an `aud` in the token is not checked (the
            // library would otherwise refuse every token that has one).
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &config.auth_issuer {
            validation.set_issuer(&[iss]);
            validation.required_spec_claims.insert("iss".into());
        }
        Ok(Some(Self {
            key,
            leeway_secs: validation.leeway,
            validation,
            keep_claims: config.join_hook.is_some(),
        }))
    }

    /// Verifies `token` and turns its claims into an identity.
    pub fn verify(&self, token: &str) -> Result<Identity, Rejection> {
        let (claims, kept) = if self.keep_claims {
            // The whole claims object for the join hook, and the ones the relay reads.
            let data =
                jsonwebtoken::decode::<serde_json::Value>(token, &self.key, &self.validation)
                    .map_err(|err| Rejection::Invalid(err.to_string()))?;
            let kept = data.claims.to_string().into_boxed_str();
            let claims = serde_json::from_value::<Claims>(data.claims)
                .map_err(|err| Rejection::Invalid(err.to_string()))?;
            (claims, Some(kept))
        } else {
            let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
                .map_err(|err| Rejection::Invalid(err.to_string()))?;
            (data.claims, None)
        };
        // The token's names are kept in NFC like every other name, so `sub`, `name` and
        // the `rooms` claim compare equal to joins whatever form the issuer wrote them in.
        let Some(user_id) = normalize_name(&claims.sub).map(Cow::into_owned) else {
            return Err(Rejection::Invalid(
                "sub must be 1-64 characters without control or format characters".into(),
            ));
        };
        let username = match claims.name {
            Some(name) => match normalize_name(&name) {
                Some(name) => name.into_owned(),
                None => {
                    return Err(Rejection::Invalid(
                        "name must be 1-64 characters without control or format characters".into(),
                    ))
                }
            },
            None => user_id.clone(),
        };
        Ok(Identity {
            user_id: user_id.into(),
            username: username.into(),
            rooms: claims.rooms.map(|rooms| {
                rooms
                    .iter()
                    .map(|room| nfc(room).into_owned().into_boxed_str())
                    .collect()
            }),
            expires_at: claims.exp,
            claims: kept,
        })
    }
}

/// Where a token was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presented<'a> {
    pub token: &'a str,
    /// The `Sec-WebSocket-Protocol` value to echo in the 101, when the token came that way.
    pub subprotocol: Option<&'a str>,
}

/// Finds the token: the `token` query parameter, else a `Sec-WebSocket-Protocol` value shaped
/// like a JWT (three dot-separated parts). Browsers cannot set headers on a WebSocket, so
/// those are the two places a browser can put it.
pub fn find_token<'a>(query: Option<&'a str>, protocols: &'a [&'a str]) -> Option<Presented<'a>> {
    if let Some(token) = query.and_then(query_token) {
        return Some(Presented {
            token,
            subprotocol: None,
        });
    }
    let token = protocols
        .iter()
        .copied()
        .find(|p| p.split('.').count() == 3)?;
    // A browser fails the handshake unless the 101 selects one of the values it offered:
    // the plain protocol name when offered, else the token itself.
    let subprotocol = if protocols.contains(&SUBPROTOCOL) {
        SUBPROTOCOL
    } else {
        token
    };
    Some(Presented {
        token,
        subprotocol: Some(subprotocol),
    })
}

/// The `token` parameter of a query string. JWTs are base64url with dots, so a token that
/// needs percent-decoding is not a JWT: it is taken as it is and fails verification.
fn query_token(query: &str) -> Option<&str> {
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
        .filter(|t| !t.is_empty())
}

/// Splits `Sec-WebSocket-Protocol` header values into the offered protocols.
pub fn offered_protocols<'a>(values: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    values
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_from_query_or_subprotocol() {
        assert_eq!(
            find_token(Some("room=x&token=a.b.c"), &[]),
            Some(Presented {
                token: "a.b.c",
                subprotocol: None
            })
        );
        assert_eq!(find_token(Some("token="), &[]), None);
        assert_eq!(
            find_token(None, &["chatrelay", "a.b.c"]),
            Some(Presented {
                token: "a.b.c",
                subprotocol: Some("chatrelay")
            })
        );
        assert_eq!(
            find_token(None, &["a.b.c"]),
            Some(Presented {
                token: "a.b.c",
                subprotocol: Some("a.b.c")
            })
        );
        assert_eq!(find_token(None, &["chatrelay"]), None);
        assert_eq!(
            offered_protocols(["chatrelay, a.b.c", " x "].into_iter()),
            vec!["chatrelay", "a.b.c", "x"]
        );
    }

    #[test]
    fn rooms_claim_limits_joins() {
        let identity = Identity {
            user_id: "u".into(),
            username: "n".into(),
            rooms: Some(vec!["general".into()].into_boxed_slice()),
            expires_at: 0,
            claims: None,
        };
        assert!(identity.may_join("general"));
        assert!(!identity.may_join("random"));
        let anywhere = Identity {
            rooms: None,
            ..identity
        };
        assert!(anywhere.may_join("random"));
    }
}
