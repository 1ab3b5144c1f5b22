//! The webhook health monitor: each alert is raised once and cleared once,
//! POSTed to a local Slack-style receiver (retried when it fails), logged,
//! and listed in `/api/admin/health`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use warp::Filter;

use crate::helpers::spawn_app_with;
use syncgate::duration::Dur;

/// A local receiver that records every POSTed `text`; it fails the first
/// `fail_first` attempts with 500 so retries are exercised.
pub(crate) async fn receiver(fail_first: usize) -> (String, Arc<Mutex<Vec<String>>>) {
    let got: Arc<Mutex<Vec<String>>> = Arc::default();
    let attempts = Arc::new(Mutex::new(0usize));
    let g = got.clone();
    let route = warp::post().and(warp::body::json()).map(move |body: Value| {
        let mut n = attempts.lock().unwrap();
        *n += 1;
        if *n <= fail_first {
            return warp::reply::with_status("try later", warp::http::StatusCode::INTERNAL_SERVER_ERROR);
        }
        g.lock().unwrap().push(body["text"].as_str().unwrap_or_default().to_string());
        warp::reply::with_status("ok", warp::http::StatusCode::OK)
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(warp::serve(route).incoming(listener).run());
    (format!("http://{addr}/hook"), got)
}

async fn wait_for(got: &Arc<Mutex<Vec<String>>>, pred: impl Fn(&[String]) -> bool, what: &str) {
    for _ in 0..200 {
        if pred(&got.lock().unwrap()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}: {:?}", got.lock().unwrap());
}

fn count(got: &[String], prefix: &str, needle: &str) -> usize {
    got.iter().filter(|t| t.starts_with(prefix) && t.contains(needle)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_alert_is_raised_once_and_cleared_once() {
    let (url, got) = receiver(1).await;
    let app = spawn_app_with(|c| {
        c.alerts.webhook_url = url.clone();
        c.alerts.check_interval = Dur::millis(100);
        c.alerts.calendly_rejected_threshold = 2;
        c.alerts.calendly_rejected_window = Dur::secs(3);
        c.calendly.signing_keys = vec!["a-signing-key".into()];
    })
    .await;
    let (uid, user_token) = app.add_user("ann@example.com", "user");
    let (_, admin) = app.add_user("root@example.com", "admin");
    let db = app.db();

    // A user whose Google access was revoked.
    db.execute("UPDATE users SET google_needs_reconnect = ?2 WHERE id = ?1", &[json!(uid), json!(true)]);
    wait_for(&got, |g| count(g, "syncgate alert:", "must reconnect Google") == 1, "the reconnect alert").await;
    let (status, health) = app.get("/api/admin/health", &admin).await;
    assert_eq!(status, 200);
    let kinds: Vec<&str> = health["alerts"].as_array().unwrap().iter().map(|a| a["kind"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"google_needs_reconnect"), "{health}");
    assert_eq!(health["status"], "attention");
    let (status, body) = app.get("/api/admin/health", &user_token).await;
    assert_eq!((status, body["error"].as_str()), (403, Some("forbidden")));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(count(&got.lock().unwrap(), "syncgate alert:", "must reconnect Google"), 1, "raised once, not on every check");
    db.execute("UPDATE users SET google_needs_reconnect = ?2 WHERE id = ?1", &[json!(uid), json!(false)]);
    wait_for(&got, |g| count(g, "syncgate resolved:", "must reconnect Google") == 1, "the reconnect alert to clear").await;

    // A channel about to expire.
    db.execute("INSERT INTO calendar_watch_channels (user_id, calendar_id, channel_id, resource_id, token, expiration, webhook_url, state, created_at, updated_at)
         VALUES (?1, 'primary', 'chan-1', 'res-1', 'tok', ?2, 'http://127.0.0.1/hook', 'active', ?2, ?2)", &[json!(uid), json!(syncgate::store::timefmt::format(syncgate::store::timefmt::now() + time::Duration::minutes(20)))]);
    wait_for(&got, |g| count(g, "syncgate alert:", "has not been renewed") == 1, "the expiring channel alert").await;
    db.execute("DELETE FROM calendar_watch_channels WHERE channel_id = 'chan-1'", &[]);
    wait_for(&got, |g| count(g, "syncgate resolved:", "has not been renewed") == 1, "the channel alert to clear").await;

    // Calendly deliveries with bad signatures, above the threshold.
    for _ in 0..3 {
        let r = app
            .http
            .post(app.url("/api/calendly/webhook"))
            .header("Calendly-Webhook-Signature", "t=1,v1=00")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401);
    }
    wait_for(&got, |g| count(g, "syncgate alert:", "Calendly deliveries were rejected") == 1, "the rejected-deliveries alert").await;
    // Once the window has passed, it clears by itself.
    wait_for(&got, |g| count(g, "syncgate resolved:", "Calendly deliveries were rejected") == 1, "the rejected alert to clear").await;

    let (_, health) = app.get("/api/admin/health", &admin).await;
    assert_eq!(health["alerts"], json!([]));
    assert_eq!(health["status"], "ok");
    let text = health.to_string();
    assert!(!text.contains("a-signing-key") && !text.contains(syncgate_secret()), "no secret in the health page");
}

fn syncgate_secret() -> &'static str {
    crate::helpers::SECRET
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_calendly_subscription_raises_an_alert_until_it_is_recreated() {
    let fake = crate::fake_calendly::FakeCalendly::start().await;
    let uri = fake.add_subscription("https://syncgate.example.com/api/calendly/webhook", "active", "user");
    let (url, got) = receiver(0).await;
    let base = fake.base.clone();
    let app = spawn_app_with(|c| {
        c.alerts.webhook_url = url.clone();
        c.alerts.check_interval = Dur::millis(100);
        c.alerts.calendly_check_interval = Dur::millis(100);
        c.calendly.token = crate::fake_calendly::TOKEN.into();
        c.calendly.api_base_url = base;
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(got.lock().unwrap().is_empty(), "an active subscription raises nothing: {:?}", got.lock().unwrap());
    fake.disable(&uri);
    wait_for(&got, |g| count(g, "syncgate alert:", "Calendly disabled the webhook subscription") == 1, "the disabled alert").await;
    for s in fake.state.lock().unwrap().subscriptions.iter_mut() {
        s["state"] = json!("active");
    }
    wait_for(&got, |g| count(g, "syncgate resolved:", "Calendly disabled the webhook subscription") == 1, "the disabled alert to clear")
        .await;
    drop(app);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_renewals_and_stopped_pushes_are_raised_and_cleared() {
    let (url, got) = receiver(0).await;
    let app = spawn_app_with(|c| {
        c.alerts.webhook_url = url.clone();
        c.alerts.check_interval = Dur::millis(100);
        c.alerts.silent_push_after = Dur::secs(3600);
    })
    .await;
    let (uid, _) = app.add_user("ann@example.com", "user");
    let db = app.db();
    let now = syncgate::store::timefmt::now();
    let ago = |h: i64| syncgate::store::timefmt::format(now - time::Duration::hours(h));
    // Connected, with a live channel, so only the conditions under test can fire.
    // The channel first: the monitor checks every 100 ms, and a connected user
    // without one for a moment would rightly raise `google_channel_missing`.
    db.execute("INSERT INTO calendar_watch_channels (user_id, calendar_id, channel_id, resource_id, token, expiration, webhook_url, state, created_at, updated_at)
         VALUES (?1, 'primary', 'chan-ok', 'res', 'tok', ?2, 'http://127.0.0.1/hook', 'active', ?3, ?3)", &[json!(uid), json!(syncgate::store::timefmt::format(now + time::Duration::days(5))), json!(ago(1))]);
    db.execute("UPDATE users SET google_refresh_token = 'r' WHERE id = ?1", &[json!(uid)]);
    db.execute(
        "INSERT INTO google_sync_status (user_id, renewal_failures, last_renewal_error, last_notification_at, last_safety_net_changes_at)
         VALUES (?1, 2, 'Google refused the watch request: HTTP 400', ?2, ?3)",
        &[json!(uid), json!(ago(48)), json!(ago(1))],
    );
    wait_for(&got, |g| count(g, "syncgate alert:", "failed 2 time(s)") == 1, "the renewal alert").await;
    wait_for(&got, |g| count(g, "syncgate alert:", "pushes have stopped arriving") == 1, "the stopped-pushes alert").await;
    db.execute(
        "UPDATE google_sync_status SET renewal_failures = 0, last_notification_at = ?2 WHERE user_id = ?1",
        &[json!(uid), json!(ago(0))],
    );
    wait_for(&got, |g| count(g, "syncgate resolved:", "failed 2 time(s)") == 1, "the renewal alert to clear").await;
    wait_for(&got, |g| count(g, "syncgate resolved:", "pushes have stopped arriving") == 1, "the stopped-pushes alert to clear").await;
    let g = got.lock().unwrap();
    assert!(!g.iter().any(|t| t.contains("no push channel")), "a user with a channel is not reported as missing one: {g:?}");
}
