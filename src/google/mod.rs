//! Google Calendar: sign-in and connect (OAuth), push channels, and the
//! per-user incremental sync that turns calendar events into `google`
//! meetings, over every calendar the user ticked. The Google tables
//! (`google_calendars`, `google_event_links`, `calendar_watch_channels`,
//! `google_oauth_states`, `google_sync_status`, the token columns of
//! `users`) are written through the store's Google operations
//! (`store::google*`, `store::watch_channels`); nothing here runs SQL. Never
//! logs or returns a Google token (they travel as [`Secret`]).
//!
//! - [`oauth`]: consent URL, signed single-use `state`, code exchange, who may sign in.
//! - [`client`]: the HTTP calls to Google and what their errors mean.
//! - [`calendars`]: which of a user's calendars sync (the list, the ticks).
//! - [`sync`]: what an event means (meeting or not, declined, which
//!   occurrence), the sync pass, per-user coalescing, backoff.
//! - [`channels`]: registering, replacing and stopping push channels.
//! - [`upkeep`]: the background work that keeps push sync from failing
//!   quietly: catch-up on start, channel renewal before expiry, the
//!   safety-net sync, pruning used sign-in states.
//! - [`mod@routes`], [`calendar_routes`]: the HTTP surface (sign-in, the push
//!   endpoint, channel setup, `/api/me/calendars`, the admin report).

pub mod calendar_routes;
pub mod calendars;
pub mod channels;
pub mod client;
pub mod oauth;
pub mod routes;
pub mod sync;
pub mod upkeep;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use crate::config::{Config, GoogleConfig};
use crate::counters::Metrics;
use crate::store::Store;

pub use client::HttpClientError;
pub use routes::{routes, GoogleRoutesState};
pub use sync::SyncError;
pub use upkeep::run;

/// Everything Google-related the server shares: configuration, the HTTP
/// client, and the per-user sync scheduler. One per server.
pub struct GoogleSync {
    pub(crate) cfg: GoogleConfig,
    /// Who may sign up by signing in with Google.
    pub(crate) sign_up: oauth::SignUpPolicy,
    pub(crate) store: Store,
    pub(crate) api: client::GoogleApi,
    /// HMAC key for OAuth `state`, derived from the JWT secret.
    pub(crate) state_key: [u8; 32],
    pub(crate) redirect_url: String,
    pub(crate) webhook_url: String,
    /// Cookies get `Secure` when the public URL is https.
    pub(crate) secure_cookies: bool,
    enabled: bool,
    /// When each user's sync passes run (coalesced here, one node at a time).
    passes: Arc<crate::provider::scheduler::Passes>,
    /// Serializes channel changes per user (setup, delete, renewal).
    channel_locks: Mutex<HashMap<i64, Arc<tokio::sync::Mutex<()>>>>,
    /// Serializes calendar selection changes per user.
    selection_locks: Mutex<HashMap<i64, Arc<tokio::sync::Mutex<()>>>>,
    /// Full listings running at once (`google.full_sync_concurrency`).
    pub(crate) full_syncs: Arc<tokio::sync::Semaphore>,
    /// When channels are renewed, and failed renewals' next tries.
    pub(crate) renewals: crate::provider::upkeep::Renewals,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) shutdown: watch::Receiver<bool>,
    /// Every task Google work runs in (upkeep loops, sync passes, channel
    /// changes set off by a request): shutdown waits for them before the
    /// writer is drained, so none is cut off between Google and the database.
    pub(crate) tasks: TaskTracker,
    /// One user's sync runs under their lease (`google_sync:<id>`), on one node at a time.
    pub(crate) leases: Arc<crate::cluster::Leases>,
}

impl GoogleSync {
    /// Build from the configuration. `secret` is the JWT secret (the state
    /// key is derived from it); `public_url` gives the default redirect and
    /// webhook URLs.
    pub fn new(
        config: &Config,
        store: Store,
        public_url: &str,
        secret: &str,
        background: crate::provider::Background,
    ) -> Result<Arc<GoogleSync>, HttpClientError> {
        let crate::provider::Background { shutdown, tasks, metrics, leases } = background;
        crate::provider::install_tls();
        let cfg = config.google.clone();
        let base = public_url.trim_end_matches('/');
        let redirect_url = if cfg.redirect_url.trim().is_empty() {
            format!("{base}/api/auth/google/callback")
        } else {
            cfg.redirect_url.trim().to_string()
        };
        let webhook_url =
            if cfg.webhook_url.trim().is_empty() { format!("{base}/api/calendar/webhook") } else { cfg.webhook_url.trim().to_string() };
        let enabled = config.google_enabled();
        if enabled {
            tracing::info!(%redirect_url, %webhook_url, calendars = ?cfg.default_calendars(), "Google Calendar sync is on");
            if !webhook_url.starts_with("https://") {
                tracing::warn!(%webhook_url, "Google only delivers push notifications to https addresses; set server.public_url or google.webhook_url");
            }
        } else {
            tracing::info!("Google Calendar is not configured (google.client_id and google.client_secret are empty): Google sign-in and calendar sync are off");
        }
        if enabled {
            crate::provider::upkeep::warn_if_renewed_halfway("google", cfg.renew_before, "channel_ttl", cfg.channel_ttl);
        }
        let api = client::GoogleApi::new(&cfg, &redirect_url, Some(metrics.clone()))?;
        let state_key = crate::auth::oauth_state::state_key("google", secret);
        let passes = crate::provider::scheduler::Passes::new(
            crate::model::Provider::Google,
            crate::cluster::GOOGLE_SYNC_PREFIX,
            store.clone(),
            leases.clone(),
            tasks.clone(),
            shutdown.clone(),
        );
        let renewals =
            crate::provider::upkeep::Renewals::new(crate::model::Provider::Google, store.clone(), cfg.renew_before.0, cfg.channel_ttl.0);
        Ok(Arc::new(GoogleSync {
            cfg,
            sign_up: oauth::SignUpPolicy::from(&config.auth),
            store,
            api,
            state_key,
            redirect_url,
            webhook_url,
            secure_cookies: base.starts_with("https://"),
            enabled,
            passes,
            channel_locks: Mutex::new(HashMap::new()),
            selection_locks: Mutex::new(HashMap::new()),
            full_syncs: Arc::new(tokio::sync::Semaphore::new(config.google.full_sync_concurrency.max(1))),
            renewals,
            metrics,
            shutdown,
            tasks,
            leases,
        }))
    }

    /// Are client credentials configured? Without them every Google route
    /// answers 503 and nothing syncs.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn webhook_url(&self) -> &str {
        &self.webhook_url
    }

    pub fn redirect_url(&self) -> &str {
        &self.redirect_url
    }

    pub(crate) fn shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Note that Google pushed for this user (for the status pages). Not
    /// awaited: the notification is answered at once and carries no data
    /// that could be lost.
    pub fn record_notification(&self, user_id: i64) {
        let store = self.store.clone();
        self.tasks.spawn(async move {
            if let Err(e) = store.record_notification(crate::model::Provider::Google, user_id).await {
                tracing::debug!(user = user_id, error = %e, "could not record a Google notification");
            }
        });
    }

    /// The lock that serializes channel changes of one user.
    pub(crate) fn channel_lock(&self, user_id: i64) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.channel_locks.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(user_id).or_default().clone()
    }

    /// The lock that serializes calendar selection changes of one user.
    pub(crate) fn selection_lock(&self, user_id: i64) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.selection_locks.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(user_id).or_default().clone()
    }
}
