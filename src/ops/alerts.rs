//! The webhook health monitor. Webhook-only sync fails quietly (a channel
//! expires, a token is revoked, Calendly disables a subscription), so every
//! `alerts.check_interval` this checks for those conditions. Each alert that
//! starts gets a WARN line, an entry in `/api/admin/health`, and — with
//! `alerts.webhook_url` — one Slack-compatible `{"text": …}` POST; it gets one
//! more POST when it clears. POSTs are retried with backoff in the background.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use crate::backoff::Backoff;
use crate::config::{Config, ExposeSecret};
use crate::store::alerts::{AlertFacts, AlertWindow, ProviderFacts};
use crate::store::{timefmt, Store};

/// What the alert check uses.
#[derive(Clone)]
pub struct AlertState {
    pub store: Store,
    /// The alerts raised now (also read by `/api/admin/health`).
    pub monitor: Arc<AlertMonitor>,
    /// `alerts.*`, and `calendly.*` for the subscription check.
    pub config: Config,
    /// Alert POSTs run here, so shutdown awaits them.
    pub tasks: TaskTracker,
    pub shutdown: watch::Receiver<bool>,
    /// With several nodes every node checks (so each one's
    /// `/api/admin/health` shows the alerts), but only the holder of this
    /// lease calls Calendly's API and POSTs to `alerts.webhook_url`, so an
    /// alert is announced once. None: this node always does.
    pub notifier: Option<Arc<crate::cluster::Lease>>,
}

impl AlertState {
    /// Does this node announce alerts and check Calendly now?
    fn announces(&self) -> bool {
        self.notifier.as_ref().is_none_or(|l| l.fence().is_some())
    }
}

/// One condition that needs an operator.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Alert {
    /// Stable identity: kind plus subject, e.g. `google_needs_reconnect:user:3`.
    pub key: String,
    pub kind: &'static str,
    pub message: String,
    /// What to do about it.
    pub action: &'static str,
    pub since: String,
}

/// What the last Calendly subscription check found.
#[derive(Debug, Clone)]
enum CalendlyFinding {
    /// The callback URLs of disabled subscriptions (none: all fine).
    Disabled(Vec<String>),
    /// The check itself failed, with why.
    CheckFailed(String),
}

/// The alerts currently raised.
#[derive(Default)]
pub struct AlertMonitor {
    active: Mutex<BTreeMap<String, Alert>>,
    /// Last Calendly subscription check: when, and what it found.
    calendly: Mutex<Option<(std::time::Instant, CalendlyFinding)>>,
}

impl AlertMonitor {
    pub fn active(&self) -> Vec<Alert> {
        self.active.lock().map(|a| a.values().cloned().collect()).unwrap_or_default()
    }
}

fn alert(kind: &'static str, subject: &str, message: String, action: &'static str, now: &str) -> Alert {
    Alert { key: format!("{kind}:{subject}"), kind, message, action, since: now.to_string() }
}

fn ago(now: time::OffsetDateTime, d: crate::duration::Dur) -> time::OffsetDateTime {
    now - time::Duration::seconds(d.as_secs() as i64)
}

/// The times the database-backed conditions are read against.
fn window(config: &Config, now: time::OffsetDateTime) -> AlertWindow {
    AlertWindow {
        expiring_before: now + time::Duration::seconds(config.alerts.channel_expiry_warning.as_secs() as i64),
        quiet_since: ago(now, config.alerts.silent_push_after),
        rejections_since: ago(now, config.alerts.calendly_rejected_window),
    }
}

/// How a provider's alerts are named and what to do about each.
struct ProviderWords {
    name: &'static str,
    channel: &'static str,
    channel_expiring: &'static str,
    channel_missing: &'static str,
    needs_reconnect: &'static str,
    pushes_stopped: &'static str,
    renewal_failing: &'static str,
    expiring_action: &'static str,
    missing_action: &'static str,
    reconnect_action: &'static str,
    stopped_action: &'static str,
}

const GOOGLE: ProviderWords = ProviderWords {
    name: "Google",
    channel: "push channel",
    channel_expiring: "google_channel_expiring",
    channel_missing: "google_channel_missing",
    needs_reconnect: "google_needs_reconnect",
    pushes_stopped: "google_pushes_stopped",
    renewal_failing: "google_renewal_failing",
    expiring_action: "check the renewal errors in /api/admin/health; POST /api/calendar/webhook/setup as that user makes a new channel",
    missing_action: "POST /api/calendar/webhook/setup as that user, or restart syncgate (it recreates missing channels)",
    reconnect_action: "ask the user to open Integrations and press Reconnect Google",
    stopped_action:
        "check that server.public_url is reachable over HTTPS from Google and renew the channel (POST /api/calendar/webhook/setup)",
};

const MICROSOFT: ProviderWords = ProviderWords {
    name: "Microsoft",
    channel: "Graph subscription",
    channel_expiring: "microsoft_channel_expiring",
    channel_missing: "microsoft_channel_missing",
    needs_reconnect: "microsoft_needs_reconnect",
    pushes_stopped: "microsoft_pushes_stopped",
    renewal_failing: "microsoft_renewal_failing",
    expiring_action:
        "check the renewal errors in /api/admin/health; the user pressing Reconnect Outlook, or a restart, makes a new subscription",
    missing_action: "restart syncgate (it subscribes where a subscription is missing), or ask the user to press Reconnect Outlook",
    reconnect_action: "ask the user to open Integrations and press Reconnect Outlook",
    stopped_action: "check that microsoft.webhook_url (or server.public_url) is reachable over HTTPS from Microsoft Graph",
};

/// One provider's findings, one alert each.
fn provider_alerts(w: &ProviderWords, facts: ProviderFacts, config: &Config, now_s: &str, out: &mut Vec<Alert>) {
    let name = w.name;
    // A channel about to expire that was not renewed. Users who must reconnect
    // get their own alert instead (their channels cannot be renewed).
    for c in facts.expiring_channels {
        let verb = if c.expiration.as_str() <= now_s { "expired" } else { "expires" };
        out.push(alert(
            w.channel_expiring,
            &format!("channel:{}", c.channel_id),
            format!("{name} {} of user {} ({}) {verb} at {} and has not been renewed", w.channel, c.user.id, c.user.email, c.expiration),
            w.expiring_action,
            now_s,
        ));
    }
    // Connected users without any channel, or with a ticked calendar that
    // has none: the provider cannot push (those) changes to them.
    for u in facts.missing_channels {
        out.push(alert(
            w.channel_missing,
            &format!("user:{}", u.id),
            format!(
                "user {} ({}) is connected to {name} but has no {} (for at least one ticked calendar), so changes arrive only by the safety-net sync",
                u.id, u.email, w.channel
            ),
            w.missing_action,
            now_s,
        ));
    }
    for u in facts.needs_reconnect {
        out.push(alert(
            w.needs_reconnect,
            &format!("user:{}", u.id),
            format!("user {} ({}) must reconnect {name}: access was revoked or expired, so their calendar is not syncing", u.id, u.email),
            w.reconnect_action,
            now_s,
        ));
    }
    // Pushes stopped: no notification for long while safety-net syncs keep finding changes.
    for u in facts.pushes_stopped {
        out.push(alert(
            w.pushes_stopped,
            &format!("user:{}", u.id),
            format!(
                "no {name} notification for user {} ({}) for more than {} while safety-net syncs keep finding changes: pushes have stopped arriving",
                u.id, u.email, config.alerts.silent_push_after
            ),
            w.stopped_action,
            now_s,
        ));
    }
    for r in facts.failing_renewals {
        out.push(alert(
            w.renewal_failing,
            &format!("user:{}", r.user.id),
            format!(
                "renewing the {name} {} of user {} ({}) failed {} time(s): {}",
                w.channel, r.user.id, r.user.email, r.failures, r.last_error
            ),
            "look at the error; syncgate keeps retrying with backoff (also after the channel expired) until a renewal succeeds",
            now_s,
        ));
    }
}

/// What the database-backed findings mean: one alert each.
pub fn evaluate(facts: AlertFacts, config: &Config, now: time::OffsetDateTime) -> Vec<Alert> {
    let now_s = timefmt::format(now);
    let mut out = Vec::new();
    provider_alerts(&GOOGLE, facts.google, config, &now_s, &mut out);
    provider_alerts(&MICROSOFT, facts.microsoft, config, &now_s, &mut out);

    // Calendly deliveries refused (bad or stale signatures) above the threshold.
    let rejected = facts.calendly_rejected;
    if rejected > config.alerts.calendly_rejected_threshold as i64 {
        out.push(alert(
            "calendly_rejected",
            "deliveries",
            format!(
                "{rejected} Calendly deliveries were rejected in the last {} (threshold {}): signatures do not verify",
                config.alerts.calendly_rejected_window, config.alerts.calendly_rejected_threshold
            ),
            "check calendly.signing_keys against the subscription's signing key (syncgate calendly subscribe stores it) and the server clock",
            &now_s,
        ));
    }
    out
}

/// Disabled Calendly subscriptions, checked at most every `alerts.calendly_check_interval`.
async fn calendly_alerts(state: &AlertState, now: &str) -> Vec<Alert> {
    let token = state.config.calendly.token.expose_secret().trim();
    if token.is_empty() || !state.announces() {
        return vec![];
    }
    let due = {
        let last = state.monitor.calendly.lock().map(|g| g.as_ref().map(|(t, _)| *t)).unwrap_or(None);
        last.is_none_or(|t| t.elapsed() >= state.config.alerts.calendly_check_interval.0)
    };
    if due {
        let finding = match crate::calendly::api::status(&state.config, token).await {
            Ok((subs, _)) => CalendlyFinding::Disabled(subs.into_iter().filter(|s| s.is_disabled()).map(|s| s.callback_url).collect()),
            Err(e) => CalendlyFinding::CheckFailed(e.to_string()),
        };
        if let Ok(mut g) = state.monitor.calendly.lock() {
            *g = Some((std::time::Instant::now(), finding));
        }
    }
    let last = state.monitor.calendly.lock().ok().and_then(|g| g.as_ref().map(|(_, r)| r.clone()));
    match last {
        Some(CalendlyFinding::Disabled(disabled)) => disabled
            .into_iter()
            .map(|url| {
                alert(
                    "calendly_subscription_disabled",
                    &url,
                    format!(
                        "Calendly disabled the webhook subscription for {url} after 24 h of failed deliveries: no bookings are arriving"
                    ),
                    "fix what made deliveries fail, then recreate it with `syncgate calendly subscribe`",
                    now,
                )
            })
            .collect(),
        Some(CalendlyFinding::CheckFailed(e)) => vec![alert(
            "calendly_check_failed",
            "api",
            format!("could not check Calendly's webhook subscriptions: {e}"),
            "check calendly.token and that Calendly's API is reachable",
            now,
        )],
        None => vec![],
    }
}

/// Run one check: raise new alerts, clear resolved ones, notify about both.
pub async fn check_once(state: &AlertState) {
    let now = timefmt::now();
    let now_s = timefmt::format(now);
    let mut found = match state.store.alert_facts(window(&state.config, now)).await {
        Ok(facts) => evaluate(facts, &state.config, now),
        Err(e) => {
            tracing::error!(error = %e, "alert check could not read the database");
            return;
        }
    };
    found.extend(calendly_alerts(state, &now_s).await);
    let (started, cleared) = {
        let Ok(mut active) = state.monitor.active.lock() else { return };
        let mut started = Vec::new();
        let mut next = BTreeMap::new();
        for a in found {
            match active.remove(&a.key) {
                // Still on: keep the original start time, refresh the wording.
                Some(prev) => {
                    next.insert(a.key.clone(), Alert { since: prev.since, ..a });
                }
                None => {
                    started.push(a.clone());
                    next.insert(a.key.clone(), a);
                }
            }
        }
        let cleared: Vec<Alert> = std::mem::replace(&mut *active, next).into_values().collect();
        (started, cleared)
    };
    for a in &started {
        tracing::warn!(alert = a.kind, key = %a.key, "alert: {}", a.message);
        notify(state, format!("syncgate alert: {} ({})", a.message, a.action));
    }
    for a in &cleared {
        tracing::info!(alert = a.kind, key = %a.key, "alert cleared: {}", a.message);
        notify(state, format!("syncgate resolved: {}", a.message));
    }
}

/// Retries of an alert POST: 0.5 s, 1 s, 2 s, … (jittered), at most a minute apart.
const NOTIFY_BACKOFF: Backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(60));
const NOTIFY_ATTEMPTS: u32 = 6;

/// POST `{"text": …}` to `alerts.webhook_url`, retrying with backoff, in the
/// background. A shutdown lets the POST in flight finish but waits for no retry.
fn notify(state: &AlertState, text: String) {
    let url = state.config.alerts.webhook_url.trim().to_string();
    if url.is_empty() || !state.announces() {
        return;
    }
    let mut shutdown = state.shutdown.clone();
    state.tasks.spawn(async move {
        let http = match reqwest::Client::builder().timeout(Duration::from_secs(10)).build() {
            Ok(h) => h,
            Err(_) => return,
        };
        let body: Value = json!({"text": text});
        for attempt in 1..=NOTIFY_ATTEMPTS {
            match http.post(&url).json(&body).send().await {
                Ok(r) if r.status().is_success() => return,
                Ok(r) => tracing::warn!(status = r.status().as_u16(), attempt, "alert webhook refused the notification"),
                Err(e) => tracing::warn!(error = %e.without_url(), attempt, "alert webhook unreachable"),
            }
            tokio::select! {
                _ = tokio::time::sleep(NOTIFY_BACKOFF.delay(attempt - 1)) => {}
                _ = shutdown.wait_for(|stop| *stop) => {
                    tracing::warn!("shutting down: an alert notification was not delivered");
                    return;
                }
            }
        }
        tracing::error!("gave up delivering an alert notification after {NOTIFY_ATTEMPTS} attempts");
    });
}

/// Check every `alerts.check_interval`, until shutdown.
pub async fn run(state: AlertState) {
    let mut tick = tokio::time::interval(state.config.alerts.check_interval.0.max(Duration::from_millis(50)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut shutdown = state.shutdown.clone();
    // An alert raised before this node knows whether it announces would
    // never be announced by it.
    if let Some(lease) = &state.notifier {
        lease.settled(shutdown.clone()).await;
    }
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        check_once(&state).await;
    }
}
