//! Google Calendar I against the fake Google: sign-in, push channels,
//! notifications, and the incremental sync with its failure rules.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::fake_google::{location, state_cookie, FakeGoogle};
use crate::helpers::{spawn_app, spawn_app_with, TestApp};

// ---- helpers ---------------------------------------------------------------

/// Every log line of this test binary, from the first Google test on.
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl Write for Sink {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Arc::new(Mutex::new(Vec::new()));
        let b = buf.clone();
        let installed = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
            .with_ansi(false)
            .with_writer(move || Sink(b.clone()))
            .try_init();
        assert!(installed.is_ok(), "another log subscriber was installed first; the log checks need this one");
        buf
    })
    .clone()
}

pub(crate) fn logs_text() -> String {
    String::from_utf8_lossy(&captured_logs().lock().unwrap()).into_owned()
}

pub(crate) async fn google_app(fake: &FakeGoogle) -> TestApp {
    captured_logs();
    spawn_app_with(|c| fake.configure(c)).await
}

/// Poll `f` until it gives a value (10 s at most).
async fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// An RFC 3339 time `days` from now at `hour`:00 Berlin time (+01:00).
fn at(days: i64, hour: u8) -> String {
    let d = (time::OffsetDateTime::now_utc() + time::Duration::days(days)).date();
    format!("{}T{:02}:00:00+01:00", d, hour)
}

fn timed(summary: &str, days: i64, hour: u8) -> Value {
    json!({
        "summary": summary,
        "start": {"dateTime": at(days, hour), "timeZone": "Europe/Berlin"},
        "end": {"dateTime": at(days, hour + 1), "timeZone": "Europe/Berlin"},
    })
}

/// A browser's trip to Google's consent page and back, up to (not
/// including) the callback request: (callback URL, state cookie).
async fn consent(app: &TestApp, fake: &FakeGoogle, email: &str, path: &str) -> (String, String) {
    fake.consent_as(email);
    let r = app.http.get(app.url(path)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 303, "GET {path} redirects to Google");
    let to_google = location(&r);
    assert!(to_google.starts_with(&fake.base), "{to_google}");
    let cookie = state_cookie(&r);
    let r = app.http.get(&to_google).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 302, "the fake consent page accepts the request");
    (location(&r), cookie)
}

/// What a signed-in page does: `POST /api/auth/google/connect` with its token
/// in the header, then follow the returned consent URL.
async fn consent_to_connect(app: &TestApp, fake: &FakeGoogle, email: &str, jwt: &str) -> (String, String) {
    fake.consent_as(email);
    let r = app.http.post(app.url("/api/auth/google/connect")).bearer_auth(jwt).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let cookie = state_cookie(&r);
    let body: serde_json::Value = r.json().await.unwrap();
    let to_google = body["location"].as_str().unwrap().to_string();
    assert!(to_google.starts_with(&fake.base), "{to_google}");
    assert!(!to_google.contains(jwt), "the app token never travels in a URL");
    let r = app.http.get(&to_google).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 302, "the fake consent page accepts the request");
    (location(&r), cookie)
}

async fn callback(app: &TestApp, url: &str, cookie: Option<&str>, html: bool) -> reqwest::Response {
    let mut req = app.http.get(url);
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    if html {
        req = req.header("accept", "text/html,application/xhtml+xml");
    }
    req.send().await.unwrap()
}

fn sync_token_of(app: &TestApp, user: i64) -> Option<String> {
    app.db().value("SELECT MAX(sync_token) FROM google_calendars WHERE user_id = ?1 AND selected", &[json!(user)])
}

/// Finished sync passes of a user.
pub(crate) fn syncs(app: &TestApp, user: i64) -> i64 {
    app.db().value_opt("SELECT syncs FROM google_sync_status WHERE user_id = ?1", &[json!(user)]).unwrap_or(0)
}

/// Wait until a pass that started after `before` finished and nothing is queued.
pub(crate) async fn wait_synced(app: &TestApp, user: i64, before: i64) {
    eventually("a finished sync pass", || (syncs(app, user) > before && !app.app.google.sync_pending(user)).then_some(())).await;
}

/// Sign `email` in with Google as an existing user; waits for the first full
/// sync and the push channel. Returns (user id, syncgate JWT).
pub(crate) async fn connect(app: &TestApp, fake: &FakeGoogle, email: &str) -> (i64, String) {
    fake.add_account(email, "Ada Adviser");
    let (id, _) = app.add_user(email, "user");
    let (url, cookie) = consent(app, fake, email, "/api/auth/google").await;
    let r = callback(app, &url, Some(&cookie), true).await;
    assert_eq!(r.status().as_u16(), 303);
    let jwt = location(&r).strip_prefix("/#access_token=").expect("lands on / with the token in the fragment").to_string();
    eventually("the first full sync and the push channel", || {
        let resource: Option<String> = app
            .db()
            .value_opt("SELECT resource_id FROM calendar_watch_channels WHERE user_id = ?1 AND state = 'active'", &[json!(id)])
            .flatten();
        (sync_token_of(app, id).is_some() && resource.is_some() && !app.app.google.sync_pending(id)).then_some(())
    })
    .await;
    (id, jwt)
}

/// The meeting synced from a Google event, as REST returns it.
async fn meeting(app: &TestApp, jwt: &str, event_id: &str) -> Option<Value> {
    let id: Option<i64> = app.db().value_opt("SELECT id FROM meetings WHERE source = 'google' AND external_id = ?1", &[json!(event_id)]);
    let id = id?;
    let (s, m) = app.get(&format!("/api/meetings/{id}"), jwt).await;
    assert_eq!(s, 200);
    Some(m)
}

fn meeting_id(app: &TestApp, event_id: &str) -> Option<i64> {
    app.db().value_opt("SELECT id FROM meetings WHERE source = 'google' AND external_id = ?1", &[json!(event_id)])
}

fn status_of(app: &TestApp, event_id: &str) -> Option<String> {
    app.db().value_opt("SELECT status FROM meetings WHERE source = 'google' AND external_id = ?1", &[json!(event_id)])
}

/// Notify every channel of `email` and wait for the sync it causes.
async fn notify_and_sync(app: &TestApp, fake: &FakeGoogle, email: &str, user: i64) {
    let before = syncs(app, user);
    assert_eq!(fake.notify(email, "exists").await, vec![200]);
    wait_synced(app, user, before).await;
}

// ---- sign-in ---------------------------------------------------------------

#[tokio::test]
async fn sign_in_with_google_signs_in_stores_tokens_syncs_and_watches() {
    let fake = FakeGoogle::start().await;
    let app = google_app(&fake).await;
    fake.add_account("ada@example.com", "Ada");
    let ev = fake.create_event("ada@example.com", timed("Kick-off", 2, 10));

    let (id, jwt) = connect(&app, &fake, "ada@example.com").await;

    let (s, me) = app.get("/api/me", &jwt).await;
    assert_eq!(s, 200);
    assert_eq!(me["id"], id);
    assert_eq!(me["google_connected"], true);
    assert_eq!(me["google_needs_reconnect"], false);

    let m = meeting(&app, &jwt, &ev).await.expect("the first full sync made the meeting");
    assert_eq!(m["source"], "google");
    assert_eq!(m["title"], "Kick-off");
    assert_eq!(m["status"], "scheduled");
    assert_eq!(m["timezone"], "Europe/Berlin");
    let d = (time::OffsetDateTime::now_utc() + time::Duration::days(2)).date();
    assert_eq!(m["starts_at"], format!("{d}T09:00:00.000Z"), "stored in UTC");

    // The channel Google registered, with the resource id and expiry Google returned.
    let channels = fake.active_channels("ada@example.com");
    assert_eq!(channels.len(), 1);
    let (cid, token, resource, expiration): (String, String, Option<String>, Option<String>) =
        app.db().row_as("SELECT channel_id, token, resource_id, expiration FROM calendar_watch_channels WHERE user_id = ?1", &[json!(id)]);
    assert_eq!(cid, channels[0].id);
    assert_eq!(Some(token), channels[0].token);
    assert_eq!(resource.as_deref(), Some(channels[0].resource_id.as_str()));
    let exp = time::OffsetDateTime::from_unix_timestamp(channels[0].expiration_ms / 1000).unwrap();
    assert_eq!(expiration.unwrap()[..19], syncgate::store::timefmt::format(exp)[..19]);
    assert!(logs_text().contains(&format!("google sync user {id}: 1 created, 0 updated, 0 canceled (full, 1 page)")));
}

#[tokio::test]
async fn unknown_addresses_are_refused_with_a_page_saying_why_unless_the_policy_allows() {
    let fake = FakeGoogle::start().await;
    let app = google_app(&fake).await;
    fake.add_account("stranger@example.com", "Stranger");
    let (url, cookie) = consent(&app, &fake, "stranger@example.com", "/api/auth/google").await;
    let r = callback(&app, &url, Some(&cookie), true).await;
    assert_eq!(r.status().as_u16(), 403);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let page = r.text().await.unwrap();
    assert!(page.contains("stranger@example.com has no syncgate account"), "{page}");
    let n: i64 = app.db().value("SELECT COUNT(*) FROM users", &[]);
    assert_eq!(n, 0, "nobody was created");

    // A non-browser gets the same refusal as JSON.
    let (url, cookie) = consent(&app, &fake, "stranger@example.com", "/api/auth/google").await;
    let r = callback(&app, &url, Some(&cookie), false).await;
    assert_eq!(r.status().as_u16(), 403);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "forbidden");

    // With the domain allowed, the same person signs up.
    let fake2 = FakeGoogle::start().await;
    let app2 = spawn_app_with(|c| {
        fake2.configure(c);
        c.auth.allowed_domains = vec!["example.org".into()];
    })
    .await;
    fake2.add_account("new@example.org", "New Person");
    let (url, cookie) = consent(&app2, &fake2, "new@example.org", "/api/auth/google").await;
    let r = callback(&app2, &url, Some(&cookie), true).await;
    assert_eq!(r.status().as_u16(), 303);
    let jwt = location(&r).strip_prefix("/#access_token=").unwrap().to_string();
    let (s, me) = app2.get("/api/me", &jwt).await;
    assert_eq!(s, 200);
    assert_eq!(me["email"], "new@example.org");
    assert_eq!(me["name"], "New Person");
    assert_eq!(me["role"], "user");
}

#[tokio::test]
async fn the_state_is_single_use_signed_and_tied_to_the_browser() {
    let fake = FakeGoogle::start().await;
    let app = google_app(&fake).await;
    fake.add_account("ada@example.com", "Ada");
    app.add_user("ada@example.com", "user");

    let (url, cookie) = consent(&app, &fake, "ada@example.com", "/api/auth/google").await;
    assert_eq!(callback(&app, &url, Some(&cookie), false).await.status().as_u16(), 303);
    let tokens_exchanged = fake.calls("token");
    // Replayed: refused before the code reaches Google.
    let r = callback(&app, &url, Some(&cookie), false).await;
    assert_eq!(r.status().as_u16(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "bad_request");
    assert!(body["message"].as_str().unwrap().contains("already used"), "{body}");
    assert_eq!(fake.calls("token"), tokens_exchanged);

    // Tampered state.
    let (url, cookie) = consent(&app, &fake, "ada@example.com", "/api/auth/google").await;
    let mut u = url::Url::parse(&url).unwrap();
    let pairs: Vec<(String, String)> = u.query_pairs().into_owned().collect();
    u.query_pairs_mut().clear();
    for (k, v) in pairs {
        let v = if k == "state" { format!("{}x", &v[..v.len() - 1]) } else { v };
        u.query_pairs_mut().append_pair(&k, &v);
    }
    assert_eq!(callback(&app, u.as_str(), Some(&cookie), false).await.status().as_u16(), 400);
    // The untampered one still works, but not from a browser without the cookie.
    assert_eq!(callback(&app, &url, None, false).await.status().as_u16(), 400);
    assert_eq!(callback(&app, &url, Some("syncgate_google_state=someone-else"), false).await.status().as_u16(), 400);
    assert_eq!(callback(&app, &url, Some(&cookie), false).await.status().as_u16(), 303);
    assert_eq!(fake.calls("token"), tokens_exchanged + 1);

    // Google's own refusal lands on a page too.
    let r = app.http.get(app.url("/api/auth/google/callback?error=access_denied")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 403);
}

#[tokio::test]
async fn connect_attaches_a_google_account_to_the_signed_in_user() {
    let fake = FakeGoogle::start().await;
    let app = google_app(&fake).await;
    let (bob, jwt) = app.add_user("bob@work.example", "user");
    fake.add_account("bob.private@gmail.example", "Bob");
    let ev = fake.create_event("bob.private@gmail.example", timed("From the private calendar", 1, 9));

    let r = app.http.get(app.url("/api/auth/google?connect=1")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401, "connect needs a signed-in user");
    let r = app.http.post(app.url("/api/auth/google/connect")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401, "connect needs a signed-in user");
    let r = app.http.get(app.url(&format!("/api/auth/google?connect=1&access_token={jwt}"))).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401, "a token in the query string is not accepted");
    let (url, cookie) = consent_to_connect(&app, &fake, "bob.private@gmail.example", &jwt).await;
    let r = callback(&app, &url, Some(&cookie), true).await;
    assert_eq!(r.status().as_u16(), 303);
    let (_, me) = app.get("/api/me", &jwt).await;
    assert_eq!((me["email"].as_str(), me["google_connected"].as_bool()), (Some("bob@work.example"), Some(true)));
    let mid = eventually("the connected calendar's meeting", || meeting_id(&app, &ev)).await;
    let owner: i64 = app.db().value("SELECT user_id FROM meetings WHERE id = ?1", &[json!(mid)]);
    assert_eq!(owner, bob);

    // One Google account belongs to one syncgate user.
    let (_, carl_jwt) = app.add_user("carl@work.example", "user");
    let (url, cookie) = consent_to_connect(&app, &fake, "bob.private@gmail.example", &carl_jwt).await;
    let r = callback(&app, &url, Some(&cookie), false).await;
    assert_eq!(r.status().as_u16(), 409);
}

// ---- sync ------------------------------------------------------------------

#[tokio::test]
async fn google_edits_become_meeting_changes_once_and_reach_only_their_users_subscribers() {
    let fake = FakeGoogle::start().await;
    let app = google_app(&fake).await;
    let (ada, jwt) = connect(&app, &fake, "ada@example.com").await;
    let (_bob, bob_jwt) = app.add_user("bob@example.com", "user");
    let (s, client) = app.post("/api/clients", &jwt, &json!({"name": "Carla Client", "email": "carla@client.example"})).await;
    assert_eq!(s, 201);

    let bindings = json!([{"event": "*", "schema": "public", "table": "meetings"}]);
    let mut ada_ws = app.ws(&jwt, "2.0.0").await;
    ada_ws.join("realtime:meetings", bindings.clone(), Some(&jwt)).await;
    ada_ws.joined().await;
    let mut bob_ws = app.ws(&bob_jwt, "2.0.0").await;
    bob_ws.join("realtime:meetings", bindings, Some(&bob_jwt)).await;
    bob_ws.joined().await;

    // Create.
    let mut ev = timed("Portfolio review", 3, 14);
    ev["attendees"] = json!([
        {"email": "ada@example.com", "self": true, "organizer": true, "responseStatus": "accepted"},
        {"email": "Carla@Client.example", "displayName": "Carla", "responseStatus": "needsAction"}
    ]);
    ev["location"] = json!("Office 3");
    ev["hangoutLink"] = json!("https://meet.google.com/abc-defg-hij");
    let id = fake.create_event("ada@example.com", ev);
    notify_and_sync(&app, &fake, "ada@example.com", ada).await;
    let f = ada_ws.recv_event("postgres_changes").await;
    assert_eq!(f.payload["data"]["type"], "INSERT");
    let rec = &f.payload["data"]["record"];
    assert_eq!(rec["external_id"], id.as_str());
    assert_eq!(rec["title"], "Portfolio review");
    assert_eq!(rec["location"], "Office 3");
    assert_eq!(rec["meeting_url"], "https://meet.google.com/abc-defg-hij");
    assert_eq!(rec["client_id"], client["id"], "linked by attendee email, case-insensitively");
    assert_eq!(rec["attendees"][1]["email"], "Carla@Client.example");

    // Edit.
    fake.update_event(
        "ada@example.com",
        &id,
        json!({"summary": "Portfolio review (moved)", "start": {"dateTime": at(4, 9)}, "end": {"dateTime": at(4, 10)}}),
    );
    notify_and_sync(&app, &fake, "ada@example.com", ada).await;
    let f = ada_ws.recv_event("postgres_changes").await;
    assert_eq!(f.payload["data"]["type"], "UPDATE");
    assert_eq!(f.payload["data"]["record"]["title"], "Portfolio review (moved)");
    assert_eq!(f.payload["data"]["old_record"]["title"], "Portfolio review");

    // Delete: the meeting is kept, canceled.
    fake.delete_event("ada@example.com", &id);
    notify_and_sync(&app, &fake, "ada@example.com", ada).await;
    let f = ada_ws.recv_event("postgres_changes").await;
    assert_eq!(f.payload["data"]["type"], "UPDATE");
    assert_eq!(f.payload["data"]["record"]["status"], "canceled");
    let m = meeting(&app, &jwt, &id).await.unwrap();
    assert_eq!(m["status"], "canceled");
    assert_eq!(m["title"], "Portfolio review (moved)");

    // A notification without a change changes nothing: exactly once.
    notify_and_sync(&app, &fake, "ada@example.com", ada).await;
    let mid = m["id"].as_i64().unwrap();
    let logged: Vec<String> = app.changes().into_iter().filter(|c| c.1 == "meetings" && c.3 == mid).map(|c| c.2).collect();
    assert_eq!(logged, vec!["INSERT", "UPDATE", "UPDATE"]);

    // Bob saw none of it: his first change is his own.
    let (s, _) = app.post("/api/meetings", &bob_jwt, &json!({"title": "Bob's", "starts_at": at(1, 9), "ends_at": at(1, 10)})).await;
    assert_eq!(s, 201);
    let f = bob_ws.recv_event("postgres_changes").await;
    assert_eq!(f.payload["data"]["record"]["title"], "Bob's");
}

#[tokio::test]
async fn all_day_and_tentative_events() {
    let fake = FakeGoogle::start().await;
    let app = google_app(&fake).await;
    let (ada, jwt) = connect(&app, &fake, "ada@example.com").await;
    let d = (time::OffsetDateTime::now_utc() + time::Duration::days(5)).date();
    let end = d.next_day().unwrap().next_day().unwrap();
    let all_day = fake.create_event(
        "ada@example.com",
        json!({"summary": "Conference", "start": {"date": d.to_string()}, "end": {"date": end.to_string()}}),
    );
    let mut t = timed("Maybe lunch", 6, 12);
    t["status"] = json!("tentative");
    let tentative = fake.create_event("ada@example.com", t);
    notify_and_sync(&app, &fake, "ada@example.com", ada).await;

    let m = meeting(&app, &jwt, &all_day).await.unwrap();
    assert_eq!(m["all_day"], true);
    assert_eq!(m["starts_at"], format!("{d}T00:00:00.000Z"));
    assert_eq!(m["ends_at"], format!("{end}T00:00:00.000Z"), "the end date is exclusive");
    assert_eq!(m["timezone"], crate::fake_google::CALENDAR_TZ, "the calendar's zone when the event names none");
    let m = meeting(&app, &jwt, &tentative).await.unwrap();
    assert_eq!(m["status"], "scheduled", "tentative stays visible");
}

#[tokio::test]
async fn a_burst_of_fifty_notifications_costs_at_most_two_list_passes() {
    let fake = FakeGoogle::start().await;
    let app = google_app(&fake).await;
    let (ada, jwt) = connect(&app, &fake, "ada@example.com").await;
    let passes = fake.list_passes("ada@example.com");
    let before = syncs(&app, ada);
    // Slow lists, so the burst arrives while a pass runs.
    fake.set_list_delay(Duration::from_millis(1000));
    let id = fake.create_event("ada@example.com", timed("Burst", 2, 9));
    let channel = fake.active_channels("ada@example.com").remove(0);
    let sends = (0..50).map(|_| fake.notify_channel(&channel.id, "exists"));
    let statuses = futures_util::future::join_all(sends).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    wait_synced(&app, ada, before).await;
    assert!(meeting(&app, &jwt, &id).await.is_some());
    let used = fake.list_passes("ada@example.com") - passes;
    assert!((1..=2).contains(&used), "{used} list passes for one burst");
    assert_eq!(fake.max_concurrent_lists("ada@example.com"), 1, "never two syncs of one user at once");
    let n: i64 = app.db().value("SELECT COUNT(*) FROM meetings WHERE external_id = ?1", &[json!(&id)]);
    assert_eq!(n, 1);
}

#[tokio::test]
async fn pages_are_all_read_and_the_token_moves_only_with_the_last_one() {
    let fake = FakeGoogle::start().await;
    let app = google_app(&fake).await;
    fake.set_page_size(2);
    fake.add_account("ada@example.com", "Ada");
    for i in 0..5 {
        fake.create_event("ada@example.com", timed(&format!("Full {i}"), i + 1, 10));
    }
    let (ada, _jwt) = connect(&app, &fake, "ada@example.com").await;
    let n: i64 = app.db().value("SELECT COUNT(*) FROM meetings WHERE source = 'google'", &[]);
    assert_eq!(n, 5);
    assert!(logs_text().contains(&format!("google sync user {ada}: 5 created, 0 updated, 0 canceled (full, 3 pages)")));

    // Five changes, three pages; the second page fails (not retryable).
    let token_before = sync_token_of(&app, ada);
    let new: Vec<String> = (0..5).map(|i| fake.create_event("ada@example.com", timed(&format!("Inc {i}"), i + 10, 11))).collect();
    let lists = fake.list_log().len();
    fake.fail_after("list", 1, 400, "badRequest", 1);
    notify_and_sync(&app, &fake, "ada@example.com", ada).await;
    let made: Vec<bool> = new.iter().map(|id| meeting_id(&app, id).is_some()).collect();
    assert_eq!(made, vec![true, true, false, false, false], "the first page is committed");
    assert_eq!(sync_token_of(&app, ada), token_before, "no token without the last page");
    let changes_before = app.changes().len();

    // The next pass lists everything again from the old token: pages already
    // applied are silent, the rest is created, and the token moves.
    notify_and_sync(&app, &fake, "ada@example.com", ada).await;
    assert!(new.iter().all(|id| meeting_id(&app, id).is_some()));
    assert_eq!(app.changes().len(), changes_before + 3, "no change event for the replayed page");
    assert_ne!(sync_token_of(&app, ada), token_before);
    assert!(logs_text().contains(&format!("google sync user {ada}: 3 created, 0 updated, 0 canceled (incremental, 3 pages)")));
    let log = fake.list_log();
    assert!(log[lists..].iter().all(|c| c.sync_token && !c.time_min), "incremental passes send only the sync token");
}

#[tokio::test]
async fn a_dead_sync_token_means_one_full_sync_that_also_catches_deletions() {
    let fake = FakeGoogle::start().await;
    let app = google_app(&fake).await;
    fake.add_account("ada@example.com", "Ada");
    let keep = fake.create_event("ada@example.com", timed("Keep", 1, 9));
    let gone = fake.create_event("ada@example.com", timed("Gone", 2, 9));
    let (ada, _jwt) = connect(&app, &fake, "ada@example.com").await;
    let lists = fake.list_log().len();

    fake.invalidate_sync_tokens();
    fake.delete_event("ada@example.com", &gone);
    let added = fake.create_event("ada@example.com", timed("Added", 3, 9));
    notify_and_sync(&app, &fake, "ada@example.com", ada).await;

    assert_eq!(status_of(&app, &keep).as_deref(), Some("scheduled"));
    assert_eq!(status_of(&app, &gone).as_deref(), Some("canceled"), "a full sync cancels what Google no longer lists");
    assert_eq!(status_of(&app, &added).as_deref(), Some("scheduled"));
    let calls: Vec<(bool, bool, u16)> = fake.list_log()[lists..].iter().map(|c| (c.sync_token, c.time_min, c.status)).collect();
    assert_eq!(calls, vec![(true, false, 410), (false, true, 200)], "one 410, one full sync, no loop");

    // And the new token works for the next incremental sync.
    notify_and_sync(&app, &fake, "ada@example.com", ada).await;
    let last = fake.list_log().last().cloned().unwrap();
    assert!(last.sync_token && last.status == 200);
}

#[tokio::test]
async fn revoked_access_marks_the_user_for_reconnect_and_stops_syncing() {
    let fake = FakeGoogle::start().await;
    let app = google_app(&fake).await;
    let (ada, jwt) = connect(&app, &fake, "ada@example.com").await;
    let (_admin, admin_jwt) = app.add_user("root@example.com", "admin");
    fake.revoke("ada@example.com");
    fake.create_event("ada@example.com", timed("Unseen", 1, 9));
    notify_and_sync(&app, &fake, "ada@example.com", ada).await;

    let (_, me) = app.get("/api/me", &jwt).await;
    assert_eq!(me["google_needs_reconnect"], true);
    let (s, health) = app.get("/api/admin/health/google", &admin_jwt).await;
    assert_eq!(s, 200);
    assert_eq!(health["needs_reconnect"], json!([ada]));

    // No more calls to Google for this user.
    let (lists, tokens) = (fake.calls("list"), fake.calls("token"));
    notify_and_sync(&app, &fake, "ada@example.com", ada).await;
    assert_eq!((fake.calls("list"), fake.calls("token")), (lists, tokens));

    // Signing in again reconnects.
    let (url, cookie) = consent(&app, &fake, "ada@example.com", "/api/auth/google").await;
    assert_eq!(callback(&app, &url, Some(&cookie), false).await.status().as_u16(), 303);
    let (_, me) = app.get("/api/me", &jwt).await;
    assert_eq!(me["google_needs_reconnect"], false);
}

#[tokio::test]
async fn a_401_refreshes_the_access_token_once() {
    let fake = FakeGoogle::start().await;
    let app = google_app(&fake).await;
    let (ada, jwt) = connect(&app, &fake, "ada@example.com").await;
    let tokens = fake.calls("token");
    fake.expire_access_tokens("ada@example.com");
    let id = fake.create_event("ada@example.com", timed("After refresh", 1, 9));
    notify_and_sync(&app, &fake, "ada@example.com", ada).await;
    assert!(meeting(&app, &jwt, &id).await.is_some());
    assert_eq!(fake.calls("token"), tokens + 1, "one refresh");

    // Refused again after the refresh: the pass ends, no refresh loop.
    let lists = fake.calls("list");
    fake.fail_next("list", 401, "authError", 2);
    fake.create_event("ada@example.com", timed("Never", 2, 9));
    notify_and_sync(&app, &fake, "ada@example.com", ada).await;
    assert_eq!(fake.calls("token"), tokens + 2);
    assert_eq!(fake.calls("list"), lists + 2);
}

#[tokio::test]
async fn rate_limits_and_server_errors_are_retried_with_backoff() {
    let fake = FakeGoogle::start().await;
    let app = google_app(&fake).await;
    let (ada, jwt) = connect(&app, &fake, "ada@example.com").await;
    let lists = fake.list_log().len();
    fake.fail_next("list", 403, "rateLimitExceeded", 2);
    fake.fail_after("list", 2, 429, "rateLimitExceeded", 1);
    fake.fail_after("list", 3, 503, "backendError", 1);
    let id = fake.create_event("ada@example.com", timed("Patience", 1, 9));
    notify_and_sync(&app, &fake, "ada@example.com", ada).await;
    assert!(meeting(&app, &jwt, &id).await.is_some());
    let statuses: Vec<u16> = fake.list_log()[lists..].iter().map(|c| c.status).collect();
    assert_eq!(statuses, vec![403, 403, 429, 503, 200]);
}

// ---- notifications and channels ------------------------------------------

#[tokio::test]
async fn forged_notifications_are_refused_and_cause_no_sync() {
    let fake = FakeGoogle::start().await;
    let app = google_app(&fake).await;
    let (ada, _jwt) = connect(&app, &fake, "ada@example.com").await;
    let c = fake.active_channels("ada@example.com").remove(0);
    let address = app.url("/api/calendar/webhook");
    let passes = fake.list_passes("ada@example.com");
    let before = syncs(&app, ada);

    let unknown =
        fake.send_notification(&address, "no-such-channel", c.token.as_deref(), &c.resource_id, "exists", 9, c.expiration_ms).await;
    assert_eq!(unknown, 404);
    let wrong_token = fake.send_notification(&address, &c.id, Some("guessed"), &c.resource_id, "exists", 9, c.expiration_ms).await;
    assert_eq!(wrong_token, 403);
    let no_token = fake.send_notification(&address, &c.id, None, &c.resource_id, "exists", 9, c.expiration_ms).await;
    assert_eq!(no_token, 403);
    let wrong_resource = fake.send_notification(&address, &c.id, c.token.as_deref(), "res-other", "exists", 9, c.expiration_ms).await;
    assert_eq!(wrong_resource, 403);
    let r = app.http.post(&address).header("X-Goog-Channel-ID", "no-such-channel").send().await.unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "not_found");

    // A genuine one after them syncs once: the forged ones queued nothing.
    assert_eq!(fake.notify("ada@example.com", "exists").await, vec![200]);
    wait_synced(&app, ada, before).await;
    assert_eq!(fake.list_passes("ada@example.com"), passes + 1);
    assert_eq!(syncs(&app, ada), before + 1);
    let logs = logs_text();
    assert!(logs.contains("google notification refused: unknown channel no-such-channel"));
    assert!(logs.contains(&format!("google notification refused: wrong channel token for channel {}", c.id)));
    assert!(logs.contains(&format!("google notification refused: wrong resource id for channel {}", c.id)));
}

#[tokio::test]
async fn channel_setup_replaces_the_old_channel_and_delete_stops_it() {
    let fake = FakeGoogle::start().await;
    let app = google_app(&fake).await;
    let (ada, jwt) = connect(&app, &fake, "ada@example.com").await;
    let old = fake.active_channels("ada@example.com").remove(0);

    let (s, info) = app.post("/api/calendar/webhook/setup", &jwt, &json!({})).await;
    assert_eq!(s, 201, "{info}");
    assert_ne!(info["channel_id"], old.id.as_str());
    assert!(info["expiration"].is_string());
    assert!(info.get("token").is_none());
    let channels = fake.channels("ada@example.com");
    assert!(channels.iter().find(|c| c.id == old.id).unwrap().stopped, "the replaced channel is stopped at Google");
    let active = fake.active_channels("ada@example.com");
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].id, info["channel_id"].as_str().unwrap());
    let rows: Vec<(String, String)> =
        app.db().rows_as("SELECT channel_id, state FROM calendar_watch_channels WHERE user_id = ?1", &[json!(ada)]);
    assert_eq!(rows, vec![(active[0].id.clone(), "active".to_string())]);
    // The old channel is gone here too.
    assert_eq!(fake.notify_channel(&old.id, "exists").await, 404);
    assert_eq!(fake.notify("ada@example.com", "exists").await, vec![200]);

    let (s, _) = app.delete("/api/calendar/webhook", &jwt).await;
    assert_eq!(s, 204);
    assert!(fake.active_channels("ada@example.com").is_empty());
    let n: i64 = app.db().value("SELECT COUNT(*) FROM calendar_watch_channels", &[]);
    assert_eq!(n, 0);
    let (s, body) = app.delete("/api/calendar/webhook", &jwt).await;
    assert_eq!((s, body["error"].as_str()), (404, Some("not_found")));

    // Someone who never connected Google cannot set one up.
    let (_, bob_jwt) = app.add_user("bob@example.com", "user");
    let (s, body) = app.post("/api/calendar/webhook/setup", &bob_jwt, &json!({})).await;
    assert_eq!((s, body["error"].as_str()), (409, Some("conflict")));
    let (s, _) = app.post("/api/calendar/webhook/setup", "not-a-token", &json!({})).await;
    assert_eq!(s, 401);
}

#[tokio::test]
async fn status_pages_public_minimal_and_admin_detailed() {
    let fake = FakeGoogle::start().await;
    let app = google_app(&fake).await;
    let (ada, jwt) = connect(&app, &fake, "ada@example.com").await;
    let (_, admin_jwt) = app.add_user("root@example.com", "admin");
    notify_and_sync(&app, &fake, "ada@example.com", ada).await;

    let r = app.http.get(app.url("/api/calendar/webhook/test")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let body: Value = r.json().await.unwrap();
    let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert_eq!(keys, vec!["reachable", "google_configured", "last_notification_at"]);
    assert_eq!(body["google_configured"], true);
    eventually("the notification time", || {
        let t: Option<String> = app.db().value("SELECT MAX(last_notification_at) FROM google_sync_status", &[]);
        t
    })
    .await;

    let (s, _) = app.get("/api/admin/health/google", &jwt).await;
    assert_eq!(s, 403);
    let (s, h) = app.get("/api/admin/health/google", &admin_jwt).await;
    assert_eq!(s, 200);
    assert_eq!(h["configured"], true);
    assert_eq!(h["connected_users"], 1);
    assert_eq!(h["channels"][0]["user_id"], ada);
    assert!(h["channels"][0]["expiration"].is_string());
    let u = &h["users"][0];
    assert_eq!(u["user_id"], ada);
    assert_eq!(u["last_sync_outcome"], "ok");
    assert!(u["syncs"].as_i64().unwrap() >= 2);
    assert_eq!(syncgate::provider::health::admin_health(&app.app.store, syncgate::model::Provider::Google).await["connected_users"], 1);
}

#[tokio::test]
async fn without_client_credentials_google_is_off_and_says_so() {
    let app = spawn_app().await;
    let (_, jwt) = app.add_user("ada@example.com", "user");
    let r = app.http.get(app.url("/api/auth/google")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 503);
    let body: Value = r.json().await.unwrap();
    assert!(body["message"].as_str().unwrap().contains("not configured"), "{body}");
    let r = app.http.post(app.url("/api/calendar/webhook")).header("X-Goog-Channel-ID", "x").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 503);
    let (s, _) = app.post("/api/calendar/webhook/setup", &jwt, &json!({})).await;
    assert_eq!(s, 503);
    let r = app.http.get(app.url("/api/calendar/webhook/test")).send().await.unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["google_configured"], false);
    // Everything else works.
    let (s, _) = app.get("/api/meetings", &jwt).await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn google_tokens_never_appear_in_logs_or_responses() {
    let fake = FakeGoogle::start().await;
    let app = google_app(&fake).await;
    let (ada, jwt) = connect(&app, &fake, "ada@example.com").await;
    let (_, admin_jwt) = app.add_user("root@example.com", "admin");
    // Exercise refreshes, 401s, 410s and rate limits so their paths log too.
    fake.expire_access_tokens("ada@example.com");
    fake.create_event("ada@example.com", timed("Secret-free", 1, 9));
    notify_and_sync(&app, &fake, "ada@example.com", ada).await;
    fake.invalidate_sync_tokens();
    fake.fail_next("list", 429, "rateLimitExceeded", 1);
    notify_and_sync(&app, &fake, "ada@example.com", ada).await;

    let mut bodies = Vec::new();
    for path in ["/api/me", "/api/meetings", "/api/calendar/webhook/test"] {
        bodies.push(app.get(path, &jwt).await.1.to_string());
    }
    bodies.push(app.get("/api/admin/health/google", &admin_jwt).await.1.to_string());
    bodies.push(app.post("/api/calendar/webhook/setup", &jwt, &json!({})).await.1.to_string());
    let channel_token: String = app.db().value("SELECT token FROM calendar_watch_channels WHERE user_id = ?1", &[json!(ada)]);

    let logs = logs_text();
    assert!(logs.contains(&format!("google sync user {ada}:")), "the capture works");
    let secrets = fake.issued_secrets();
    assert!(secrets.len() >= 4);
    for s in secrets.iter().chain([&channel_token]) {
        assert!(!logs.contains(s.as_str()), "a Google token is in the logs");
        for b in &bodies {
            assert!(!b.contains(s.as_str()), "a Google token is in a response: {b}");
        }
    }
}
