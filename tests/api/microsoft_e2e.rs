//! What the Outlook end-to-end tests (`microsoft_throttling`,
//! `microsoft_recurring`, `microsoft_account_changes`) share: a server on
//! the fake Graph with Ann connected through the OAuth flow, events at
//! given times, and Ann's Outlook meetings as `/api/meetings` lists them.

use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::fake_graph::FakeGraph;
use crate::helpers::{within, TestApp};
use crate::microsoft_connect::{connect_as, ms_app, O1, T1};

pub(crate) const UPN: &str = "ann@contoso.example";

/// A fake Graph with Ann's account (`setup` may add to it), a server using
/// it (`tweak`ed), Ann signed in to syncgate and connected to Outlook, her
/// subscriptions made and her first sync done and settled:
/// (fake, app, user id, user token).
pub(crate) async fn connected_with(
    setup: impl FnOnce(&FakeGraph),
    tweak: impl FnOnce(&mut syncgate::config::Config),
) -> (FakeGraph, TestApp, i64, String) {
    let fake = FakeGraph::start().await;
    fake.add_account(T1, O1, UPN, "Ann Adviser");
    setup(&fake);
    let app = ms_app(&fake, tweak).await;
    let (user, token) = app.add_user(UPN, "user");
    let r = connect_as(&app, &fake, &token, UPN).await;
    assert_eq!(r.status().as_u16(), 303, "connected");
    within(15, "the subscription and the first sync", || async {
        (!fake.active_subscriptions(UPN).is_empty() && fake.delta_passes(UPN) >= 1).then_some(())
    })
    .await;
    settled(&app, user).await;
    (fake, app, user, token)
}

pub(crate) async fn connected(tweak: impl FnOnce(&mut syncgate::config::Config)) -> (FakeGraph, TestApp, i64, String) {
    connected_with(|_| {}, tweak).await
}

/// Wait until no Outlook pass runs or waits for the user on this server.
pub(crate) async fn settled(app: &TestApp, user: i64) {
    within(15, "the Outlook passes to settle", || async { (!app.app.microsoft.sync_pending(user)).then_some(()) }).await;
}

/// `2026-12-08T10:00:00`: a dateTimeTimeZone's dateTime in UTC.
pub(crate) fn naive(t: OffsetDateTime) -> String {
    format!("{:04}-{:02}-{:02}T{:02}:{:02}:00", t.year(), t.month() as u8, t.day(), t.hour(), t.minute())
}

/// Now, to the minute.
pub(crate) fn now_minute() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_second(0).unwrap().replace_nanosecond(0).unwrap()
}

/// A meeting with a client, `minutes` long from `start`.
pub(crate) fn event_at(subject: &str, start: OffsetDateTime, minutes: i64) -> Value {
    json!({
        "subject": subject,
        "start": {"dateTime": naive(start), "timeZone": "UTC"},
        "end": {"dateTime": naive(start + time::Duration::minutes(minutes)), "timeZone": "UTC"},
        "attendees": [{"emailAddress": {"name": "Client", "address": "client@example.com"}, "type": "required",
                       "status": {"response": "accepted", "time": "2026-12-01T00:00:00Z"}}],
    })
}

/// A meeting `hours` from now.
pub(crate) fn event_in(subject: &str, hours: i64) -> Value {
    event_at(subject, now_minute() + time::Duration::hours(hours), 60)
}

/// Ann's Outlook meetings as `/api/meetings` lists them.
pub(crate) async fn meetings(app: &TestApp, token: &str) -> Vec<Value> {
    let (status, body) = app.get("/api/meetings?limit=500&source=microsoft", token).await;
    assert_eq!(status, 200, "{body}");
    body["items"].as_array().cloned().unwrap_or_default()
}

pub(crate) async fn titled(app: &TestApp, token: &str, title: &str) -> Option<Value> {
    meetings(app, token).await.into_iter().find(|m| m["title"] == title)
}
