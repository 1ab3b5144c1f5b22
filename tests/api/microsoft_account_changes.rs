//! Account changes and Outlook subscriptions, against the fake Graph: an
//! admin disabling a user, removing one, or the user disconnecting Outlook
//! (through the admin API or `syncgate user …`) deletes their Graph
//! subscriptions at Graph first (none is left active
//! there) and here, so a notification for one syncs nothing any more;
//! enabling the user again, and connecting again, makes exactly one
//! subscription per ticked calendar. A user disabled while no server ran
//! loses their subscriptions at Graph when the server starts.

use std::time::Duration;

use serde_json::json;

use crate::fake_graph::{FakeGraph, FakeSubscription};
use crate::helpers::{within, TestApp};
use crate::microsoft_connect::connect_as;
use crate::microsoft_e2e::{connected, connected_with, event_in, settled, titled, UPN};

fn subscription_rows(app: &TestApp, user: i64) -> i64 {
    app.db().value("SELECT COUNT(*) FROM calendar_watch_channels WHERE user_id = ?1", &[json!(user)])
}

/// A notification for each of these (now deleted) subscriptions, as a
/// late or replayed delivery would bring: accepted, and no delta pass follows.
async fn notifications_sync_nothing(fake: &FakeGraph, app: &TestApp, old: &[FakeSubscription], event: &str) {
    let passes = fake.delta_passes(UPN);
    for s in old {
        let item = fake.notification_item(&s.id, "updated", event);
        let status = fake.send_batch(&app.url("/api/microsoft/webhook"), vec![item]).await;
        assert!(status == 202 || status == 200, "a notification for a deleted subscription is answered: {status}");
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(fake.delta_passes(UPN), passes, "a notification for a deleted subscription syncs nothing");
}

#[tokio::test]
async fn disabling_deletes_the_subscriptions_at_graph_and_enabling_and_reconnecting_makes_one_per_calendar() {
    // Two ticked calendars: the default one and "Clients".
    let second = std::sync::Mutex::new(String::new());
    let (fake, app, user, token) = connected_with(
        |fake| *second.lock().unwrap() = fake.add_calendar(UPN, "Clients"),
        |c| c.microsoft.calendars = vec!["primary".into(), second.lock().unwrap().clone()],
    )
    .await;
    let second = second.into_inner().unwrap();
    let (_, boss) = app.add_user("boss@contoso.example", "admin");
    within(10, "a subscription per calendar", || async { (fake.active_subscriptions(UPN).len() == 2).then_some(()) }).await;
    let before = fake.active_subscriptions(UPN);

    let (s, body) = app.patch(&format!("/api/admin/users/{user}"), &boss, &json!({"status": "disabled"})).await;
    assert_eq!(s, 200, "{body}");
    within(10, "the subscriptions deleted at Graph and here", || async {
        (fake.active_subscriptions(UPN).is_empty() && subscription_rows(&app, user) == 0).then_some(())
    })
    .await;
    let id = fake.create_event(UPN, &second, event_in("Booked while disabled", 4));
    notifications_sync_nothing(&fake, &app, &before, &id).await;
    let synced: Option<i64> =
        app.db().value_opt("SELECT id FROM meetings WHERE source = 'microsoft' AND title = ?1", &[json!("Booked while disabled")]);
    assert_eq!(synced, None, "nothing synced while disabled");

    // Enabled again: one subscription per calendar, and a catch-up sync.
    let (s, _) = app.patch(&format!("/api/admin/users/{user}"), &boss, &json!({"status": "active"})).await;
    assert_eq!(s, 200);
    within(15, "new subscriptions and the catch-up", || async {
        let n = fake.active_subscriptions(UPN).len();
        (n >= 2 && titled(&app, &token, "Booked while disabled").await.is_some()).then_some(())
    })
    .await;
    settled(&app, user).await;
    // Connecting again while connected adds none.
    assert_eq!(connect_as(&app, &fake, &token, UPN).await.status().as_u16(), 303);
    tokio::time::sleep(Duration::from_millis(700)).await;
    settled(&app, user).await;
    let mut calendars: Vec<String> = fake.active_subscriptions(UPN).into_iter().map(|s| s.calendar).collect();
    calendars.sort();
    let mut expected = vec![fake.default_calendar(UPN), second.clone()];
    expected.sort();
    assert_eq!(calendars, expected, "exactly one live subscription per calendar");
    assert_eq!(subscription_rows(&app, user), 2);
    assert!(before.iter().all(|old| !fake.active_subscriptions(UPN).iter().any(|s| s.id == old.id)), "the old ones stay deleted");
}

/// `syncgate user …` as an operator runs it next to the server (which it
/// goes through while one runs).
async fn cli(app: &TestApp, args: &[&str]) -> std::process::Output {
    cli_on(&app.config, args).await
}

/// `syncgate <args>` on the data of a server with `config` (running or not).
pub(crate) async fn cli_on(config: &syncgate::config::Config, args: &[&str]) -> std::process::Output {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_syncgate"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("SYNCGATE") {
            c.env_remove(k);
        }
    }
    c.envs(crate::helpers::config_env(config))
        .env("SYNCGATE_DATABASE__PATH", &config.database.path)
        .env("SYNCGATE_AUTH__JWT_SECRET", crate::helpers::SECRET)
        .env("SYNCGATE_SERVER__BIND", "127.0.0.1:0")
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(30), c.output()).await.expect("the command finishes").expect("runs")
}

#[tokio::test]
async fn removing_a_user_deletes_their_subscriptions_at_graph_first() {
    let (fake, app, user, _) = connected(|_| {}).await;
    let (_, boss) = app.add_user("boss@contoso.example", "admin");
    let before = fake.active_subscriptions(UPN);
    assert_eq!(before.len(), 1);
    // Through the admin API, as the Team page does.
    let (s, body) = app.delete(&format!("/api/admin/users/{user}"), &boss).await;
    assert_eq!(s, 200, "{body}");
    assert!(fake.active_subscriptions(UPN).is_empty(), "deleted at Graph before the account went");
    assert_eq!(subscription_rows(&app, user), 0);
    notifications_sync_nothing(&fake, &app, &before, "unknown-event").await;

    // Through the CLI next to the running server: the same.
    let (other, token) = app.add_user("bob@contoso.example", "user");
    fake.add_account(crate::microsoft_connect::T1, "aaaaaaaa-0000-4000-8000-00000000000b", "bob@contoso.example", "Bob");
    assert_eq!(connect_as(&app, &fake, &token, "bob@contoso.example").await.status().as_u16(), 303);
    within(15, "Bob's subscription", || async { (fake.active_subscriptions("bob@contoso.example").len() == 1).then_some(()) }).await;
    let o = cli(&app, &["user", "remove", &other.to_string(), "--yes"]).await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(fake.active_subscriptions("bob@contoso.example").is_empty(), "deleted at Graph before the account went");
    assert_eq!(subscription_rows(&app, other), 0);
}

#[tokio::test]
async fn disconnecting_deletes_the_subscription_and_its_notifications_sync_nothing() {
    let (fake, app, user, token) = connected(|_| {}).await;
    let before = fake.active_subscriptions(UPN);
    let r = app.http.delete(app.url("/api/me/microsoft")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 204);
    assert!(fake.active_subscriptions(UPN).is_empty(), "no subscription left at Graph");
    assert_eq!(subscription_rows(&app, user), 0);
    let id = fake.create_event(UPN, &fake.default_calendar(UPN), event_in("After disconnect", 3));
    notifications_sync_nothing(&fake, &app, &before, &id).await;
    // Connecting again: one subscription, and the sync brings what changed.
    assert_eq!(connect_as(&app, &fake, &token, UPN).await.status().as_u16(), 303);
    within(15, "the new subscription and sync", || async { titled(&app, &token, "After disconnect").await }).await;
    settled(&app, user).await;
    assert_eq!(fake.active_subscriptions(UPN).len(), 1);
}

#[tokio::test]
async fn a_user_disabled_while_no_server_ran_loses_their_subscriptions_at_the_next_start() {
    let (fake, app, user, _) = connected(|_| {}).await;
    within(10, "the subscription", || async { (fake.active_subscriptions(UPN).len() == 1).then_some(()) }).await;
    let (config, dir) = app.stop().await;
    let out = cli_on(&config, &["user", "disable", &user.to_string()]).await;
    assert!(out.status.success(), "disabled offline: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(fake.active_subscriptions(UPN).len(), 1, "no server ran to tell Graph");

    let app = crate::helpers::start(config, dir).await;
    within(20, "the subscription deleted at Graph by the start", || async { fake.active_subscriptions(UPN).is_empty().then_some(()) })
        .await;
    within(10, "and here", || async { (subscription_rows(&app, user) == 0).then_some(()) }).await;
    assert_eq!(fake.subscriptions(UPN).len(), 1, "none made again for a disabled user");
}
