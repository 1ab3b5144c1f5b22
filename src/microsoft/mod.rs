//! Microsoft 365 / Outlook calendars through Microsoft Graph, to the
//! standard of the Google sync: connect (the identity platform's
//! authorization-code flow with PKCE; an account is its tenant and object
//! id, never an email), Graph subscriptions as push channels with
//! `clientState`, lifecycle notifications, and the incremental sync by
//! `calendarView/delta` that turns events into `microsoft` meetings. The
//! facts it relies on are in `docs/microsoft-graph.md`. The Microsoft tables
//! are written through the store's Microsoft operations; nothing here runs
//! SQL. Never logs or returns a Microsoft token (they travel as
//! [`Secret`](crate::provider::Secret)).
//!
//! - [`oauth`]: consent URL with PKCE and the signed single-use state, the
//!   code exchange, who the account is and who may sign in with it.
//! - [`client`]: the calls to Graph (calendars, delta pages, subscriptions)
//!   and what their errors mean, `Retry-After` included.
//! - [`events`]: which events are meetings and how one becomes a meeting.
//! - [`sync`]: one pass of a user's delta rounds, on the shared scheduler.
//! - [`subscriptions`]: one Graph subscription per ticked calendar: made,
//!   extended in place, recreated when gone, deleted.
//! - [`upkeep`]: catch-up, renewal and the safety net (the shared schedules).
//! - [`mod@routes`], [`webhook`]: the HTTP surface (connect, and Graph's notifications).

pub mod client;
pub mod events;
pub mod oauth;
pub mod routes;
pub mod subscriptions;
pub mod sync;
pub mod upkeep;
pub mod webhook;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use crate::config::{Config, MicrosoftConfig};
use crate::counters::Metrics;
use crate::store::Store;

/// Everything Microsoft-related the server shares. One per server.
pub struct MicrosoftSync {
    pub(crate) cfg: MicrosoftConfig,
    /// Who may sign up by signing in with Microsoft (a verified identity only).
    pub(crate) sign_up: crate::auth::oauth_state::SignUpPolicy,
    pub(crate) store: Store,
    /// Calls to the identity platform (and Graph's organization, at sign-in).
    /// None only when it could not be built; then Microsoft is off.
    http: Option<reqwest::Client>,
    /// One token refresh per user at a time (see [`MicrosoftSync::access_token`]).
    refresh_locks: Mutex<HashMap<i64, Arc<tokio::sync::Mutex<()>>>>,
    /// HMAC key for the OAuth `state`, derived from the JWT secret (not Google's).
    pub(crate) state_key: [u8; 32],
    pub(crate) redirect_url: String,
    pub(crate) webhook_url: String,
    /// Cookies get `Secure` when the public URL is https.
    pub(crate) secure_cookies: bool,
    enabled: bool,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) shutdown: watch::Receiver<bool>,
    /// Every task Microsoft work runs in; shutdown waits for them.
    pub(crate) tasks: TaskTracker,
    pub(crate) leases: Arc<crate::cluster::Leases>,
    /// Microsoft Graph (calendars, delta pages, subscriptions).
    pub(crate) api: client::GraphApi,
    /// When each user's sync passes run (coalesced here, one node at a time).
    pub(crate) passes: Arc<crate::provider::scheduler::Passes>,
    /// When subscriptions are extended, and failed renewals' next tries.
    pub(crate) renewals: crate::provider::upkeep::Renewals,
    /// Full rounds (whole windows) running at once (`microsoft.full_sync_concurrency`).
    pub(crate) full_syncs: Arc<tokio::sync::Semaphore>,
    /// One change of a user's subscriptions at a time on this node.
    pub(crate) subscription_locks: crate::provider::UserLocks,
    /// Users whose last pass Graph throttled past what a call waits: until
    /// when (its `Retry-After`) no pass runs for them, and what the pass
    /// that comes back then is for (the strongest reason asked meanwhile).
    pub(crate) throttled: Mutex<HashMap<i64, (std::time::Instant, crate::provider::scheduler::SyncTrigger)>>,
}

impl MicrosoftSync {
    /// Build from the configuration. `secret` is the JWT secret (the state
    /// key is derived from it); `public_url` gives the default redirect and
    /// webhook URLs.
    pub fn new(
        config: &Config,
        store: Store,
        public_url: &str,
        secret: &str,
        background: crate::provider::Background,
    ) -> Result<Arc<MicrosoftSync>, client::HttpClientError> {
        let crate::provider::Background { shutdown, tasks, metrics, leases } = background;
        crate::provider::install_tls();
        let cfg = config.microsoft.clone();
        let base = public_url.trim_end_matches('/');
        let or_default = |set: &str, path: &str| if set.trim().is_empty() { format!("{base}{path}") } else { set.trim().to_string() };
        let redirect_url = or_default(&cfg.redirect_url, "/api/auth/microsoft/callback");
        let webhook_url = or_default(&cfg.webhook_url, "/api/microsoft/webhook");
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| tracing::error!(error = %e, "could not build the HTTP client for Microsoft: Outlook sync is off"))
            .ok();
        let api = client::GraphApi::new(&cfg, Some(metrics.clone()))?;
        let enabled = config.microsoft_enabled() && http.is_some();
        if enabled {
            tracing::info!(%redirect_url, %webhook_url, tenant = %cfg.tenant, "Microsoft 365 calendar sync is on");
            if !webhook_url.starts_with("https://") {
                tracing::warn!(%webhook_url, "Microsoft Graph only delivers notifications to https addresses; set server.public_url or microsoft.webhook_url");
            }
            crate::provider::upkeep::warn_if_renewed_halfway("microsoft", cfg.renew_before, "subscription_ttl", cfg.subscription_ttl);
        } else if http.is_some() {
            tracing::info!(
                "Microsoft 365 is not configured (microsoft.client_id and microsoft.client_secret are empty): Outlook sync is off"
            );
        }
        let state_key = crate::auth::oauth_state::state_key("microsoft", secret);
        let passes = crate::provider::scheduler::Passes::new(
            crate::model::Provider::Microsoft,
            crate::cluster::MICROSOFT_SYNC_PREFIX,
            store.clone(),
            leases.clone(),
            tasks.clone(),
            shutdown.clone(),
        );
        let renewals = crate::provider::upkeep::Renewals::new(
            crate::model::Provider::Microsoft,
            store.clone(),
            cfg.renew_before.0,
            cfg.subscription_ttl.0,
        );
        let full_syncs = Arc::new(tokio::sync::Semaphore::new(cfg.full_sync_concurrency.max(1)));
        Ok(Arc::new(MicrosoftSync {
            api,
            passes,
            renewals,
            full_syncs,
            subscription_locks: crate::provider::UserLocks::default(),
            throttled: Mutex::new(HashMap::new()),
            cfg,
            sign_up: crate::auth::oauth_state::SignUpPolicy::from(&config.auth),
            store,
            http,
            refresh_locks: Mutex::new(HashMap::new()),
            state_key,
            redirect_url,
            webhook_url,
            secure_cookies: base.starts_with("https://"),
            enabled,
            metrics,
            shutdown,
            tasks,
            leases,
        }))
    }

    /// Are client credentials configured? Without them every Microsoft
    /// route answers 503 and nothing syncs.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The client for the identity platform; `enabled()` promises it.
    pub(crate) fn http(&self) -> Result<&reqwest::Client, oauth::TokenError> {
        self.http.as_ref().ok_or_else(|| oauth::TokenError::Network("no HTTP client".into()))
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
}
