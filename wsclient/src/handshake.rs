//! The HTTP/1.1 upgrade as a client sees it.

use sha1::{Digest, Sha1};

use crate::base64::base64_encode;

const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// `Sec-WebSocket-Accept` for a given `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    let mut h = Sha1::new();
    h.update(key.as_bytes());
    h.update(GUID);
    base64_encode(&h.finalize())
}

/// A per-connection key derived from the client id: unpredictability buys nothing on loopback.
pub fn client_key(id: u64) -> String {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&id.to_le_bytes());
    b[8..].copy_from_slice(&(id.wrapping_mul(0x9E37_79B9_7F4A_7C15)).to_le_bytes());
    base64_encode(&b)
}

/// The HTTP/1.1 upgrade request.
pub fn upgrade_request(host: &str, path: &str, key: &str) -> Vec<u8> {
    upgrade_request_with(host, path, key, &[])
}

/// The HTTP/1.1 upgrade request with extra headers (`Origin`, `Sec-WebSocket-Protocol`, ...),
/// written after the standard ones. The caller keeps CR and LF out of names and values.
pub fn upgrade_request_with(
    host: &str,
    path: &str,
    key: &str,
    headers: &[(&str, &str)],
) -> Vec<u8> {
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
    );
    for (name, value) in headers {
        req.push_str(name);
        req.push_str(": ");
        req.push_str(value);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req.into_bytes()
}

/// Checks an upgrade response head (everything up to and including `\r\n\r\n`).
pub fn check_upgrade_response(head: &[u8], key: &str) -> Result<(), String> {
    let text = std::str::from_utf8(head).map_err(|_| "response head is not UTF-8".to_string())?;
    let mut lines = text.split("\r\n");
    let status = lines.next().unwrap_or_default();
    let code = status.split_whitespace().nth(1).unwrap_or_default();
    if code != "101" {
        return Err(format!("expected 101, got {status:?}"));
    }
    let want = accept_key(key);
    let ok = lines.any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("sec-websocket-accept") && v.trim() == want
        })
    });
    if ok {
        Ok(())
    } else {
        Err("missing or wrong Sec-WebSocket-Accept".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    #[test]
    fn accept_key_matches_the_rfc_6455_sample() {
        // RFC 6455 section 1.3.
        assert_eq!(accept_key(RFC_KEY), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn client_keys_are_16_bytes_and_differ_per_id() {
        let a = client_key(1);
        assert_eq!(crate::base64_decode(&a).map(|k| k.len()), Some(16));
        assert_ne!(a, client_key(2));
    }

    #[test]
    fn request_names_host_path_and_key() {
        let req = upgrade_request("127.0.0.1:9", "/ws", RFC_KEY);
        let text = std::str::from_utf8(&req).expect("ASCII");
        assert!(text.starts_with("GET /ws HTTP/1.1\r\nHost: 127.0.0.1:9\r\n"));
        assert!(text.contains(&format!("\r\nSec-WebSocket-Key: {RFC_KEY}\r\n")));
        assert!(text.ends_with("Sec-WebSocket-Version: 13\r\n\r\n"));
        let req = upgrade_request_with("h", "/", RFC_KEY, &[("Origin", "https://a.example")]);
        let text = std::str::from_utf8(&req).expect("ASCII");
        assert!(text.ends_with("Sec-WebSocket-Version: 13\r\nOrigin: https://a.example\r\n\r\n"));
    }

    #[test]
    fn response_check_wants_101_and_the_right_accept() {
        let good = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                     sec-websocket-accept:  s3pPLMBiTxaQ9kYGzzhZRbK+xOo= \r\n\r\n";
        assert_eq!(check_upgrade_response(good, RFC_KEY), Ok(()));
        assert!(check_upgrade_response(good, "AAAAAAAAAAAAAAAAAAAAAA==").is_err());
        let refused = b"HTTP/1.1 403 Forbidden\r\n\r\n";
        let err = check_upgrade_response(refused, RFC_KEY).expect_err("403 is no upgrade");
        assert!(err.contains("expected 101"), "{err}");
        assert!(check_upgrade_response(b"HTTP/1.1 101 OK\r\n\r\n", RFC_KEY).is_err());
        assert!(check_upgrade_response(b"\xff\xfe\r\n\r\n", RFC_KEY).is_err());
    }
}
