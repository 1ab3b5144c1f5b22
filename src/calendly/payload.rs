//! A Calendly delivery turned into domain types (parse, don't validate):
//! the event name, the invitee it is about, and the scheduled event with its
//! hosts. Unknown fields are ignored (Calendly adds fields freely); fields we
//! rely on are checked here, so the writer closure only sees sane values.

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::store::{timefmt, users};

/// Why a verified body is not a delivery syncgate understands: a sentence
/// for the sender (400) and the delivery log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidDelivery(pub String);

impl From<&str> for InvalidDelivery {
    fn from(why: &str) -> InvalidDelivery {
        InvalidDelivery(why.to_string())
    }
}

impl From<String> for InvalidDelivery {
    fn from(why: String) -> InvalidDelivery {
        InvalidDelivery(why)
    }
}

/// Longest URI we accept; Calendly's are well under 200 characters.
const MAX_URI: usize = 2000;
const MAX_TEXT: usize = 500;

/// The deliveries syncgate acts on; everything else is logged and ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Created,
    Canceled,
    /// Not sent by Calendly today; older integrations post it. An upsert.
    Updated,
    NoShowCreated,
    NoShowDeleted,
    Other,
}

impl Kind {
    pub fn parse(event: &str) -> Kind {
        match event {
            "invitee.created" => Kind::Created,
            "invitee.canceled" => Kind::Canceled,
            "invitee.updated" => Kind::Updated,
            "invitee_no_show.created" => Kind::NoShowCreated,
            "invitee_no_show.deleted" => Kind::NoShowDeleted,
            _ => Kind::Other,
        }
    }
}

/// A host of the scheduled event, as `event_memberships[]` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub user_uri: Option<String>,
    pub email: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cancellation {
    pub canceled_by: Option<String>,
    pub reason: Option<String>,
}

/// The person who booked: the adviser's client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invitee {
    pub uri: String,
    pub email: Option<String>,
    pub name: Option<String>,
    /// `active` or `canceled` as Calendly reports it.
    pub status: Option<String>,
    pub timezone: Option<String>,
    pub rescheduled: bool,
    pub old_invitee: Option<String>,
    pub new_invitee: Option<String>,
    pub cancel_url: Option<String>,
    pub reschedule_url: Option<String>,
    pub cancellation: Option<Cancellation>,
    /// For no-show deliveries: the no-show resource's URI.
    pub no_show_uri: Option<String>,
}

/// The booked slot: one syncgate meeting (source `calendly`, external_id = uri).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledEvent {
    pub uri: String,
    pub name: String,
    /// `active` or `canceled`.
    pub status: Option<String>,
    pub starts_at: String,
    pub ends_at: String,
    pub location: Option<String>,
    pub join_url: Option<String>,
    /// `calendar_event.external_id` when Calendly wrote the booking to Google.
    pub google_event_id: Option<String>,
    pub hosts: Vec<Host>,
}

impl ScheduledEvent {
    pub fn is_canceled(&self) -> bool {
        self.status.as_deref() == Some("canceled")
    }
}

/// A verified delivery, ready for the writer.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub event: String,
    pub kind: Kind,
    /// None only for ignored events.
    pub invitee: Option<Invitee>,
    pub scheduled_event: Option<ScheduledEvent>,
    pub dedupe_key: String,
}

fn s(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::trim).filter(|x| !x.is_empty()).map(str::to_string)
}

/// Text for display: trimmed and cut to `max` characters.
fn text(v: &Value, key: &str, max: usize) -> Option<String> {
    s(v, key).map(|t| if t.chars().count() > max { t.chars().take(max).collect() } else { t })
}

fn uri(v: &Value, key: &str) -> Result<Option<String>, InvalidDelivery> {
    match s(v, key) {
        None => Ok(None),
        Some(u) if u.len() > MAX_URI => Err(format!("{key} is longer than {MAX_URI} characters").into()),
        Some(u) if !(u.starts_with("https://") || u.starts_with("http://")) => Err(format!("{key} is not a URI").into()),
        Some(u) => Ok(Some(u)),
    }
}

/// A link we show to the adviser: kept only when it is an http(s) URL.
fn link(v: &Value, key: &str) -> Option<String> {
    uri(v, key).ok().flatten()
}

fn email(v: &Value, key: &str) -> Option<String> {
    s(v, key).filter(|e| e.len() <= 320 && users::valid_email(e))
}

fn timestamp(v: &Value, key: &str) -> Result<String, InvalidDelivery> {
    let raw = s(v, key).ok_or_else(|| InvalidDelivery(format!("scheduled_event.{key} is missing")))?;
    timefmt::normalize(&raw).ok_or_else(|| InvalidDelivery(format!("scheduled_event.{key} is not an RFC 3339 time")))
}

fn hex_sha256(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

impl ScheduledEvent {
    fn parse(v: &Value) -> Result<ScheduledEvent, InvalidDelivery> {
        if !v.is_object() {
            return Err("scheduled_event must be an object".into());
        }
        let uri = uri(v, "uri")?.ok_or("scheduled_event.uri is missing")?;
        let starts_at = timestamp(v, "start_time")?;
        let ends_at = timestamp(v, "end_time")?;
        if ends_at <= starts_at {
            return Err("scheduled_event.end_time must be after start_time".into());
        }
        let (location, join_url) = match v.get("location") {
            Some(loc) if loc.is_object() => (text(loc, "location", 1000), link(loc, "join_url")),
            Some(Value::String(l)) => (Some(l.chars().take(1000).collect()), None),
            _ => (None, None),
        };
        let calendar = v.get("calendar_event").filter(|c| c.is_object());
        let google_event_id = calendar.filter(|c| s(c, "kind").is_none_or(|k| k == "google")).and_then(|c| text(c, "external_id", 1024));
        let hosts = v
            .get("event_memberships")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(|m| Host { user_uri: link(m, "user"), email: email(m, "user_email") }).collect())
            .unwrap_or_default();
        Ok(ScheduledEvent {
            uri,
            name: text(v, "name", MAX_TEXT).unwrap_or_else(|| "Calendly meeting".into()),
            status: s(v, "status"),
            starts_at,
            ends_at,
            location,
            join_url,
            google_event_id,
            hosts,
        })
    }
}

impl Invitee {
    fn parse(p: &Value, kind: Kind) -> Result<Invitee, InvalidDelivery> {
        // A no-show delivery carries either the invitee (with `no_show`) or
        // the no-show resource itself (`uri` of the no-show, `invitee` uri).
        let (invitee_uri, no_show_uri) = match kind {
            Kind::NoShowCreated | Kind::NoShowDeleted => {
                let own = uri(p, "uri")?;
                let nested = p.get("no_show").filter(|n| n.is_object()).map(|n| uri(n, "uri")).transpose()?.flatten();
                match uri(p, "invitee")? {
                    Some(inv) => (Some(inv), own.or(nested)),
                    None => (own, nested),
                }
            }
            _ => (uri(p, "uri")?, None),
        };
        let invitee_uri = invitee_uri.ok_or("payload.uri (the invitee) is missing")?;
        let cancellation = p
            .get("cancellation")
            .filter(|c| c.is_object())
            .map(|c| Cancellation { canceled_by: text(c, "canceled_by", MAX_TEXT), reason: text(c, "reason", 2000) });
        Ok(Invitee {
            uri: invitee_uri,
            email: email(p, "email"),
            name: text(p, "name", MAX_TEXT),
            status: s(p, "status"),
            timezone: text(p, "timezone", 100),
            rescheduled: p.get("rescheduled").and_then(Value::as_bool).unwrap_or(false),
            old_invitee: uri(p, "old_invitee")?,
            new_invitee: uri(p, "new_invitee")?,
            cancel_url: link(p, "cancel_url"),
            reschedule_url: link(p, "reschedule_url"),
            cancellation,
            no_show_uri,
        })
    }
}

impl Delivery {
    /// Parse a verified body. An `Err` is a sentence saying what is wrong.
    pub fn parse(body: &[u8]) -> Result<Delivery, InvalidDelivery> {
        let v: Value = serde_json::from_slice(body).map_err(|e| InvalidDelivery(format!("the body is not valid JSON ({e})")))?;
        if !v.is_object() {
            return Err("the body must be a JSON object".into());
        }
        let event = s(&v, "event").ok_or("the event field is missing")?;
        if event.len() > 100 {
            return Err("the event name is too long".into());
        }
        let kind = Kind::parse(&event);
        let body_key = || format!("{event}|sha256:{}", hex_sha256(body));
        if kind == Kind::Other {
            return Ok(Delivery { dedupe_key: body_key(), event, kind, invitee: None, scheduled_event: None });
        }
        let p = v.get("payload").filter(|p| p.is_object()).ok_or("payload must be an object")?;
        let invitee = Invitee::parse(p, kind)?;
        let scheduled_event = match p.get("scheduled_event") {
            None | Some(Value::Null) => None,
            Some(se) => Some(ScheduledEvent::parse(se)?),
        };
        if matches!(kind, Kind::Created | Kind::Updated) && scheduled_event.is_none() {
            return Err("payload.scheduled_event is missing".into());
        }
        let dedupe_key = match kind {
            Kind::Created | Kind::Canceled => format!("{event}|{}", invitee.uri),
            Kind::NoShowCreated | Kind::NoShowDeleted => match &invitee.no_show_uri {
                Some(ns) => format!("{event}|{}|{ns}", invitee.uri),
                None => body_key(),
            },
            Kind::Updated | Kind::Other => body_key(),
        };
        Ok(Delivery { event, kind, invitee: Some(invitee), scheduled_event, dedupe_key })
    }
}

/// The event name of an unverified body, for the log of a rejected delivery
/// only (never acted on): a short plain string or nothing.
pub fn claimed_event(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    s(&v, "event").filter(|e| e.len() <= 64 && e.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn created() -> Value {
        json!({"event":"invitee.created","created_at":"2020-11-23T17:51:18.327602Z","created_by":"https://api.calendly.com/users/AAAA",
          "payload":{"uri":"https://api.calendly.com/scheduled_events/EV1/invitees/IN1","email":"Client@Example.com","name":"John Doe",
          "status":"active","timezone":"America/New_York","rescheduled":false,"old_invitee":null,"new_invitee":null,
          "event":"https://api.calendly.com/scheduled_events/EV1","cancel_url":"https://calendly.com/cancellations/IN1",
          "reschedule_url":"https://calendly.com/reschedulings/IN1","questions_and_answers":[],"tracking":{"utm_source":null},
          "scheduled_event":{"uri":"https://api.calendly.com/scheduled_events/EV1","name":"15 Minute Meeting","status":"active",
            "start_time":"2019-08-24T14:15:22.123456Z","end_time":"2019-08-24T14:30:22.123456Z",
            "location":{"type":"google_conference","join_url":"https://meet.google.com/abc"},
            "calendar_event":{"kind":"google","external_id":"gev123"},
            "event_memberships":[{"user":"https://api.calendly.com/users/AAAA","user_email":"adviser@example.com"}]}}})
    }

    #[test]
    fn a_created_delivery() {
        let d = Delivery::parse(created().to_string().as_bytes()).unwrap();
        assert_eq!(d.kind, Kind::Created);
        assert_eq!(d.dedupe_key, "invitee.created|https://api.calendly.com/scheduled_events/EV1/invitees/IN1");
        let se = d.scheduled_event.unwrap();
        assert_eq!(se.starts_at, "2019-08-24T14:15:22.123Z");
        assert_eq!(se.join_url.as_deref(), Some("https://meet.google.com/abc"));
        assert_eq!(se.google_event_id.as_deref(), Some("gev123"));
        assert_eq!(se.hosts[0].email.as_deref(), Some("adviser@example.com"));
        assert_eq!(d.invitee.unwrap().email.as_deref(), Some("Client@Example.com"));
    }

    #[test]
    fn refusals_are_sentences() {
        for (body, want) in [
            ("[]".to_string(), "object"),
            ("{".to_string(), "JSON"),
            (json!({"payload":{}}).to_string(), "event"),
            (json!({"event":"invitee.created"}).to_string(), "payload"),
            (json!({"event":"invitee.created","payload":{"uri":"x"}}).to_string(), "not a URI"),
        ] {
            let e = Delivery::parse(body.as_bytes()).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
        let mut v = created();
        v["payload"]["scheduled_event"]["end_time"] = json!("2019-08-24T14:00:00Z");
        assert!(Delivery::parse(v.to_string().as_bytes()).unwrap_err().to_string().contains("after"));
        v["payload"]["scheduled_event"]["start_time"] = json!(7);
        assert!(Delivery::parse(v.to_string().as_bytes()).unwrap_err().to_string().contains("start_time"));
    }

    #[test]
    fn dedupe_keys() {
        let other = Delivery::parse(br#"{"event":"routing_form_submission.created","payload":{}}"#).unwrap();
        assert_eq!(other.kind, Kind::Other);
        assert!(other.dedupe_key.starts_with("routing_form_submission.created|sha256:"));
        let ns = json!({"event":"invitee_no_show.created","payload":{"uri":"https://api.calendly.com/invitee_no_shows/NS1",
            "invitee":"https://api.calendly.com/scheduled_events/EV1/invitees/IN1"}});
        let d = Delivery::parse(ns.to_string().as_bytes()).unwrap();
        assert_eq!(d.invitee.unwrap().uri, "https://api.calendly.com/scheduled_events/EV1/invitees/IN1");
        assert_eq!(
            d.dedupe_key,
            "invitee_no_show.created|https://api.calendly.com/scheduled_events/EV1/invitees/IN1|https://api.calendly.com/invitee_no_shows/NS1"
        );
        let mut nested = created();
        nested["event"] = json!("invitee_no_show.created");
        nested["payload"]["no_show"] = json!({"uri":"https://api.calendly.com/invitee_no_shows/NS2","created_at":"2020-01-01T00:00:00Z"});
        let d = Delivery::parse(nested.to_string().as_bytes()).unwrap();
        assert!(d.dedupe_key.ends_with("|https://api.calendly.com/invitee_no_shows/NS2"));
    }
}
