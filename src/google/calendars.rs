//! Which of a user's calendars sync. The list comes from `calendarList.list`
//! and is kept in `google_calendars`; the first time it is read, the
//! configured set (`google.calendars`, else `google.calendar_id`) is ticked,
//! `primary` meaning the entry with `primary: true` (so the main calendar is
//! never ticked twice, once as `primary` and once under its email id). After
//! that the user's own ticks rule (`GET`/`PUT /api/me/calendars`).
//!
//! Ticking a calendar gives it a push channel and a full listing; unticking
//! stops its channel and lets go of its meetings (removed when no other
//! ticked calendar lists them).

use std::collections::HashSet;
use std::sync::Arc;

use serde::Serialize;

use super::client::{CalendarListEntry, CallError};
use super::sync::{Creds, SyncError};
use super::GoogleSync;
use crate::store::google::{CalendarRow, ListedCalendar};

/// Why a new set of ticks was refused.
#[derive(Debug, thiserror::Error)]
pub enum SelectionError {
    #[error("connect Google Calendar first: sign in with Google")]
    NotConnected,
    #[error("Google access was revoked or has expired; sign in with Google again")]
    NeedsReconnect,
    #[error("at most {0} calendars can be synced (google.max_calendars)")]
    TooMany(usize),
    #[error("{0} is not one of your calendars (GET /api/me/calendars lists them)")]
    NotYours(String),
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
}

/// A calendar as `GET /api/me/calendars` shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CalendarView {
    pub id: String,
    pub name: String,
    pub color: Option<String>,
    pub primary: bool,
    pub selected: bool,
}

impl From<&CalendarRow> for CalendarView {
    fn from(c: &CalendarRow) -> CalendarView {
        CalendarView { id: c.calendar_id.clone(), name: c.name.clone(), color: c.color.clone(), primary: c.primary, selected: c.selected }
    }
}

fn listed(e: &CalendarListEntry) -> ListedCalendar {
    let clip =
        |s: &Option<String>, max: usize| s.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(|s| s.chars().take(max).collect());
    ListedCalendar {
        calendar_id: e.id.clone(),
        name: clip(&e.summary_override, 200).or_else(|| clip(&e.summary, 200)).unwrap_or_else(|| e.id.clone()),
        // Only a colour (`#rrggbb`) reaches the page's style attribute.
        color: clip(&e.background_color, 9).filter(|c| c.len() >= 4 && c.starts_with('#') && c[1..].chars().all(|x| x.is_ascii_hexdigit())),
        primary: e.primary == Some(true),
        time_zone: clip(&e.time_zone, 100),
    }
}

/// Is this calendar in the configured set?
fn configured(defaults: &[String], c: &ListedCalendar) -> bool {
    defaults.iter().any(|d| d.eq_ignore_ascii_case(&c.calendar_id) || (c.primary && d.eq_ignore_ascii_case("primary")))
}

impl GoogleSync {
    /// The user's ticked calendars; the first time, reads the calendar list
    /// and ticks the configured set.
    pub(crate) async fn ticked_calendars(
        self: &Arc<Self>,
        user_id: i64,
        creds: &mut Creds,
        refreshed_for_401: &mut bool,
    ) -> Result<Vec<CalendarRow>, SyncError> {
        if !self.store.has_google_calendar_list(user_id).await? {
            self.refresh_calendar_list(user_id, creds, refreshed_for_401).await?;
        }
        Ok(self.store.ticked_google_calendars(user_id).await?)
    }

    /// Read `calendarList.list` and store it. Calendars that left the list
    /// while ticked are let go of as if unticked.
    pub(crate) async fn refresh_calendar_list(
        self: &Arc<Self>,
        user_id: i64,
        creds: &mut Creds,
        refreshed_for_401: &mut bool,
    ) -> Result<Vec<CalendarRow>, SyncError> {
        let mut attempt = 0u32;
        let entries = loop {
            let access = self.access_token(user_id, creds, false).await?;
            match self.api.calendar_list(&access).await {
                Ok(e) => break e,
                Err(CallError::Unauthorized) if !*refreshed_for_401 => {
                    *refreshed_for_401 = true;
                    self.access_token(user_id, creds, true).await?;
                }
                Err(e) if e.retryable() && attempt < 3 => {
                    let wait = super::sync::backoff(attempt, &e);
                    attempt += 1;
                    self.pause(wait).await?;
                }
                Err(e) => return Err(SyncError::Api(e)),
            }
        };
        let mut listed: Vec<ListedCalendar> = entries.iter().map(listed).collect();
        let defaults = self.cfg.default_calendars();
        // A configured calendar the user can read but has not added to their
        // list (named by id in google.calendars) still syncs, as it did with
        // the one-calendar form: it is kept under its id.
        for d in &defaults {
            if !d.eq_ignore_ascii_case("primary") && !listed.iter().any(|c| configured(std::slice::from_ref(d), c)) {
                tracing::info!(user = user_id, calendar = %d, "a configured Google calendar is not on the user's calendar list; syncing it by id");
                listed.push(ListedCalendar { calendar_id: d.clone(), name: d.clone(), color: None, primary: false, time_zone: None });
            }
        }
        // Ticked the first time the list is stored; the user's ticks rule after that.
        let configured_ids: HashSet<String> = listed.iter().filter(|c| configured(&defaults, c)).map(|c| c.calendar_id.clone()).collect();
        let saved = self.store.save_google_calendar_list(user_id, listed, configured_ids).await?;
        let (rows, gone) = (saved.calendars, saved.gone);
        for cal in gone {
            tracing::info!(user = user_id, calendar = %cal, "a ticked Google calendar left the user's calendar list; letting it go");
            if let Err(e) = self.stop_calendar_channels(user_id, &cal).await {
                tracing::warn!(user = user_id, error = %e, "could not stop the channel of a calendar that left the list");
            }
        }
        Ok(rows)
    }

    /// `GET /api/me/calendars`: the list, fresh from Google.
    pub async fn list_calendars(self: &Arc<Self>, user_id: i64) -> Result<Vec<CalendarView>, SyncError> {
        let mut creds = self.credentials(user_id).await?.ok_or(SyncError::NotConnected)?;
        if creds.needs_reconnect {
            return Err(SyncError::NeedsReconnect);
        }
        if creds.refresh.is_none() {
            return Err(SyncError::NotConnected);
        }
        let rows = self.refresh_calendar_list(user_id, &mut creds, &mut false).await?;
        Ok(rows.iter().map(CalendarView::from).collect())
    }

    /// `PUT /api/me/calendars`: tick exactly `wanted` (ids from the list;
    /// `primary` names the primary calendar). Newly ticked calendars get a
    /// channel and a full listing; unticked ones lose their channel and the
    /// meetings only they listed.
    pub async fn set_calendars(self: &Arc<Self>, user_id: i64, wanted: Vec<String>) -> Result<Vec<CalendarView>, SelectionError> {
        match self.credentials(user_id).await? {
            Some(c) if c.needs_reconnect => return Err(SelectionError::NeedsReconnect),
            Some(c) if c.refresh.is_some() => {}
            _ => return Err(SelectionError::NotConnected),
        }
        if wanted.len() > self.cfg.max_calendars {
            return Err(SelectionError::TooMany(self.cfg.max_calendars));
        }
        let known = self.store.google_calendars(user_id).await?;
        let mut ids: Vec<String> = Vec::new();
        for w in &wanted {
            let Some(c) = known.iter().find(|c| c.calendar_id == *w || (c.primary && w.eq_ignore_ascii_case("primary"))) else {
                return Err(SelectionError::NotYours(w.chars().take(200).collect()));
            };
            if !ids.contains(&c.calendar_id) {
                ids.push(c.calendar_id.clone());
            }
        }
        let lock = self.selection_lock(user_id);
        let _held = lock.lock().await;
        let change = self.store.select_google_calendars(user_id, ids).await?;
        let (added, dropped) = (change.added, change.dropped);
        tracing::info!(user = user_id, ?added, ?dropped, "Google calendar selection changed");
        for cal in &dropped {
            if let Err(e) = self.stop_calendar_channels(user_id, cal).await {
                tracing::warn!(user = user_id, error = %e, "could not stop the channel of an unticked calendar");
            }
        }
        for cal in &added {
            match self.replace_channel(user_id, cal).await {
                Ok(_) => {}
                Err(e @ (SyncError::NeedsReconnect | SyncError::NotConnected | SyncError::ShuttingDown)) => {
                    tracing::warn!(user = user_id, error = %e, "could not register the push channel of a ticked calendar");
                }
                Err(e) => self.channel_failed(user_id, cal, &e.to_string()).await,
            }
        }
        if !added.is_empty() {
            self.enqueue(user_id);
        }
        let rows = self.store.google_calendars(user_id).await?;
        Ok(rows.iter().map(CalendarView::from).collect())
    }
}
