//! What the calendar providers (Google, Microsoft) share, so the second
//! one is not a copy of the first: credentials that cannot reach a log
//! ([`Secret`]), the handles their background work runs with
//! ([`Background`]), the TLS setup their HTTP clients need, and when each
//! user's sync passes run ([`scheduler`]), and the upkeep that renews push
//! channels and runs the safety net ([`upkeep`]), and what admins see of
//! each provider ([`health`]).

pub mod health;
pub mod scheduler;
pub mod upkeep;

use std::sync::Arc;

use serde::Deserialize;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use crate::counters::Metrics;

/// Make rustls use the ring provider. reqwest is built with
/// `rustls-no-provider` (aws-lc needs cmake), so this must run before any
/// `reqwest::Client` is built; calling it again is harmless.
pub fn install_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A credential (OAuth token, sync token, channel token). Prints as `***` in
/// `Debug` and `Display`, so it cannot reach a log line by accident; read it
/// with [`Secret::expose`] only where it is sent or stored.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// One async lock per user, made on first use: serializes one user's
/// changes of a kind (their channels, their token refresh) on this node.
#[derive(Default)]
pub struct UserLocks(std::sync::Mutex<std::collections::HashMap<i64, Arc<tokio::sync::Mutex<()>>>>);

impl UserLocks {
    /// The user's lock (the same one for every caller).
    pub fn lock(&self, user_id: i64) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(user_id).or_default().clone()
    }
}

/// What a provider's background work shares with the rest of the server.
pub struct Background {
    pub shutdown: watch::Receiver<bool>,
    /// Where its tasks run (shutdown awaits them).
    pub tasks: TaskTracker,
    /// Syncs and calls to the provider are counted here.
    pub metrics: Arc<Metrics>,
    /// This node's leases: one user's sync holds theirs.
    pub leases: Arc<crate::cluster::Leases>,
}

#[cfg(test)]
mod tests {
    use super::Secret;

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("ya29.very-secret");
        assert_eq!(format!("{s} {s:?} {:?}", Some(&s)), "*** *** Some(***)");
        assert_eq!(s.expose(), "ya29.very-secret");
    }
}
