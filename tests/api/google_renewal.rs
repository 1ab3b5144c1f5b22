//! Google Calendar II against the fake Google: channels renewed before they
//! expire (with a push on the old channel during the overlap honored),
//! failed renewals retried and shown to admins, catch-up after a restart,
//! the safety-net sync, one meeting per Calendly booking whichever side
//! arrives first, and what an idle connected user costs in Google calls.
//! Durations are shortened (seconds instead of days); nothing here asserts
//! how long something took, only that it happens (waiting up to 10 s or so).

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use syncgate::calendly::signature;
use syncgate::config::Config;
use syncgate::duration::Dur;

use crate::fake_google::{location, FakeChannel, FakeGoogle};
use crate::helpers::{decode, spawn_app_with, start, TestApp};

// ---- helpers ---------------------------------------------------------------

/// Poll `f` until it gives a value (`secs` at most).
async fn within<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Waits for something that happens within a second or two; the ceiling is
/// generous because CI's two cores are shared with the rest of the suite.
pub(crate) async fn eventually<T>(what: &str, f: impl FnMut() -> Option<T>) -> T {
    within(30, what, f).await
}

fn secs(s: u64) -> Dur {
    Dur::secs(s)
}

/// Google configured against the fake; no safety net unless a test wants one.
pub(crate) fn google_config(fake: &FakeGoogle, c: &mut Config) {
    fake.configure(c);
    c.google.safety_net_interval = Dur::secs(0);
}

/// An RFC 3339 time `days` from now at `hour`:00 UTC.
pub(crate) fn at(days: i64, hour: u8) -> String {
    let d = (time::OffsetDateTime::now_utc() + time::Duration::days(days)).date();
    format!("{d}T{hour:02}:00:00Z")
}

fn timed(summary: &str, days: i64, hour: u8) -> Value {
    json!({
        "summary": summary,
        "start": {"dateTime": at(days, hour), "timeZone": "UTC"},
        "end": {"dateTime": at(days, hour + 1), "timeZone": "UTC"},
    })
}

fn sync_token_of(app: &TestApp, user: i64) -> Option<String> {
    app.db().value("SELECT MAX(sync_token) FROM google_calendars WHERE user_id = ?1 AND selected", &[json!(user)])
}

/// A `google_sync_status` counter of a user (0 before the first row).
fn status_count(app: &TestApp, user: i64, column: &str) -> i64 {
    app.db().value_opt(&format!("SELECT {column} FROM google_sync_status WHERE user_id = ?1"), &[json!(user)]).unwrap_or(0)
}

/// Wait until a pass that started after `before` finished and nothing is queued.
async fn wait_synced(app: &TestApp, user: i64, before: i64) {
    eventually("a finished sync pass", || (status_count(app, user, "syncs") > before && !app.app.google.sync_pending(user)).then_some(()))
        .await;
}

/// Google pushes a change for `email`; wait for the sync it causes.
async fn notify_and_sync(app: &TestApp, fake: &FakeGoogle, email: &str, user: i64) {
    let before = status_count(app, user, "syncs");
    assert_eq!(fake.notify(email, "exists").await, vec![200]);
    wait_synced(app, user, before).await;
}

/// The user's active channel row: (channel id, resource id, expiration, webhook url).
pub(crate) fn active_row(app: &TestApp, user: i64) -> Option<(String, Option<String>, Option<String>, String)> {
    app.db()
        .row_opt(
            "SELECT channel_id, resource_id, expiration, webhook_url FROM calendar_watch_channels WHERE user_id = ?1 AND state = 'active'",
            &[json!(user)],
        )
        .map(|row| serde_json::from_value(Value::Array(row)).expect("an active channel row"))
}

fn channel_rows(app: &TestApp, user: i64) -> Vec<(String, String)> {
    app.db().rows_as("SELECT channel_id, state FROM calendar_watch_channels WHERE user_id = ?1 ORDER BY id", &[json!(user)])
}

/// Sign `email` in with Google as an existing user; waits for the first full
/// sync and the push channel. Returns (user id, syncgate JWT).
pub(crate) async fn connect(app: &TestApp, fake: &FakeGoogle, email: &str) -> (i64, String) {
    fake.add_account(email, "Ada Adviser");
    let (id, _) = app.add_user(email, "user");
    fake.consent_as(email);
    let r = crate::fake_google::sign_in(&app.http, &app.base).await;
    assert_eq!(r.status().as_u16(), 303);
    let jwt = location(&r).strip_prefix("/#access_token=").expect("lands on / with the token in the fragment").to_string();
    eventually("the first full sync and the push channel", || {
        let registered = active_row(app, id).is_some_and(|c| c.1.is_some());
        (sync_token_of(app, id).is_some() && registered && !app.app.google.sync_pending(id)).then_some(())
    })
    .await;
    (id, jwt)
}

/// (id, title, source, google_event_id) of every meeting of the user.
fn meetings_of(app: &TestApp, user: i64) -> Vec<(i64, String, String, Option<String>)> {
    app.db().rows_as("SELECT id, title, source, google_event_id FROM meetings WHERE user_id = ?1 ORDER BY id", &[json!(user)])
}

fn title_of(app: &TestApp, event_id: &str) -> Option<String> {
    app.db().value_opt("SELECT title FROM meetings WHERE source = 'google' AND external_id = ?1", &[json!(event_id)])
}

fn status_of(app: &TestApp, event_id: &str) -> Option<String> {
    app.db().value_opt("SELECT status FROM meetings WHERE source = 'google' AND external_id = ?1", &[json!(event_id)])
}

/// The admin report's entry for one user.
async fn admin_entry(app: &TestApp, admin: &str, user: i64) -> (Value, Value) {
    let (s, report) = app.get("/api/admin/health/google", admin).await;
    assert_eq!(s, 200, "{report}");
    let entry = report["users"].as_array().unwrap().iter().find(|u| u["user_id"] == user).cloned().unwrap_or(Value::Null);
    (report, entry)
}

pub(crate) fn fake_channel(fake: &FakeGoogle, email: &str, id: &str) -> FakeChannel {
    fake.channels(email).into_iter().find(|c| c.id == id).expect("the fake knows the channel")
}

// ---- renewal ---------------------------------------------------------------

#[tokio::test]
async fn a_channel_is_renewed_before_it_expires_and_a_push_on_the_old_one_during_the_overlap_counts() {
    let fake = FakeGoogle::start().await;
    let app = spawn_app_with(|c| {
        google_config(&fake, c);
        // Renewed 6 s in; its successor is renewed 6 s later, long after the checks.
        c.google.channel_ttl = secs(12);
        c.google.renew_before = secs(6);
    })
    .await;
    let (admin, _) = app.add_user("root@example.com", "admin");
    let admin = app.token_for(admin, "admin", 3600);
    fake.add_account("ada@example.com", "Ada");
    let ev = fake.create_event("ada@example.com", timed("Plan", 2, 10));
    let (uid, _) = connect(&app, &fake, "ada@example.com").await;
    assert_eq!(title_of(&app, &ev).as_deref(), Some("Plan"));
    let (first, _, _, _) = active_row(&app, uid).unwrap();
    let first_at_google = fake_channel(&fake, "ada@example.com", &first);

    // A change nobody has announced yet; Google pushes it on the old channel
    // just as syncgate stops that channel, i.e. while both channels are live.
    fake.update_event("ada@example.com", &ev, json!({"summary": "Plan (moved room)"}));
    fake.notify_before_stop("exists");

    let old = eventually("the old channel to be stopped", || {
        let c = fake_channel(&fake, "ada@example.com", &first);
        c.stopped.then_some(c)
    })
    .await;
    assert_eq!(fake.before_stop_answers(), vec![200], "the push on the old channel during the overlap was accepted");
    eventually("the pushed change to be synced", || (title_of(&app, &ev).as_deref() == Some("Plan (moved room)")).then_some(())).await;

    // The new channel was registered before the old one expired, and the
    // old one was stopped before it expired too: no moment without a channel.
    let live = fake.active_channels("ada@example.com");
    assert_eq!(live.len(), 1, "exactly one live channel at Google: {live:?}");
    let new = &live[0];
    assert_ne!(new.id, first);
    assert!(new.created_ms < first_at_google.expiration_ms, "renewed before expiry");
    assert!(old.stopped_ms.unwrap() < old.expiration_ms, "the old channel was stopped, not left to lapse");
    assert!(new.expiration_ms > old.expiration_ms);
    // syncgate keeps only the new channel, with what Google returned.
    let (cid, resource, _, _) = active_row(&app, uid).unwrap();
    assert_eq!((cid.as_str(), resource.as_deref()), (new.id.as_str(), Some(new.resource_id.as_str())));
    eventually("only the new channel kept", || (channel_rows(&app, uid) == vec![(new.id.clone(), "active".to_string())]).then_some(()))
        .await;

    // After the overlap the old channel is unknown: a late push on it is refused.
    let late = fake.send_notification(&old.address, &old.id, old.token.as_deref(), &old.resource_id, "exists", 99, old.expiration_ms).await;
    assert_eq!(late, 404);

    // Admins see the renewal (recorded just after the old channel is stopped).
    let (report, entry) = crate::helpers::within(10, "the renewal in the admin report", || async {
        let (report, entry) = admin_entry(&app, &admin, uid).await;
        (entry["renewals"].as_i64().unwrap_or(0) >= 1).then_some((report, entry))
    })
    .await;
    assert_eq!((report["channel_ttl"].as_str(), report["renew_before"].as_str()), (Some("12s"), Some("6s")));
    assert_eq!(entry["renewal_failures"], 0, "{entry}");
    assert!(entry["last_renewal_at"].is_string(), "{entry}");
}

#[tokio::test]
async fn a_failed_renewal_is_retried_with_backoff_and_admins_see_it() {
    let fake = FakeGoogle::start().await;
    let app = spawn_app_with(|c| {
        google_config(&fake, c);
        c.google.channel_ttl = secs(6);
        c.google.renew_before = secs(3);
    })
    .await;
    let (admin, _) = app.add_user("root@example.com", "admin");
    let admin = app.token_for(admin, "admin", 3600);
    let (uid, _) = connect(&app, &fake, "ada@example.com").await;
    let (first, _, _, _) = active_row(&app, uid).unwrap();
    let watches = fake.calls("watch");
    // Google refuses the next three registrations.
    fake.fail_next("watch", 403, "forbidden", 3);

    let failing = crate::helpers::within(15, "a renewal failure shown to admins", || async {
        let (report, entry) = admin_entry(&app, &admin, uid).await;
        (entry["renewal_failures"].as_i64().unwrap_or(0) >= 1).then_some((report, entry))
    })
    .await;
    let (report, entry) = failing;
    assert_eq!(report["renewal_failing"], json!([uid]), "{report}");
    let error = entry["last_renewal_error"].as_str().unwrap_or_default();
    assert!(error.contains("403"), "the error says what Google answered: {entry}");
    assert!(entry["next_renewal_attempt_at"].is_string(), "and when the next try is: {entry}");
    assert!(!report.to_string().contains("ya29."), "no token in the report");

    // The retries go on until Google accepts; then the old channel is stopped
    // and the failure streak is over (the last error stays visible).
    let (report, entry) = crate::helpers::within(20, "a renewal that finally works", || async {
        let (report, entry) = admin_entry(&app, &admin, uid).await;
        (entry["renewal_failures"] == 0 && entry["renewals"].as_i64().unwrap_or(0) >= 1).then_some((report, entry))
    })
    .await;
    assert_eq!(report["renewal_failing"], json!([]));
    assert!(entry["last_renewal_error"].as_str().unwrap_or_default().contains("403"));
    assert_eq!(entry["next_renewal_attempt_at"], Value::Null);
    assert!(fake.calls("watch") >= watches + 4, "three refused registrations, then one that worked");
    let live = fake.active_channels("ada@example.com");
    assert_eq!(live.len(), 1, "{live:?}");
    assert_ne!(live[0].id, first);
    assert!(fake_channel(&fake, "ada@example.com", &first).stopped);
}

// ---- catch-up on start -----------------------------------------------------

/// Stop the app and give back its config pinned to the same address, so the
/// webhook URL (derived from it) stays the same across the restart.
async fn stop_keeping_address(app: TestApp) -> (Config, tempfile::TempDir) {
    let addr = app.addr;
    let (mut config, dir) = app.stop().await;
    config.server.bind = addr.to_string();
    (config, dir)
}

#[tokio::test]
async fn after_a_restart_changes_made_while_down_appear_without_a_notification() {
    let fake = FakeGoogle::start().await;
    let app = spawn_app_with(|c| google_config(&fake, c)).await;
    fake.add_account("ada@example.com", "Ada");
    let kept = fake.create_event("ada@example.com", timed("Kept", 2, 9));
    let moved = fake.create_event("ada@example.com", timed("Moved", 3, 9));
    let dropped = fake.create_event("ada@example.com", timed("Dropped", 4, 9));
    let (uid, _) = connect(&app, &fake, "ada@example.com").await;
    assert_eq!(meetings_of(&app, uid).len(), 3);
    let (channel, _, _, _) = active_row(&app, uid).unwrap();
    let (watches, lists) = (fake.calls("watch"), fake.list_log().len());

    let (config, dir) = stop_keeping_address(app).await;
    // While syncgate is down: nobody is there to be told.
    fake.update_event("ada@example.com", &moved, json!({"summary": "Moved to Friday"}));
    fake.delete_event("ada@example.com", &dropped);
    let added = fake.create_event("ada@example.com", timed("Added while down", 5, 9));

    let app = start(config, dir).await;
    eventually("the changes made while down", || {
        let done = title_of(&app, &moved).as_deref() == Some("Moved to Friday")
            && status_of(&app, &dropped).as_deref() == Some("canceled")
            && title_of(&app, &added).is_some();
        done.then_some(())
    })
    .await;
    assert_eq!(title_of(&app, &kept).as_deref(), Some("Kept"));
    // One incremental list (the sync token survived the restart), no full sync.
    let after: Vec<_> = fake.list_log().into_iter().skip(lists).collect();
    assert!(!after.is_empty() && after.iter().all(|c| c.sync_token && !c.time_min), "{after:?}");
    // The channel was still good: kept, not re-registered.
    assert_eq!(fake.calls("watch"), watches);
    assert_eq!(active_row(&app, uid).unwrap().0, channel);

    // And pushes keep working on it.
    fake.update_event("ada@example.com", &kept, json!({"summary": "Kept, pushed"}));
    assert_eq!(fake.notify("ada@example.com", "exists").await, vec![200]);
    eventually("the pushed change", || (title_of(&app, &kept).as_deref() == Some("Kept, pushed")).then_some(())).await;
}

#[tokio::test]
async fn on_start_missing_expired_and_left_over_channels_are_put_right() {
    let fake = FakeGoogle::start().await;
    let app = spawn_app_with(|c| google_config(&fake, c)).await;
    let (a, _) = connect(&app, &fake, "a@example.com").await;
    let (b, _) = connect(&app, &fake, "b@example.com").await;
    let (c, _) = connect(&app, &fake, "c@example.com").await;
    let (a_old, _, _, _) = active_row(&app, a).unwrap();
    let (b_old, _, _, _) = active_row(&app, b).unwrap();
    let (c_old, _, _, _) = active_row(&app, c).unwrap();
    let (config, dir) = stop_keeping_address(app).await;
    {
        // As if syncgate had died in the middle of renewing A's channel (old
        // one already `retiring`, new one not registered) ...
        let db = crate::helpers::open_db(&config);
        db.execute("UPDATE calendar_watch_channels SET state = 'retiring' WHERE channel_id = ?1", &[json!(&a_old)]);
        // ... and had been down past the expiry of B's channel.
        db.execute("UPDATE calendar_watch_channels SET expiration = '2020-01-01T00:00:00.000Z' WHERE channel_id = ?1", &[json!(&b_old)]);
    }
    let app = start(config, dir).await;

    for (user, email, old) in [(a, "a@example.com", &a_old), (b, "b@example.com", &b_old)] {
        let new = eventually("a new channel", || {
            active_row(&app, user).filter(|r| &r.0 != old && r.1.is_some() && channel_rows(&app, user).len() == 1)
        })
        .await;
        let live = fake.active_channels(email);
        assert_eq!(live.len(), 1, "{email}: {live:?}");
        assert_eq!(live[0].id, new.0);
        assert_eq!(live[0].address, new.3);
        assert!(fake_channel(&fake, email, old).stopped, "{email}: the replaced channel was stopped at Google");
    }
    // C's channel was fine and is kept.
    eventually("C's catch-up sync", || (status_count(&app, c, "syncs") >= 2 && !app.app.google.sync_pending(c)).then_some(())).await;
    assert_eq!(active_row(&app, c).unwrap().0, c_old);
    assert_eq!(fake.active_channels("c@example.com").len(), 1);
}

#[tokio::test]
async fn a_new_webhook_address_gets_new_channels_on_start() {
    let fake = FakeGoogle::start().await;
    let app = spawn_app_with(|c| google_config(&fake, c)).await;
    fake.add_account("ada@example.com", "Ada");
    let ev = fake.create_event("ada@example.com", timed("Plan", 2, 10));
    let (uid, _) = connect(&app, &fake, "ada@example.com").await;
    let (old, _, _, old_url) = active_row(&app, uid).unwrap();
    // Restart on another port: the public URL, hence the webhook URL, changes.
    let (config, dir) = app.stop().await;
    let app = start(config, dir).await;
    let new = eventually("a channel at the new address", || active_row(&app, uid).filter(|r| r.0 != old && r.1.is_some())).await;
    assert_ne!(new.3, old_url);
    assert_eq!(new.3, app.app.google.webhook_url());
    eventually("the old channel stopped", || fake_channel(&fake, "ada@example.com", &old).stopped.then_some(())).await;
    fake.update_event("ada@example.com", &ev, json!({"summary": "Plan B"}));
    assert_eq!(fake.notify("ada@example.com", "exists").await, vec![200], "Google pushes to the new address");
    eventually("the pushed change", || (title_of(&app, &ev).as_deref() == Some("Plan B")).then_some(())).await;
}

// ---- safety net ------------------------------------------------------------

#[tokio::test]
async fn the_safety_net_sync_brings_changes_no_notification_announced_and_counts_them() {
    let fake = FakeGoogle::start().await;
    let app = spawn_app_with(|c| {
        google_config(&fake, c);
        c.google.safety_net_interval = secs(1);
    })
    .await;
    let (admin, _) = app.add_user("root@example.com", "admin");
    let admin = app.token_for(admin, "admin", 3600);
    fake.add_account("ada@example.com", "Ada");
    let ev = fake.create_event("ada@example.com", timed("Plan", 2, 10));
    let (uid, _) = connect(&app, &fake, "ada@example.com").await;

    // Google changes the event and never says so.
    fake.update_event("ada@example.com", &ev, json!({"summary": "Changed, never pushed"}));
    eventually("the safety net to find the change", || (title_of(&app, &ev).as_deref() == Some("Changed, never pushed")).then_some(()))
        .await;
    let (report, entry) = crate::helpers::within(30, "the safety net's find counted", || async {
        let (report, entry) = admin_entry(&app, &admin, uid).await;
        (entry["safety_net_changes"].as_i64().unwrap_or(0) >= 1).then_some((report, entry))
    })
    .await;
    assert!(entry["safety_net_syncs"].as_i64().unwrap() >= 1, "{entry}");
    assert!(entry["last_safety_net_changes_at"].is_string(), "{entry}");
    assert_eq!(report["push_gap_suspected"], json!([uid]), "a change no push announced: {report}");
    let metrics = crate::metrics::scrape(&app, None).await;
    assert!(metrics.get("syncgate_google_syncs_total{kind=safety_net,outcome=ok}").is_some_and(|n| *n >= 1.0), "{metrics:?}");
    assert!(metrics.get("syncgate_google_api_calls_total{endpoint=events_list,status=200}").is_some_and(|n| *n >= 1.0), "{metrics:?}");

    // A pushed change is not counted as a safety-net find.
    let found = status_count(&app, uid, "safety_net_changes");
    let before = status_count(&app, uid, "syncs");
    fake.update_event("ada@example.com", &ev, json!({"summary": "Pushed"}));
    assert_eq!(fake.notify("ada@example.com", "exists").await, vec![200]);
    wait_synced(&app, uid, before).await;
    eventually("the pushed change", || (title_of(&app, &ev).as_deref() == Some("Pushed")).then_some(())).await;
    let more = status_count(&app, uid, "safety_net_changes");
    assert!(more == found || more == found + 1, "at most a safety-net pass racing the push may count it");
}

/// What an idle connected user costs in Google API calls per day, with the
/// default settings (`safety_net_interval` 6h, `channel_ttl` 7d,
/// `renew_before` 1d; Google's access tokens last 1h):
///
/// - safety net: 24h / 6h = 4 incremental syncs a day, each 1 `events.list`
///   (one page: nothing changed) + at most 1 token refresh (the access token
///   has expired since the last sync, 6h > 1h) = 2 calls → 8;
/// - renewal: one per 7d − 1d = 6 days, i.e. 1/6 a day, each 1 `watch` + 1
///   `channels.stop` + at most 1 token refresh = 3 calls → 0.5;
/// - nothing else (no notifications means no other syncs).
///
/// Total: about 8.5 calls a day (plus one bounded `events.list` a day since
/// the sync window moves forward with time, `google.window_step`; the
/// two-calendar measurement is in `google_calendars.rs`). The test runs the same machinery with
/// intervals scaled down (safety net 1s, channels of 4s renewed 2s before
/// expiry, access tokens usable for 1s) and checks each operation costs no
/// more than that: every safety-net sync is one incremental `events.list`,
/// every renewal one `watch` and one `stop`, and at most one token refresh
/// per operation. It then scales the measured costs back to the defaults
/// and asserts at most 10 calls a day.
#[tokio::test]
async fn an_idle_connected_user_costs_a_handful_of_google_calls_a_day() {
    let fake = FakeGoogle::start().await;
    // Google's 3599 s, scaled: usable for 1 s past syncgate's 60 s refresh margin.
    fake.set_access_token_lifetime(61);
    let app = spawn_app_with(|c| {
        google_config(&fake, c);
        c.google.safety_net_interval = secs(1);
        c.google.channel_ttl = secs(4);
        c.google.renew_before = secs(2);
    })
    .await;
    fake.add_account("ada@example.com", "Ada");
    fake.create_event("ada@example.com", timed("Plan", 2, 10));
    let (uid, _) = connect(&app, &fake, "ada@example.com").await;
    let calls = |f: &FakeGoogle| (f.calls("list"), f.calls("token"), f.calls("watch"), f.calls("stop"));
    let base = calls(&fake);
    let base_log = fake.list_log().len();
    let (base_syncs, base_renewals) = (status_count(&app, uid, "safety_net_syncs"), status_count(&app, uid, "renewals"));

    within(30, "several safety-net syncs and renewals", || {
        let s = status_count(&app, uid, "safety_net_syncs") - base_syncs;
        let r = status_count(&app, uid, "renewals") - base_renewals;
        (s >= 6 && r >= 2).then_some(())
    })
    .await;
    // Stop first, so calls and counters are read at rest. A pass or renewal
    // cut short by the shutdown may have made a call it never counted: one
    // call of slack per kind.
    let (config, _dir) = app.stop().await;
    let end = calls(&fake);
    let db = crate::helpers::open_db(&config);
    let counter = |column: &str| -> f64 {
        let n: i64 = db.value(&format!("SELECT {column} FROM google_sync_status WHERE user_id = ?1"), &[json!(uid)]);
        n as f64
    };
    let syncs = counter("safety_net_syncs") - base_syncs as f64;
    let renewals = counter("renewals") - base_renewals as f64;
    let log: Vec<_> = fake.list_log().into_iter().skip(base_log).collect();
    let lists = (end.0 - base.0) as f64;
    let tokens = (end.1 - base.1) as f64;
    let watches = (end.2 - base.2) as f64;
    let stops = (end.3 - base.3) as f64;
    assert!(log.iter().all(|c| c.sync_token && !c.page_token && !c.time_min && c.status == 200), "incremental, one page: {log:?}");
    assert!(lists <= syncs + 1.0, "one events.list per safety-net sync: {lists} lists for {syncs} syncs");
    assert!(watches <= renewals + 1.0 && stops <= renewals + 1.0, "one watch and one stop per renewal: {watches}/{stops} for {renewals}");
    assert!(tokens <= syncs + renewals + 1.0, "at most one refresh per operation: {tokens} for {syncs} + {renewals}");

    // Scaled back to the defaults.
    let per_sync = lists / syncs + 1.0;
    let per_renewal = (watches + stops) / renewals + 1.0;
    let per_day = (24.0 / 6.0) * per_sync + (1.0 / 6.0) * per_renewal;
    eprintln!(
        "idle user: {syncs} safety-net syncs, {renewals} renewals -> {lists} lists, {tokens} token calls, {watches} watches, {stops} stops; \
         at the defaults {per_day:.1} calls a day"
    );
    assert!(per_day <= 10.0, "an idle user costs {per_day:.1} Google calls a day");
}

// ---- one meeting per booking -------------------------------------------------

pub(crate) const CALENDLY_KEY: &str = "calendly-signing-key-for-the-google-tests-01";

/// An `invitee.created` delivery as Calendly documents it: invitee `invitee`
/// (`email`) books scheduled event `event` at `start` with the adviser
/// `host`; `google_event_id` is `calendar_event.external_id` (None: Calendly
/// reported no calendar event).
pub(crate) fn booking(host: &str, event: &str, invitee: &str, email: &str, start: &str, end: &str, google_event_id: Option<&str>) -> Value {
    let ev_uri = format!("https://api.calendly.com/scheduled_events/{event}");
    json!({
        "event": "invitee.created",
        "created_at": "2026-11-23T17:54:22.000000Z",
        "created_by": "https://api.calendly.com/users/HOSTAAAAAAAAAAAA",
        "payload": {
            "uri": format!("{ev_uri}/invitees/{invitee}"),
            "email": email,
            "name": "Client Person",
            "status": "active",
            "timezone": "Europe/Berlin",
            "rescheduled": false,
            "old_invitee": null,
            "new_invitee": null,
            "event": ev_uri,
            "cancel_url": format!("https://calendly.com/cancellations/{invitee}"),
            "reschedule_url": format!("https://calendly.com/reschedulings/{invitee}"),
            "questions_and_answers": [],
            "tracking": {"utm_source": null},
            "cancellation": null,
            "scheduled_event": {
                "uri": ev_uri,
                "name": "Financial review (30 min)",
                "status": "active",
                "start_time": start,
                "end_time": end,
                "event_type": "https://api.calendly.com/event_types/ETAAAAAAAAAAAAAA",
                "location": {"type": "google_conference", "join_url": "https://meet.google.com/abc-defg-hij"},
                "event_memberships": [{"user": "https://api.calendly.com/users/HOSTAAAAAAAAAAAA", "user_email": host, "user_name": "Ada Adviser"}],
                "calendar_event": google_event_id.map(|id| json!({"kind": "google", "external_id": id})),
            }
        }
    })
}

/// Post a delivery signed as Calendly signs it; it must be accepted.
pub(crate) async fn deliver(app: &TestApp, body: &Value) {
    let raw = serde_json::to_vec(body).unwrap();
    let header = signature::sign(CALENDLY_KEY, syncgate::auth::unix_now(), &raw);
    let r = app
        .http
        .post(app.url("/api/calendly/webhook"))
        .header("content-type", "application/json")
        .header("Calendly-Webhook-Signature", header)
        .body(raw)
        .send()
        .await
        .unwrap();
    let (status, v) = decode(r).await;
    assert_eq!((status, v["outcome"].as_str()), (200, Some("accepted")), "{v}");
}

/// The Google event Calendly writes for a booking: the adviser and the invitee attend.
fn google_copy(id: &str, adviser: &str, invitee_email: &str, start: &str, end: &str) -> Value {
    json!({
        "id": id,
        "summary": "Financial review (30 min) between Ada Adviser and Client Person",
        "start": {"dateTime": start, "timeZone": "Europe/Berlin"},
        "end": {"dateTime": end, "timeZone": "Europe/Berlin"},
        "attendees": [
            {"email": adviser, "self": true, "responseStatus": "accepted"},
            {"email": invitee_email, "responseStatus": "accepted"}
        ],
    })
}

#[tokio::test]
async fn a_calendly_booking_and_its_google_copy_are_one_meeting_whichever_arrives_first() {
    let fake = FakeGoogle::start().await;
    let app = spawn_app_with(|c| {
        google_config(&fake, c);
        c.calendly.signing_keys = vec![CALENDLY_KEY.into()];
    })
    .await;
    let adviser = "ada@example.com";
    let (uid, jwt) = connect(&app, &fake, adviser).await;

    // (case, Calendly first?, with calendar_event.external_id?)
    let cases = [("one", true, true), ("two", false, true), ("three", true, false), ("four", false, false)];
    for (i, (name, calendly_first, with_id)) in cases.into_iter().enumerate() {
        let (start, end) = (at(3 + i as i64, 10), format!("{}T10:30:00Z", &at(3 + i as i64, 10)[..10]));
        let gid = format!("gbook{name}");
        let invitee_email = format!("client.{name}@example.com");
        let delivery = booking(
            adviser,
            &format!("EV{name}AAAAAAAAAAA"),
            &format!("IN{name}AAAAAAAAAAA"),
            &invitee_email,
            &start,
            &end,
            with_id.then_some(gid.as_str()),
        );
        let google = google_copy(&gid, adviser, &invitee_email, &start, &end);
        if calendly_first {
            deliver(&app, &delivery).await;
            fake.create_event(adviser, google);
            notify_and_sync(&app, &fake, adviser, uid).await;
        } else {
            fake.create_event(adviser, google);
            notify_and_sync(&app, &fake, adviser, uid).await;
            let m = meetings_of(&app, uid).into_iter().find(|m| m.3.as_deref() == Some(gid.as_str()));
            assert_eq!(m.map(|m| m.2).as_deref(), Some("google"), "case {name}: first a Google meeting");
            deliver(&app, &delivery).await;
        }
        // Later edits in Google do not make a second meeting either.
        fake.update_event(adviser, &gid, json!({"summary": "Edited in Google", "location": "Room 2"}));
        notify_and_sync(&app, &fake, adviser, uid).await;

        let of_booking: Vec<_> = meetings_of(&app, uid).into_iter().filter(|m| m.3.as_deref() == Some(gid.as_str())).collect();
        assert_eq!(of_booking.len(), 1, "case {name}: one meeting per booking: {of_booking:?}");
        let (id, title, source, _) = &of_booking[0];
        assert_eq!(source, "calendly", "case {name}");
        assert_eq!(title, "Financial review (30 min)", "case {name}: Calendly owns the booking's fields");
        let (s, m) = app.get(&format!("/api/meetings/{id}"), &jwt).await;
        assert_eq!(s, 200);
        assert_eq!(m["external_id"], format!("https://api.calendly.com/scheduled_events/EV{name}AAAAAAAAAAA"), "case {name}");
        assert_eq!(m["google_event_id"], gid.as_str(), "case {name}");
    }
    // Four bookings, four meetings, none ever deleted: a Google meeting that
    // came first was turned into the Calendly one by an UPDATE.
    let all = meetings_of(&app, uid);
    assert_eq!(all.len(), 4, "{all:?}");
    let ops: Vec<(String, String)> = app.changes().into_iter().filter(|c| c.1 == "meetings").map(|c| (c.2, c.3.to_string())).collect();
    assert_eq!(ops.iter().filter(|o| o.0 == "INSERT").count(), 4, "{ops:?}");
    assert!(!ops.iter().any(|o| o.0 == "DELETE"), "{ops:?}");
}
