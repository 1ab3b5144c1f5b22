//! The webhook health monitor. Webhook-only sync fails quietly (a channel
//! expires, a token is revoked, Calendly disables a subscription), so every
//! `alerts.check_interval` this checks for those conditions. Each alert that
//! starts gets a WARN line, an entry in `/api/admin/health`, and — with
//! `alerts.webhook_url` — one Slack-compatible `{"text": …}` POST; it gets one
//! more POST when it clears. POSTs are retried with backoff in the background.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::Connection;
use serde::Serialize;
use serde_json::{json, Value};

use crate::backoff::Backoff;
use crate::config::Config;
use crate::startup::App;
use crate::store::timefmt;

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

/// When the Calendly subscriptions were last checked, and what was found
/// (disabled subscription URIs, or an error).
type CalendlyCheck = (std::time::Instant, Result<Vec<String>, String>);

/// The alerts currently raised.
#[derive(Default)]
pub struct AlertMonitor {
    active: Mutex<BTreeMap<String, Alert>>,
    /// Last Calendly subscription check: (when, disabled subscription URIs or an error).
    calendly: Mutex<Option<CalendlyCheck>>,
}

impl AlertMonitor {
    pub fn active(&self) -> Vec<Alert> {
        self.active.lock().map(|a| a.values().cloned().collect()).unwrap_or_default()
    }
}

fn alert(kind: &'static str, subject: &str, message: String, action: &'static str, now: &str) -> Alert {
    Alert { key: format!("{kind}:{subject}"), kind, message, action, since: now.to_string() }
}

/// Evaluate every database-backed condition.
pub fn evaluate(conn: &Connection, config: &Config, now: time::OffsetDateTime) -> rusqlite::Result<Vec<Alert>> {
    let now_s = timefmt::format(now);
    let mut out = Vec::new();
    let soon = timefmt::format(now + time::Duration::seconds(config.alerts.channel_expiry_warning.as_secs() as i64));

    // A channel about to expire that was not renewed. Users who must reconnect
    // get their own alert instead (their channels cannot be renewed).
    let mut stmt = conn.prepare(
        "SELECT c.user_id, u.email, c.channel_id, c.expiration FROM calendar_watch_channels c JOIN users u ON u.id = c.user_id
         WHERE c.state = 'active' AND c.expiration IS NOT NULL AND c.expiration < ?1
           AND u.google_needs_reconnect = 0 ORDER BY c.user_id",
    )?;
    for row in
        stmt.query_map([&soon], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, String>(3)?)))?
    {
        let (uid, email, channel, exp) = row?;
        let verb = if exp.as_str() <= now_s.as_str() { "expired" } else { "expires" };
        out.push(alert(
            "google_channel_expiring",
            &format!("channel:{channel}"),
            format!("Google push channel of user {uid} ({email}) {verb} at {exp} and has not been renewed"),
            "check the renewal errors in /api/admin/health; POST /api/calendar/webhook/setup as that user makes a new channel",
            &now_s,
        ));
    }

    // Connected users without any channel, or with a ticked calendar that
    // has none: Google cannot push (those) changes to them.
    let mut stmt = conn.prepare(
        "SELECT u.id, u.email FROM users u WHERE u.google_refresh_token IS NOT NULL AND u.google_needs_reconnect = 0
         AND u.status = 'active'
         AND (NOT EXISTS (SELECT 1 FROM calendar_watch_channels c WHERE c.user_id = u.id)
              OR EXISTS (SELECT 1 FROM google_calendars g WHERE g.user_id = u.id AND g.selected = 1
                         AND NOT EXISTS (SELECT 1 FROM calendar_watch_channels c WHERE c.user_id = u.id AND c.calendar_id = g.calendar_id)))
         ORDER BY u.id",
    )?;
    for row in stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))? {
        let (uid, email) = row?;
        out.push(alert(
            "google_channel_missing",
            &format!("user:{uid}"),
            format!("user {uid} ({email}) is connected to Google but has no push channel (for at least one ticked calendar), so changes arrive only by the safety-net sync"),
            "POST /api/calendar/webhook/setup as that user, or restart syncgate (it recreates missing channels)",
            &now_s,
        ));
    }

    let mut stmt = conn.prepare("SELECT id, email FROM users WHERE google_needs_reconnect = 1 ORDER BY id")?;
    for row in stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))? {
        let (uid, email) = row?;
        out.push(alert(
            "google_needs_reconnect",
            &format!("user:{uid}"),
            format!("user {uid} ({email}) must reconnect Google: access was revoked or expired, so their calendar is not syncing"),
            "ask the user to open Integrations and press Reconnect Google",
            &now_s,
        ));
    }

    // Pushes stopped: no notification for long while safety-net syncs keep finding changes.
    let quiet_since = timefmt::format(now - time::Duration::seconds(config.alerts.silent_push_after.as_secs() as i64));
    {
        let mut stmt = conn.prepare(
            "SELECT s.user_id, u.email FROM google_sync_status s JOIN users u ON u.id = s.user_id
             WHERE u.google_refresh_token IS NOT NULL AND u.google_needs_reconnect = 0
               AND (s.last_notification_at IS NULL OR s.last_notification_at < ?1)
               AND s.last_safety_net_changes_at IS NOT NULL
               AND s.last_safety_net_changes_at > COALESCE(s.last_notification_at, '')
             ORDER BY s.user_id",
        )?;
        for row in stmt.query_map([&quiet_since], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))? {
            let (uid, email) = row?;
            out.push(alert(
                "google_pushes_stopped",
                &format!("user:{uid}"),
                format!(
                    "no Google notification for user {uid} ({email}) for more than {} while safety-net syncs keep finding changes: pushes have stopped arriving",
                    config.alerts.silent_push_after
                ),
                "check that server.public_url is reachable over HTTPS from Google and renew the channel (POST /api/calendar/webhook/setup)",
                &now_s,
            ));
        }
    }
    {
        let mut stmt = conn.prepare(
            "SELECT s.user_id, u.email, s.renewal_failures, COALESCE(s.last_renewal_error, '') FROM google_sync_status s JOIN users u ON u.id = s.user_id
             WHERE s.renewal_failures > 0 ORDER BY s.user_id",
        )?;
        for row in stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?, r.get::<_, String>(3)?)))? {
            let (uid, email, n, err) = row?;
            out.push(alert(
                "google_renewal_failing",
                &format!("user:{uid}"),
                format!("renewing the Google push channel of user {uid} ({email}) failed {n} time(s): {err}"),
                "look at the error; syncgate keeps retrying with backoff (also after the channel expired) until a renewal succeeds",
                &now_s,
            ));
        }
    }

    // Calendly deliveries refused (bad or stale signatures) above the threshold.
    let window = timefmt::format(now - time::Duration::seconds(config.alerts.calendly_rejected_window.as_secs() as i64));
    let rejected = crate::store::rejections::count_since(conn, &window)?;
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
    Ok(out)
}

/// Disabled Calendly subscriptions, checked at most every `alerts.calendly_check_interval`.
async fn calendly_alerts(app: &App, now: &str) -> Vec<Alert> {
    let token = app.config.calendly.token.trim();
    if token.is_empty() {
        return vec![];
    }
    let due = {
        let last = app.alerts.calendly.lock().map(|g| g.as_ref().map(|(t, _)| *t)).unwrap_or(None);
        last.is_none_or(|t| t.elapsed() >= app.config.alerts.calendly_check_interval.0)
    };
    if due {
        let result = crate::calendly::api::status(&app.config, token)
            .await
            .map(|(subs, _)| subs.into_iter().filter(|s| s.is_disabled()).map(|s| s.callback_url).collect::<Vec<_>>())
            .map_err(|e| e.to_string());
        if let Ok(mut g) = app.alerts.calendly.lock() {
            *g = Some((std::time::Instant::now(), result));
        }
    }
    let last = app.alerts.calendly.lock().ok().and_then(|g| g.as_ref().map(|(_, r)| r.clone()));
    match last {
        Some(Ok(disabled)) => disabled
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
        Some(Err(e)) => vec![alert(
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
pub async fn check_once(app: &App) {
    let config = app.config.clone();
    let now = timefmt::now();
    let now_s = timefmt::format(now);
    let mut found = match app.store.read(move |c| Ok(evaluate(c, &config, now)?)).await {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(error = %e, "alert check could not read the database");
            return;
        }
    };
    found.extend(calendly_alerts(app, &now_s).await);
    let (started, cleared) = {
        let Ok(mut active) = app.alerts.active.lock() else { return };
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
        notify(app, format!("syncgate alert: {} ({})", a.message, a.action));
    }
    for a in &cleared {
        tracing::info!(alert = a.kind, key = %a.key, "alert cleared: {}", a.message);
        notify(app, format!("syncgate resolved: {}", a.message));
    }
}

/// Retries of an alert POST: 0.5 s, 1 s, 2 s, … (jittered), at most a minute apart.
const NOTIFY_BACKOFF: Backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(60));
const NOTIFY_ATTEMPTS: u32 = 6;

/// POST `{"text": …}` to `alerts.webhook_url`, retrying with backoff, in the
/// background. A shutdown lets the POST in flight finish but waits for no retry.
fn notify(app: &App, text: String) {
    let url = app.config.alerts.webhook_url.trim().to_string();
    if url.is_empty() {
        return;
    }
    let mut shutdown = app.shutdown.clone();
    app.tasks.spawn(async move {
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
pub async fn run(app: App) {
    let mut tick = tokio::time::interval(app.config.alerts.check_interval.0.max(Duration::from_millis(50)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut shutdown = app.shutdown.clone();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        check_once(&app).await;
    }
}
