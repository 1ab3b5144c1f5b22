//! Google Calendar as advisers use it, against the fake Google and through
//! notifications: only real meetings become meetings (and an upgrade removes
//! the others imported before), declined invitations, several calendars
//! (tick, untick, the same event in two of them), events moved between
//! calendars, recurring series, and time zones.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use syncgate::config::Config;
use syncgate::duration::Dur;

use crate::fake_google::{location, FakeGoogle};
use crate::helpers::{spawn_app_with, start, test_config, TestApp};

const ADA: &str = "ada@example.com";
const CLIENTS: &str = "clients-abc@group.calendar.google.com";
const SHARED: &str = "team-xyz@group.calendar.google.com";

// ---- helpers ---------------------------------------------------------------

async fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn google_config(fake: &FakeGoogle, c: &mut Config) {
    fake.configure(c);
    c.google.safety_net_interval = Dur::secs(0);
}

fn day(days: i64) -> time::Date {
    (time::OffsetDateTime::now_utc() + time::Duration::days(days)).date()
}

/// `days` from now at `hour`:00 Berlin time in winter (+01:00).
fn at(days: i64, hour: u8) -> String {
    format!("{}T{:02}:00:00+01:00", day(days), hour)
}

fn timed(summary: &str, days: i64, hour: u8) -> Value {
    json!({
        "summary": summary,
        "start": {"dateTime": at(days, hour), "timeZone": "Europe/Berlin"},
        "end": {"dateTime": at(days, hour + 1), "timeZone": "Europe/Berlin"},
    })
}

fn syncs(app: &TestApp, user: i64) -> i64 {
    app.db().value_opt("SELECT syncs FROM google_sync_status WHERE user_id = ?1", &[json!(user)]).unwrap_or(0)
}

async fn wait_synced(app: &TestApp, user: i64, before: i64) {
    eventually("a finished sync pass", || (syncs(app, user) > before && !app.app.google.sync_pending(user)).then_some(())).await;
}

/// Every ticked calendar of the user has a sync token and a registered channel, and no pass runs.
fn settled(app: &TestApp, user: i64) -> bool {
    // One read: counted apart, the ticked calendars could appear between the
    // two counts and an unsynced one pass for synced.
    let (ticked, unready): (i64, i64) = app.db().row_as(
        "SELECT COUNT(*), COALESCE(SUM(CASE WHEN g.sync_token IS NULL OR NOT EXISTS
               (SELECT 1 FROM calendar_watch_channels c WHERE c.user_id = g.user_id AND c.calendar_id = g.calendar_id
                  AND c.state = 'active' AND c.resource_id IS NOT NULL) THEN 1 ELSE 0 END), 0)
         FROM google_calendars g WHERE g.user_id = ?1 AND g.selected",
        &[json!(user)],
    );
    ticked > 0 && unready == 0 && !app.app.google.sync_pending(user)
}

/// Sign `email` in with Google as an existing user (its account made by the
/// caller); waits for every ticked calendar's first sync and channel.
async fn connect(app: &TestApp, fake: &FakeGoogle, email: &str) -> (i64, String) {
    let (id, _) = app.add_user(email, "user");
    fake.consent_as(email);
    let r = crate::fake_google::sign_in(&app.http, &app.base).await;
    assert_eq!(r.status().as_u16(), 303);
    let jwt = location(&r).strip_prefix("/#access_token=").expect("signed in").to_string();
    eventually("the first sync of every ticked calendar and their channels", || settled(app, id).then_some(())).await;
    (id, jwt)
}

/// Push on one calendar's channel and wait for the pass it causes.
async fn push(app: &TestApp, fake: &FakeGoogle, calendar: &str, user: i64) {
    let before = syncs(app, user);
    assert_eq!(fake.notify_calendar(ADA, calendar, "exists").await, vec![200], "one live channel on {calendar}");
    wait_synced(app, user, before).await;
}

/// (id, title, status, calendar_id) of the user's google meetings, by start.
fn meetings(app: &TestApp, user: i64) -> Vec<(i64, String, String, Option<String>)> {
    app.db().rows_as(
        "SELECT id, title, status, calendar_id FROM meetings WHERE user_id = ?1 AND source = 'google' ORDER BY starts_at, id",
        &[json!(user)],
    )
}

fn titles(app: &TestApp, user: i64) -> Vec<String> {
    let mut t: Vec<String> = meetings(app, user).into_iter().map(|m| m.1).collect();
    t.sort();
    t
}

/// The meeting a calendar's event is, as REST returns it.
async fn meeting_of(app: &TestApp, jwt: &str, event_id: &str) -> Option<Value> {
    let id: Option<i64> = app.db().value_opt("SELECT meeting_id FROM google_event_links WHERE event_id = ?1", &[json!(event_id)]);
    let id = match id {
        Some(id) => id,
        None => app.db().value_opt("SELECT id FROM meetings WHERE source = 'google' AND external_id = ?1", &[json!(event_id)])?,
    };
    let (s, m) = app.get(&format!("/api/meetings/{id}"), jwt).await;
    (s == 200).then_some(m)
}

/// Meeting changes after `seq`: (op, row id).
fn meeting_changes_after(app: &TestApp, seq: i64) -> Vec<(String, i64)> {
    app.changes().into_iter().filter(|c| c.0 > seq && c.1 == "meetings").map(|c| (c.2, c.3)).collect()
}

fn last_seq(app: &TestApp) -> i64 {
    app.changes().last().map_or(0, |c| c.0)
}

fn of_type(summary: &str, days: i64, event_type: &str) -> Value {
    let mut e = timed(summary, days, 9);
    e["eventType"] = json!(event_type);
    e
}

/// One event of each type Google has (and one it may add later).
fn one_of_each_type(fake: &FakeGoogle, days: i64, tag: &str) {
    fake.create_event(ADA, timed(&format!("Client review {tag}"), days, 9));
    for t in ["fromGmail", "outOfOffice", "focusTime", "workingLocation", "someFutureType"] {
        fake.create_event(ADA, of_type(&format!("{t} {tag}"), days, t));
    }
    let d = day(days + 1);
    fake.create_event(
        ADA,
        json!({"summary": format!("Birthday {tag}"), "eventType": "birthday",
               "start": {"date": d.to_string()}, "end": {"date": d.next_day().unwrap().to_string()}}),
    );
}

// ---- 1. only meetings become meetings ----------------------------------------

#[tokio::test]
async fn only_default_events_become_meetings_in_full_and_incremental_syncs() {
    let fake = FakeGoogle::start().await;
    let app = spawn_app_with(|c| google_config(&fake, c)).await;
    fake.add_account(ADA, "Ada");
    one_of_each_type(&fake, 2, "seeded");
    let (ada, _) = connect(&app, &fake, ADA).await;
    assert_eq!(titles(&app, ada), vec!["Client review seeded"], "the full sync");

    one_of_each_type(&fake, 3, "pushed");
    push(&app, &fake, ADA, ada).await;
    assert_eq!(titles(&app, ada), vec!["Client review pushed", "Client review seeded"], "the incremental sync");
}

#[tokio::test]
async fn an_upgrade_gives_each_user_one_full_sync_that_removes_non_meetings_imported_before() {
    let fake = FakeGoogle::start().await;
    fake.add_account(ADA, "Ada");
    fake.add_account("bob@example.com", "Bob");
    let review = fake.create_event(ADA, timed("Client review", 2, 9));
    let ooo = fake.create_event(ADA, of_type("Out of office", 3, "outOfOffice"));
    let focus = fake.create_event(ADA, of_type("Focus time", 4, "focusTime"));
    let gone = fake.create_event(ADA, timed("Deleted while on the old version", 5, 9));
    fake.delete_event(ADA, &gone);
    let bob_event = fake.create_event("bob@example.com", timed("Bob's review", 2, 11));

    // A data file as the previous version left it (schema 5): every event
    // imported as a meeting, one sync token per user, no calendar list.
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    google_config(&fake, &mut config);
    config.google.full_sync_concurrency = 1;
    let mut rows: Vec<(String, i64)> = Vec::new();
    let mut users: Vec<i64> = Vec::new();
    {
        crate::helpers::migrate_to(&config, 5);
        let db = crate::helpers::open_db(&config);
        let now = "2026-01-01T00:00:00.000Z";
        for (email, sub) in [(ADA, "1001"), ("bob@example.com", "1002")] {
            let refresh = fake.issue_refresh_token(email);
            users.push(db.value::<i64>(
                "INSERT INTO users (email, role, google_sub, google_refresh_token, google_sync_token, created_at, updated_at)
                 VALUES (?1, 'user', ?2, ?3, 'fake-sync-from-long-ago', ?4, ?4) RETURNING id",
                &[json!(email), json!(sub), json!(refresh), json!(now)],
            ));
        }
        let (ada_id, bob_id) = (users[0], users[1]);
        let mut insert = |user: i64, event: &str, title: &str, days: i64| {
            let start = format!("{}T08:00:00.000Z", day(days));
            let end = format!("{}T09:00:00.000Z", day(days));
            let id: i64 = db.value(
                "INSERT INTO meetings (user_id, source, external_id, google_event_id, title, starts_at, ends_at, created_at, updated_at)
                 VALUES (?1, 'google', ?2, ?2, ?3, ?4, ?5, ?6, ?6) RETURNING id",
                &[json!(user), json!(event), json!(title), json!(start), json!(end), json!(now)],
            );
            rows.push((event.to_string(), id));
        };
        insert(ada_id, &review, "Client review", 2);
        insert(ada_id, &ooo, "Out of office", 3);
        insert(ada_id, &focus, "Focus time", 4);
        insert(ada_id, &gone, "Deleted while on the old version", 5);
        insert(bob_id, &bob_event, "Bob's review", 2);
    }
    let id_of = |event: &str| rows.iter().find(|r| r.0 == event).unwrap().1;

    // Slow lists, so two full syncs at once would overlap.
    fake.set_list_delay(Duration::from_millis(300));
    let app = start(config, dir).await;
    eventually("both users' upgrade syncs", || (settled(&app, users[0]) && settled(&app, users[1])).then_some(())).await;
    fake.set_list_delay(Duration::ZERO);
    assert_eq!(fake.max_concurrent_lists_all(), 1, "full syncs are staggered (google.full_sync_concurrency = 1)");
    let changes = meeting_changes_after(&app, 0);
    assert!(changes.contains(&("DELETE".into(), id_of(&ooo))), "{changes:?}");
    assert!(changes.contains(&("DELETE".into(), id_of(&focus))), "{changes:?}");
    assert_eq!(changes.iter().filter(|c| c.0 == "DELETE").count(), 2, "only the non-meetings go: {changes:?}");
    let ada = meetings(&app, users[0]);
    assert_eq!(ada.len(), 2, "{ada:?}");
    assert_eq!(ada[0], (id_of(&review), "Client review".to_string(), "scheduled".to_string(), Some(ADA.to_string())), "kept, same id");
    assert_eq!(ada[1].0, id_of(&gone));
    assert_eq!(ada[1].2, "canceled", "what Google no longer lists is canceled");
    assert_eq!(meetings(&app, users[1])[0].0, id_of(&bob_event));
    // One full listing per user (the old token is gone).
    let log = fake.list_log();
    assert!(log.iter().all(|c| !c.sync_token && c.time_min), "{log:?}");
    assert_eq!(fake.list_passes(ADA), 1);
    assert_eq!(fake.list_passes("bob@example.com"), 1);
    // And each now syncs incrementally, pushed on its new channel.
    fake.update_event(ADA, &review, json!({"summary": "Client review, moved room"}));
    push(&app, &fake, ADA, users[0]).await;
    assert_eq!(meetings(&app, users[0])[0].1, "Client review, moved room");
}

// ---- 2. declined invitations -------------------------------------------------

#[tokio::test]
async fn a_declined_invitation_is_canceled_and_accepting_brings_it_back_one_change_each() {
    let fake = FakeGoogle::start().await;
    let app = spawn_app_with(|c| google_config(&fake, c)).await;
    fake.add_account(ADA, "Ada");
    let mut invite = timed("Invitation from a client", 2, 14);
    invite["attendees"] = json!([
        {"email": "client@example.com", "organizer": true, "responseStatus": "accepted"},
        {"email": ADA, "responseStatus": "needsAction"}
    ]);
    let id = fake.create_event(ADA, invite);
    let (ada, jwt) = connect(&app, &fake, ADA).await;

    let m = meeting_of(&app, &jwt, &id).await.unwrap();
    assert_eq!(m["status"], "scheduled", "not answered yet stays scheduled");
    let me = m["attendees"].as_array().unwrap().iter().find(|a| a["self"] == true).cloned().unwrap();
    assert_eq!(me["response_status"], "needsAction", "shown as not answered: {m}");

    let seq = last_seq(&app);
    fake.respond(ADA, &id, "declined");
    push(&app, &fake, ADA, ada).await;
    let m = meeting_of(&app, &jwt, &id).await.unwrap();
    assert_eq!(m["status"], "canceled");
    let attendees = m["attendees"].as_array().unwrap();
    assert!(attendees.iter().any(|a| a["self"] == true && a["response_status"] == "declined"), "{m}");
    assert!(attendees.iter().any(|a| a["email"] == "client@example.com" && a["response_status"] == "accepted"), "each response kept");
    let mid = m["id"].as_i64().unwrap();
    assert_eq!(meeting_changes_after(&app, seq), vec![("UPDATE".to_string(), mid)]);

    let seq = last_seq(&app);
    fake.respond(ADA, &id, "accepted");
    push(&app, &fake, ADA, ada).await;
    let m = meeting_of(&app, &jwt, &id).await.unwrap();
    assert_eq!(m["status"], "scheduled");
    assert_eq!(m["id"], mid);
    assert_eq!(meeting_changes_after(&app, seq), vec![("UPDATE".to_string(), mid)]);
}

// ---- 3. several calendars ------------------------------------------------------

#[tokio::test]
async fn ticking_a_second_calendar_syncs_it_with_its_own_channel_and_unticking_removes_it() {
    let fake = FakeGoogle::start().await;
    // The one-calendar form and `primary` name the same calendar: ticked once.
    let app = spawn_app_with(|c| {
        google_config(&fake, c);
        c.google.calendars = vec!["primary".into(), ADA.into()];
    })
    .await;
    fake.add_account(ADA, "Ada");
    fake.add_calendar(ADA, CLIENTS, "Client meetings", "#f83a22");
    fake.create_event(ADA, timed("In my calendar", 2, 9));
    let in_clients = fake.create_event_in(ADA, CLIENTS, timed("In the clients calendar", 3, 10));
    let (ada, jwt) = connect(&app, &fake, ADA).await;
    assert_eq!(titles(&app, ada), vec!["In my calendar"]);
    assert_eq!(fake.active_channels(ADA).len(), 1, "primary ticked once, one channel");

    let (s, list) = app.get("/api/me/calendars", &jwt).await;
    assert_eq!(s, 200, "{list}");
    assert_eq!(
        list["items"],
        json!([
            {"id": ADA, "name": ADA, "color": "#9fe1e7", "primary": true, "selected": true},
            {"id": CLIENTS, "name": "Client meetings", "color": "#f83a22", "primary": false, "selected": false}
        ])
    );

    // Bad selections change nothing.
    let put = |body: Value| {
        let req = app.http.put(app.url("/api/me/calendars")).bearer_auth(&jwt).json(&body);
        async move {
            let r = req.send().await.unwrap();
            crate::helpers::decode(r).await
        }
    };
    let (s, e) = put(json!({"selected": ["nobody@example.com"]})).await;
    assert_eq!((s, e["error"].as_str()), (422, Some("unprocessable")), "{e}");
    let (s, e) = put(json!({"chosen": [CLIENTS]})).await;
    assert_eq!((s, e["error"].as_str()), (400, Some("bad_request")), "{e}");
    let (s, _) =
        app.http.put(app.url("/api/me/calendars")).json(&json!({"selected": []})).send().await.map(|r| (r.status().as_u16(), ())).unwrap();
    assert_eq!(s, 401);

    // Tick the second calendar ("primary" names the primary).
    let (s, list) = put(json!({"selected": ["primary", CLIENTS]})).await;
    assert_eq!(s, 200, "{list}");
    assert_eq!(list["items"][1]["selected"], true);
    eventually("the second calendar's events", || settled(&app, ada).then_some(()).filter(|_| titles(&app, ada).len() == 2)).await;
    let m = meeting_of(&app, &jwt, &in_clients).await.unwrap();
    assert_eq!((m["calendar_id"].as_str(), m["calendar_name"].as_str()), (Some(CLIENTS), Some("Client meetings")));
    let live = fake.active_channels(ADA);
    assert_eq!(live.len(), 2, "one channel per ticked calendar: {live:?}");

    // A push on the second calendar's channel is honoured.
    let pushed = fake.create_event_in(ADA, CLIENTS, timed("Booked in the clients calendar", 4, 11));
    push(&app, &fake, CLIENTS, ada).await;
    assert!(meeting_of(&app, &jwt, &pushed).await.is_some());

    // Untick: its channel stops, its meetings go (DELETE), the other stays.
    let clients_channel = live.iter().find(|c| c.calendar == CLIENTS).unwrap().id.clone();
    let seq = last_seq(&app);
    let (s, list) = put(json!({"selected": [ADA]})).await;
    assert_eq!(s, 200, "{list}");
    assert_eq!(titles(&app, ada), vec!["In my calendar"]);
    let ops: Vec<String> = meeting_changes_after(&app, seq).into_iter().map(|c| c.0).collect();
    assert_eq!(ops, vec!["DELETE", "DELETE"]);
    assert!(fake.channels(ADA).iter().any(|c| c.id == clients_channel && c.stopped), "its channel was stopped at Google");
    assert_eq!(fake.active_channels(ADA).len(), 1);
    let (_, list) = app.get("/api/me/calendars", &jwt).await;
    assert_eq!(list["items"][1]["selected"], false);
}

#[tokio::test]
async fn the_same_event_in_two_ticked_calendars_is_one_meeting_until_neither_lists_it() {
    let fake = FakeGoogle::start().await;
    let app = spawn_app_with(|c| {
        google_config(&fake, c);
        c.google.calendars = vec!["primary".into(), SHARED.into()];
    })
    .await;
    fake.add_account(ADA, "Ada");
    fake.add_calendar(ADA, SHARED, "Team", "#7bd148");
    // A Google invitation that also shows in a shared calendar: same event id.
    let mut same = timed("Same id twice", 2, 9);
    same["id"] = json!("sharedinvite1");
    fake.create_event(ADA, same.clone());
    fake.create_event_in(ADA, SHARED, same);
    // An invitation from outside Google delivered to both: different ids, one iCalUID.
    let mut a = timed("Same iCalUID twice", 3, 9);
    a["iCalUID"] = json!("outside-invite-42@example.org");
    let mut b = a.clone();
    a["id"] = json!("outsidecopya");
    b["id"] = json!("outsidecopyb");
    fake.create_event(ADA, a);
    fake.create_event_in(ADA, SHARED, b);
    // Never merged on iCalUID alone: same UID, another occurrence.
    let mut other = timed("Same iCalUID, another time", 4, 9);
    other["iCalUID"] = json!("outside-invite-42@example.org");
    fake.create_event_in(ADA, SHARED, other);
    let (ada, _) = connect(&app, &fake, ADA).await;
    assert_eq!(titles(&app, ada), vec!["Same iCalUID twice", "Same iCalUID, another time", "Same id twice"]);

    // Gone from one calendar: still listed by the other, still scheduled.
    fake.delete_event(ADA, "outsidecopya");
    push(&app, &fake, ADA, ada).await;
    let m = meetings(&app, ada).into_iter().find(|m| m.1 == "Same iCalUID twice").unwrap();
    assert_eq!(m.2, "scheduled");
    assert_eq!(m.3.as_deref(), Some(SHARED), "its home is now the calendar that lists it");
    // Gone from both: canceled.
    fake.delete_event(ADA, "outsidecopyb");
    push(&app, &fake, SHARED, ada).await;
    let m = meetings(&app, ada).into_iter().find(|m| m.1 == "Same iCalUID twice").unwrap();
    assert_eq!(m.2, "canceled");
}

#[tokio::test]
async fn a_configured_calendar_off_the_list_syncs_by_id_and_a_deleted_one_does_not_stop_the_others() {
    let fake = FakeGoogle::start().await;
    let app = spawn_app_with(|c| {
        google_config(&fake, c);
        c.google.calendars = vec!["primary".into(), SHARED.into(), CLIENTS.into()];
    })
    .await;
    fake.add_account(ADA, "Ada");
    fake.add_calendar(ADA, SHARED, "Team", "#7bd148");
    fake.unlist_calendar(ADA, SHARED);
    fake.add_calendar(ADA, CLIENTS, "Client meetings", "#f83a22");
    fake.create_event_in(ADA, SHARED, timed("Team planning", 2, 9));
    fake.create_event_in(ADA, CLIENTS, timed("Client call", 3, 9));
    let (ada, _) = connect(&app, &fake, ADA).await;
    assert_eq!(titles(&app, ada), vec!["Client call", "Team planning"], "the unlisted calendar syncs under its id");

    // The clients calendar is deleted at Google: the others keep syncing.
    fake.remove_calendar(ADA, CLIENTS);
    fake.create_event(ADA, timed("Still arriving", 4, 9));
    push(&app, &fake, ADA, ada).await;
    assert!(titles(&app, ada).contains(&"Still arriving".to_string()), "{:?}", titles(&app, ada));
}

// ---- 4. moved events -----------------------------------------------------------

#[tokio::test]
async fn an_event_moved_between_ticked_calendars_stays_one_meeting_with_one_update() {
    let fake = FakeGoogle::start().await;
    let app = spawn_app_with(|c| {
        google_config(&fake, c);
        c.google.calendars = vec!["primary".into(), CLIENTS.into()];
    })
    .await;
    fake.add_account(ADA, "Ada");
    fake.add_calendar(ADA, CLIENTS, "Client meetings", "#f83a22");
    fake.add_calendar(ADA, SHARED, "Team (not ticked)", "#7bd148");
    let first = fake.create_event(ADA, timed("Moved, new calendar pushes first", 2, 9));
    let second = fake.create_event(ADA, timed("Moved, old calendar pushes first", 3, 9));
    let (ada, jwt) = connect(&app, &fake, ADA).await;
    let id1 = meeting_of(&app, &jwt, &first).await.unwrap()["id"].as_i64().unwrap();
    let id2 = meeting_of(&app, &jwt, &second).await.unwrap()["id"].as_i64().unwrap();

    for (event, id, pushes_first) in [(&first, id1, CLIENTS), (&second, id2, ADA)] {
        let seq = last_seq(&app);
        fake.move_event(ADA, ADA, event, CLIENTS);
        push(&app, &fake, pushes_first, ada).await;
        let other = if pushes_first == ADA { CLIENTS } else { ADA };
        push(&app, &fake, other, ada).await;
        assert_eq!(meeting_changes_after(&app, seq), vec![("UPDATE".to_string(), id)], "one UPDATE, never DELETE+INSERT");
        let m = meeting_of(&app, &jwt, event).await.unwrap();
        assert_eq!((m["id"].as_i64(), m["status"].as_str(), m["calendar_id"].as_str()), (Some(id), Some("scheduled"), Some(CLIENTS)));
        assert_eq!(m["calendar_name"], "Client meetings");
    }

    // Moved to a calendar that is not ticked: canceled.
    fake.move_event(ADA, CLIENTS, &first, SHARED);
    push(&app, &fake, CLIENTS, ada).await;
    assert_eq!(meeting_of(&app, &jwt, &first).await.unwrap()["status"], "canceled");
}

// ---- 5. recurring events -------------------------------------------------------

fn weekly(summary: &str, days: i64, rule: &str) -> Value {
    let mut e = timed(summary, days, 10);
    e["recurrence"] = json!([format!("RRULE:FREQ=WEEKLY;{rule}")]);
    e
}

#[tokio::test]
async fn recurring_series_occurrences_cancellations_splits_and_a_window_that_moves() {
    let fake = FakeGoogle::start().await;
    let app = spawn_app_with(|c| {
        google_config(&fake, c);
        c.google.sync_future = Dur::secs(30 * 86_400);
    })
    .await;
    fake.add_account(ADA, "Ada");
    let weekly_id = fake.create_event(ADA, weekly("Weekly review", 1, "COUNT=4"));
    let (ada, _) = connect(&app, &fake, ADA).await;
    let occ: Vec<(i64, String, String, Option<String>)> = meetings(&app, ada);
    assert_eq!(occ.len(), 4, "every occurrence is a meeting: {occ:?}");

    // Cancel the second occurrence only; edit the third only.
    let ids: Vec<String> =
        app.db().column("SELECT l.event_id FROM google_event_links l JOIN meetings m ON m.id = l.meeting_id ORDER BY m.starts_at", &[]);
    assert!(ids.iter().all(|i| i.starts_with(&format!("{weekly_id}_"))), "{ids:?}");
    let seq = last_seq(&app);
    fake.cancel_occurrence(ADA, &weekly_id, &ids[1]);
    fake.edit_occurrence(ADA, &weekly_id, &ids[2], json!({"summary": "Weekly review (with the auditor)"}));
    push(&app, &fake, ADA, ada).await;
    let after = meetings(&app, ada);
    let status: Vec<(&str, &str)> = after.iter().map(|m| (m.1.as_str(), m.2.as_str())).collect();
    assert_eq!(
        status,
        vec![
            ("Weekly review", "scheduled"),
            ("Weekly review", "canceled"),
            ("Weekly review (with the auditor)", "scheduled"),
            ("Weekly review", "scheduled")
        ]
    );
    let mut touched: Vec<i64> = meeting_changes_after(&app, seq).into_iter().map(|c| c.1).collect();
    touched.sort_unstable();
    assert_eq!(touched, vec![after[1].0, after[2].0], "only those two occurrences changed");

    // An endless series never imports past the window's end.
    let endless = fake.create_event(ADA, weekly("Endless standup", 2, "INTERVAL=1"));
    push(&app, &fake, ADA, ada).await;
    let horizon = format!("{}", day(31));
    let standups: Vec<String> = app.db().column("SELECT starts_at FROM meetings WHERE title = 'Endless standup' ORDER BY starts_at", &[]);
    assert!((4..=5).contains(&standups.len()), "about a month of weekly occurrences: {standups:?}");
    assert!(standups.iter().all(|s| s.as_str() < horizon.as_str()), "{standups:?}");

    // "This and following": from the third standup on, at 11:00.
    let before_split = meetings(&app, ada);
    let third = at(2 + 14, 10);
    let seq = last_seq(&app);
    fake.split_series(ADA, &endless, &third, json!({"summary": "Standup (new time)"}));
    push(&app, &fake, ADA, ada).await;
    let after_split = meetings(&app, ada);
    let early: Vec<_> = after_split.iter().filter(|m| m.1 == "Endless standup" && m.2 == "scheduled").collect();
    assert_eq!(early.len(), 2, "the first two are untouched: {after_split:?}");
    for m in &early {
        assert!(before_split.contains(m));
        assert!(!meeting_changes_after(&app, seq).iter().any(|c| c.1 == m.0), "no change on an earlier occurrence");
    }
    let later: Vec<_> = after_split.iter().filter(|m| m.1 == "Standup (new time)").collect();
    assert_eq!(later.len(), standups.len() - 2, "each later occurrence once: {after_split:?}");
    assert!(later.iter().all(|m| m.2 == "scheduled"));
    let live_later = after_split.iter().filter(|m| m.1 == "Endless standup" && m.2 == "scheduled").count();
    assert_eq!(live_later, 2, "the old later occurrences are no longer scheduled");

    // Time passes: the window's end moves (here: a longer sync_future after a
    // restart), and the occurrences that entered it appear without a push.
    let addr = app.addr;
    let (mut config, dir) = app.stop().await;
    config.server.bind = addr.to_string();
    config.google.sync_future = Dur::secs(60 * 86_400);
    let lists = fake.list_log().len();
    let app = start(config, dir).await;
    eventually("the occurrences that entered the window", || {
        let n = meetings(&app, ada).iter().filter(|m| m.1 == "Standup (new time)").count();
        (n >= later.len() + 3).then_some(())
    })
    .await;
    let horizon = format!("{}", day(61));
    let newest: String = app.db().value("SELECT MAX(starts_at) FROM meetings WHERE title = 'Standup (new time)'", &[]);
    assert!(newest < horizon, "{newest}");
    // Bounded: one listing of the new slice, not a whole-window resync.
    let slice: Vec<_> = fake.list_log().into_iter().skip(lists).filter(|c| c.time_min).collect();
    assert_eq!(slice.len(), 1, "{slice:?}");
}

// ---- 6. time zones ---------------------------------------------------------------

#[tokio::test]
async fn all_day_events_keep_their_dates_and_timed_events_their_instant_and_own_zone() {
    let fake = FakeGoogle::start().await;
    let app = spawn_app_with(|c| google_config(&fake, c)).await;
    fake.add_account(ADA, "Ada");
    let d = day(6);
    let all_day = fake.create_event(
        ADA,
        json!({"summary": "Offsite", "start": {"date": d.to_string()}, "end": {"date": d.next_day().unwrap().to_string()}}),
    );
    // The calendar is in Berlin; this call is set in New York's zone.
    let ny = fake.create_event(
        ADA,
        json!({"summary": "Call with New York",
               "start": {"dateTime": format!("{}T09:30:00-05:00", day(7)), "timeZone": "America/New_York"},
               "end": {"dateTime": format!("{}T10:00:00-05:00", day(7)), "timeZone": "America/New_York"}}),
    );
    let (ada, jwt) = connect(&app, &fake, ADA).await;
    let m = meeting_of(&app, &jwt, &all_day).await.unwrap();
    assert_eq!((m["all_day"].as_bool(), m["starts_at"].as_str()), (Some(true), Some(format!("{d}T00:00:00.000Z").as_str())));
    assert_eq!(m["ends_at"], format!("{}T00:00:00.000Z", d.next_day().unwrap()));
    let m = meeting_of(&app, &jwt, &ny).await.unwrap();
    assert_eq!(m["starts_at"], format!("{}T14:30:00.000Z", day(7)), "the same instant");
    assert_eq!(m["timezone"], "America/New_York", "shown in its own zone");

    // An incremental change keeps both right.
    fake.update_event(ADA, &ny, json!({"summary": "Call with New York (moved)"}));
    push(&app, &fake, ADA, ada).await;
    let m = meeting_of(&app, &jwt, &ny).await.unwrap();
    assert_eq!(
        (m["starts_at"].as_str(), m["timezone"].as_str()),
        (Some(format!("{}T14:30:00.000Z", day(7)).as_str()), Some("America/New_York"))
    );
}

// ---- the idle cost with two calendars ----------------------------------------------

fn status_count(app: &TestApp, user: i64, column: &str) -> i64 {
    app.db().value_opt(&format!("SELECT {column} FROM google_sync_status WHERE user_id = ?1"), &[json!(user)]).unwrap_or(0)
}

/// What an idle connected user with two ticked calendars costs in Google
/// API calls per day at the defaults (`safety_net_interval` 6h,
/// `channel_ttl` 7d, `renew_before` 1d, `window_step` 1d; access tokens last 1h):
///
/// - safety net: 4 passes a day, each one incremental `events.list` per
///   calendar (one page: nothing changed) + at most 1 token refresh = 3 → 12;
/// - the window moving forward: once a day, one bounded `events.list` per
///   calendar, inside a safety-net pass (its token) → 2;
/// - renewal: each of the 2 channels every 6 days, 1 `watch` + 1
///   `channels.stop` + at most 1 refresh = 3 → 2 × 3 / 6 = 1;
///
/// about 15 a day (8.5 with one calendar). The test runs the machinery
/// scaled down (safety net and window step 1 s, channels of 4 s renewed 2 s
/// before expiry, access tokens usable for 1 s), checks each operation costs
/// no more than that, and scales the measured costs back to the defaults.
#[tokio::test]
async fn an_idle_user_with_two_calendars_costs_about_fifteen_google_calls_a_day() {
    let fake = FakeGoogle::start().await;
    fake.set_access_token_lifetime(61);
    let app = spawn_app_with(|c| {
        fake.configure(c);
        c.google.calendars = vec!["primary".into(), CLIENTS.into()];
        c.google.safety_net_interval = Dur::secs(1);
        c.google.window_step = Dur::secs(1);
        c.google.channel_ttl = Dur::secs(4);
        c.google.renew_before = Dur::secs(2);
    })
    .await;
    fake.add_account(ADA, "Ada");
    fake.add_calendar(ADA, CLIENTS, "Client meetings", "#f83a22");
    fake.create_event(ADA, timed("Plan", 2, 10));
    fake.create_event_in(ADA, CLIENTS, timed("Client", 3, 10));
    let (uid, _) = connect(&app, &fake, ADA).await;
    let calls = |f: &FakeGoogle| (f.calls("list"), f.calls("token"), f.calls("watch"), f.calls("stop"), f.calls("calendar_list"));
    let base = calls(&fake);
    let base_log = fake.list_log().len();
    let (base_syncs, base_renewals) = (status_count(&app, uid, "safety_net_syncs"), status_count(&app, uid, "renewals"));
    eventually("several safety-net syncs and renewals", || {
        let s = status_count(&app, uid, "safety_net_syncs") - base_syncs;
        let r = status_count(&app, uid, "renewals") - base_renewals;
        (s >= 6 && r >= 4).then_some(())
    })
    .await;
    let (config, _dir) = app.stop().await;
    let end = calls(&fake);
    let db = crate::helpers::open_db(&config);
    let counter = |column: &str| -> f64 {
        db.value::<i64>(&format!("SELECT {column} FROM google_sync_status WHERE user_id = ?1"), &[json!(uid)]) as f64
    };
    let syncs = counter("safety_net_syncs") - base_syncs as f64;
    let renewals = counter("renewals") - base_renewals as f64;
    let log: Vec<_> = fake.list_log().into_iter().skip(base_log).collect();
    let incremental = log.iter().filter(|c| c.sync_token).count() as f64;
    let slices = log.iter().filter(|c| c.time_min).count() as f64;
    let tokens = (end.1 - base.1) as f64;
    let (watches, stops) = ((end.2 - base.2) as f64, (end.3 - base.3) as f64);
    assert_eq!(end.4, base.4, "the calendar list is not read while idle");
    assert!(log.iter().all(|c| !c.page_token && c.status == 200), "one page each: {log:?}");
    assert!(incremental <= 2.0 * (syncs + 1.0), "one incremental list per calendar per pass: {incremental} for {syncs}");
    // Every slice listing is bounded (timeMin and timeMax), one per calendar per window step.
    assert!(slices <= 2.0 * (syncs + 1.0), "{slices} slices for {syncs} passes");
    assert!(watches <= renewals + 2.0 && stops <= renewals + 2.0, "one watch and one stop per renewal: {watches}/{stops} for {renewals}");
    assert!(tokens <= syncs + renewals + 2.0, "at most one refresh per operation: {tokens} for {syncs} + {renewals}");

    // Scaled back to the defaults.
    let per_pass = incremental / syncs + 1.0;
    let per_window_step = 2.0;
    let per_renewal = (watches + stops) / renewals + 1.0;
    let per_day = 4.0 * per_pass + per_window_step + (2.0 / 6.0) * per_renewal;
    eprintln!(
        "idle user, two calendars: {syncs} safety-net passes, {renewals} renewals -> {incremental} incremental lists, {slices} window slices, \
         {tokens} token calls, {watches} watches, {stops} stops; at the defaults {per_day:.1} calls a day"
    );
    assert!(per_day <= 16.0, "an idle user with two calendars costs {per_day:.1} Google calls a day");
}
