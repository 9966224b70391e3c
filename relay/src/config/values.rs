//! The values of flags that are more than a number or a path: parsed and checked while the
//! configuration is read, so a bad one is a start-up error naming the flag.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::sync::Arc;

use hyper::header::HeaderValue;
use subtle::ConstantTimeEq;

/// The admin bearer token. Its `Debug` never shows it, so it cannot leak through a logged
/// `Config`.
#[derive(Clone)]
pub struct AdminToken(Arc<str>);

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

impl FromStr for AdminToken {
    type Err = String;

    fn from_str(token: &str) -> Result<Self, String> {
        if token.chars().count() < 16 || token.chars().any(char::is_whitespace) {
            return Err("the admin token must be at least 16 characters, without spaces".into());
        }
        Ok(Self(token.into()))
    }
}

impl AdminToken {
    /// Whether `header` is `Bearer <this token>`, compared in constant time so response
    /// timing does not reveal how much of a guess was right. The scheme name is
    /// case-insensitive (RFC 9110 section 11.1): `bearer x` is the same credential.
    pub fn accepts(&self, header: Option<&HeaderValue>) -> bool {
        let presented = header
            .map(HeaderValue::as_bytes)
            .and_then(|h| {
                let (scheme, rest) = h.split_at_checked(7)?;
                (scheme.eq_ignore_ascii_case(b"bearer ")).then_some(rest)
            })
            .map(|token| token.trim_ascii_start())
            .unwrap_or_default();
        // `ct_eq` on slices of different lengths is false without comparing: the length of
        // the token is the only thing a wrong guess can learn.
        bool::from(presented.ct_eq(self.0.as_bytes()))
    }
}

/// One `--trusted-proxy` entry: an address range, or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                u32::from(ip) & v4_mask(self.prefix) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                u128::from(ip) & v6_mask(self.prefix) == u128::from(net)
            }
            _ => false,
        }
    }
}

fn v4_mask(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn v6_mask(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network = address
            .parse::<IpAddr>()
            .map_err(|_| {
                format!("{text:?} is not an IP address or CIDR range (e.g. 10.0.0.0/8, fd00::/8, 192.0.2.7)")
            })?
            .to_canonical();
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(digits) => digits
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?}: the prefix length must be 0 to {max}"))?,
        };
        let masked = match network {
            IpAddr::V4(ip) => IpAddr::V4(Ipv4Addr::from(u32::from(ip) & v4_mask(prefix))),
            IpAddr::V6(ip) => IpAddr::V6(Ipv6Addr::from(u128::from(ip) & v6_mask(prefix))),
        };
        if masked != network {
            // A typo more often than not (10.0.0.1/8): say what the range would be.
            return Err(format!(
                "{text:?} has bits set past its /{prefix} prefix: did you mean {masked}/{prefix}?"
            ));
        }
        Ok(Self { network, prefix })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}
