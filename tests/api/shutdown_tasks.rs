//! Shutdown with background work running: every task gets the signal and is
//! awaited before the writer's queue is committed, none is cut off. A Google
//! channel renewal in flight finishes and is recorded (one live channel at
//! Google, the same one in the database); an alert POST that keeps failing
//! does not hold the shutdown through its retry waits. The bound on how long
//! a stop may take is generous (the grace is 30 s; the work takes ~1 s).

use std::time::{Duration, Instant};

use serde_json::json;
use syncgate::duration::Dur;

use crate::fake_google::FakeGoogle;
use crate::google_renewal::{active_row, connect, eventually, fake_channel, google_config};
use crate::helpers::{spawn_app_with, TestApp};

/// Stop the server as SIGTERM does; returns how long it took and the data folder.
async fn stop_timed(app: TestApp) -> (Duration, syncgate::config::Config, tempfile::TempDir) {
    let started = Instant::now();
    let (config, dir) = app.stop().await;
    (started.elapsed(), config, dir)
}

#[tokio::test]
async fn a_renewal_in_flight_at_shutdown_finishes_and_is_recorded() {
    let fake = FakeGoogle::start().await;
    let app = spawn_app_with(|c| {
        google_config(&fake, c);
        // The first channel is renewed 3 s after it was registered.
        c.google.channel_ttl = Dur::secs(6);
        c.google.renew_before = Dur::secs(3);
        c.server.shutdown_grace = Dur::secs(30);
    })
    .await;
    let (uid, _) = connect(&app, &fake, "ada@example.com").await;
    let (first, _, _, _) = active_row(&app, uid).unwrap();
    // Google takes a while to answer the renewal's watch call.
    fake.set_watch_delay(Duration::from_millis(1500));
    let watches = fake.calls("watch");
    eventually("the renewal's watch call to reach Google", || (fake.calls("watch") > watches).then_some(())).await;
    let (took, config, _dir) = stop_timed(app).await;
    assert!(took < Duration::from_secs(20), "the stop waited for the renewal, not for the grace: {took:?}");

    // Google holds exactly one live channel: the new one; the old one was stopped.
    let live = fake.active_channels("ada@example.com");
    assert_eq!(live.len(), 1, "one live channel at Google after the shutdown: {live:?}");
    let new = &live[0];
    assert_ne!(new.id, first, "the renewal went through");
    assert!(fake_channel(&fake, "ada@example.com", &first).stopped, "the replaced channel was stopped at Google");

    // The database, read after the stop, has the same channel with what Google
    // returned, nothing half-registered, and the renewal counted.
    let db = crate::helpers::open_db(&config);
    let row: (String, Option<String>, Option<String>) = db.row_as(
        "SELECT channel_id, resource_id, expiration FROM calendar_watch_channels WHERE user_id = ?1 AND state = 'active'",
        &[json!(uid)],
    );
    assert_eq!((row.0.as_str(), row.1.as_deref()), (new.id.as_str(), Some(new.resource_id.as_str())));
    assert!(row.2.is_some(), "the new channel's expiration was stored");
    let states: Vec<String> = db.column("SELECT state FROM calendar_watch_channels WHERE user_id = ?1", &[json!(uid)]);
    assert_eq!(states, vec!["active".to_string()], "only the new channel is kept");
    let renewals: Option<i64> = db.value_opt("SELECT renewals FROM google_sync_status WHERE user_id = ?1", &[json!(uid)]);
    assert_eq!(renewals, Some(1), "the renewal was recorded before the writer stopped");
}

#[tokio::test]
async fn an_alert_post_being_retried_does_not_hold_the_shutdown() {
    // A receiver that always fails: six tries would wait 7.5 s or more between them.
    let (url, _) = crate::alerts::receiver(usize::MAX).await;
    let app = spawn_app_with(|c| {
        c.alerts.webhook_url = url.clone();
        c.alerts.check_interval = Dur::millis(100);
        c.server.shutdown_grace = Dur::secs(30);
    })
    .await;
    let (uid, _) = app.add_user("ann@example.com", "user");
    app.db().execute("UPDATE users SET google_needs_reconnect = ?2 WHERE id = ?1", &[json!(uid), json!(true)]);
    let (_, admin) = app.add_user("root@example.com", "admin");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, health) = app.get("/api/admin/health", &admin).await;
        if health["alerts"].as_array().is_some_and(|a| a.iter().any(|a| a["kind"] == "google_needs_reconnect")) {
            break;
        }
        assert!(Instant::now() < deadline, "timed out waiting for the reconnect alert: {health}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let the first POST fail, so the notification is waiting to try again.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, token) = app.add_user("bob@example.com", "user");
    let r = app.http.post(app.url("/api/clients")).bearer_auth(&token).json(&serde_json::json!({"name": "kept"})).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let (took, config, _dir) = stop_timed(app).await;
    assert!(took < Duration::from_secs(5), "the stop sat out the alert's retry waits: {took:?}");
    let db = crate::helpers::open_db(&config);
    let n: i64 = db.value("SELECT COUNT(*) FROM clients WHERE name = 'kept'", &[]);
    assert_eq!(n, 1, "the acknowledged write survived");
}
