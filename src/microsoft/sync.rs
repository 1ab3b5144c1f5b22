//! The per-user Outlook sync: one pass reads each ticked calendar's delta
//! round from its stored delta link (or from the window, `sync_past` to
//! `sync_future`, when it has none) and applies every page as it comes,
//! the last one with the calendar's new delta link. An expired link gives
//! one full round. When passes run is the shared scheduler's
//! ([`crate::provider::scheduler`]); this module is what a pass does.
//!
//! Which events are meetings and how one becomes a meeting is
//! [`super::events`]; an event cancelled by its organizer, or removed,
//! cancels the meeting; one the user declined is a canceled meeting.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use super::client::{CallError, DeltaPage, DeltaStart};
use super::events;
use super::oauth::AccessError;
use super::MicrosoftSync;
use crate::model::Provider;
use crate::provider::scheduler::{record_pass, PassEnd, PassWords, SyncReport, SyncTrigger, Syncer};
use crate::provider::Secret;
use crate::store::microsoft_sync::{ListedCalendar, OutlookCalendar, OutlookEntry, OutlookPage, RoundEnd};
use crate::store::{timefmt, StoreError};

/// A runaway pagination guard (pages of `microsoft.page_size` events).
const MAX_PAGES: usize = 2000;

/// Why a pass (or a subscription change) stopped.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("the user has not connected Outlook")]
    NotConnected,
    /// `invalid_grant`: the user must connect Outlook again.
    #[error("Microsoft access was revoked or has expired; the user must connect Outlook again")]
    NeedsReconnect,
    #[error("{0}")]
    Access(AccessError),
    #[error("{0}")]
    Api(CallError),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("the server is shutting down")]
    ShuttingDown,
    /// Another node is changing this user's subscriptions right now.
    #[error("another node is changing this user's subscriptions; it is tried again later")]
    Busy,
}

impl SyncError {
    /// How long Graph asked to be left alone, when it throttled the call.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            SyncError::Api(CallError::Throttled { retry_after }) => *retry_after,
            _ => None,
        }
    }
}

impl From<AccessError> for SyncError {
    fn from(e: AccessError) -> SyncError {
        match e {
            AccessError::NotConnected | AccessError::Disabled => SyncError::NotConnected,
            AccessError::NeedsReconnect => SyncError::NeedsReconnect,
            AccessError::ShuttingDown => SyncError::ShuttingDown,
            other => SyncError::Access(other),
        }
    }
}

impl From<CallError> for SyncError {
    fn from(e: CallError) -> SyncError {
        SyncError::Api(e)
    }
}

impl MicrosoftSync {
    /// Ask for a sync of this user (a notification, a connect, the upkeep).
    /// Returns at once: starts a pass, or marks the running one to go again.
    pub fn enqueue_for(self: &Arc<Self>, user_id: i64, trigger: SyncTrigger) {
        if self.enabled() {
            self.passes.enqueue(self, user_id, trigger);
        }
    }

    /// Is a pass running (or queued) for this user on this node?
    pub fn sync_pending(&self, user_id: i64) -> bool {
        self.passes.pending(user_id)
    }

    /// The user's calendars from Graph, stored with their ticks (the
    /// configured set for calendars seen the first time).
    pub(crate) async fn refresh_calendars(self: &Arc<Self>, user_id: i64, token: &Secret) -> Result<Vec<OutlookCalendar>, SyncError> {
        let listed: Vec<ListedCalendar> = self
            .api
            .calendars(token)
            .await?
            .into_iter()
            .map(|c| ListedCalendar {
                name: c.name.clone().filter(|n| !n.trim().is_empty()).unwrap_or_else(|| "Calendar".into()),
                primary: c.is_default_calendar == Some(true),
                color: c.color,
                calendar_id: c.id,
            })
            .collect();
        let wanted = self.cfg.calendars.clone();
        let tick = move |c: &ListedCalendar| wanted.iter().any(|w| w == &c.calendar_id || (w == "primary" && c.primary));
        Ok(self.store.save_outlook_calendars(user_id, listed, tick).await?)
    }

    /// The ticked calendars, reading the list from Graph the first time.
    async fn ticked(self: &Arc<Self>, user_id: i64, token: &Secret, refresh: bool) -> Result<Vec<OutlookCalendar>, SyncError> {
        let mut calendars = self.store.outlook_calendars(user_id).await?;
        if calendars.is_empty() || refresh {
            calendars = self.refresh_calendars(user_id, token).await?;
        }
        Ok(calendars.into_iter().filter(|c| c.selected).collect())
    }

    /// One sync of one user: every ticked calendar's delta round.
    pub async fn sync_user(self: &Arc<Self>, user_id: i64, trigger: SyncTrigger) -> Result<SyncReport, SyncError> {
        let mut token = self.access_token(user_id).await?;
        let self_address = self.store.outlook_address(user_id).await?.unwrap_or_default();
        let calendars = self.ticked(user_id, &token, trigger == SyncTrigger::CatchUp).await?;
        let mut report = SyncReport::default();
        for mut cal in calendars {
            // A round is tried again at most twice: with a fresh token after a
            // 401, and in full after an expired delta link (rounds replay safely).
            let (mut refreshed, mut relisted) = (false, false);
            loop {
                if self.shutting_down() {
                    return Err(SyncError::ShuttingDown);
                }
                match self.round(user_id, &token, &self_address, &cal, &mut report).await {
                    Err(SyncError::Api(CallError::Unauthorized)) if !refreshed => {
                        refreshed = true;
                        self.store.expire_microsoft_access_token(user_id, token.expose().to_string()).await?;
                        token = self.access_token(user_id).await?;
                    }
                    Err(SyncError::Api(CallError::DeltaStateGone)) if cal.delta_link.is_some() && !relisted => {
                        relisted = true;
                        tracing::info!(user = user_id, calendar = %cal.calendar_id, "microsoft delta link expired; listing the calendar in full once");
                        self.store.forget_delta_link(user_id, &cal.calendar_id).await?;
                        cal.delta_link = None;
                    }
                    other => break other?,
                }
            }
        }
        Ok(report)
    }

    /// One delta round of one calendar, every page applied as it comes.
    async fn round(
        self: &Arc<Self>,
        user_id: i64,
        token: &Secret,
        self_address: &str,
        cal: &OutlookCalendar,
        report: &mut SyncReport,
    ) -> Result<(), SyncError> {
        let full = cal.delta_link.is_none();
        let window = full.then(|| {
            let now = timefmt::now();
            let past = time::Duration::try_from(self.cfg.sync_past.0).unwrap_or(time::Duration::days(30));
            let future = time::Duration::try_from(self.cfg.sync_future.0).unwrap_or(time::Duration::days(365));
            (timefmt::format(now - past), timefmt::format(now + future))
        });
        let mut start = match (&cal.delta_link, &window) {
            (Some(link), _) => DeltaStart::Link(Secret::new(link.clone())),
            (None, Some((from, to))) => DeltaStart::Window {
                calendar: if cal.primary { "primary".into() } else { cal.calendar_id.clone() },
                start: from.clone(),
                end: to.clone(),
            },
            (None, None) => return Ok(()),
        };
        // A full round waits its turn: after an upgrade or a burst of expired
        // links, whole windows are listed a few at a time.
        let _permit = if full { Some(self.full_syncs.clone().acquire_owned().await.map_err(|_| SyncError::ShuttingDown)?) } else { None };
        report.full |= full;
        let mut seen: HashSet<String> = HashSet::new();
        for _ in 0..MAX_PAGES {
            if self.shutting_down() {
                return Err(SyncError::ShuttingDown);
            }
            let page = self.api.delta_page(token, &start).await?;
            report.pages += 1;
            let DeltaPage { events: items, removed, unreadable, next_link, delta_link } = page;
            report.skipped += unreadable as u64;
            let mut entries = Vec::with_capacity(items.len() + removed.len());
            for ev in items {
                if full {
                    seen.insert(ev.id.clone());
                }
                entries.push(entry(ev, self_address));
            }
            entries.extend(removed.into_iter().map(|event_id| OutlookEntry::Removed { event_id }));
            // The round ends with the page that carries the delta link (a page
            // with neither link also ends it: nothing more to follow).
            let done = delta_link.is_some() || next_link.is_none();
            let end = delta_link.as_ref().map(|link| RoundEnd {
                delta_link: link.expose().to_string(),
                full: window.clone().map(|(from, to)| (from, to, std::mem::take(&mut seen))),
            });
            let page = OutlookPage { calendar_id: cal.calendar_id.clone(), calendar_name: cal.name.clone(), entries };
            let counts = self.store.apply_outlook_page(user_id, page, end).await?;
            report.created += counts.created;
            report.updated += counts.updated;
            report.canceled += counts.canceled;
            report.removed += counts.removed;
            report.skipped += counts.skipped;
            match (done, next_link) {
                (false, Some(next)) => start = DeltaStart::Link(next),
                _ => return Ok(()),
            }
        }
        tracing::warn!(user = user_id, calendar = %cal.calendar_id, "microsoft delta round stopped after {MAX_PAGES} pages");
        Ok(())
    }
}

impl MicrosoftSync {
    /// Is the user's sync waiting out a `Retry-After` of Graph's? If so, the
    /// pass that comes back then also serves `trigger`.
    fn throttled_now(&self, user_id: i64, trigger: SyncTrigger) -> bool {
        let mut map = self.throttled.lock().unwrap_or_else(|p| p.into_inner());
        match map.get_mut(&user_id) {
            Some((until, wanted)) if *until > std::time::Instant::now() => {
                *wanted = (*wanted).max(trigger);
                true
            }
            Some(_) => {
                map.remove(&user_id);
                false
            }
            None => false,
        }
    }
}

/// How Outlook's pass log lines say it.
const PASS_WORDS: PassWords = PassWords {
    name: "microsoft",
    not_arriving: "Graph's notifications are not arriving (check microsoft.webhook_url)",
    reconnect: "Microsoft access was revoked; the user must connect Outlook again",
};

/// What one delta item means for the meetings.
fn entry(ev: events::GraphEvent, self_address: &str) -> OutlookEntry {
    let event_id = ev.id.clone();
    if event_id.is_empty() || event_id.len() > 1024 {
        return OutlookEntry::Skipped;
    }
    if !events::is_meeting(&ev) {
        return OutlookEntry::NotAMeeting { event_id };
    }
    match events::to_meeting(&ev, self_address) {
        Some(fields) => OutlookEntry::Meeting { event_id, fields: Box::new(fields) },
        None => OutlookEntry::Skipped,
    }
}

impl Syncer for MicrosoftSync {
    /// One pass, with its log line, its row in `microsoft_sync_status` and its metrics.
    async fn run_pass(self: &Arc<Self>, user_id: i64, trigger: SyncTrigger) {
        // Graph said when to come back: a pass before then (for a
        // notification meanwhile) would only be throttled again; the pass
        // scheduled for then reads whatever changed.
        if self.throttled_now(user_id, trigger) {
            tracing::debug!(user = user_id, "microsoft sync waits for Graph's Retry-After");
            return;
        }
        let started = std::time::Instant::now();
        let result = self.sync_user(user_id, trigger).await;
        let end = match &result {
            Ok(r) => PassEnd::Done(r),
            Err(SyncError::NotConnected) | Err(SyncError::ShuttingDown) => return,
            Err(e @ SyncError::NeedsReconnect) => PassEnd::NeedsReconnect(e.to_string()),
            Err(e) => PassEnd::Failed(e.to_string()),
        };
        let metrics = (&self.metrics.microsoft_syncs, &self.metrics.microsoft_sync_seconds);
        record_pass(Provider::Microsoft, &PASS_WORDS, &self.store, metrics, user_id, trigger, started, end).await;
        // A throttled pass comes back when Graph said it may.
        if let Err(SyncError::Api(CallError::Throttled { retry_after })) = &result {
            let wait = retry_after.unwrap_or(Duration::from_secs(60)).min(crate::provider::upkeep::MAX_PROVIDER_WAIT);
            self.throttled.lock().unwrap_or_else(|p| p.into_inner()).insert(user_id, (std::time::Instant::now() + wait, trigger));
            let me = self.clone();
            self.tasks.spawn(async move {
                let mut shutdown = me.shutdown.clone();
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {
                        // This pass's reason, or a stronger one skipped meanwhile.
                        let wanted = me.throttled.lock().unwrap_or_else(|p| p.into_inner()).remove(&user_id).map_or(trigger, |(_, t)| t);
                        me.enqueue_for(user_id, wanted);
                    }
                    _ = shutdown.wait_for(|stop| *stop) => {}
                }
            });
        }
    }
}
