//! Applying one verified delivery to the adviser's meetings and clients: the
//! decisions live here, each read or write is one [`BookingStore`] step, and
//! all of it runs inside ONE writer request ([`book`]): the delivery's log
//! row (whose dedupe key makes replays no-ops), the client upsert, the
//! meeting upsert, the invitee links and their change rows commit together,
//! and the HTTP 2xx is sent only after that commit.
//!
//! # The model
//! A meeting (source `calendly`) is one booked slot: `external_id` is the URI
//! of the scheduled event it currently stands for, and `invitees` lists the
//! people who booked it (`active`, `no_show`, `canceled`, `rescheduled`).
//! `calendly_invitees` maps every invitee URI we have heard of to its meeting
//! and state, and keeps `expected` rows for invitees announced by a
//! reschedule but not yet delivered. Canceled and rescheduled are terminal
//! for an invitee: a late or replayed `invitee.created` never revives one.
//!
//! A meeting's status follows from its invitees: `canceled` when its current
//! scheduled event is canceled (a plain cancel saying `status: canceled`) or
//! when no invitee is live (active or no-show) and none is expected;
//! `no_show` when every live invitee is a no-show; `scheduled` otherwise. So
//! in a group event one of two invitees canceling keeps it scheduled and the
//! last one cancels it (reason and canceler taken from that cancellation).
//!
//! A booking is also written to the adviser's Google Calendar, so the
//! Google sync may have stored its copy first: a delivery that finds no
//! Calendly meeting takes that `google` row over ([`BookingStore::calendar_copy`]:
//! by `calendar_event.external_id`, else start time and the invitee's email)
//! with one UPDATE, keeping its id, notes and client link.
//!
//! # Reschedules
//! Calendly reschedules by canceling the old invitee O (`rescheduled: true`,
//! `new_invitee: N`) on the old event E1, and creating N (`old_invitee: O`)
//! on a new event E2. syncgate keeps ONE meeting M that moves from E1 to E2
//! (`external_id` becomes E2, `previous_starts_at` keeps E1's start), in
//! either arrival order:
//!
//! - **Cancel first.** O's entry becomes `rescheduled` and N is linked to M
//!   as `expected`. An expected invitee counts as present, so M stays
//!   `scheduled` at the old time (never canceled) while it waits. When N's
//!   creation arrives, there is no meeting for E2 yet, N's link names M, and
//!   M has no other live invitee, so M moves to E2 and N's entry takes O's
//!   place.
//! - **Create first.** N's creation finds M through O's link; O is N's
//!   predecessor, so M has no other live invitee and moves to E2 at once
//!   (O's entry replaced by N's, O linked as `rescheduled`). The late cancel
//!   of O finds M through O's link, sees M no longer stands for E1, and
//!   changes nothing: M is not canceled by E1's cancellation.
//!
//! If neither delivery found a meeting (the booking predates the
//! subscription), the first one creates M: cancel-first creates it at E1
//! (scheduled, waiting for N) and the creation moves it; create-first
//! creates it at E2 and the late cancel fills in `previous_starts_at` from
//! E1. Both orders end in the same row: scheduled at the new time, previous
//! start kept, N listed.
//!
//! M does not move when other invitees are still live on it (a group event:
//! the rescheduling invitee leaves E1's meeting and joins E2's), when E2
//! already has a meeting (N joins it), or when N belongs to another adviser
//! (round robin). In those cases O is marked `rescheduled` on M and M's
//! status is derived again, so a meeting left with nobody becomes canceled.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::payload::{Delivery, Invitee, Kind, ScheduledEvent};
use crate::model::{DeliveryOutcome, InviteeState, MeetingStatus};
use crate::store::calendly::{BookedMeeting, BookingStore, DeliveryRow, InviteeLink};
use crate::store::{Store, StoreError, StoreResult};

/// The result of applying a delivery, for the answer and the log line.
#[derive(Debug, Clone)]
pub struct Applied {
    /// Accepted, Duplicate, Unmatched or Ignored.
    pub outcome: DeliveryOutcome,
    pub user_id: Option<i64>,
    pub meeting_id: Option<i64>,
    /// What changed, e.g. `meeting 12 created, client 4 created`.
    pub summary: String,
}

/// Book a verified delivery (`payload` is its raw body, kept in the log):
/// [`apply`] as one writer request. Resolves after COMMIT; an `Err` kept
/// nothing of the delivery.
pub async fn book(store: &Store, d: Delivery, payload: String) -> StoreResult<Applied> {
    store.book_calendly_delivery(move |b| apply(b, &d, Some(payload))).await
}

/// Apply a verified delivery, inside its writer request; an `Err` rolls
/// back everything it wrote, including the log row.
pub fn apply(b: &mut dyn BookingStore, d: &Delivery, payload: Option<String>) -> StoreResult<Applied> {
    let row = |outcome| DeliveryRow {
        event: Some(d.event.clone()),
        invitee_uri: d.invitee.as_ref().map(|i| i.uri.clone()),
        payload,
        ..DeliveryRow::new(outcome)
    };

    let (Some(inv), Kind::Created | Kind::Canceled | Kind::Updated | Kind::NoShowCreated | Kind::NoShowDeleted) = (&d.invitee, d.kind)
    else {
        const IGNORED: &str = "not an event syncgate acts on";
        let ignored =
            DeliveryRow { dedupe_key: Some(d.dedupe_key.clone()), summary: Some(IGNORED.into()), ..row(DeliveryOutcome::Ignored) };
        return Ok(match b.record_delivery(ignored)? {
            Some(_) => Applied { outcome: DeliveryOutcome::Ignored, user_id: None, meeting_id: None, summary: IGNORED.into() },
            None => duplicate(None),
        });
    };

    let user = match find_adviser(&*b, d)? {
        Adviser::User(user) => user,
        Adviser::NoMatch { host } => {
            // No dedupe key: once the adviser is set up, a redelivery is applied.
            let summary = format!("no user matches host {host}");
            b.record_delivery(DeliveryRow { host: Some(host), summary: Some(summary.clone()), ..row(DeliveryOutcome::Unmatched) })?;
            return Ok(Applied { outcome: DeliveryOutcome::Unmatched, user_id: None, meeting_id: None, summary });
        }
    };
    let accepted = DeliveryRow { dedupe_key: Some(d.dedupe_key.clone()), user_id: Some(user), ..row(DeliveryOutcome::Accepted) };
    let Some(logged) = b.record_delivery(accepted)? else {
        return Ok(duplicate(Some(user)));
    };

    let se = d.scheduled_event.as_ref();
    let mut booking = Booking { book: b, user, notes: Vec::new() };
    let meeting = match d.kind {
        Kind::Created => booking.active(inv, se)?,
        Kind::Updated if inv.status.as_deref() == Some("canceled") => booking.canceled(inv, se)?,
        Kind::Updated => booking.active(inv, se)?,
        Kind::Canceled => booking.canceled(inv, se)?,
        Kind::NoShowCreated => booking.no_show(inv, se, true)?,
        Kind::NoShowDeleted | Kind::Other => booking.no_show(inv, se, false)?,
    };
    // The meeting first: `meeting 12 created, client 4 created`.
    booking.notes.sort_by_key(|n| !n.starts_with("meeting"));
    let summary = booking.notes.join(", ");
    booking.book.settle_delivery(logged, meeting, &summary)?;
    Ok(Applied { outcome: DeliveryOutcome::Accepted, user_id: Some(user), meeting_id: meeting, summary })
}

fn duplicate(user_id: Option<i64>) -> Applied {
    Applied { outcome: DeliveryOutcome::Duplicate, user_id, meeting_id: None, summary: "already applied, nothing changed".into() }
}

/// The adviser: a host's Calendly user URI matched to `users.calendly_user_uri`,
/// else a host's email to `users.email`. A delivery that names no host (a
/// no-show carries only the invitee) belongs to whoever the invitee does.
fn find_adviser(b: &dyn BookingStore, d: &Delivery) -> StoreResult<Adviser> {
    let hosts = d.scheduled_event.as_ref().map(|se| se.hosts.as_slice()).unwrap_or_default();
    for uri in hosts.iter().filter_map(|h| h.user_uri.as_deref()) {
        if let Some(id) = b.user_by_calendly_uri(uri)? {
            return Ok(Adviser::User(id));
        }
    }
    for email in hosts.iter().filter_map(|h| h.email.as_deref()) {
        if let Some(id) = b.user_by_email(email)? {
            return Ok(Adviser::User(id));
        }
    }
    if hosts.is_empty() {
        if let Some(link) = d.invitee.as_ref().map(|i| b.invitee(&i.uri)).transpose()?.flatten() {
            return Ok(Adviser::User(link.user_id));
        }
    }
    let host =
        hosts.iter().find_map(|h| h.user_uri.clone().or_else(|| h.email.clone())).unwrap_or_else(|| "(the payload names no host)".into());
    Ok(Adviser::NoMatch { host })
}

/// Whose delivery it is.
enum Adviser {
    User(i64),
    /// No user matches; `host` describes the host for admins.
    NoMatch {
        host: String,
    },
}

/// An invitee as listed in `meetings.invitees`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub uri: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    /// active | no_show | canceled | rescheduled
    #[serde(default = "active")]
    pub status: InviteeState,
    #[serde(default)]
    pub client_id: Option<i64>,
    #[serde(default)]
    pub cancel_reason: Option<String>,
    #[serde(default)]
    pub canceled_by: Option<String>,
}

fn active() -> InviteeState {
    InviteeState::Active
}

impl Entry {
    fn is_live(&self) -> bool {
        matches!(self.status, InviteeState::Active | InviteeState::NoShow)
    }
}

/// The meeting's status from its invitees (see the module doc).
fn derive(entries: &[Entry], expected: i64, event_canceled: bool) -> MeetingStatus {
    if event_canceled {
        return MeetingStatus::Canceled;
    }
    let live: Vec<&Entry> = entries.iter().filter(|e| e.is_live()).collect();
    if live.is_empty() && expected == 0 {
        return if entries.is_empty() { MeetingStatus::Scheduled } else { MeetingStatus::Canceled };
    }
    if expected == 0 && live.iter().all(|e| e.status == InviteeState::NoShow) {
        return MeetingStatus::NoShow;
    }
    MeetingStatus::Scheduled
}

/// The source-owned part of a Calendly meeting, loaded, changed, then saved
/// with one insert or one update (so one delivery is at most one change
/// event per meeting).
#[derive(Debug, Clone)]
struct Draft {
    id: Option<i64>,
    user_id: i64,
    before: Option<Value>,
    external_id: String,
    title: String,
    starts_at: String,
    ends_at: String,
    location: Option<String>,
    meeting_url: Option<String>,
    google_event_id: Option<String>,
    status: MeetingStatus,
    client_id: Option<i64>,
    entries: Vec<Entry>,
    cancel_url: Option<String>,
    reschedule_url: Option<String>,
    cancel_reason: Option<String>,
    canceled_by: Option<String>,
    previous_starts_at: Option<String>,
    /// A `google` row that is this booking's Google copy, being taken over.
    adopted: bool,
}

fn text_of(row: &Value, key: &str) -> Option<String> {
    row.get(key).and_then(Value::as_str).map(str::to_string)
}

impl Draft {
    fn new(user_id: i64, se: &ScheduledEvent) -> Draft {
        Draft {
            id: None,
            user_id,
            before: None,
            external_id: se.uri.clone(),
            title: se.name.clone(),
            starts_at: se.starts_at.clone(),
            ends_at: se.ends_at.clone(),
            location: se.location.clone(),
            meeting_url: se.join_url.clone(),
            google_event_id: se.google_event_id.clone(),
            status: MeetingStatus::Scheduled,
            client_id: None,
            entries: Vec::new(),
            cancel_url: None,
            reschedule_url: None,
            cancel_reason: None,
            canceled_by: None,
            previous_starts_at: None,
            adopted: false,
        }
    }

    /// A Calendly meeting by id (None when deleted meanwhile or not a Calendly row).
    fn load(b: &dyn BookingStore, id: i64) -> StoreResult<Option<Draft>> {
        let Some(row) = b.meeting(id)? else { return Ok(None) };
        if text_of(&row, "source").as_deref() != Some("calendly") {
            return Ok(None);
        }
        Ok(Some(Draft::from_row(id, row)))
    }

    /// The calendar copy of a booking (Google or Outlook), taken over by the
    /// Calendly meeting: same row (id, notes, client link kept), now source
    /// `calendly` at `se`.
    fn adopt(id: i64, row: Value, se: &ScheduledEvent) -> Draft {
        let from_google = text_of(&row, "source").as_deref() == Some("google");
        let mut d = Draft::from_row(id, row);
        // Its Google event id is what the Google sync will match later (an
        // Outlook copy keeps its own in microsoft_event_id, which the
        // Calendly fields never write).
        let google_id = d.google_event_id.clone().or_else(|| from_google.then(|| d.external_id.clone())).filter(|g| !g.is_empty());
        d.external_id = se.uri.clone();
        d.google_event_id = google_id;
        d.entries.clear();
        d.cancel_reason = None;
        d.canceled_by = None;
        d.adopted = true;
        d.take_event(se);
        d
    }

    fn from_row(id: i64, row: Value) -> Draft {
        let entries: Vec<Entry> = row
            .get("invitees")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|e| serde_json::from_value(e.clone()).ok()).collect())
            .unwrap_or_default();
        Draft {
            id: Some(id),
            user_id: row.get("user_id").and_then(Value::as_i64).unwrap_or_default(),
            external_id: text_of(&row, "external_id").unwrap_or_default(),
            title: text_of(&row, "title").unwrap_or_default(),
            starts_at: text_of(&row, "starts_at").unwrap_or_default(),
            ends_at: text_of(&row, "ends_at").unwrap_or_default(),
            location: text_of(&row, "location"),
            meeting_url: text_of(&row, "meeting_url"),
            google_event_id: text_of(&row, "google_event_id"),
            status: text_of(&row, "status").and_then(|s| MeetingStatus::parse(&s)).unwrap_or(MeetingStatus::Scheduled),
            client_id: row.get("client_id").and_then(Value::as_i64),
            entries,
            cancel_url: text_of(&row, "cancel_url"),
            reschedule_url: text_of(&row, "reschedule_url"),
            cancel_reason: text_of(&row, "cancel_reason"),
            canceled_by: text_of(&row, "canceled_by"),
            previous_starts_at: text_of(&row, "previous_starts_at"),
            adopted: false,
            before: Some(row),
        }
    }

    /// Take the scheduled event's details; a different event URI means the
    /// meeting moved there (its old start is kept as `previous_starts_at`).
    fn take_event(&mut self, se: &ScheduledEvent) {
        let moved = self.external_id != se.uri;
        if moved {
            if self.id.is_some() && self.starts_at != se.starts_at {
                self.previous_starts_at = Some(self.starts_at.clone());
            }
            self.external_id = se.uri.clone();
            self.google_event_id = se.google_event_id.clone();
        } else if se.google_event_id.is_some() {
            self.google_event_id = se.google_event_id.clone();
        }
        self.title = se.name.clone();
        self.starts_at = se.starts_at.clone();
        self.ends_at = se.ends_at.clone();
        self.location = se.location.clone();
        self.meeting_url = se.join_url.clone();
    }

    fn entry_mut(&mut self, uri: &str) -> Option<&mut Entry> {
        self.entries.iter_mut().find(|e| e.uri == uri)
    }

    /// Can this meeting move to the invitee's new event: nobody else is
    /// still live on it besides the invitee and the one it replaces.
    fn can_move_for(&self, inv: &Invitee) -> bool {
        self.entries.iter().all(|e| !e.is_live() || e.uri == inv.uri || inv.old_invitee.as_deref() == Some(e.uri.as_str()))
    }

    fn set_status(&mut self, status: MeetingStatus, cancellation: Option<(&Option<String>, &Option<String>)>) {
        if status == MeetingStatus::Canceled {
            if self.status != MeetingStatus::Canceled || self.id.is_none() {
                let (reason, by) = cancellation.unwrap_or((&None, &None));
                self.cancel_reason = reason.clone();
                self.canceled_by = by.clone();
            }
        } else {
            self.cancel_reason = None;
            self.canceled_by = None;
        }
        self.status = status;
    }

    /// The meeting's Calendly-owned columns, as saved.
    fn fields(&self) -> BookedMeeting {
        BookedMeeting {
            external_id: self.external_id.clone(),
            title: self.title.clone(),
            starts_at: self.starts_at.clone(),
            ends_at: self.ends_at.clone(),
            location: self.location.clone(),
            meeting_url: self.meeting_url.clone(),
            google_event_id: self.google_event_id.clone(),
            status: self.status,
            client_id: self.client_id,
            invitees: serde_json::to_value(&self.entries).unwrap_or_else(|_| Value::Array(Vec::new())),
            cancel_url: self.cancel_url.clone(),
            reschedule_url: self.reschedule_url.clone(),
            cancel_reason: self.cancel_reason.clone(),
            canceled_by: self.canceled_by.clone(),
            previous_starts_at: self.previous_starts_at.clone(),
        }
    }
}

/// One delivery's work for one adviser; `notes` become the log line.
struct Booking<'a> {
    book: &'a mut dyn BookingStore,
    user: i64,
    notes: Vec<String>,
}

impl Booking<'_> {
    /// This adviser's link for an invitee (another adviser's is not ours to follow).
    fn own_link(&self, uri: &str) -> StoreResult<Option<InviteeLink>> {
        Ok(self.book.invitee(uri)?.filter(|l| l.user_id == self.user))
    }

    fn load_own(&self, id: i64) -> StoreResult<Option<Draft>> {
        Ok(Draft::load(&*self.book, id)?.filter(|d| d.user_id == self.user))
    }

    /// The adviser's Calendly meeting standing for a scheduled event.
    fn meeting_for(&self, se: &ScheduledEvent) -> StoreResult<Option<i64>> {
        self.book.calendly_meeting(self.user, &se.uri)
    }

    /// Link an invitee to a meeting in a state.
    fn link(
        &mut self,
        uri: &str,
        user_id: i64,
        meeting_id: i64,
        state: InviteeState,
        old: Option<&str>,
        new: Option<&str>,
    ) -> StoreResult<()> {
        self.book.link_invitee(uri, &InviteeLink { user_id, meeting_id, state }, old, new)
    }

    /// Upsert the client by the invitee's email (per adviser); an existing
    /// client keeps its name.
    fn client(&mut self, inv: &Invitee) -> StoreResult<Option<i64>> {
        let Some(email) = inv.email.as_deref() else { return Ok(None) };
        if let Some(id) = self.book.client_by_email(self.user, email)? {
            return Ok(Some(id));
        }
        let id = self.book.add_client(self.user, inv.name.as_deref().unwrap_or(email), email)?;
        self.notes.push(format!("client {id} created"));
        Ok(Some(id))
    }

    /// A meeting for a booking we have no Calendly meeting for: its Google
    /// copy when the Google sync got there first (see `store::bookings`),
    /// else a new one.
    fn fresh(&mut self, se: &ScheduledEvent, inv: &Invitee) -> StoreResult<Draft> {
        let copy = self.book.calendar_copy(self.user, se.google_event_id.as_deref(), &se.starts_at, inv.email.as_deref())?;
        if let Some(id) = copy {
            if let Some(row) = self.book.meeting(id)? {
                return Ok(Draft::adopt(id, row, se));
            }
        }
        Ok(Draft::new(self.user, se))
    }

    /// Insert or update the meeting; one change event at most.
    fn save(&mut self, draft: Draft) -> StoreResult<i64> {
        let fields = draft.fields();
        match draft.id {
            None => {
                let id = self.book.add_meeting(draft.user_id, &fields)?;
                self.notes.push(if draft.status == MeetingStatus::Scheduled {
                    format!("meeting {id} created")
                } else {
                    format!("meeting {id} created ({})", draft.status)
                });
                Ok(id)
            }
            Some(id) => {
                let after = self.book.update_meeting(id, &fields)?.ok_or_else(|| StoreError::internal("meeting vanished"))?;
                let before = draft.before.unwrap_or(Value::Null);
                let changed: Vec<&str> = ["status", "starts_at", "ends_at", "external_id", "title", "location", "meeting_url", "invitees"]
                    .into_iter()
                    .filter(|k| before.get(*k) != after.get(*k))
                    .collect();
                let other = before != after && changed.is_empty();
                self.notes.push(match (changed.is_empty(), other) {
                    _ if draft.adopted => format!("meeting {id} taken over from its Google copy"),
                    (true, false) => format!("meeting {id} unchanged"),
                    (true, true) => format!("meeting {id} updated"),
                    (false, _) => format!("meeting {id} updated ({})", changed.join(", ")),
                });
                Ok(id)
            }
        }
    }

    /// `invitee.created` (and an active `invitee.updated`).
    fn active(&mut self, inv: &Invitee, se: Option<&ScheduledEvent>) -> StoreResult<Option<i64>> {
        let Some(se) = se else { return Err(StoreError::internal("a creation without its scheduled event got past parsing")) };
        let own = self.book.invitee(&inv.uri)?;
        let old = inv.old_invitee.as_deref().map(|o| self.book.invitee(o)).transpose()?.flatten();
        let client = self.client(inv)?;

        let mut draft = match self.meeting_for(se)? {
            Some(id) => self.load_own(id)?,
            None => None,
        };
        if draft.is_none() {
            // No meeting for this event yet: continue the meeting this invitee
            // was expected on, or the one its predecessor was on, if it can move.
            let candidates = [own.as_ref(), old.as_ref()].into_iter().flatten().filter(|l| l.user_id == self.user).map(|l| l.meeting_id);
            for id in candidates.collect::<Vec<_>>() {
                if let Some(m) = self.load_own(id)? {
                    if m.can_move_for(inv) {
                        draft = Some(m);
                        break;
                    }
                }
            }
        }
        let mut draft = match draft {
            Some(d) => d,
            None => self.fresh(se, inv)?,
        };
        draft.take_event(se);

        // Terminal invitee states stay; an expected invitee has now arrived.
        let state = match own.as_ref().filter(|l| l.user_id == self.user).map(|l| l.state) {
            Some(s @ (InviteeState::Canceled | InviteeState::Rescheduled | InviteeState::NoShow)) => s,
            _ => InviteeState::Active,
        };
        let fresh = Entry {
            uri: inv.uri.clone(),
            name: inv.name.clone(),
            email: inv.email.clone(),
            status: state,
            client_id: client,
            cancel_reason: None,
            canceled_by: None,
        };
        if let Some(e) = draft.entry_mut(&inv.uri) {
            e.name = fresh.name;
            e.email = fresh.email;
            e.client_id = fresh.client_id.or(e.client_id);
            e.status = state;
        } else if let Some(e) = inv.old_invitee.as_deref().and_then(|o| draft.entry_mut(o)) {
            *e = fresh;
        } else {
            draft.entries.push(fresh);
        }
        if let Some(e) = inv.old_invitee.as_deref().and_then(|o| draft.entry_mut(o)) {
            e.status = InviteeState::Rescheduled;
        }
        if state == InviteeState::Active {
            draft.cancel_url = inv.cancel_url.clone();
            draft.reschedule_url = inv.reschedule_url.clone();
        }
        if draft.client_id.is_none() {
            draft.client_id = client;
        }
        let expected = match draft.id {
            Some(id) => {
                let n = self.book.expected_invitees(id)?;
                n - i64::from(own.as_ref().is_some_and(|l| l.meeting_id == id && l.state == InviteeState::Expected))
            }
            None => 0,
        };
        let status = derive(&draft.entries, expected, se.is_canceled());
        draft.set_status(status, None);
        let id = self.save(draft)?;
        self.link(&inv.uri, self.user, id, state, inv.old_invitee.as_deref(), None)?;

        if let Some(o) = inv.old_invitee.as_deref() {
            match old {
                Some(ol) if ol.meeting_id != id => {
                    self.link(o, ol.user_id, ol.meeting_id, InviteeState::Rescheduled, None, Some(&inv.uri))?;
                    self.left_behind(ol.meeting_id, o)?;
                }
                // Unknown predecessor: remember it, so its late cancel finds this meeting.
                Some(ol) => self.link(o, ol.user_id, id, InviteeState::Rescheduled, None, Some(&inv.uri))?,
                None => self.link(o, self.user, id, InviteeState::Rescheduled, None, Some(&inv.uri))?,
            }
        }
        Ok(Some(id))
    }

    /// The meeting a rescheduled invitee left without moving it: mark the
    /// invitee and derive the status again (it may now be empty).
    fn left_behind(&mut self, meeting: i64, old_uri: &str) -> StoreResult<()> {
        let Some(mut m) = Draft::load(&*self.book, meeting)? else { return Ok(()) };
        if let Some(e) = m.entry_mut(old_uri) {
            e.status = InviteeState::Rescheduled;
        }
        let expected = self.book.expected_invitees(meeting)?;
        let status = derive(&m.entries, expected, false);
        let reason = Some("rescheduled".to_string());
        m.set_status(status, Some((&reason, &None)));
        self.save(m)?;
        Ok(())
    }

    /// `invitee.canceled` (and a canceled `invitee.updated`).
    fn canceled(&mut self, inv: &Invitee, se: Option<&ScheduledEvent>) -> StoreResult<Option<i64>> {
        let own = self.own_link(&inv.uri)?;
        let rescheduled = inv.rescheduled || inv.new_invitee.is_some();
        let client = self.client(inv)?;

        let mut draft = match &own {
            Some(l) => self.load_own(l.meeting_id)?,
            None => None,
        };
        if draft.is_none() {
            if let Some(id) = se.map(|se| self.meeting_for(se)).transpose()?.flatten() {
                draft = self.load_own(id)?;
            }
        }
        let is_new = draft.is_none();
        let mut draft = match (draft, se) {
            (Some(d), _) => d,
            (None, Some(se)) => {
                let mut d = self.fresh(se, inv)?;
                d.cancel_url = inv.cancel_url.clone();
                d.reschedule_url = inv.reschedule_url.clone();
                d.client_id = d.client_id.or(client);
                d
            }
            (None, None) => {
                self.notes.push("unknown invitee and no scheduled event in the payload: nothing to change".into());
                return Ok(None);
            }
        };
        // Is this delivery about the event the meeting stands for now? After
        // a move, the old event's cancellation is not the meeting's.
        let current = se.is_some_and(|se| se.uri == draft.external_id);
        if let (true, Some(se)) = (current && !is_new, se) {
            draft.take_event(se);
        }
        if draft.entry_mut(&inv.uri).is_none() && current {
            draft.entries.push(Entry {
                uri: inv.uri.clone(),
                name: inv.name.clone(),
                email: inv.email.clone(),
                status: InviteeState::Active,
                client_id: client,
                cancel_reason: None,
                canceled_by: None,
            });
        }
        let state = if rescheduled || own.as_ref().is_some_and(|l| l.state == InviteeState::Rescheduled) {
            InviteeState::Rescheduled
        } else {
            InviteeState::Canceled
        };
        let (reason, by) = match &inv.cancellation {
            Some(c) => (c.reason.clone(), c.canceled_by.clone()),
            None => (None, None),
        };
        if let Some(e) = draft.entry_mut(&inv.uri) {
            if e.status != InviteeState::Rescheduled {
                e.status = state;
                if state == InviteeState::Canceled {
                    e.cancel_reason = reason.clone();
                    e.canceled_by = by.clone();
                }
            }
        }
        let mut announce: Option<&str> = None;
        if rescheduled {
            if let Some(n) = inv.new_invitee.as_deref() {
                match self.book.invitee(n)? {
                    None => announce = Some(n),
                    Some(nl) => {
                        // The creation came first and moved the meeting: keep the old start.
                        if Some(nl.meeting_id) == draft.id && !current && draft.previous_starts_at.is_none() {
                            if let Some(se) = se.filter(|se| se.starts_at != draft.starts_at) {
                                draft.previous_starts_at = Some(se.starts_at.clone());
                            }
                        }
                    }
                }
            }
        }
        let expected = draft.id.map(|id| self.book.expected_invitees(id)).transpose()?.unwrap_or(0) + i64::from(announce.is_some());
        let event_canceled = current && !rescheduled && se.is_some_and(ScheduledEvent::is_canceled);
        let status = derive(&draft.entries, expected, event_canceled);
        draft.set_status(status, Some((&reason, &by)));
        let id = self.save(draft)?;
        self.link(&inv.uri, self.user, id, state, inv.old_invitee.as_deref(), inv.new_invitee.as_deref())?;
        if let Some(n) = announce {
            self.link(n, self.user, id, InviteeState::Expected, Some(&inv.uri), None)?;
        }
        Ok(Some(id))
    }

    /// `invitee_no_show.created` (`on`) and `.deleted`.
    fn no_show(&mut self, inv: &Invitee, se: Option<&ScheduledEvent>, on: bool) -> StoreResult<Option<i64>> {
        let own = self.own_link(&inv.uri)?;
        let mut draft = match &own {
            Some(l) => self.load_own(l.meeting_id)?,
            None => None,
        };
        if draft.is_none() {
            if let Some(id) = se.map(|se| self.meeting_for(se)).transpose()?.flatten() {
                draft = self.load_own(id)?;
            }
        }
        let is_new = draft.is_none();
        let mut draft = match (draft, se) {
            (Some(d), _) => d,
            (None, Some(se)) => {
                let client = self.client(inv)?;
                let mut d = self.fresh(se, inv)?;
                d.client_id = d.client_id.or(client);
                d.cancel_url = inv.cancel_url.clone();
                d.reschedule_url = inv.reschedule_url.clone();
                d
            }
            (None, None) => {
                self.notes.push("unknown invitee and no scheduled event in the payload: nothing to change".into());
                return Ok(None);
            }
        };
        if draft.entry_mut(&inv.uri).is_none() && (is_new || se.is_some_and(|se| se.uri == draft.external_id)) {
            draft.entries.push(Entry {
                uri: inv.uri.clone(),
                name: inv.name.clone(),
                email: inv.email.clone(),
                status: InviteeState::Active,
                client_id: draft.client_id,
                cancel_reason: None,
                canceled_by: None,
            });
        }
        let mut state = own.as_ref().map(|l| l.state).unwrap_or(InviteeState::Active);
        if let Some(e) = draft.entry_mut(&inv.uri) {
            match (on, e.status) {
                (true, InviteeState::Active) => e.status = InviteeState::NoShow,
                (false, InviteeState::NoShow) => e.status = InviteeState::Active,
                _ => {}
            }
            state = e.status;
        }
        // A canceled meeting stays canceled; otherwise its invitees decide.
        if draft.status != MeetingStatus::Canceled {
            let expected = draft.id.map(|id| self.book.expected_invitees(id)).transpose()?.unwrap_or(0);
            let status = derive(&draft.entries, expected, false);
            draft.set_status(status, None);
        }
        let id = self.save(draft)?;
        self.link(&inv.uri, self.user, id, state, None, None)?;
        Ok(Some(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use MeetingStatus::{Canceled, NoShow, Scheduled};

    fn e(uri: &str, status: &str) -> Entry {
        let status = InviteeState::parse(status).expect("a known invitee state");
        Entry { uri: uri.into(), name: None, email: None, status, client_id: None, cancel_reason: None, canceled_by: None }
    }

    #[test]
    fn status_follows_the_invitees() {
        assert_eq!(derive(&[e("a", "active"), e("b", "canceled")], 0, false), Scheduled);
        assert_eq!(derive(&[e("a", "canceled"), e("b", "canceled")], 0, false), Canceled);
        assert_eq!(derive(&[e("a", "rescheduled")], 1, false), Scheduled, "an expected invitee keeps it scheduled");
        assert_eq!(derive(&[e("a", "rescheduled")], 0, false), Canceled);
        assert_eq!(derive(&[e("a", "no_show"), e("b", "canceled")], 0, false), NoShow);
        assert_eq!(derive(&[e("a", "no_show"), e("b", "active")], 0, false), Scheduled);
        assert_eq!(derive(&[e("a", "active")], 0, true), Canceled);
    }
}
