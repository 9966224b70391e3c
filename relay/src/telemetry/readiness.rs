//! Readiness: the node is ready unless a component has said why not (`GET /readyz`).
//!
//! Components (the Redis backplane, shutdown) report here instead of `/readyz` asking each
//! of them, so the endpoint stays cheap and new components need no change to it.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

#[derive(Debug, Default)]
pub struct Readiness {
    // A std Mutex: touched only on state changes and by the rare `/readyz` request.
    reasons: Mutex<BTreeMap<&'static str, String>>,
}

impl Readiness {
    /// Marks `component` unready with a human-readable reason (shown by `/readyz`).
    pub fn set_unready(&self, component: &'static str, reason: impl Into<String>) {
        let mut reasons = self.reasons.lock().unwrap_or_else(PoisonError::into_inner);
        reasons.insert(component, reason.into());
    }

    pub fn set_ready(&self, component: &'static str) {
        let mut reasons = self.reasons.lock().unwrap_or_else(PoisonError::into_inner);
        reasons.remove(component);
    }

    /// `Ok` when ready; otherwise every reason, one `component: reason` per line.
    pub fn check(&self) -> Result<(), String> {
        let reasons = self.reasons.lock().unwrap_or_else(PoisonError::into_inner);
        if reasons.is_empty() {
            return Ok(());
        }
        Err(reasons.iter().map(|(c, r)| format!("{c}: {r}\n")).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unready_until_every_component_recovers() {
        let readiness = Readiness::default();
        assert!(readiness.check().is_ok());
        readiness.set_unready("redis", "connection refused");
        readiness.set_unready("shutdown", "shutting down");
        assert_eq!(
            readiness.check(),
            Err("redis: connection refused\nshutdown: shutting down\n".into())
        );
        readiness.set_ready("redis");
        readiness.set_ready("shutdown");
        assert!(readiness.check().is_ok());
    }
}
