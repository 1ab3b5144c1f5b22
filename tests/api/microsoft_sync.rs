//! The Outlook sync end to end, through Graph's notifications and the
//! OAuth flow against the fake Graph (tests/api/fake_graph.rs), on both
//! engines: the validation handshake; a connect subscribes and syncs; a
//! batch with one forged `clientState` is served except that item; a burst
//! costs few delta passes; subscriptions are extended in place before
//! expiry; `subscriptionRemoved` makes a new one, `missed` syncs,
//! `reauthorizationRequired` extends the same one; an
//! expired delta link gives one full round; a restart catches up;
//! disconnect deletes the subscription at Graph.

use std::time::Duration;

use serde_json::{json, Value};

use crate::fake_graph::FakeGraph;
use crate::helpers::{within, TestApp};
use crate::microsoft_connect::{connect_as, ms_app, O1, T1};

const UPN: &str = "ann@contoso.example";

/// A fake Graph with Ann's account, a server using it, Ann signed in to
/// syncgate and connected to Outlook: (fake, app, user id, user token).
async fn connected(tweak: impl FnOnce(&mut syncgate::config::Config)) -> (FakeGraph, TestApp, i64, String) {
    let fake = FakeGraph::start().await;
    fake.add_account(T1, O1, UPN, "Ann Adviser");
    let app = ms_app(&fake, tweak).await;
    let (user, token) = app.add_user(UPN, "user");
    let r = connect_as(&app, &fake, &token, UPN).await;
    assert_eq!(r.status().as_u16(), 303, "connected");
    within(10, "the subscription", || async { (fake.active_subscriptions(UPN).len() == 1).then_some(()) }).await;
    (fake, app, user, token)
}

fn event(subject: &str, start: &str, end: &str) -> Value {
    json!({
        "subject": subject,
        "start": {"dateTime": start, "timeZone": "UTC"},
        "end": {"dateTime": end, "timeZone": "UTC"},
        "attendees": [{"emailAddress": {"name": "Client", "address": "client@example.com"}, "type": "required",
                       "status": {"response": "accepted", "time": "2026-12-01T00:00:00Z"}}],
        "onlineMeeting": {"joinUrl": "https://teams.microsoft.com/l/meetup-join/abc"},
    })
}

/// Ann's Outlook meetings as `/api/meetings` lists them, by title.
async fn meetings(app: &TestApp, token: &str) -> Vec<Value> {
    let (status, body) = app.get("/api/meetings?limit=500&source=microsoft", token).await;
    assert_eq!(status, 200, "{body}");
    body["items"].as_array().cloned().unwrap_or_default()
}

async fn meeting_titled(app: &TestApp, token: &str, title: &str) -> Option<Value> {
    meetings(app, token).await.into_iter().find(|m| m["title"] == title)
}

fn soon(hours: i64) -> String {
    let t = time::OffsetDateTime::now_utc() + time::Duration::hours(hours);
    format!("{:04}-{:02}-{:02}T{:02}:00:00", t.year(), t.month() as u8, t.day(), t.hour())
}

#[tokio::test]
async fn graph_s_validation_request_gets_its_token_back_as_plain_text() {
    let fake = FakeGraph::start().await;
    let app = ms_app(&fake, |_| {}).await;
    let r = app
        .http
        .post(app.url("/api/microsoft/webhook?validationToken=Validation%3A%20Testing%20client%20application"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    assert_eq!(r.text().await.unwrap(), "Validation: Testing client application");
    let status: Value = app.http.get(app.url("/api/microsoft/webhook/test")).send().await.unwrap().json().await.unwrap();
    assert_eq!(status["reachable"], true);
    assert_eq!(status["configured"], true);
}

#[tokio::test]
async fn connecting_subscribes_and_syncs_and_notifications_bring_changes() {
    let fake = FakeGraph::start().await;
    fake.add_account(T1, O1, UPN, "Ann Adviser");
    let cal = fake.default_calendar(UPN);
    let intro = fake.create_event(UPN, &cal, event("Intro call", &soon(24), &soon(25)));
    fake.create_event(UPN, &cal, json!({"subject": "Holiday", "showAs": "oof", "start": {"dateTime": soon(48), "timeZone": "UTC"}, "end": {"dateTime": soon(72), "timeZone": "UTC"}}));
    let app = ms_app(&fake, |_| {}).await;
    let (_, token) = app.add_user(UPN, "user");
    assert_eq!(connect_as(&app, &fake, &token, UPN).await.status().as_u16(), 303);

    let m = within(10, "the first sync", || async { meeting_titled(&app, &token, "Intro call").await }).await;
    assert_eq!(m["source"], "microsoft");
    assert_eq!(m["meeting_url"], "https://teams.microsoft.com/l/meetup-join/abc");
    assert_eq!(m["microsoft_event_id"], intro.as_str());
    assert!(meeting_titled(&app, &token, "Holiday").await.is_none(), "out of office is not a meeting");
    let subs = fake.active_subscriptions(UPN);
    assert_eq!(subs.len(), 1);
    assert!(subs[0].immutable_ids, "subscriptions ask for immutable ids");
    assert!(subs[0].client_state.as_deref().is_some_and(|s| s.len() >= 32), "a secret clientState");

    // A change, announced: synced within moments.
    fake.update_event(UPN, &intro, json!({"subject": "Intro call (moved)"}));
    assert_eq!(fake.notify(UPN, "updated", &intro).await, vec![202]);
    within(10, "the update", || async { meeting_titled(&app, &token, "Intro call (moved)").await }).await;
    // Declined by Ann: canceled. Deleted: canceled too.
    let review = fake.create_event(
        UPN,
        &cal,
        json!({"subject": "Review", "organizer": {"emailAddress": {"address": "boss@contoso.example"}},
        "start": {"dateTime": soon(30), "timeZone": "UTC"}, "end": {"dateTime": soon(31), "timeZone": "UTC"},
        "attendees": [{"emailAddress": {"address": UPN}, "type": "required"}]}),
    );
    fake.notify(UPN, "created", &review).await;
    within(10, "the invitation", || async { meeting_titled(&app, &token, "Review").await }).await;
    fake.respond(UPN, &review, "declined");
    fake.notify(UPN, "updated", &review).await;
    within(10, "the decline", || async { meeting_titled(&app, &token, "Review").await.filter(|m| m["status"] == "canceled") }).await;
    fake.delete_event(UPN, &intro);
    fake.notify(UPN, "deleted", &intro).await;
    within(10, "the deletion", || async { meeting_titled(&app, &token, "Intro call (moved)").await.filter(|m| m["status"] == "canceled") })
        .await;

    // Disconnect deletes the subscription at Graph too.
    let r = app.http.delete(app.url("/api/me/microsoft")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 204);
    assert!(fake.active_subscriptions(UPN).is_empty(), "no subscription left at Graph");
}

#[tokio::test]
async fn a_forged_item_in_a_batch_is_dropped_and_the_others_are_served() {
    let (fake, app, user, token) = connected(|_| {}).await;
    let cal = fake.default_calendar(UPN);
    let sub = fake.active_subscriptions(UPN).remove(0);
    within(10, "the first sync", || async { (fake.delta_passes(UPN) >= 1).then_some(()) }).await;
    let e = fake.create_event(UPN, &cal, event("Real change", &soon(5), &soon(6)));
    let good = fake.notification_item(&sub.id, "created", &e);
    let mut forged = fake.notification_item(&sub.id, "created", &e);
    forged["clientState"] = json!("guessed-secret");
    let status = fake.send_batch(&sub.notification_url, vec![forged, good]).await;
    assert_eq!(status, 202, "Graph's batch is answered at once");
    within(10, "the real change", || async { meeting_titled(&app, &token, "Real change").await }).await;
    let dropped: i64 = within(5, "the count", || async {
        let n: i64 =
            app.db().value_opt("SELECT dropped_notifications FROM microsoft_sync_status WHERE user_id = ?1", &[json!(user)]).unwrap_or(0);
        (n > 0).then_some(n)
    })
    .await;
    assert_eq!(dropped, 1);
    // Only forged items: nothing to do, nothing synced.
    let passes = fake.delta_passes(UPN);
    let mut only_forged = fake.notification_item(&sub.id, "updated", &e);
    only_forged["clientState"] = json!("x");
    assert_eq!(fake.send_batch(&sub.notification_url, vec![only_forged]).await, 202);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(fake.delta_passes(UPN), passes, "a forged item starts no sync");
}

#[tokio::test]
async fn a_burst_of_notifications_costs_few_delta_passes() {
    let (fake, app, _, token) = connected(|_| {}).await;
    let cal = fake.default_calendar(UPN);
    within(10, "the first sync", || async { (fake.delta_passes(UPN) >= 1).then_some(()) }).await;
    let before = fake.delta_passes(UPN);
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(fake.create_event(UPN, &cal, event(&format!("Burst {i}"), &soon(10 + i), &soon(11 + i))));
    }
    let sends = ids.iter().map(|id| fake.notify(UPN, "created", id));
    for answer in futures_util::future::join_all(sends).await {
        assert_eq!(answer, vec![202]);
    }
    within(15, "all twenty", || async {
        (meetings(&app, &token).await.iter().filter(|m| m["title"].as_str().unwrap_or("").starts_with("Burst")).count() == 20).then_some(())
    })
    .await;
    let passes = fake.delta_passes(UPN) - before;
    assert!(passes <= 3, "20 notifications cost {passes} delta passes");
}

#[tokio::test]
async fn subscriptions_are_extended_in_place_and_recreated_only_when_graph_removed_them() {
    // Short lives so the renewal comes due within the test.
    let (fake, app, _, token) = connected(|c| {
        c.microsoft.subscription_ttl = syncgate::duration::Dur::secs(6);
        c.microsoft.renew_before = syncgate::duration::Dur::secs(4);
    })
    .await;
    let first = fake.active_subscriptions(UPN).remove(0);
    let extended = within(15, "an extension", || async {
        let subs = fake.active_subscriptions(UPN);
        subs.iter().find(|s| s.id == first.id && s.expiration > first.expiration).cloned()
    })
    .await;
    assert_eq!(fake.active_subscriptions(UPN).len(), 1, "extended in place, never a second one");
    assert_eq!(extended.client_state, first.client_state);

    // Graph removed it: a new one, and a sync for what was not announced.
    let cal = fake.default_calendar(UPN);
    fake.create_event(UPN, &cal, event("While removed", &soon(3), &soon(4)));
    assert_eq!(fake.lifecycle(&first.id, "subscriptionRemoved").await, 202);
    let new = within(15, "a new subscription", || async { fake.active_subscriptions(UPN).into_iter().find(|s| s.id != first.id) }).await;
    assert_eq!(fake.active_subscriptions(UPN).len(), 1);
    within(10, "the catch-up", || async { meeting_titled(&app, &token, "While removed").await }).await;

    // `missed`: notifications were lost; a sync reads what changed.
    fake.create_event(UPN, &cal, event("Lost notification", &soon(7), &soon(8)));
    assert_eq!(fake.lifecycle(&new.id, "missed").await, 202);
    within(10, "the missed change", || async { meeting_titled(&app, &token, "Lost notification").await }).await;

    // `reauthorizationRequired`: answered by extending the same subscription.
    assert_eq!(fake.lifecycle(&new.id, "reauthorizationRequired").await, 202);
    let answered = within(10, "the reauthorization answered", || async {
        fake.active_subscriptions(UPN).into_iter().find(|s| s.id == new.id && !s.needs_reauth)
    })
    .await;
    assert!(answered.renewals >= 1, "extended in place");
    assert_eq!(fake.active_subscriptions(UPN).len(), 1, "never a second one");
}

#[tokio::test]
async fn an_expired_delta_link_gives_one_full_round_and_a_restart_catches_up() {
    let (fake, app, _, token) = connected(|_| {}).await;
    let cal = fake.default_calendar(UPN);
    let keep = fake.create_event(UPN, &cal, event("Stays", &soon(2), &soon(3)));
    let gone = fake.create_event(UPN, &cal, event("Goes", &soon(4), &soon(5)));
    fake.notify(UPN, "created", &keep).await;
    within(10, "both", || async { (meetings(&app, &token).await.len() == 2).then_some(()) }).await;

    // The delta state expires at Graph, and an event is deleted meanwhile:
    // one full round lists the window, and what it no longer lists is canceled.
    fake.invalidate_delta_tokens();
    fake.delete_event(UPN, &gone);
    let windows_before = fake.delta_log().iter().filter(|c| c.window).count();
    fake.notify(UPN, "updated", &keep).await;
    within(10, "the full round", || async { meeting_titled(&app, &token, "Goes").await.filter(|m| m["status"] == "canceled") }).await;
    let windows = fake.delta_log().iter().filter(|c| c.window).count() - windows_before;
    assert_eq!(windows, 1, "one full round, not more");

    // Down for a while: a change no notification reached is read at start.
    let (config, dir) = app.stop().await;
    fake.create_event(UPN, &cal, event("While down", &soon(9), &soon(10)));
    let app = crate::helpers::start(config, dir).await;
    within(15, "the catch-up", || async { meeting_titled(&app, &token, "While down").await }).await;
    assert_eq!(fake.active_subscriptions(UPN).len(), 1, "the restart kept the one subscription");
}

#[tokio::test]
async fn revoked_access_and_failing_renewals_show_as_microsoft_alerts_without_a_token_anywhere() {
    let (fake, app, user, token) = connected(|c| {
        c.alerts.check_interval = syncgate::duration::Dur::millis(100);
    })
    .await;
    let (_, admin) = app.add_user("root@contoso.example", "admin");
    within(10, "the first sync", || async { (fake.delta_passes(UPN) >= 1).then_some(()) }).await;

    // Renewals fail at Graph: retried with backoff, and admins see it.
    let sub = fake.active_subscriptions(UPN).remove(0);
    fake.fail_next("renew", 500, None, 100);
    assert_eq!(fake.lifecycle(&sub.id, "reauthorizationRequired").await, 202);
    let alert = within(10, "the renewal alert", || async {
        let (_, health) = app.get("/api/admin/health", &admin).await;
        health["alerts"].as_array()?.iter().find(|a| a["kind"] == "microsoft_renewal_failing").cloned()
    })
    .await;
    assert!(alert["message"].as_str().unwrap().contains(UPN), "{alert}");

    // Access revoked at Microsoft: the next sync finds out, Ann must reconnect.
    fake.revoke(UPN);
    fake.expire_access_tokens(UPN);
    fake.notify(UPN, "updated", "unknown-event").await;
    let (_, me) = within(10, "needs reconnect", || async {
        let (s, me) = app.get("/api/me", &token).await;
        (me["microsoft"]["needs_reconnect"] == true).then_some((s, me))
    })
    .await;
    assert_eq!(me["microsoft"]["connected"], true);
    within(10, "the reconnect alert", || async {
        let (_, health) = app.get("/api/admin/health", &admin).await;
        health["alerts"]
            .as_array()?
            .iter()
            .any(|a| a["kind"] == "microsoft_needs_reconnect" && a["key"] == format!("microsoft_needs_reconnect:user:{user}"))
            .then_some(())
    })
    .await;
    // Admins see Ann's Outlook state beside Google's: must reconnect, her
    // subscription, her renewal failures, her syncs.
    let (_, health) = app.get("/api/admin/health", &admin).await;
    let ms = &health["microsoft"];
    assert_eq!(ms["needs_reconnect"], json!([user]), "{ms}");
    assert_eq!(ms["renewal_failing"], json!([user]), "{ms}");
    let ann = ms["users"].as_array().unwrap().iter().find(|u| u["user_id"] == user).cloned().unwrap();
    assert!(ann["syncs"].as_i64().unwrap() >= 1 && ann["has_sync_token"] == true, "{ann}");
    assert_eq!(ms["channels"].as_array().unwrap().len(), 1, "{ms}");
    // No Microsoft token in any answer or log line.
    let text = crate::google::logs_text();
    for t in fake.issued_tokens() {
        assert!(!text.contains(&t), "a Microsoft token reached the log");
        assert!(!health.to_string().contains(&t) && !me.to_string().contains(&t), "a Microsoft token reached an answer");
    }
    for s in fake.subscriptions(UPN) {
        let cs = s.client_state.unwrap_or_default();
        assert!(!text.contains(&cs) && !health.to_string().contains(&cs), "a clientState reached the log or an answer");
    }
}

/// Calendly writes each booking into the adviser's Outlook calendar too; it
/// reports Outlook's ordinary event id, not the immutable one syncgate
/// reads, so the two are matched by start time and the invitee's address.
#[tokio::test]
async fn a_calendly_booking_and_its_outlook_copy_are_one_meeting_whichever_arrives_first() {
    use crate::google_renewal::{at, booking, deliver, CALENDLY_KEY};
    let (fake, app, user, token) = connected(|c| c.calendly.signing_keys = vec![CALENDLY_KEY.into()]).await;
    let cal = fake.default_calendar(UPN);
    within(10, "the first sync", || async { (fake.delta_passes(UPN) >= 1).then_some(()) }).await;
    for (i, (name, calendly_first)) in [("one", true), ("two", false)].into_iter().enumerate() {
        let start = at(3 + i as i64, 10);
        let end = format!("{}T10:30:00Z", &start[..10]);
        let invitee = format!("client.{name}@example.com");
        let mut delivery = booking(UPN, &format!("EV{name}AAAAAAAAAAA"), &format!("IN{name}AAAAAAAAAAA"), &invitee, &start, &end, None);
        delivery["payload"]["scheduled_event"]["calendar_event"] =
            json!({"kind": "office365", "external_id": format!("AAMkOrdinary{name}")});
        let outlook = json!({
            "subject": "Financial review (30 min) between Ann Adviser and Client Person",
            "start": {"dateTime": &start[..19], "timeZone": "UTC"},
            "end": {"dateTime": &end[..19], "timeZone": "UTC"},
            "attendees": [{"emailAddress": {"address": invitee}, "type": "required"}],
        });
        let copy_of = |app: &TestApp| {
            app.db().rows(
                "SELECT id, source, microsoft_event_id FROM meetings WHERE user_id = ?1 AND starts_at = ?2",
                &[json!(user), json!(syncgate::store::timefmt::normalize(&start).unwrap())],
            )
        };
        if calendly_first {
            deliver(&app, &delivery).await;
            let id = fake.create_event(UPN, &cal, outlook);
            fake.notify(UPN, "created", &id).await;
            within(10, "the Outlook copy to be matched", || async {
                copy_of(&app).first().filter(|r| r[2].as_str() == Some(id.as_str())).map(|_| ())
            })
            .await;
            // A later edit in Outlook does not make a second meeting either.
            fake.update_event(UPN, &id, json!({"location": {"displayName": "Room 2"}}));
            fake.notify(UPN, "updated", &id).await;
            within(10, "the edit's sync", || async { (fake.delta_passes(UPN) >= 3 + i).then_some(()) }).await;
        } else {
            let id = fake.create_event(UPN, &cal, outlook);
            fake.notify(UPN, "created", &id).await;
            within(10, "the Outlook meeting", || async { copy_of(&app).first().filter(|r| r[1] == "microsoft").map(|_| ()) }).await;
            deliver(&app, &delivery).await;
            fake.update_event(UPN, &id, json!({"subject": "Edited in Outlook"}));
            fake.notify(UPN, "updated", &id).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let rows = copy_of(&app);
        assert_eq!(rows.len(), 1, "case {name}: one meeting per booking: {rows:?}");
        assert_eq!(rows[0][1], "calendly", "case {name}");
        assert!(rows[0][2].as_str().is_some_and(|e| e.starts_with("AAkALg")), "case {name}: the Outlook event is remembered: {rows:?}");
    }
    assert!(meetings(&app, &token).await.is_empty(), "no Outlook meeting left beside the bookings");
}

/// What an idle connected Outlook user costs in Graph calls (BENCHMARKS.md
/// "Graph calls of an idle connected user"): the real upkeep against the
/// fake with its intervals scaled down — a safety-net pass every second,
/// subscriptions of 6 s extended 3 s before expiry, access tokens that
/// expire at once — counting every call the fake receives, then scaled back
/// to the defaults (`safety_net_interval = 6h`, `subscription_ttl = 4230m`,
/// `renew_before = 1d`; Microsoft's access tokens last about an hour).
#[tokio::test]
async fn an_idle_outlook_user_costs_few_graph_calls() {
    let (fake, _app, _, _) = connected(|c| {
        c.microsoft.safety_net_interval = syncgate::duration::Dur::secs(1);
        c.microsoft.subscription_ttl = syncgate::duration::Dur::secs(6);
        c.microsoft.renew_before = syncgate::duration::Dur::secs(3);
    })
    .await;
    within(10, "the first sync", || async { (fake.delta_passes(UPN) >= 1).then_some(()) }).await;
    // From here on every token expires at once: each call that needs one refreshes.
    fake.set_access_token_lifetime(1);
    fake.expire_access_tokens(UPN);
    let count = |e: &str| fake.calls(e);
    let before = ["delta", "renew", "token", "calendars", "subscribe", "me"].map(count);
    tokio::time::sleep(Duration::from_secs(7)).await;
    let after = ["delta", "renew", "token", "calendars", "subscribe", "me"].map(count);
    let d: Vec<u64> = after.iter().zip(before.iter()).map(|(a, b)| a - b).collect();
    let (delta, renew, token, calendars, subscribe, me) = (d[0], d[1], d[2], d[3], d[4], d[5]);
    // Idle: each safety-net pass is one delta call (one page, nothing new);
    // a subscription is extended in place, never made again; the calendar
    // list is not read; every refresh serves a call that needed it.
    assert!(delta >= 4, "safety-net passes ran: {d:?}");
    assert!(renew >= 1, "the subscription was extended: {d:?}");
    assert_eq!((subscribe, calendars, me), (0, 0, 0), "nothing else while idle: {d:?}");
    assert!(token <= delta + renew + 1, "at most one refresh per call that needed a token: {d:?}");
    assert!(token + 1 >= delta, "an expired token is refreshed before the call: {d:?}");
    // At the defaults: 4 safety-net passes a day, each a delta call and (the
    // token having expired since) one refresh; an extension every
    // 4230 min - 1 day = 46.5 h, with its refresh.
    let per_day = 4.0 * 2.0 + (24.0 / 46.5) * 2.0;
    println!(
        "idle Outlook user, measured over 7 s: {delta} delta calls, {renew} extensions, {token} token refreshes; \
         at the defaults about {per_day:.1} Graph calls a day (4 delta + 4 refreshes + {:.2} extensions + {:.2} refreshes)",
        24.0 / 46.5,
        24.0 / 46.5
    );
}
