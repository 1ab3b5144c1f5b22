//! The sync: Google events → `google` meetings, one user at a time.
//!
//! - **Coalescing.** [`GoogleSync::enqueue`] starts a pass for a user, or,
//!   if one is running, marks it to run once more when it ends. A burst of
//!   notifications therefore costs at most two passes, and one user never has
//!   two passes at once.
//! - **A pass.** Incremental with the stored sync token, else a full sync of
//!   the window `sync_past`..`sync_future`. Every page's meeting changes are
//!   committed as the page arrives; the last page's changes and its
//!   `nextSyncToken` are committed in one writer closure. A crash between
//!   pages leaves the old token in place, so the next pass lists the same
//!   changes again and the already written ones are silent no-ops
//!   (`tx.update` writes nothing when nothing differs): nothing lost, nothing
//!   twice, and the token never gets ahead of the meetings it covers.
//! - **Failures.** 401 → refresh the access token once and retry;
//!   `invalid_grant` → the user needs to reconnect and is not synced again
//!   until they do; 410 → drop the token and do one full sync (a second 410
//!   ends the pass); rate limits and 5xx → exponential backoff with jitter.
//! - A full sync ends by canceling the user's `google` meetings in the window
//!   that Google no longer lists (deleted while no token was valid).
//! - **Why a pass ran** ([`SyncTrigger`]: a push, catch-up, the safety net)
//!   decides how it is counted: what a safety-net pass finds is what no push
//!   announced, so it is counted per user for operations.
//! - **One meeting per booking.** An event that is the Google copy of a
//!   Calendly booking is left to the Calendly meeting (see [`super::bookings`]).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension};
use serde::Deserialize;
use serde_json::Value;

use super::client::{CallError, EventsPage, ListMode};
use super::{GoogleSync, Secret};
use crate::error::{ApiError, ApiResult};
use crate::store::{timefmt, Table, WriteTx};

/// Retries of one call that hits a rate limit or a 5xx before the pass gives up.
const MAX_RETRIES: u32 = 5;
const BACKOFF_BASE: Duration = Duration::from_millis(500);
const BACKOFF_CAP: Duration = Duration::from_secs(32);
/// Refresh an access token this long before Google says it expires.
const REFRESH_MARGIN_SECS: i64 = 60;
/// A runaway pagination guard (250 events a page).
const MAX_PAGES: usize = 2000;
const MAX_TEXT: usize = 20_000;

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SyncReport {
    pub full: bool,
    pub pages: usize,
    pub created: u64,
    pub updated: u64,
    pub canceled: u64,
    /// Events left alone (owned by Calendly, unreadable, deletions of unknown events).
    pub skipped: u64,
}

impl SyncReport {
    /// Meeting changes the pass made.
    pub fn changes(&self) -> u64 {
        self.created + self.updated + self.canceled
    }
}

/// Why a sync pass runs. Ordered by precedence: when requests for a user
/// coalesce into one pass, it counts as the strongest of them (a pass that
/// also answers a push is not a safety-net find).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SyncTrigger {
    /// The slow periodic sync (`google.safety_net_interval`).
    SafetyNet,
    /// Startup, or a channel that lapsed: changes may have gone unannounced.
    CatchUp,
    /// A push notification, a sign-in, or an explicit request.
    Push,
}

impl SyncTrigger {
    pub fn as_str(self) -> &'static str {
        match self {
            SyncTrigger::SafetyNet => "safety_net",
            SyncTrigger::CatchUp => "catch_up",
            SyncTrigger::Push => "push",
        }
    }

    /// The `kind` shown to admins and in metrics: `full` when the pass had
    /// to list the whole window, else `safety_net` or `incremental`.
    pub fn kind(self, full: bool) -> &'static str {
        match (full, self) {
            (true, _) => "full",
            (false, SyncTrigger::SafetyNet) => "safety_net",
            (false, _) => "incremental",
        }
    }
}

/// Why a pass stopped.
#[derive(Debug)]
pub enum SyncError {
    /// The user has not connected Google (no refresh token).
    NotConnected,
    /// `invalid_grant`: the user must sign in with Google again.
    NeedsReconnect,
    Api(CallError),
    Store(ApiError),
    ShuttingDown,
}

impl std::fmt::Display for SyncError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SyncError::NotConnected => write!(f, "the user has not connected Google Calendar"),
            SyncError::NeedsReconnect => write!(f, "Google access was revoked; the user must sign in with Google again"),
            SyncError::Api(e) => write!(f, "{e}"),
            SyncError::Store(e) => write!(f, "{e}"),
            SyncError::ShuttingDown => write!(f, "the server is shutting down"),
        }
    }
}

impl From<ApiError> for SyncError {
    fn from(e: ApiError) -> SyncError {
        SyncError::Store(e)
    }
}

/// A user's Google credentials as stored.
pub(crate) struct Creds {
    pub refresh: Option<Secret>,
    pub access: Option<Secret>,
    pub expires_at: Option<String>,
    pub sync_token: Option<Secret>,
    pub needs_reconnect: bool,
    /// The account is disabled: no sync and no channel until it is enabled.
    pub disabled: bool,
}

pub(crate) fn load_creds(conn: &Connection, user_id: i64) -> rusqlite::Result<Option<Creds>> {
    conn.query_row(
        "SELECT google_refresh_token, google_access_token, google_token_expires_at, google_sync_token, google_needs_reconnect, status
         FROM users WHERE id = ?1",
        [user_id],
        |r| {
            Ok(Creds {
                refresh: r.get::<_, Option<String>>(0)?.map(Secret::new),
                access: r.get::<_, Option<String>>(1)?.map(Secret::new),
                expires_at: r.get(2)?,
                sync_token: r.get::<_, Option<String>>(3)?.map(Secret::new),
                needs_reconnect: r.get::<_, i64>(4)? != 0,
                disabled: r.get::<_, String>(5)? != "active",
            })
        },
    )
    .optional()
}

/// Removes a user's "pass running" mark when the pass task ends, however it ends.
struct PassGuard {
    google: Arc<GoogleSync>,
    user_id: i64,
}

impl Drop for PassGuard {
    fn drop(&mut self) {
        let mut map = self.google.passes.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&self.user_id);
    }
}

impl GoogleSync {
    /// Ask for a sync of this user because Google pushed (or the user signed
    /// in). Returns at once: starts a pass, or marks the running one to go
    /// again when it ends.
    pub fn enqueue(self: &Arc<Self>, user_id: i64) {
        self.enqueue_for(user_id, SyncTrigger::Push);
    }

    /// [`GoogleSync::enqueue`] with the reason the pass is wanted.
    pub fn enqueue_for(self: &Arc<Self>, user_id: i64, trigger: SyncTrigger) {
        if !self.enabled() || self.shutting_down() {
            return;
        }
        {
            let mut map = self.passes.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(again) = map.get_mut(&user_id) {
                *again = Some(again.map_or(trigger, |t| t.max(trigger)));
                return;
            }
            map.insert(user_id, None);
        }
        let me = self.clone();
        tokio::spawn(async move {
            let _guard = PassGuard { google: me.clone(), user_id };
            let mut trigger = trigger;
            loop {
                me.run_pass(user_id, trigger).await;
                let mut map = me.passes.lock().unwrap_or_else(|p| p.into_inner());
                match map.get_mut(&user_id) {
                    Some(again @ Some(_)) if !me.shutting_down() => {
                        trigger = again.take().unwrap_or(SyncTrigger::Push);
                    }
                    _ => return,
                }
            }
        });
    }

    /// Is a pass running (or queued) for this user?
    pub fn sync_pending(&self, user_id: i64) -> bool {
        self.passes.lock().unwrap_or_else(|p| p.into_inner()).contains_key(&user_id)
    }

    /// One pass, with its log line, its row in `google_sync_status` and its metrics.
    async fn run_pass(self: &Arc<Self>, user_id: i64, trigger: SyncTrigger) {
        let started = std::time::Instant::now();
        let result = self.sync_user(user_id).await;
        let (kind, outcome, error, report) = match &result {
            Ok(r) => {
                let kind = trigger.kind(r.full);
                tracing::info!(
                    trigger = trigger.as_str(),
                    "google sync user {user_id}: {} created, {} updated, {} canceled ({kind}, {} {})",
                    r.created,
                    r.updated,
                    r.canceled,
                    r.pages,
                    if r.pages == 1 { "page" } else { "pages" }
                );
                if trigger == SyncTrigger::SafetyNet && r.changes() > 0 {
                    tracing::warn!(
                        "google safety-net sync user {user_id} found {} change(s) no push notification announced; \
                         if this keeps happening, Google's notifications are not arriving (check the channel and google.webhook_url)",
                        r.changes()
                    );
                }
                (Some(kind), "ok", None, r.clone())
            }
            Err(SyncError::NotConnected) | Err(SyncError::ShuttingDown) => return,
            Err(SyncError::NeedsReconnect) => {
                tracing::warn!("google sync user {user_id} stopped: Google access was revoked; the user must sign in with Google again");
                (None, "needs_reconnect", Some(SyncError::NeedsReconnect.to_string()), SyncReport::default())
            }
            Err(e) => {
                tracing::warn!(trigger = trigger.as_str(), "google sync user {user_id} failed: {e}");
                (None, "failed", Some(e.to_string()), SyncReport::default())
            }
        };
        let metric_kind = kind.unwrap_or_else(|| trigger.kind(false));
        let metric_outcome = match outcome {
            "failed" => "error",
            other => other,
        };
        self.metrics.google_syncs.with_label_values(&[metric_kind, metric_outcome]).inc();
        self.metrics.google_sync_seconds.with_label_values(&[metric_kind]).observe(started.elapsed().as_secs_f64());
        let ok = result.is_ok();
        let full = report.full;
        let safety_net = trigger == SyncTrigger::SafetyNet;
        let changes = report.changes() as i64;
        let recorded = self
            .store
            .writer
            .write(move |tx| {
                let now = tx.now().to_string();
                tx.conn().execute("INSERT INTO google_sync_status (user_id) VALUES (?1) ON CONFLICT (user_id) DO NOTHING", [user_id])?;
                tx.conn().execute(
                    "UPDATE google_sync_status SET
                        last_sync_at = ?2,
                        last_sync_kind = COALESCE(?3, last_sync_kind),
                        last_sync_outcome = ?4,
                        last_error = ?5,
                        last_full_sync_at = CASE WHEN ?6 THEN ?2 ELSE last_full_sync_at END,
                        syncs = syncs + 1,
                        failed_syncs = failed_syncs + ?7,
                        created = created + ?8,
                        updated = updated + ?9,
                        canceled = canceled + ?10,
                        safety_net_syncs = safety_net_syncs + ?11,
                        safety_net_changes = safety_net_changes + ?12,
                        last_safety_net_at = CASE WHEN ?11 THEN ?2 ELSE last_safety_net_at END,
                        last_safety_net_changes_at = CASE WHEN ?11 AND ?12 > 0 THEN ?2 ELSE last_safety_net_changes_at END
                     WHERE user_id = ?1",
                    rusqlite::params![
                        user_id,
                        now,
                        kind,
                        outcome,
                        error,
                        ok && full,
                        (!ok) as i64,
                        report.created as i64,
                        report.updated as i64,
                        report.canceled as i64,
                        safety_net,
                        if safety_net { changes } else { 0 }
                    ],
                )?;
                Ok(())
            })
            .await;
        if let Err(e) = recorded {
            tracing::debug!(user = user_id, error = %e, "could not record the sync outcome");
        }
    }

    /// One sync of one user: incremental when a token is stored, else full.
    pub async fn sync_user(self: &Arc<Self>, user_id: i64) -> Result<SyncReport, SyncError> {
        let mut creds = self.store.read(move |c| Ok(load_creds(c, user_id)?)).await?.ok_or(SyncError::NotConnected)?;
        if creds.needs_reconnect {
            return Err(SyncError::NeedsReconnect);
        }
        if creds.refresh.is_none() || creds.disabled {
            return Err(SyncError::NotConnected);
        }
        let mut refreshed_for_401 = false;
        let mut mode = match creds.sync_token.clone() {
            Some(t) => ListMode::Incremental(t),
            None => self.full_window(),
        };
        let mut had_410 = false;
        'pass: loop {
            let mut report = SyncReport { full: matches!(mode, ListMode::Full { .. }), ..Default::default() };
            let mut seen: HashSet<String> = HashSet::new();
            let mut page_token: Option<String> = None;
            loop {
                if self.shutting_down() {
                    return Err(SyncError::ShuttingDown);
                }
                let page = match self.list_page(user_id, &mut creds, &mode, page_token.as_deref(), &mut refreshed_for_401).await {
                    Ok(p) => p,
                    Err(SyncError::Api(CallError::Gone)) if !had_410 => {
                        // The token is dead: forget it, then one full sync. A
                        // second 410 (which a full sync cannot get) ends the pass.
                        had_410 = true;
                        tracing::info!("google sync user {user_id}: sync token expired (410); doing a full sync");
                        self.store
                            .writer
                            .write(move |tx| {
                                tx.conn().execute("UPDATE users SET google_sync_token = NULL WHERE id = ?1", [user_id])?;
                                Ok(())
                            })
                            .await?;
                        mode = self.full_window();
                        continue 'pass;
                    }
                    Err(e) => return Err(e),
                };
                report.pages += 1;
                let EventsPage { items, next_page_token, next_sync_token, time_zone } = page;
                let events: Vec<GEvent> = items
                    .into_iter()
                    .filter_map(|v| match serde_json::from_value::<GEvent>(v) {
                        Ok(e) => Some(e),
                        Err(e) => {
                            tracing::warn!(user = user_id, error = %e, "skipping an event Google sent in an unexpected shape");
                            report.skipped += 1;
                            None
                        }
                    })
                    .collect();
                if report.full {
                    seen.extend(events.iter().map(|e| e.id.clone()));
                }
                let last = next_page_token.is_none() || report.pages >= MAX_PAGES;
                if next_page_token.is_some() && report.pages >= MAX_PAGES {
                    tracing::warn!(user = user_id, "google sync stopped after {MAX_PAGES} pages");
                }
                let finish = if last {
                    Some(Finish {
                        sync_token: next_sync_token.clone(),
                        reconcile: match &mode {
                            ListMode::Full { time_min, time_max } if next_page_token.is_none() => {
                                Some((time_min.clone(), time_max.clone(), std::mem::take(&mut seen)))
                            }
                            _ => None,
                        },
                    })
                } else {
                    None
                };
                if last && next_sync_token.is_none() {
                    tracing::warn!(user = user_id, "Google sent no sync token on the last page; the next sync will be a full one");
                }
                let counts = self.store.writer.write(move |tx| apply_page(tx, user_id, &events, time_zone.as_deref(), finish)).await?;
                report.created += counts.created;
                report.updated += counts.updated;
                report.canceled += counts.canceled;
                report.skipped += counts.skipped;
                if last {
                    return Ok(report);
                }
                page_token = next_page_token;
            }
        }
    }

    /// A full sync's window, from now.
    fn full_window(&self) -> ListMode {
        let now = timefmt::now();
        let past = time::Duration::try_from(self.cfg.sync_past.0).unwrap_or(time::Duration::days(30));
        let future = time::Duration::try_from(self.cfg.sync_future.0).unwrap_or(time::Duration::days(365));
        ListMode::Full { time_min: timefmt::format(now - past), time_max: timefmt::format(now + future) }
    }

    /// One `events.list` page with the retry rules: backoff on rate limits
    /// and 5xx, one refresh on 401 (per pass).
    async fn list_page(
        self: &Arc<Self>,
        user_id: i64,
        creds: &mut Creds,
        mode: &ListMode,
        page_token: Option<&str>,
        refreshed_for_401: &mut bool,
    ) -> Result<EventsPage, SyncError> {
        let mut attempt = 0u32;
        loop {
            let access = self.access_token(user_id, creds, false).await?;
            match self.api.list_events(&access, &self.cfg.calendar_id, mode, page_token).await {
                Ok(p) => return Ok(p),
                Err(CallError::Unauthorized) if !*refreshed_for_401 => {
                    *refreshed_for_401 = true;
                    tracing::info!("google sync user {user_id}: access token refused (401); refreshing it once");
                    self.access_token(user_id, creds, true).await?;
                }
                Err(e) if e.retryable() && attempt < MAX_RETRIES => {
                    let wait = backoff(attempt, &e);
                    attempt += 1;
                    tracing::info!(
                        "google sync user {user_id}: {e}; retrying in {} ms (attempt {attempt} of {MAX_RETRIES})",
                        wait.as_millis()
                    );
                    self.pause(wait).await?;
                }
                Err(e) => return Err(SyncError::Api(e)),
            }
        }
    }

    /// Sleep, unless the server is shutting down.
    pub(crate) async fn pause(&self, wait: Duration) -> Result<(), SyncError> {
        let mut shutdown = self.shutdown.clone();
        tokio::select! {
            _ = tokio::time::sleep(wait) => Ok(()),
            _ = shutdown.changed() => Err(SyncError::ShuttingDown),
        }
    }

    /// A valid access token: the stored one, or a fresh one when it is
    /// (nearly) expired or `force`. `invalid_grant` marks the user as
    /// needing to reconnect.
    pub(crate) async fn access_token(&self, user_id: i64, creds: &mut Creds, force: bool) -> Result<Secret, SyncError> {
        if !force {
            if let (Some(access), Some(exp)) = (&creds.access, creds.expires_at.as_deref().and_then(timefmt::parse)) {
                if exp - time::Duration::seconds(REFRESH_MARGIN_SECS) > timefmt::now() {
                    return Ok(access.clone());
                }
            }
        }
        let refresh = creds.refresh.clone().ok_or(SyncError::NotConnected)?;
        let mut attempt = 0u32;
        let tokens = loop {
            match self.api.refresh(&refresh).await {
                Ok(t) => break t,
                Err(CallError::InvalidGrant) => {
                    self.store
                        .writer
                        .write(move |tx| {
                            tx.conn().execute(
                                "UPDATE users SET google_needs_reconnect = 1, google_access_token = NULL, google_token_expires_at = NULL WHERE id = ?1",
                                [user_id],
                            )?;
                            Ok(())
                        })
                        .await?;
                    creds.needs_reconnect = true;
                    return Err(SyncError::NeedsReconnect);
                }
                Err(e) if e.retryable() && attempt < MAX_RETRIES => {
                    let wait = backoff(attempt, &e);
                    attempt += 1;
                    self.pause(wait).await?;
                }
                Err(e) => return Err(SyncError::Api(e)),
            }
        };
        let expires_at = timefmt::format(timefmt::now() + time::Duration::seconds(tokens.expires_in.unwrap_or(3600).clamp(0, 86_400 * 30)));
        let access = tokens.access_token.clone();
        let new_refresh = tokens.refresh_token.clone();
        let (a, e, r) = (access.clone(), expires_at.clone(), new_refresh.clone());
        self.store
            .writer
            .write(move |tx| {
                tx.conn().execute(
                    "UPDATE users SET google_access_token = ?1, google_token_expires_at = ?2,
                        google_refresh_token = COALESCE(?3, google_refresh_token) WHERE id = ?4",
                    rusqlite::params![a.expose(), e, r.as_ref().map(Secret::expose), user_id],
                )?;
                Ok(())
            })
            .await?;
        creds.access = Some(access.clone());
        creds.expires_at = Some(expires_at);
        if let Some(r) = new_refresh {
            creds.refresh = Some(r);
        }
        Ok(access)
    }
}

/// Exponential backoff with jitter (half to all of the step), or what
/// `Retry-After` asks for, capped.
pub(crate) fn backoff(attempt: u32, e: &CallError) -> Duration {
    if let CallError::RateLimited { retry_after: Some(d) } = e {
        return (*d).min(BACKOFF_CAP);
    }
    let step = BACKOFF_BASE.saturating_mul(1u32 << attempt.min(16)).min(BACKOFF_CAP);
    let ms = step.as_millis() as u64;
    let jittered = rand::Rng::random_range(&mut rand::rng(), ms / 2..=ms);
    Duration::from_millis(jittered)
}

/// What the last page of a pass also commits.
struct Finish {
    sync_token: Option<Secret>,
    /// For a full sync: its window and every event id it saw.
    reconcile: Option<(String, String, HashSet<String>)>,
}

#[derive(Debug, Default)]
struct Counts {
    created: u64,
    updated: u64,
    canceled: u64,
    skipped: u64,
}

/// One page in one writer closure; on the last page also the reconciliation
/// of a full sync and the new sync token.
fn apply_page(tx: &mut WriteTx<'_>, user_id: i64, events: &[GEvent], cal_tz: Option<&str>, finish: Option<Finish>) -> ApiResult<Counts> {
    let mut counts = Counts::default();
    for ev in events {
        apply_event(tx, user_id, ev, cal_tz, &mut counts)?;
    }
    if let Some(fin) = finish {
        if let Some((time_min, time_max, seen)) = fin.reconcile {
            let stale: Vec<(i64, String)> = {
                let mut stmt = tx.conn().prepare(
                    "SELECT id, external_id FROM meetings
                     WHERE user_id = ?1 AND source = 'google' AND status <> 'canceled' AND ends_at > ?2 AND starts_at < ?3",
                )?;
                let rows = stmt.query_map(rusqlite::params![user_id, time_min, time_max], |r| {
                    Ok((r.get(0)?, r.get::<_, Option<String>>(1)?.unwrap_or_default()))
                })?;
                rows.collect::<Result<Vec<_>, _>>()?.into_iter().filter(|(_, ext)| !seen.contains(ext)).collect()
            };
            for (id, _) in stale {
                tx.update(Table::Meetings, id, &[("status", SqlValue::Text("canceled".into()))])?;
                counts.canceled += 1;
            }
        }
        if let Some(token) = fin.sync_token {
            tx.conn().execute("UPDATE users SET google_sync_token = ?1 WHERE id = ?2", rusqlite::params![token.expose(), user_id])?;
        }
    }
    Ok(counts)
}

fn apply_event(tx: &mut WriteTx<'_>, user_id: i64, ev: &GEvent, cal_tz: Option<&str>, counts: &mut Counts) -> ApiResult<()> {
    if ev.id.is_empty() || ev.id.len() > 1024 {
        counts.skipped += 1;
        return Ok(());
    }
    let existing: Option<i64> = tx
        .conn()
        .query_row(
            "SELECT id FROM meetings WHERE user_id = ?1 AND source = 'google' AND external_id = ?2",
            rusqlite::params![user_id, ev.id],
            |r| r.get(0),
        )
        .optional()?;
    if ev.status.as_deref() == Some("cancelled") {
        match existing {
            Some(id) => {
                let before = tx.get(Table::Meetings, id)?;
                if before.as_ref().and_then(|m| m.get("status")).and_then(Value::as_str) != Some("canceled") {
                    tx.update(Table::Meetings, id, &[("status", SqlValue::Text("canceled".into()))])?;
                    counts.canceled += 1;
                }
            }
            // A deletion of an event we never had (outside the window, or Calendly's).
            None => counts.skipped += 1,
        }
        return Ok(());
    }
    let Some(fields) = to_meeting(ev, cal_tz) else {
        tracing::warn!(user = user_id, event = %ev.id, "skipping a Google event without readable start and end times");
        counts.skipped += 1;
        return Ok(());
    };
    let mut cols = fields.columns();
    match existing {
        Some(id) => {
            let Some(before) = tx.get(Table::Meetings, id)? else { return Ok(()) };
            // client_id is the adviser's to set; fill it only while empty.
            if before.get("client_id").is_none_or(Value::is_null) {
                if let Some(c) = link_client(tx.conn(), user_id, &fields.attendee_emails)? {
                    cols.push(("client_id", SqlValue::Integer(c)));
                }
            }
            let after = tx.update(Table::Meetings, id, &cols)?;
            if after.as_ref() != Some(&before) {
                counts.updated += 1;
            }
        }
        None => {
            // The Google copy of a Calendly booking: the Calendly meeting is
            // the booking, now and on every later edit of this event. Found by
            // time and email, it learns the event id so later edits match by id.
            if let Some(booking) =
                super::bookings::calendly_meeting_for_event(tx.conn(), user_id, &ev.id, &fields.starts_at, &fields.attendee_emails)?
            {
                if !booking.by_event_id {
                    tx.update(Table::Meetings, booking.meeting_id, &[("google_event_id", SqlValue::Text(ev.id.clone()))])?;
                }
                counts.skipped += 1;
                return Ok(());
            }
            cols.push(("user_id", SqlValue::Integer(user_id)));
            cols.push(("source", SqlValue::Text("google".into())));
            cols.push(("external_id", SqlValue::Text(ev.id.clone())));
            cols.push(("google_event_id", SqlValue::Text(ev.id.clone())));
            if let Some(c) = link_client(tx.conn(), user_id, &fields.attendee_emails)? {
                cols.push(("client_id", SqlValue::Integer(c)));
            }
            tx.insert(Table::Meetings, &cols)?;
            counts.created += 1;
        }
    }
    Ok(())
}

/// The first of the user's clients whose email is an attendee's.
fn link_client(conn: &Connection, user_id: i64, emails: &[String]) -> rusqlite::Result<Option<i64>> {
    let mut stmt = conn.prepare_cached("SELECT id FROM clients WHERE user_id = ?1 AND email = ?2 COLLATE NOCASE ORDER BY id LIMIT 1")?;
    for e in emails {
        if let Some(id) = stmt.query_row(rusqlite::params![user_id, e], |r| r.get(0)).optional()? {
            return Ok(Some(id));
        }
    }
    Ok(None)
}

/// The fields of a Google event syncgate keeps.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GEvent {
    pub id: String,
    pub status: Option<String>,
    pub summary: Option<String>,
    pub description: Option<String>,
    pub location: Option<String>,
    pub start: Option<GTime>,
    pub end: Option<GTime>,
    pub attendees: Option<Vec<GAttendee>>,
    pub hangout_link: Option<String>,
    pub conference_data: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GTime {
    pub date: Option<String>,
    pub date_time: Option<String>,
    pub time_zone: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GAttendee {
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub response_status: Option<String>,
    #[serde(rename = "self")]
    pub is_self: Option<bool>,
    pub organizer: Option<bool>,
    pub resource: Option<bool>,
}

/// A meeting's synced columns, from an event.
#[derive(Debug, PartialEq)]
pub struct MeetingFields {
    pub title: String,
    pub description: Option<String>,
    pub location: Option<String>,
    pub meeting_url: Option<String>,
    pub starts_at: String,
    pub ends_at: String,
    pub all_day: bool,
    pub timezone: Option<String>,
    pub attendees: Value,
    /// Other people's addresses, for linking a client.
    pub attendee_emails: Vec<String>,
}

impl MeetingFields {
    fn columns(&self) -> Vec<(&'static str, SqlValue)> {
        let text = |v: &Option<String>| v.clone().map(SqlValue::Text).unwrap_or(SqlValue::Null);
        vec![
            ("title", SqlValue::Text(self.title.clone())),
            ("description", text(&self.description)),
            ("location", text(&self.location)),
            ("meeting_url", text(&self.meeting_url)),
            ("starts_at", SqlValue::Text(self.starts_at.clone())),
            ("ends_at", SqlValue::Text(self.ends_at.clone())),
            ("all_day", SqlValue::Integer(self.all_day as i64)),
            ("timezone", text(&self.timezone)),
            // Confirmed and tentative events both show as scheduled.
            ("status", SqlValue::Text("scheduled".into())),
            ("attendees", SqlValue::Text(self.attendees.to_string())),
        ]
    }
}

fn clip(s: &Option<String>, max: usize) -> Option<String> {
    let s = s.as_deref()?.trim();
    if s.is_empty() {
        return None;
    }
    Some(s.chars().take(max).collect())
}

/// A start or end as a UTC timestamp; `date` (all-day) is midnight UTC of that day.
fn instant(t: &GTime) -> Option<(String, bool)> {
    if let Some(dt) = t.date_time.as_deref() {
        return timefmt::normalize(dt).map(|s| (s, false));
    }
    let d = timefmt::parse_date(t.date.as_deref()?)?;
    Some((timefmt::format(d.midnight().assume_utc()), true))
}

/// Map an event that is not cancelled. None when its times are unreadable.
pub fn to_meeting(ev: &GEvent, cal_tz: Option<&str>) -> Option<MeetingFields> {
    let start = ev.start.as_ref()?;
    let (starts_at, all_day) = instant(start)?;
    let ends_at = match ev.end.as_ref().and_then(instant) {
        Some((e, _)) if e >= starts_at => e,
        // No (or an earlier) end: an all-day event lasts its day, others are instants.
        _ if all_day => timefmt::format(timefmt::parse(&starts_at)? + time::Duration::days(1)),
        _ => starts_at.clone(),
    };
    let timezone = start.time_zone.clone().or_else(|| cal_tz.map(str::to_string)).filter(|t| !t.is_empty() && t.len() <= 100);
    let meeting_url = clip(&ev.hangout_link, 2000).or_else(|| {
        ev.conference_data
            .as_ref()?
            .get("entryPoints")?
            .as_array()?
            .iter()
            .find(|p| p.get("entryPointType").and_then(Value::as_str) == Some("video"))?
            .get("uri")?
            .as_str()
            .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
            .map(|u| u.chars().take(2000).collect())
    });
    let mut attendees = Vec::new();
    let mut emails = Vec::new();
    for a in ev.attendees.iter().flatten().take(500) {
        let Some(email) = a.email.as_deref().map(str::trim).filter(|e| !e.is_empty()) else { continue };
        let mut o = serde_json::Map::new();
        o.insert("email".into(), Value::String(email.to_string()));
        if let Some(n) = a.display_name.as_deref().filter(|n| !n.is_empty()) {
            o.insert("name".into(), Value::String(n.chars().take(200).collect()));
        }
        if let Some(r) = a.response_status.as_deref() {
            o.insert("response_status".into(), Value::String(r.to_string()));
        }
        if a.organizer == Some(true) {
            o.insert("organizer".into(), Value::Bool(true));
        }
        if a.is_self == Some(true) {
            o.insert("self".into(), Value::Bool(true));
        } else if a.resource != Some(true) {
            emails.push(email.to_string());
        }
        attendees.push(Value::Object(o));
    }
    Some(MeetingFields {
        title: clip(&ev.summary, 500).unwrap_or_else(|| "(no title)".into()),
        description: clip(&ev.description, MAX_TEXT),
        location: clip(&ev.location, 1000),
        meeting_url,
        starts_at,
        ends_at,
        all_day,
        timezone,
        attendees: Value::Array(attendees),
        attendee_emails: emails,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(v: Value) -> GEvent {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn timed_event_becomes_utc_with_its_zone_kept() {
        let m = to_meeting(
            &ev(json!({
                "id": "e1", "status": "tentative", "summary": "Review",
                "start": {"dateTime": "2026-11-23T11:00:00+01:00", "timeZone": "Europe/Paris"},
                "end": {"dateTime": "2026-11-23T12:00:00+01:00", "timeZone": "Europe/Paris"},
                "attendees": [{"email": "me@x.com", "self": true, "responseStatus": "accepted"}, {"email": "Client@Y.com", "displayName": "C"}],
                "hangoutLink": "https://meet.google.com/abc"
            })),
            Some("UTC"),
        )
        .unwrap();
        assert_eq!(m.starts_at, "2026-11-23T10:00:00.000Z");
        assert_eq!(m.ends_at, "2026-11-23T11:00:00.000Z");
        assert_eq!(m.timezone.as_deref(), Some("Europe/Paris"));
        assert!(!m.all_day);
        assert_eq!(m.meeting_url.as_deref(), Some("https://meet.google.com/abc"));
        assert_eq!(m.attendee_emails, vec!["Client@Y.com"]);
        assert_eq!(m.attendees[0]["self"], true);
    }

    #[test]
    fn all_day_event_is_midnight_utc_with_exclusive_end() {
        let m =
            to_meeting(&ev(json!({"id": "d", "start": {"date": "2026-12-24"}, "end": {"date": "2026-12-26"}})), Some("America/New_York"))
                .unwrap();
        assert_eq!((m.starts_at.as_str(), m.ends_at.as_str(), m.all_day), ("2026-12-24T00:00:00.000Z", "2026-12-26T00:00:00.000Z", true));
        assert_eq!(m.timezone.as_deref(), Some("America/New_York"));
        assert_eq!(m.title, "(no title)");
    }

    #[test]
    fn unreadable_times_are_refused_not_panicked_on() {
        assert!(to_meeting(&ev(json!({"id": "x"})), None).is_none());
        assert!(to_meeting(&ev(json!({"id": "x", "start": {"dateTime": "soon"}})), None).is_none());
        assert!(to_meeting(&ev(json!({"id": "x", "start": {"date": "2026-02-30"}})), None).is_none());
        assert!(serde_json::from_value::<GEvent>(json!({"id": 5})).is_err());
    }

    #[test]
    fn backoff_grows_with_jitter_and_honours_retry_after() {
        let rl = CallError::RateLimited { retry_after: None };
        for attempt in 0..4 {
            let d = backoff(attempt, &rl);
            let step = BACKOFF_BASE * (1 << attempt);
            assert!(d >= step / 2 && d <= step, "{d:?} for attempt {attempt}");
        }
        assert!(backoff(30, &rl) <= BACKOFF_CAP);
        assert_eq!(backoff(0, &CallError::RateLimited { retry_after: Some(Duration::from_secs(3)) }), Duration::from_secs(3));
    }
}
