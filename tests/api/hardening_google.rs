//! Notifications for dead Google channels (issue 13, item 11): a stopped or
//! expired channel gets 404 and no sync; a flood on an unknown channel is
//! logged once a minute per channel, not once per request.

use serde_json::json;

use crate::fake_google::FakeGoogle;
use crate::google::{connect, google_app, logs_text, syncs, wait_synced};

#[tokio::test]
async fn stopped_and_expired_channels_get_404_and_no_sync() {
    let fake = FakeGoogle::start().await;
    let app = google_app(&fake).await;
    let (ada, jwt) = connect(&app, &fake, "ada@example.com").await;
    let address = app.url("/api/calendar/webhook");

    // Expired (its renewal failed and it lapsed): whatever arrives on it is a replay.
    let c = fake.active_channels("ada@example.com").remove(0);
    let stored: String = app.db().value("SELECT expiration FROM calendar_watch_channels WHERE channel_id = ?1", &[json!(&c.id)]);
    let set_expiration = |exp: &str| {
        app.db().execute("UPDATE calendar_watch_channels SET expiration = ?2 WHERE channel_id = ?1", &[json!(&c.id), json!(exp)]);
    };
    set_expiration("2020-01-01T00:00:00.000Z");
    let before = syncs(&app, ada);
    let passes = fake.list_passes("ada@example.com");
    for n in 7..10 {
        let s = fake.send_notification(&address, &c.id, c.token.as_deref(), &c.resource_id, "exists", n, c.expiration_ms).await;
        assert_eq!(s, 404, "a notification on an expired channel is refused");
    }
    // A live one after them syncs exactly once: the refused ones queued nothing.
    set_expiration(&stored);
    assert_eq!(fake.notify("ada@example.com", "exists").await, vec![200]);
    wait_synced(&app, ada, before).await;
    assert_eq!(fake.list_passes("ada@example.com"), passes + 1);
    assert_eq!(syncs(&app, ada), before + 1);

    // Stopped: after a renewal's overlap and after the user turned push off.
    let (s, info) = app.post("/api/calendar/webhook/setup", &jwt, &serde_json::json!({})).await;
    assert_eq!(s, 201, "{info}");
    let current = fake.active_channels("ada@example.com").remove(0);
    let (s, _) = app.delete("/api/calendar/webhook", &jwt).await;
    assert_eq!(s, 204);
    for (ch, n) in [(&c, 20), (&current, 21)] {
        let s = fake.send_notification(&address, &ch.id, ch.token.as_deref(), &ch.resource_id, "exists", n, ch.expiration_ms).await;
        assert_eq!(s, 404, "channel {} was stopped", ch.id);
        assert!(!app.app.google.sync_pending(ada), "no sync was queued");
    }
}

#[tokio::test]
async fn an_unknown_channel_flood_is_logged_once_per_channel_per_minute() {
    let fake = FakeGoogle::start().await;
    let app = google_app(&fake).await;
    let address = app.url("/api/calendar/webhook");
    let flood = format!("flood-{}", uuid::Uuid::new_v4());
    let other = format!("flood-other-{}", uuid::Uuid::new_v4());
    for i in 0..50 {
        let s = fake.send_notification(&address, &flood, Some("t"), "res", "exists", i, 0).await;
        assert_eq!(s, 404);
    }
    let s = fake.send_notification(&address, &other, Some("t"), "res", "exists", 1, 0).await;
    assert_eq!(s, 404);
    let logs = logs_text();
    let lines = logs.lines().filter(|l| l.contains(&format!("unknown channel {flood}"))).count();
    assert_eq!(lines, 1, "one line for 50 notifications on one channel:\n{logs}");
    assert_eq!(logs.lines().filter(|l| l.contains(&format!("unknown channel {other}"))).count(), 1, "another channel gets its own line");
    // All were counted.
    let m = crate::metrics::scrape(&app, None).await;
    assert_eq!(m.get("syncgate_webhooks_received_total{outcome=unknown_channel,source=google}"), Some(&51.0));
}
