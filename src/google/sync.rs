//! The sync: Google events → `google` meetings, one user at a time.
//!
//! - **Coalescing.** [`GoogleSync::enqueue`] starts a pass for a user, or,
//!   if one is running, marks it to run once more when it ends. A burst of
//!   notifications therefore costs at most two passes, and one user never has
//!   two passes at once.
//! - **A pass** reads every calendar the user ticked (see
//!   [`super::calendars`]), each incremental with its own sync token, else
//!   in full over the window `sync_past`..`sync_future`. Every page's new and
//!   changed meetings are committed as the page arrives; cancellations wait
//!   for the end of the pass, when every ticked calendar has been read, and
//!   are committed with each calendar's `nextSyncToken` in one writer
//!   request (`Store::finish_google_pass`). So an event moved between two
//!   ticked calendars (cancelled in one, new in the other, whichever channel
//!   pushed first) stays the same meeting with its `calendar_id` updated,
//!   never a DELETE+INSERT. A crash
//!   mid-pass leaves the old tokens in place, so the next pass lists the
//!   same changes again and the already written ones are silent no-ops
//!   (`tx.update` writes nothing when nothing differs).
//! - **One meeting per event, whatever lists it.** `google_event_links` maps
//!   (calendar, event id) → meeting. An event is matched by that, else by
//!   its id in another calendar, else by `iCalUID` *and* occurrence
//!   (`originalStartTime`, else the start; never the UID alone, which every
//!   occurrence of a series shares). A meeting is canceled only when no
//!   ticked calendar lists it any more. This module decides what each event
//!   is ([`PageEntry`]); the matching and the writes are the store's
//!   (`store::google_sync`), one page per writer request.
//! - **What is a meeting.** Only `eventType: default` events; others (focus
//!   time, out of office, working location, birthdays, Gmail reservations,
//!   unknown types) are skipped, and a row an earlier version made of one is
//!   deleted. An invitation the user declined (their own attendee entry,
//!   `self: true`) is `canceled`; accepting it again brings it back.
//! - **Recurring events** arrive expanded (`singleEvents=true`), one
//!   occurrence per id. New meetings are made only up to the calendar's
//!   window end, and the window moves forward with time (a bounded listing
//!   of the new slice once it is `google.window_step` behind), so an endless
//!   series never imports past it and occurrences entering it appear
//!   without a push.
//! - **Failures.** 401 → refresh the access token once and retry;
//!   `invalid_grant` → the user needs to reconnect and is not synced again
//!   until they do; 410 → drop that calendar's token and list it in full
//!   once (a second 410 ends the pass); rate limits and 5xx → exponential
//!   backoff with jitter. Full listings run `google.full_sync_concurrency`
//!   at a time.
//! - A full listing ends by cancelling what that calendar no longer lists
//!   (deleted while no token was valid), and rows from before the upgrade
//!   that no calendar listed.
//! - **Why a pass ran** ([`SyncTrigger`]: a push, catch-up, the safety net)
//!   decides how it is counted: what a safety-net pass finds is what no push
//!   announced, so it is counted per user for operations.
//! - **One meeting per booking.** An event that is the Google copy of a
//!   Calendly booking is left to the Calendly meeting (see `store::bookings`).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::client::{CallError, EventsPage, ListMode};
use super::GoogleSync;
use crate::backoff::Backoff;
use crate::model::Provider;
use crate::provider::scheduler::{record_pass, PassEnd, PassWords, SyncReport, SyncTrigger, Syncer};
use crate::provider::Secret;
use crate::store::google::CalendarRow;
use crate::store::google_sync::{CalendarListing, CalendarPage, EventMeeting, PageEntry};
use crate::store::provider_accounts::Credentials;
use crate::store::synced_meetings::SyncCounts;
use crate::store::{timefmt, StoreError};

use crate::store::synced_meetings::{clip, Attendee, Attendees, MeetingFields, MAX_DESCRIPTION, MAX_LOCATION, MAX_TITLE, MAX_URL};

/// Retries of one call that hits a rate limit or a 5xx before the pass gives up.
const MAX_RETRIES: u32 = 5;
/// Retries of one Google call: 0.5 s, 1 s, 2 s, … (jittered), at most 32 s.
pub(crate) const CALL_BACKOFF: Backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(32));
/// Refresh an access token this long before Google says it expires.
const REFRESH_MARGIN_SECS: i64 = 60;
/// A runaway pagination guard (250 events a page).
const MAX_PAGES: usize = 2000;

/// Why a pass (or a channel change) stopped.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The user has not connected Google (no refresh token).
    #[error("the user has not connected Google Calendar")]
    NotConnected,
    /// `invalid_grant`: the user must sign in with Google again.
    #[error("Google access was revoked; the user must sign in with Google again")]
    NeedsReconnect,
    #[error("{0}")]
    Api(CallError),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("the server is shutting down")]
    ShuttingDown,
}

/// A user's Google credentials, tokens wrapped so they cannot be printed.
pub(crate) struct Creds {
    pub refresh: Option<Secret>,
    pub access: Option<Secret>,
    pub expires_at: Option<String>,
    pub needs_reconnect: bool,
    /// The account is disabled: no sync and no channel until it is enabled.
    pub disabled: bool,
}

impl From<Credentials> for Creds {
    fn from(c: Credentials) -> Creds {
        Creds {
            refresh: c.refresh_token.map(Secret::new),
            access: c.access_token.map(Secret::new),
            expires_at: c.access_expires_at,
            needs_reconnect: c.needs_reconnect,
            disabled: c.disabled,
        }
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
        if self.enabled() {
            self.passes.enqueue(self, user_id, trigger);
        }
    }

    /// Is a pass running (or queued) for this user?
    pub fn sync_pending(&self, user_id: i64) -> bool {
        self.passes.pending(user_id)
    }
}

impl Syncer for GoogleSync {
    /// One pass, with its log line, its row in `google_sync_status` and its metrics.
    async fn run_pass(self: &Arc<Self>, user_id: i64, trigger: SyncTrigger) {
        let started = std::time::Instant::now();
        let result = self.sync_user(user_id).await;
        let end = match &result {
            Ok(r) => PassEnd::Done(r),
            Err(SyncError::NotConnected) | Err(SyncError::ShuttingDown) => return,
            Err(e @ SyncError::NeedsReconnect) => PassEnd::NeedsReconnect(e.to_string()),
            Err(e) => PassEnd::Failed(e.to_string()),
        };
        let metrics = (&self.metrics.google_syncs, &self.metrics.google_sync_seconds);
        record_pass(Provider::Google, &PASS_WORDS, &self.store, metrics, user_id, trigger, started, end).await;
    }
}

/// How Google's pass log lines say it.
const PASS_WORDS: PassWords = PassWords {
    name: "google",
    not_arriving: "Google's notifications are not arriving (check the channel and google.webhook_url)",
    reconnect: "Google access was revoked; the user must sign in with Google again",
};

impl GoogleSync {
    /// One sync of one user: every ticked calendar, each incremental when it
    /// has a sync token, else listed in full; cancellations last (see the
    /// module doc).
    pub async fn sync_user(self: &Arc<Self>, user_id: i64) -> Result<SyncReport, SyncError> {
        let mut creds = self.credentials(user_id).await?.ok_or(SyncError::NotConnected)?;
        if creds.needs_reconnect {
            return Err(SyncError::NeedsReconnect);
        }
        if creds.refresh.is_none() || creds.disabled {
            return Err(SyncError::NotConnected);
        }
        let mut refreshed_for_401 = false;
        let calendars = self.ticked_calendars(user_id, &mut creds, &mut refreshed_for_401).await?;
        let window = self.full_window();
        let mut pass = Pass { report: SyncReport::default(), pending: HashSet::new(), full_permit: None };
        let mut listings = Vec::with_capacity(calendars.len());
        for calendar in calendars {
            let id = calendar.calendar_id.clone();
            match self.list_calendar(user_id, &mut creds, calendar, &window, &mut pass, &mut refreshed_for_401).await {
                Ok(listing) => listings.push(listing),
                // One calendar gone (deleted, or access withdrawn) must not stop the others.
                Err(SyncError::Api(CallError::NotFound)) => {
                    tracing::warn!(user = user_id, calendar = %id, "Google says this ticked calendar does not exist (404); skipping it");
                }
                Err(e) => return Err(e),
            }
        }
        // The window moves with time: list the slice that entered it since.
        let ListMode::Full { time_max: desired_end, .. } = &window else { unreachable!("full_window is full") };
        for listing in listings.iter_mut().filter(|l| l.full.is_none()) {
            if self.window_due(listing.calendar.window_end.as_deref(), desired_end) {
                self.advance_window(user_id, &mut creds, listing, desired_end, &mut pass, &mut refreshed_for_401).await?;
            }
        }
        let legacy_window = listings.iter().find_map(|l| l.full.clone());
        let listings = listings.into_iter().map(Listing::into_store).collect();
        let counts = self.store.finish_google_pass(user_id, listings, legacy_window).await?;
        pass.report.add(&counts);
        Ok(pass.report)
    }

    /// List one calendar: every page, each page's meetings committed as it
    /// arrives, its cancellations kept for the end of the pass. A 410 drops
    /// the calendar's token and lists it in full once.
    async fn list_calendar(
        self: &Arc<Self>,
        user_id: i64,
        creds: &mut Creds,
        calendar: CalendarRow,
        window: &ListMode,
        pass: &mut Pass,
        refreshed_for_401: &mut bool,
    ) -> Result<Listing, SyncError> {
        let mut mode = match calendar.sync_token.clone() {
            Some(t) => ListMode::Incremental(Secret::new(t)),
            None => window.clone(),
        };
        let mut had_410 = false;
        'calendar: loop {
            let full = match &mode {
                ListMode::Full { time_min, time_max } => {
                    self.hold_full_sync_permit(pass).await?;
                    Some((time_min.clone(), time_max.clone()))
                }
                ListMode::Incremental(_) => None,
            };
            pass.report.full |= full.is_some();
            // Full listings import up to their own end; incremental ones up to
            // the window the calendar was last listed to.
            let window_end = full.as_ref().map(|(_, max)| max.clone()).or_else(|| calendar.window_end.clone());
            let mut listing = Listing { calendar: calendar.clone(), full, seen: HashSet::new(), cancelled: Vec::new(), next: None };
            let mut page_token: Option<String> = None;
            let mut pages = 0usize;
            loop {
                if self.shutting_down() {
                    return Err(SyncError::ShuttingDown);
                }
                let page = match self
                    .list_page(user_id, creds, &calendar.calendar_id, &mode, page_token.as_deref(), refreshed_for_401)
                    .await
                {
                    Ok(p) => p,
                    Err(SyncError::Api(CallError::Gone)) if !had_410 => {
                        // The token is dead: forget it, then one full listing. A
                        // second 410 (which a full listing cannot get) ends the pass.
                        had_410 = true;
                        tracing::info!("google sync user {user_id}: sync token of a calendar expired (410); listing that calendar in full");
                        self.store.forget_google_sync_token(user_id, &calendar.calendar_id).await?;
                        mode = window.clone();
                        continue 'calendar;
                    }
                    Err(e) => return Err(e),
                };
                pages += 1;
                pass.report.pages += 1;
                let EventsPage { items, next_page_token, next_sync_token, time_zone } = page;
                let events: Vec<GEvent> = items
                    .into_iter()
                    .filter_map(|v| match serde_json::from_value::<GEvent>(v) {
                        Ok(e) => Some(e),
                        Err(e) => {
                            tracing::warn!(user = user_id, error = %e, "skipping an event Google sent in an unexpected shape");
                            pass.report.skipped += 1;
                            None
                        }
                    })
                    .collect();
                let mut live = Vec::with_capacity(events.len());
                for ev in events {
                    if listing.full.is_some() {
                        listing.seen.insert(ev.id.clone());
                    }
                    if ev.status.as_deref() == Some("cancelled") {
                        pass.pending.insert((calendar.calendar_id.clone(), ev.id.clone()));
                        listing.cancelled.push(ev.id);
                    } else {
                        live.push(ev);
                    }
                }
                let last = next_page_token.is_none() || pages >= MAX_PAGES;
                if next_page_token.is_some() && pages >= MAX_PAGES {
                    tracing::warn!(user = user_id, "google sync stopped after {MAX_PAGES} pages of one calendar");
                }
                let time_zone = time_zone.or_else(|| calendar.time_zone.clone());
                let page = CalendarPage {
                    calendar_id: calendar.calendar_id.clone(),
                    calendar_name: calendar.name.clone(),
                    window_end: window_end.clone(),
                    pending: pass.pending.clone(),
                    entries: live.into_iter().map(|ev| page_entry(user_id, ev, time_zone.as_deref())).collect(),
                };
                let counts = self.store.apply_google_events(user_id, page).await?;
                pass.report.add(&counts);
                if last {
                    if next_sync_token.is_none() {
                        tracing::warn!(user = user_id, "Google sent no sync token on the last page; the next sync will be a full one");
                    }
                    if next_page_token.is_some() {
                        // Cut short: not every event was seen, so nothing may be reconciled.
                        listing.full = None;
                    }
                    listing.next = Some(next_sync_token);
                    return Ok(listing);
                }
                page_token = next_page_token;
            }
        }
    }

    /// Wait for a full-sync slot (held until the pass ends): full listings
    /// run `google.full_sync_concurrency` at a time, so an upgrade that
    /// needs one per user works through them in turn.
    async fn hold_full_sync_permit(&self, pass: &mut Pass) -> Result<(), SyncError> {
        if pass.full_permit.is_none() {
            let mut shutdown = self.shutdown.clone();
            let permit = tokio::select! {
                p = self.full_syncs.clone().acquire_owned() => p.map_err(|_| SyncError::ShuttingDown)?,
                _ = shutdown.changed() => return Err(SyncError::ShuttingDown),
            };
            pass.full_permit = Some(permit);
        }
        Ok(())
    }

    /// Is the calendar's window end far enough behind the desired one to list the new slice?
    fn window_due(&self, window_end: Option<&str>, desired_end: &str) -> bool {
        let Some(desired) = timefmt::parse(desired_end) else { return false };
        let step = time::Duration::try_from(self.cfg.window_step.0).unwrap_or(time::Duration::DAY);
        match window_end.and_then(timefmt::parse) {
            Some(end) => desired - end >= step,
            None => true,
        }
    }

    /// List `[window_end, desired_end)` of a calendar (no sync token, so a
    /// time range is allowed) and import what entered the window.
    async fn advance_window(
        self: &Arc<Self>,
        user_id: i64,
        creds: &mut Creds,
        listing: &mut Listing,
        desired_end: &str,
        pass: &mut Pass,
        refreshed_for_401: &mut bool,
    ) -> Result<(), SyncError> {
        let from = listing.calendar.window_end.clone().unwrap_or_else(|| timefmt::format(timefmt::now()));
        let mode = ListMode::Full { time_min: from, time_max: desired_end.to_string() };
        let mut page_token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let page =
                self.list_page(user_id, creds, &listing.calendar.calendar_id, &mode, page_token.as_deref(), refreshed_for_401).await?;
            pass.report.pages += 1;
            let live: Vec<GEvent> = page
                .items
                .into_iter()
                .filter_map(|v| serde_json::from_value::<GEvent>(v).ok())
                .filter(|e| e.status.as_deref() != Some("cancelled"))
                .collect();
            let time_zone = page.time_zone.or_else(|| listing.calendar.time_zone.clone());
            let slice = CalendarPage {
                calendar_id: listing.calendar.calendar_id.clone(),
                calendar_name: listing.calendar.name.clone(),
                window_end: Some(desired_end.to_string()),
                pending: pass.pending.clone(),
                entries: live.into_iter().map(|ev| page_entry(user_id, ev, time_zone.as_deref())).collect(),
            };
            let counts = self.store.apply_google_events(user_id, slice).await?;
            pass.report.add(&counts);
            match page.next_page_token {
                Some(t) => page_token = Some(t),
                None => {
                    listing.new_window_end(desired_end);
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// A full sync's window, from now.
    pub(crate) fn full_window(&self) -> ListMode {
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
        calendar_id: &str,
        mode: &ListMode,
        page_token: Option<&str>,
        refreshed_for_401: &mut bool,
    ) -> Result<EventsPage, SyncError> {
        let mut attempt = 0u32;
        loop {
            let access = self.access_token(user_id, creds, false).await?;
            match self.api.list_events(&access, calendar_id, mode, page_token).await {
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
    /// The user's stored Google credentials; None when the user does not exist.
    pub(crate) async fn credentials(&self, user_id: i64) -> Result<Option<Creds>, StoreError> {
        Ok(self.store.credentials(Provider::Google, user_id).await?.map(Creds::from))
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
                    self.store.mark_needs_reconnect(Provider::Google, user_id).await?;
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
        self.store
            .save_tokens(
                Provider::Google,
                user_id,
                access.expose().to_string(),
                expires_at.clone(),
                new_refresh.as_ref().map(|r| r.expose().to_string()),
            )
            .await?;
        creds.access = Some(access.clone());
        creds.expires_at = Some(expires_at);
        if let Some(r) = new_refresh {
            creds.refresh = Some(r);
        }
        Ok(access)
    }
}

/// The wait before retry `attempt` of a Google call that failed with `e`:
/// [`CALL_BACKOFF`], or what `Retry-After` asks for (capped the same).
pub(crate) fn backoff(attempt: u32, e: &CallError) -> Duration {
    let retry_after = match e {
        CallError::RateLimited { retry_after } => *retry_after,
        _ => None,
    };
    CALL_BACKOFF.delay_or(attempt, retry_after)
}

/// What a pass carries from calendar to calendar.
struct Pass {
    report: SyncReport,
    /// (calendar, event id) of every cancelled entry listed so far: a meeting
    /// these leave is not kept in their calendar when another lists it.
    pending: HashSet<(String, String)>,
    full_permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// One ticked calendar as a pass listed it.
struct Listing {
    calendar: CalendarRow,
    /// The window, when the calendar was listed in full to the last page.
    full: Option<(String, String)>,
    /// Event ids a full listing saw.
    seen: HashSet<String>,
    /// Ids of cancelled entries, applied at the end of the pass.
    cancelled: Vec<String>,
    /// The last page's `nextSyncToken` (Some(None): the last page had none).
    next: Option<Option<Secret>>,
}

impl Listing {
    fn new_window_end(&mut self, end: &str) {
        self.calendar.window_end = Some(end.to_string());
    }
}

impl Listing {
    /// What the end of the pass stores for this calendar.
    fn into_store(self) -> CalendarListing {
        CalendarListing {
            calendar_id: self.calendar.calendar_id,
            window_end: self.calendar.window_end,
            full: self.full,
            seen: self.seen,
            cancelled: self.cancelled,
            next_sync_token: self.next.map(|t| t.map(|t| t.expose().to_string())),
        }
    }
}

impl SyncReport {
    fn add(&mut self, c: &SyncCounts) {
        self.created += c.created;
        self.updated += c.updated;
        self.canceled += c.canceled;
        self.removed += c.removed;
        self.skipped += c.skipped;
    }
}

/// Only `default` events are meetings. Focus time, out of office, working
/// location, birthdays, Gmail's reservations and any type Google adds later
/// are not. An event without a type is from before types existed: default.
pub fn is_meeting_type(event_type: Option<&str>) -> bool {
    matches!(event_type, None | Some("default"))
}

/// What a live (not cancelled) event of a page is: a meeting with its
/// columns and cross-calendar keys, an event that is not a meeting, or one
/// to leave alone. `cal_tz` is the calendar's zone, for events that name none.
pub fn page_entry(user_id: i64, ev: GEvent, cal_tz: Option<&str>) -> PageEntry {
    if ev.id.is_empty() || ev.id.len() > 1024 {
        return PageEntry::Skipped;
    }
    if !is_meeting_type(ev.event_type.as_deref()) {
        return PageEntry::NotAMeeting { event_id: ev.id };
    }
    let Some(fields) = to_meeting(&ev, cal_tz) else {
        tracing::warn!(user = user_id, event = %ev.id, "skipping a Google event without readable start and end times");
        return PageEntry::Skipped;
    };
    let occurrence = ev.occurrence().unwrap_or_else(|| fields.starts_at.clone());
    PageEntry::Meeting(Box::new(EventMeeting {
        event_id: ev.id,
        ical_uid: ev.i_cal_uid.filter(|u| !u.is_empty()),
        occurrence,
        series_id: ev.recurring_event_id,
        fields,
    }))
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
    /// `default`, `outOfOffice`, `focusTime`, `workingLocation`, `birthday`, `fromGmail`, ...
    pub event_type: Option<String>,
    #[serde(rename = "iCalUID")]
    pub i_cal_uid: Option<String>,
    /// For an occurrence of a recurring series (`singleEvents=true`): the series' id.
    pub recurring_event_id: Option<String>,
    /// For an occurrence: where the series put it (before any edit of this one).
    pub original_start_time: Option<GTime>,
}

impl GEvent {
    /// Which occurrence of its iCalendar UID this event is: the original
    /// start of an occurrence, else None (the caller uses the start).
    pub fn occurrence(&self) -> Option<String> {
        self.original_start_time.as_ref().and_then(instant).map(|(s, _)| s)
    }

    /// Has the user declined it? (their own attendee entry, `self: true`)
    pub fn declined_by_self(&self) -> bool {
        self.attendees.iter().flatten().any(|a| a.is_self == Some(true) && a.response_status.as_deref() == Some("declined"))
    }
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
        _ if all_day => timefmt::format(timefmt::add(timefmt::parse(&starts_at)?, time::Duration::days(1))?),
        _ => starts_at.clone(),
    };
    let timezone = start.time_zone.clone().or_else(|| cal_tz.map(str::to_string)).filter(|t| !t.is_empty() && t.len() <= 100);
    let meeting_url = clip(ev.hangout_link.as_deref(), MAX_URL).or_else(|| {
        ev.conference_data
            .as_ref()?
            .get("entryPoints")?
            .as_array()?
            .iter()
            .find(|p| p.get("entryPointType").and_then(Value::as_str) == Some("video"))?
            .get("uri")?
            .as_str()
            .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
            .map(|u| u.chars().take(MAX_URL).collect())
    });
    let mut attendees = Attendees::default();
    for a in ev.attendees.iter().flatten() {
        attendees.push(Attendee {
            email: a.email.as_deref().unwrap_or_default(),
            name: a.display_name.as_deref(),
            response_status: a.response_status.as_deref(),
            organizer: a.organizer == Some(true),
            is_self: a.is_self == Some(true),
            resource: a.resource == Some(true),
        });
    }
    let (attendees, attendee_emails) = attendees.into_parts();
    Some(MeetingFields {
        title: clip(ev.summary.as_deref(), MAX_TITLE).unwrap_or_else(|| "(no title)".into()),
        description: clip(ev.description.as_deref(), MAX_DESCRIPTION),
        location: clip(ev.location.as_deref(), MAX_LOCATION),
        meeting_url,
        starts_at,
        ends_at,
        all_day,
        timezone,
        attendees,
        attendee_emails,
        declined: ev.declined_by_self(),
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
    fn only_default_events_are_meetings() {
        assert!(is_meeting_type(None), "an event from before types existed");
        assert!(is_meeting_type(Some("default")));
        for t in ["fromGmail", "outOfOffice", "focusTime", "workingLocation", "birthday", "somethingNew", ""] {
            assert!(!is_meeting_type(Some(t)), "{t}");
        }
    }

    #[test]
    fn the_users_own_answer_decides_declined() {
        let invite = |mine: &str| {
            ev(json!({"id": "i", "start": {"dateTime": "2026-11-23T10:00:00Z"}, "end": {"dateTime": "2026-11-23T11:00:00Z"},
                "attendees": [{"email": "boss@x.com", "responseStatus": "declined"}, {"email": "me@x.com", "self": true, "responseStatus": mine}]}))
        };
        assert!(to_meeting(&invite("declined"), None).unwrap().declined);
        for mine in ["accepted", "tentative", "needsAction"] {
            assert!(!to_meeting(&invite(mine), None).unwrap().declined, "{mine}: another attendee's refusal does not count");
        }
    }

    #[test]
    fn an_occurrence_is_named_by_its_original_start() {
        let moved = ev(json!({"id": "s_20261201T090000Z", "iCalUID": "s@google.com", "recurringEventId": "s",
            "originalStartTime": {"dateTime": "2026-12-01T10:00:00+01:00"},
            "start": {"dateTime": "2026-12-01T15:00:00+01:00"}, "end": {"dateTime": "2026-12-01T16:00:00+01:00"}}));
        assert_eq!(moved.occurrence().as_deref(), Some("2026-12-01T09:00:00.000Z"));
        assert_eq!(moved.i_cal_uid.as_deref(), Some("s@google.com"));
        let single = ev(json!({"id": "x", "start": {"dateTime": "2026-12-01T15:00:00Z"}}));
        assert_eq!(single.occurrence(), None, "the caller uses the start");
    }

    #[test]
    fn backoff_grows_with_jitter_and_honours_retry_after() {
        let rl = CallError::RateLimited { retry_after: None };
        for attempt in 0..4 {
            let d = backoff(attempt, &rl);
            let step = CALL_BACKOFF.base * (1 << attempt);
            assert!(d >= step / 2 && d <= step, "{d:?} for attempt {attempt}");
        }
        assert!(backoff(30, &rl) <= CALL_BACKOFF.cap);
        assert_eq!(backoff(0, &CallError::RateLimited { retry_after: Some(Duration::from_secs(3)) }), Duration::from_secs(3));
    }
}
