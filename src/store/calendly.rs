//! Calendly's side of the store: the delivery log (`calendly_webhook_events`,
//! whose UNIQUE `dedupe_key` makes a replayed delivery a no-op), the invitee
//! links (`calendly_invitees`), the signing keys `syncgate calendly subscribe`
//! stores, and the admin reads over them. What a delivery *means* is decided
//! in `calendly::booking`; this module only runs the steps it asks for.
//!
//! A verified delivery is booked by [`Store::book_calendly_delivery`]: the
//! booking's steps ([`BookingStore`]) all run inside ONE writer request, so
//! the log row, the client, the meeting, the invitee links and their change
//! rows commit together (and the HTTP 2xx follows that commit), or nothing
//! of the delivery is kept.

// The neutral SQL layer's value type (see `sql`), as `WriteTx` takes it.
use rusqlite::types::Value as SqlValue;
use serde::Serialize;
use serde_json::Value;

use super::error::{StoreError, StoreResult};
use super::sql::{args, Conn};
use super::tables::Table;
use super::writer::WriteTx;
use super::{rejections, timefmt, users, Store};
use crate::model::{DeliveryOutcome, InviteeState, MeetingStatus};

/// One row of the delivery log.
#[derive(Debug, Clone)]
pub struct DeliveryRow {
    pub outcome: DeliveryOutcome,
    pub event: Option<String>,
    pub invitee_uri: Option<String>,
    /// Set for deliveries that must be applied once only; None lets a
    /// redelivery be applied later (e.g. once an unmatched adviser is set up).
    pub dedupe_key: Option<String>,
    pub error: Option<String>,
    /// The raw body, kept for `calendly.keep_payloads`.
    pub payload: Option<String>,
    pub user_id: Option<i64>,
    /// The host that matched no user (for admins).
    pub host: Option<String>,
    pub summary: Option<String>,
}

impl DeliveryRow {
    pub fn new(outcome: DeliveryOutcome) -> DeliveryRow {
        DeliveryRow {
            outcome,
            event: None,
            invitee_uri: None,
            dedupe_key: None,
            error: None,
            payload: None,
            user_id: None,
            host: None,
            summary: None,
        }
    }
}

/// Where an invitee URI we have heard of stands (`calendly_invitees`).
#[derive(Debug, Clone)]
pub struct InviteeLink {
    pub user_id: i64,
    pub meeting_id: i64,
    /// active | no_show | canceled | rescheduled | expected (announced by a
    /// reschedule, not delivered yet).
    pub state: InviteeState,
}

/// The columns of a meeting a Calendly booking owns (source `calendly`).
#[derive(Debug, Clone)]
pub struct BookedMeeting {
    pub external_id: String,
    pub title: String,
    pub starts_at: String,
    pub ends_at: String,
    pub location: Option<String>,
    pub meeting_url: Option<String>,
    pub google_event_id: Option<String>,
    pub status: MeetingStatus,
    pub client_id: Option<i64>,
    /// The invitee list, a JSON array.
    pub invitees: Value,
    pub cancel_url: Option<String>,
    pub reschedule_url: Option<String>,
    pub cancel_reason: Option<String>,
    pub canceled_by: Option<String>,
    pub previous_starts_at: Option<String>,
}

impl BookedMeeting {
    fn values(&self) -> Vec<(&'static str, SqlValue)> {
        let text = |v: &Option<String>| v.clone().map(SqlValue::Text).unwrap_or(SqlValue::Null);
        vec![
            ("source", SqlValue::Text("calendly".into())),
            ("external_id", SqlValue::Text(self.external_id.clone())),
            ("title", SqlValue::Text(self.title.clone())),
            ("starts_at", SqlValue::Text(self.starts_at.clone())),
            ("ends_at", SqlValue::Text(self.ends_at.clone())),
            ("location", text(&self.location)),
            ("meeting_url", text(&self.meeting_url)),
            ("google_event_id", text(&self.google_event_id)),
            ("status", SqlValue::Text(self.status.as_str().into())),
            ("client_id", self.client_id.map(SqlValue::Integer).unwrap_or(SqlValue::Null)),
            ("invitees", SqlValue::Text(self.invitees.to_string())),
            ("cancel_url", text(&self.cancel_url)),
            ("reschedule_url", text(&self.reschedule_url)),
            ("cancel_reason", text(&self.cancel_reason)),
            ("canceled_by", text(&self.canceled_by)),
            ("previous_starts_at", text(&self.previous_starts_at)),
        ]
    }
}

/// The steps a delivery's booking is made of, each one read or write, all
/// inside the one writer request [`Store::book_calendly_delivery`] opens.
/// Synced rows (clients, meetings) are written with their change rows.
pub trait BookingStore {
    /// Log the delivery. None when a row with its dedupe key exists: a
    /// duplicate, and nothing was written.
    fn record_delivery(&mut self, row: DeliveryRow) -> StoreResult<Option<i64>>;
    /// Note on a logged delivery the meeting it touched and what changed.
    fn settle_delivery(&mut self, delivery: i64, meeting: Option<i64>, summary: &str) -> StoreResult<()>;
    /// The user whose `calendly_user_uri` this is.
    fn user_by_calendly_uri(&self, uri: &str) -> StoreResult<Option<i64>>;
    fn user_by_email(&self, email: &str) -> StoreResult<Option<i64>>;
    fn invitee(&self, uri: &str) -> StoreResult<Option<InviteeLink>>;
    /// Link an invitee to a meeting in a state; `old` / `new` (the invitee it
    /// replaced / was replaced by) are kept when not given again.
    fn link_invitee(&mut self, uri: &str, link: &InviteeLink, old: Option<&str>, new: Option<&str>) -> StoreResult<()>;
    /// Invitees announced by a reschedule into `meeting`, not delivered yet.
    fn expected_invitees(&self, meeting: i64) -> StoreResult<i64>;
    /// The user's Calendly meeting standing for a scheduled event.
    fn calendly_meeting(&self, user: i64, event_uri: &str) -> StoreResult<Option<i64>>;
    /// A meeting row as JSON.
    fn meeting(&self, id: i64) -> StoreResult<Option<Value>>;
    /// The user's `google` meeting that is this booking's Google copy (see
    /// `google::bookings`): by the Google event id Calendly reports; without
    /// one, a meeting not canceled, at `starts_at`, with the invitee among
    /// its attendees.
    fn calendar_copy(&self, user: i64, google_event_id: Option<&str>, starts_at: &str, email: Option<&str>) -> StoreResult<Option<i64>>;
    fn client_by_email(&self, user: i64, email: &str) -> StoreResult<Option<i64>>;
    fn add_client(&mut self, user: i64, name: &str, email: &str) -> StoreResult<i64>;
    fn add_meeting(&mut self, user: i64, meeting: &BookedMeeting) -> StoreResult<i64>;
    /// The row after, or None when the meeting does not exist. Writes (and
    /// logs) nothing when nothing changes.
    fn update_meeting(&mut self, id: i64, meeting: &BookedMeeting) -> StoreResult<Option<Value>>;
}

/// [`BookingStore`] over the writer's transaction (either engine).
struct TxBooking<'a, 'b, 'c> {
    tx: &'a mut WriteTx<'b, 'c>,
}

fn id_of(row: &Value, what: &str) -> StoreResult<i64> {
    row.get("id").and_then(Value::as_i64).ok_or_else(|| StoreError::internal(format!("{what} row without id")))
}

impl BookingStore for TxBooking<'_, '_, '_> {
    fn record_delivery(&mut self, row: DeliveryRow) -> StoreResult<Option<i64>> {
        insert_delivery(self.tx.conn(), self.tx.now(), &row)
    }

    fn settle_delivery(&mut self, delivery: i64, meeting: Option<i64>, summary: &str) -> StoreResult<()> {
        self.tx
            .conn()
            .execute("UPDATE calendly_webhook_events SET meeting_id = ?1, summary = ?2 WHERE id = ?3", args![meeting, summary, delivery])?;
        Ok(())
    }

    fn user_by_calendly_uri(&self, uri: &str) -> StoreResult<Option<i64>> {
        self.tx.conn().value_opt("SELECT id FROM users WHERE calendly_user_uri = ?1", args![uri])
    }

    fn user_by_email(&self, email: &str) -> StoreResult<Option<i64>> {
        Ok(users::by_email(self.tx.conn(), email)?.map(|u| u.id))
    }

    fn invitee(&self, uri: &str) -> StoreResult<Option<InviteeLink>> {
        let row =
            self.tx.conn().query_opt("SELECT user_id, meeting_id, state FROM calendly_invitees WHERE invitee_uri = ?1", args![uri])?;
        let Some(row) = row else { return Ok(None) };
        let state: String = row.get(2)?;
        let state =
            InviteeState::parse(&state).ok_or_else(|| StoreError::internal(format!("invitee {uri} has an unknown state {state}")))?;
        Ok(Some(InviteeLink { user_id: row.get(0)?, meeting_id: row.get(1)?, state }))
    }

    fn link_invitee(&mut self, uri: &str, link: &InviteeLink, old: Option<&str>, new: Option<&str>) -> StoreResult<()> {
        // The kept values are named by table: PostgreSQL finds a bare
        // column ambiguous next to `excluded`'s.
        self.tx.conn().execute(
            "INSERT INTO calendly_invitees (invitee_uri, user_id, meeting_id, state, old_invitee, new_invitee, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (invitee_uri) DO UPDATE SET user_id = excluded.user_id, meeting_id = excluded.meeting_id,
                state = excluded.state, old_invitee = COALESCE(excluded.old_invitee, calendly_invitees.old_invitee),
                new_invitee = COALESCE(excluded.new_invitee, calendly_invitees.new_invitee), updated_at = excluded.updated_at",
            args![uri, link.user_id, link.meeting_id, link.state.as_str(), old, new, self.tx.now()],
        )?;
        Ok(())
    }

    fn expected_invitees(&self, meeting: i64) -> StoreResult<i64> {
        self.tx.conn().value("SELECT COUNT(*) FROM calendly_invitees WHERE meeting_id = ?1 AND state = 'expected'", args![meeting])
    }

    fn calendly_meeting(&self, user: i64, event_uri: &str) -> StoreResult<Option<i64>> {
        self.tx
            .conn()
            .value_opt("SELECT id FROM meetings WHERE user_id = ?1 AND source = 'calendly' AND external_id = ?2", args![user, event_uri])
    }

    fn meeting(&self, id: i64) -> StoreResult<Option<Value>> {
        self.tx.get(Table::Meetings, id)
    }

    fn calendar_copy(&self, user: i64, google_event_id: Option<&str>, starts_at: &str, email: Option<&str>) -> StoreResult<Option<i64>> {
        super::bookings::calendar_copy(self.tx.conn(), user, google_event_id, starts_at, email)
    }

    fn client_by_email(&self, user: i64, email: &str) -> StoreResult<Option<i64>> {
        // Emails compare without regard to case: SQLite's column is COLLATE
        // NOCASE, PostgreSQL's unique index is on lower(email).
        self.tx.conn().value_opt("SELECT id FROM clients WHERE user_id = ?1 AND lower(email) = lower(?2)", args![user, email])
    }

    fn add_client(&mut self, user: i64, name: &str, email: &str) -> StoreResult<i64> {
        let row = self.tx.insert(
            Table::Clients,
            &[("user_id", SqlValue::Integer(user)), ("name", SqlValue::Text(name.into())), ("email", SqlValue::Text(email.into()))],
        )?;
        id_of(&row, "client")
    }

    fn add_meeting(&mut self, user: i64, meeting: &BookedMeeting) -> StoreResult<i64> {
        let mut values = vec![("user_id", SqlValue::Integer(user))];
        values.extend(meeting.values());
        let row = self.tx.insert(Table::Meetings, &values)?;
        id_of(&row, "meeting")
    }

    fn update_meeting(&mut self, id: i64, meeting: &BookedMeeting) -> StoreResult<Option<Value>> {
        self.tx.update(Table::Meetings, id, &meeting.values())
    }
}

/// Insert a delivery-log row: its id, or None when its dedupe key is taken
/// (no row comes back from a conflict that did nothing; a NULL key never
/// conflicts).
fn insert_delivery(conn: &Conn<'_>, now: &str, row: &DeliveryRow) -> StoreResult<Option<i64>> {
    conn.value_opt(
        "INSERT INTO calendly_webhook_events
            (event, invitee_uri, dedupe_key, received_at, outcome, error, payload, user_id, host, summary)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT (dedupe_key) DO NOTHING
         RETURNING id",
        args![
            row.event,
            row.invitee_uri,
            row.dedupe_key,
            now,
            row.outcome.as_str(),
            row.error,
            row.payload,
            row.user_id,
            row.host,
            row.summary
        ],
    )
}

/// What the public `GET /api/calendly/webhook/test` may tell.
#[derive(Debug, Clone)]
pub struct WebhookStatus {
    pub stored_signing_keys: i64,
    pub last_accepted_at: Option<String>,
}

/// Hosts that matched no user, for admins.
#[derive(Debug, Clone, Serialize)]
pub struct UnmatchedHost {
    pub host: Option<String>,
    pub deliveries: i64,
    pub last_at: String,
}

/// The newest delivery-log row, without its payload.
#[derive(Debug, Clone, Serialize)]
pub struct LastDelivery {
    pub received_at: String,
    pub event: Option<String>,
    pub outcome: String,
    pub error: Option<String>,
    pub summary: Option<String>,
}

/// Counts by name, serialized as a JSON object in this order.
#[derive(Debug, Clone, Default)]
pub struct Counts(pub Vec<(String, i64)>);

impl Counts {
    fn set(&mut self, name: &str, n: i64) {
        match self.0.iter_mut().find(|(k, _)| k == name) {
            Some(slot) => slot.1 = n,
            None => self.0.push((name.to_string(), n)),
        }
    }

    pub fn get(&self, name: &str) -> Option<i64> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, n)| *n)
    }
}

impl Serialize for Counts {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, n)| (k, n)))
    }
}

/// Admin details of the Calendly webhook: deliveries by outcome over the
/// last 24 h (refusals also by reason), hosts that matched no user over 7
/// days, the last delivery and the last accepted one, how many keys are
/// stored. Never a key or a payload. Duplicates are not counted: they write
/// nothing.
#[derive(Debug, Clone, Serialize)]
pub struct CalendlyHealth {
    pub outcomes_24h: Counts,
    pub rejected_by_reason_24h: Counts,
    pub unmatched_hosts_7d: Vec<UnmatchedHost>,
    pub last_delivery: Option<LastDelivery>,
    pub last_accepted_at: Option<String>,
    pub stored_signing_keys: i64,
}

/// The outcomes the health shows, each at 0 when none (refusals have no
/// rows: their count comes from the per-minute counts).
const LOGGED_OUTCOMES: [DeliveryOutcome; 6] = [
    DeliveryOutcome::Accepted,
    DeliveryOutcome::Unmatched,
    DeliveryOutcome::Ignored,
    DeliveryOutcome::Rejected,
    DeliveryOutcome::Invalid,
    DeliveryOutcome::Failed,
];

/// [`CalendlyHealth`] on a read connection (also part of the admin health page).
pub(super) fn health(conn: &Conn<'_>) -> StoreResult<CalendlyHealth> {
    let now = timefmt::now();
    let day = timefmt::format(now - time::Duration::hours(24));
    let week = timefmt::format(now - time::Duration::days(7));
    let mut outcomes = Counts::default();
    for o in LOGGED_OUTCOMES {
        outcomes.set(o.as_str(), 0);
    }
    for row in conn.query("SELECT outcome, COUNT(*) FROM calendly_webhook_events WHERE received_at >= ?1 GROUP BY outcome", args![day])? {
        outcomes.set(&row.get::<String>(0)?, row.get(1)?);
    }
    // Refusals are counted per minute, not stored as rows.
    let reasons = Counts(rejections::by_reason_since(conn, &day)?);
    outcomes.set(DeliveryOutcome::Rejected.as_str(), reasons.0.iter().map(|(_, n)| n).sum());
    let unmatched_hosts_7d = conn.query_map(
        "SELECT host, COUNT(*), MAX(received_at) FROM calendly_webhook_events
         WHERE outcome = 'unmatched' AND received_at >= ?1 GROUP BY host ORDER BY 3 DESC LIMIT 50",
        args![week],
        |r| Ok(UnmatchedHost { host: r.get(0)?, deliveries: r.get(1)?, last_at: r.get(2)? }),
    )?;
    let last_delivery = conn
        .query_opt("SELECT received_at, event, outcome, error, summary FROM calendly_webhook_events ORDER BY id DESC LIMIT 1", args![])?
        .map(|r| {
            Ok::<_, StoreError>(LastDelivery {
                received_at: r.get(0)?,
                event: r.get(1)?,
                outcome: r.get(2)?,
                error: r.get(3)?,
                summary: r.get(4)?,
            })
        })
        .transpose()?;
    Ok(CalendlyHealth {
        outcomes_24h: outcomes,
        rejected_by_reason_24h: reasons,
        unmatched_hosts_7d,
        last_delivery,
        last_accepted_at: last_accepted(conn)?,
        stored_signing_keys: stored_key_count(conn)?,
    })
}

fn last_accepted(conn: &Conn<'_>) -> StoreResult<Option<String>> {
    conn.value_opt(
        "SELECT received_at FROM calendly_webhook_events WHERE outcome = 'accepted' ORDER BY received_at DESC, id DESC LIMIT 1",
        args![],
    )
}

fn stored_key_count(conn: &Conn<'_>) -> StoreResult<i64> {
    conn.value("SELECT COUNT(*) FROM calendly_signing_keys", args![])
}

/// Not a logged change: the column only steers matching. Returns the rows changed.
fn set_calendly_user_uri(conn: &Conn<'_>, now: &str, user_id: i64, uri: &str) -> StoreResult<usize> {
    conn.execute("UPDATE users SET calendly_user_uri = ?1, updated_at = ?2 WHERE id = ?3", args![uri, now, user_id])
}

/// A signing key `syncgate calendly subscribe` generated, to be stored
/// before Calendly can use it (so the first delivery verifies).
#[derive(Debug, Clone)]
pub struct NewSigningKey {
    pub signing_key: String,
    pub callback_url: String,
    pub scope: String,
    /// The Calendly user the subscription is for.
    pub calendly_user_uri: String,
    /// The syncgate user it belongs to, if given (it must exist) ...
    pub user_id: Option<i64>,
    /// ... else the user with the token owner's email, if any.
    pub owner_email: Option<String>,
}

/// A stored signing key and the syncgate user it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredSigningKey {
    pub id: i64,
    pub user_id: Option<i64>,
}

impl Store {
    /// Book a verified delivery: `book` runs as ONE writer request over the
    /// [`BookingStore`] steps; an `Err` from it rolls back everything it
    /// wrote, the delivery's log row included. Resolves after COMMIT.
    pub async fn book_calendly_delivery<T, F>(&self, book: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut dyn BookingStore) -> StoreResult<T> + Send + 'static,
    {
        self.writer.write(move |tx| book(&mut TxBooking { tx })).await
    }

    /// Log a delivery that was not booked (invalid, or booking it failed).
    pub async fn record_calendly_delivery(&self, row: DeliveryRow) -> StoreResult<()> {
        self.writer.write(move |tx| insert_delivery(tx.conn(), tx.now(), &row).map(|_| ())).await
    }

    /// The signing keys `syncgate calendly subscribe` stored, newest first.
    pub async fn calendly_signing_keys(&self) -> StoreResult<Vec<String>> {
        self.read(|conn| conn.query_map("SELECT signing_key FROM calendly_signing_keys ORDER BY id DESC", args![], |r| r.get(0))).await
    }

    pub async fn calendly_webhook_status(&self) -> StoreResult<WebhookStatus> {
        self.read(|conn| Ok(WebhookStatus { stored_signing_keys: stored_key_count(conn)?, last_accepted_at: last_accepted(conn)? })).await
    }

    pub async fn calendly_health(&self) -> StoreResult<CalendlyHealth> {
        self.read(health).await
    }

    /// Store a new signing key, with the syncgate user it belongs to. Refused
    /// when the given user does not exist, or when another user is already
    /// linked to the same Calendly user.
    pub async fn add_calendly_signing_key(&self, key: NewSigningKey) -> StoreResult<StoredSigningKey> {
        self.writer
            .write(move |tx| {
                let conn = tx.conn();
                let user_id = match key.user_id {
                    Some(id) => Some(users::get(conn, id)?.ok_or_else(|| StoreError::NotFound(format!("there is no user {id}")))?.id),
                    None => match &key.owner_email {
                        Some(e) => users::by_email(conn, e)?.map(|u| u.id),
                        None => None,
                    },
                };
                if let Some(id) = user_id {
                    let holder: Option<i64> =
                        conn.value_opt("SELECT id FROM users WHERE calendly_user_uri = ?1 AND id <> ?2", args![key.calendly_user_uri, id])?;
                    if let Some(other) = holder {
                        return Err(StoreError::Conflict(format!(
                            "the Calendly user {} is already linked to syncgate user {other}",
                            key.calendly_user_uri
                        )));
                    }
                }
                let id = conn.value(
                    "INSERT INTO calendly_signing_keys (signing_key, user_id, callback_url, scope, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5) RETURNING id",
                    args![key.signing_key, user_id, key.callback_url, key.scope, tx.now()],
                )?;
                Ok(StoredSigningKey { id, user_id })
            })
            .await
    }

    /// Calendly created the subscription for a stored key: note its URI, and
    /// link the key's syncgate user to the Calendly user.
    pub async fn confirm_calendly_subscription(
        &self,
        key: StoredSigningKey,
        subscription_uri: String,
        calendly_user_uri: String,
    ) -> StoreResult<()> {
        self.writer
            .write(move |tx| {
                let conn = tx.conn();
                conn.execute("UPDATE calendly_signing_keys SET subscription_uri = ?1 WHERE id = ?2", args![subscription_uri, key.id])?;
                if let Some(id) = key.user_id {
                    set_calendly_user_uri(conn, tx.now(), id, &calendly_user_uri)?;
                }
                Ok(())
            })
            .await
    }

    /// Match bookings hosted by this Calendly user to this syncgate user.
    pub async fn link_calendly_user(&self, user_id: i64, calendly_user_uri: String) -> StoreResult<()> {
        self.writer
            .write(move |tx| match set_calendly_user_uri(tx.conn(), tx.now(), user_id, &calendly_user_uri)? {
                0 => Err(StoreError::NotFound(format!("there is no user {user_id}"))),
                _ => Ok(()),
            })
            .await
    }

    /// Calendly never got the key: an unused key must not linger as accepted.
    pub async fn drop_calendly_signing_key(&self, key: StoredSigningKey) -> StoreResult<()> {
        self.writer.write(move |tx| tx.conn().execute("DELETE FROM calendly_signing_keys WHERE id = ?1", args![key.id]).map(|_| ())).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> rusqlite::Connection {
        let mut c = rusqlite::Connection::open_in_memory().unwrap();
        crate::store::migrations::migrate(&mut c).unwrap();
        c.execute_batch(
            "INSERT INTO users (id, email, role, created_at, updated_at) VALUES (1, 'a@x.com', 'user', 't', 't'), (2, 'b@x.com', 'user', 't', 't');",
        )
        .unwrap();
        c
    }

    #[test]
    fn a_delivery_is_logged_once_per_dedupe_key() {
        let db = db();
        let c = Conn::Sqlite(&db);
        const OLD: &str = "2020-01-01T00:00:00.000Z";
        let row = DeliveryRow { dedupe_key: Some("invitee.created|u".into()), ..DeliveryRow::new(DeliveryOutcome::Accepted) };
        assert!(insert_delivery(&c, OLD, &row).unwrap().is_some());
        assert_eq!(insert_delivery(&c, OLD, &row).unwrap(), None, "a duplicate writes nothing");
        let unkeyed = DeliveryRow::new(DeliveryOutcome::Unmatched);
        assert!(insert_delivery(&c, OLD, &unkeyed).unwrap().is_some());
        assert!(insert_delivery(&c, OLD, &unkeyed).unwrap().is_some(), "no key, no dedupe");
        let h = health(&c).unwrap();
        assert_eq!((h.outcomes_24h.get("accepted"), h.outcomes_24h.get("failed")), (Some(0), Some(0)), "older than a day");
        assert_eq!(h.last_delivery.map(|d| d.outcome).as_deref(), Some("unmatched"));
    }
}
