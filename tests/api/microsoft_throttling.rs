//! Graph throttling through the Outlook sync, against the fake Graph: a
//! delta call answered 429 or 503 with a short `Retry-After` is waited out
//! inside the call and the change arrives; throttling that outlasts the
//! call's tries ends the pass, which comes back when Graph said; a long
//! `Retry-After` is not waited inside a call and is not hammered; a 429 on
//! a subscription create (at connect) or extension (at renewal) still ends
//! with one live subscription per calendar, and a renewal throttled for
//! long is not tried again before Graph's `Retry-After`. Delta and
//! subscription calls are counted at the fake.

use std::time::Duration;

use serde_json::json;

use crate::fake_graph::FakeGraph;
use crate::helpers::within;
use crate::microsoft_connect::{connect_as, ms_app, O1, T1};
use crate::microsoft_e2e::{connected, event_in, settled, titled, UPN};

/// The statuses the fake answered delta calls with, from call `from` on.
fn delta_statuses(fake: &FakeGraph, from: usize) -> Vec<u16> {
    fake.delta_log().iter().skip(from).map(|c| c.status).collect()
}

#[tokio::test]
async fn a_throttled_delta_call_is_waited_out_and_the_change_arrives_without_hammering() {
    let (fake, app, user, token) = connected(|_| {}).await;
    let cal = fake.default_calendar(UPN);
    let from = fake.delta_log().len();

    // 429, then 503, each with `Retry-After: 1`: waited inside the call.
    fake.fail_next("delta", 429, Some(1), 1);
    fake.fail_next("delta", 503, Some(1), 1);
    let id = fake.create_event(UPN, &cal, event_in("After throttling", 5));
    assert_eq!(fake.notify(UPN, "created", &id).await, vec![202], "answered at once, throttled or not");
    within(15, "the change", || async { titled(&app, &token, "After throttling").await }).await;
    settled(&app, user).await;
    assert_eq!(delta_statuses(&fake, from), vec![429, 503, 200], "each answer waited out once, then the page");
    let last: Option<String> = app.db().value_opt("SELECT last_sync_outcome FROM microsoft_sync_status WHERE user_id = ?1", &[json!(user)]);
    assert_eq!(last.as_deref(), Some("ok"), "the pass succeeded in the end");
}

#[tokio::test]
async fn throttling_beyond_the_call_ends_the_pass_which_comes_back_when_graph_says() {
    let (fake, app, user, token) = connected(|_| {}).await;
    let cal = fake.default_calendar(UPN);

    // Three answers of 429 with `Retry-After: 1`: the call gives up after its
    // tries, the pass fails, and comes back a second later on its own.
    let from = fake.delta_log().len();
    fake.fail_next("delta", 429, Some(1), 3);
    let id = fake.create_event(UPN, &cal, event_in("Came back", 6));
    fake.notify(UPN, "created", &id).await;
    within(20, "the change, after the pass came back", || async { titled(&app, &token, "Came back").await }).await;
    settled(&app, user).await;
    assert_eq!(delta_statuses(&fake, from), vec![429, 429, 429, 200], "three tries, then one after Retry-After");
    let failed: i64 = app.db().value("SELECT failed_syncs FROM microsoft_sync_status WHERE user_id = ?1", &[json!(user)]);
    assert_eq!(failed, 1, "the throttled pass counts as failed");

    // A long `Retry-After` (past the 30 s a call waits): one call, no retry
    // inside it, the error says how long Graph asked for.
    let from = fake.delta_log().len();
    fake.fail_next("delta", 429, Some(120), 1);
    let id = fake.create_event(UPN, &cal, event_in("Later", 7));
    fake.notify(UPN, "created", &id).await;
    let error: String = within(10, "the throttled pass", || async {
        app.db().value_opt::<String>("SELECT last_error FROM microsoft_sync_status WHERE user_id = ?1 AND failed_syncs = 2", &[json!(user)])
    })
    .await;
    assert!(error.contains("retry after 120 s"), "{error}");
    // Notifications keep coming meanwhile: the pass waits for Graph's time.
    fake.notify(UPN, "updated", &id).await;
    fake.notify(UPN, "updated", &id).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(delta_statuses(&fake, from), vec![429], "not asked again while Graph throttles");
    assert!(titled(&app, &token, "Later").await.is_none());
}

#[tokio::test]
async fn a_429_on_creating_or_extending_a_subscription_still_ends_with_one() {
    let fake = FakeGraph::start().await;
    fake.add_account(T1, O1, UPN, "Ann Adviser");
    let app = ms_app(&fake, |c| {
        c.microsoft.subscription_ttl = syncgate::duration::Dur::secs(8);
        c.microsoft.renew_before = syncgate::duration::Dur::secs(5);
        // Waits up to 1 s inside a call; a longer Retry-After ends the call.
        c.microsoft.max_retry_wait = syncgate::duration::Dur::secs(1);
    })
    .await;
    let (ann, token) = app.add_user(UPN, "user");
    // At connect: a short 429 (waited inside the call), then a longer one
    // (the create fails; the renewal scheduler makes it once it has passed).
    fake.fail_next("subscribe", 429, Some(1), 1);
    fake.fail_next("subscribe", 429, Some(2), 1);
    assert_eq!(connect_as(&app, &fake, &token, UPN).await.status().as_u16(), 303);
    let first = within(20, "the subscription", || async { fake.active_subscriptions(UPN).pop() }).await;
    assert_eq!(fake.calls("subscribe"), 3, "two throttled creates and the one that worked");
    assert_eq!(fake.subscriptions(UPN).len(), 1, "never a second one");

    // At renewal: the same, on the PATCH; extended in place all the same.
    let renews = fake.calls("renew");
    fake.fail_next("renew", 429, Some(1), 1);
    fake.fail_next("renew", 429, Some(2), 1);
    let extended =
        within(20, "an extension", || async { fake.active_subscriptions(UPN).into_iter().find(|s| s.id == first.id && s.renewals >= 1) })
            .await;
    assert!(extended.expiration > first.expiration);
    assert!(fake.calls("renew") - renews >= 3, "two throttled extensions and the one that worked");
    assert_eq!(fake.subscriptions(UPN).len(), 1, "extended in place, never a second one");
    assert_eq!(fake.active_subscriptions(UPN).len(), 1);

    // Graph asks for ten minutes: the next try is planned no sooner (and
    // shown to admins so), and nothing is sent meanwhile.
    let (_, admin) = app.add_user("boss@contoso.example", "admin");
    let renews = fake.calls("renew");
    fake.fail_next("renew", 429, Some(600), 1);
    let next: String = within(20, "the throttled renewal recorded", || async {
        let (s, health) = app.get("/api/admin/health", &admin).await;
        assert_eq!(s, 200, "{health}");
        let me = health["microsoft"]["users"].as_array()?.iter().find(|u| u["user_id"] == ann)?.clone();
        (me["renewal_failures"].as_i64()? >= 1).then(|| me["next_renewal_attempt_at"].as_str().map(str::to_string))?
    })
    .await;
    let at = time::OffsetDateTime::parse(&next, &time::format_description::well_known::Rfc3339).expect("a time");
    assert!(at - time::OffsetDateTime::now_utc() > time::Duration::minutes(9), "the retry waits for Graph: {next}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(fake.calls("renew") - renews, 1, "no extension while Graph said to wait");
}
