//! The app backend's hooks (docs/HOOKS.md) against a real HTTP backend
//! (`support::backend`): the shared client and its signing first, then the publish and join
//! hooks through real WebSocket clients.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use relay::hooks::http::{FailureKind, HookError, HookStats, Pool};
use serde_json::json;

use support::backend::{Backend, Reply};

const SECRET: &str = "hook-test-secret";

#[tokio::test]
async fn the_client_posts_json_signed_and_reuses_its_connection() {
    let backend = Backend::start().await;
    backend.answer(|_| Reply::json(json!({"ok": true})));
    let pool = Pool::new(Some(SECRET)).unwrap();
    let stats = Arc::new(HookStats::default());
    let hook = pool
        .hook("--publish-hook", &backend.url("/hook"), 4, stats.clone())
        .unwrap();
    for i in 0..3 {
        let body = Bytes::from(json!({"n": i}).to_string());
        let answer = hook.post_json(body, Duration::from_secs(5)).await.unwrap();
        assert_eq!(answer.status, 200);
        assert_eq!(&answer.body[..], br#"{"ok":true}"#);
    }
    let got = backend.wait_for("/hook", 3).await;
    for (i, request) in got.iter().enumerate() {
        assert_eq!(request.method, "POST");
        assert_eq!(request.header("content-type"), Some("application/json"));
        assert_eq!(request.json(), json!({"n": i}));
        request
            .verify(SECRET, Duration::from_secs(300))
            .unwrap_or_else(|why| panic!("request {i}: {why}"));
        assert!(request
            .verify("another secret", Duration::from_secs(300))
            .is_err());
    }
    assert_eq!(stats.requests(), 3);
    assert_eq!(stats.failures(FailureKind::Connect), 0);
}

#[tokio::test]
async fn without_a_secret_requests_are_not_signed() {
    let backend = Backend::start().await;
    let pool = Pool::new(None).unwrap();
    let stats = Arc::new(HookStats::default());
    let hook = pool
        .hook("--join-hook", &backend.url("/j"), 1, stats)
        .unwrap();
    hook.post_json(Bytes::from_static(b"{}"), Duration::from_secs(5))
        .await
        .unwrap();
    let got = backend.wait_for("/j", 1).await;
    assert_eq!(got[0].header("x-chatrelay-signature"), None);
    assert_eq!(got[0].header("x-chatrelay-timestamp"), None);
}

#[tokio::test]
async fn failures_have_kinds_and_a_backend_that_comes_back_is_used_again() {
    let mut backend = Backend::start().await;
    let pool = Pool::new(None).unwrap();
    let stats = Arc::new(HookStats::default());
    let hook = pool
        .hook("--publish-hook", &backend.url("/h"), 2, stats.clone())
        .unwrap();
    let post = || hook.post_json(Bytes::from_static(b"{}"), Duration::from_millis(300));

    backend.answer(|_| Reply::status(503));
    assert!(matches!(post().await, Err(HookError::Status(s)) if s == 503));
    backend.answer(|_| Reply::json(json!({})).after(Duration::from_secs(2)));
    assert!(matches!(post().await, Err(HookError::Timeout(_))));
    backend.answer(|_| Reply::json(json!({"allow": true})));
    assert!(post().await.is_ok(), "a pooled connection after a timeout");

    backend.stop();
    let down = post().await;
    assert!(
        matches!(down, Err(HookError::Connect(_))),
        "backend down: {down:?}"
    );
    backend.restart().await;
    assert!(post().await.is_ok(), "backend back on the same port");

    assert_eq!(stats.requests(), 5);
    assert_eq!(stats.failures(FailureKind::Status), 1);
    assert_eq!(stats.failures(FailureKind::Timeout), 1);
    assert_eq!(stats.failures(FailureKind::Connect), 1);
    // All but the one sent while it was down reached the backend (the slow one too).
    assert_eq!(backend.requests_to("/h").len(), 4);
}
