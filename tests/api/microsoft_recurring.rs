//! Recurring Outlook events through the sync, against the fake Graph: a
//! weekly series' occurrences inside the window (`microsoft.sync_past` to
//! `sync_future`) become meetings, those outside do not, and the series
//! master never does; an edited occurrence (an exception, moved and
//! retitled) changes that one meeting; a cancelled occurrence cancels only
//! its meeting; deleting the series cancels them all.

use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::helpers::{within, TestApp};
use crate::microsoft_e2e::{connected_with, event_at, meetings, naive, now_minute, settled, UPN};

const DAY: i64 = 86_400;

/// The series' meetings, by start: (event id, start, title, status).
async fn series_meetings(app: &TestApp, token: &str, series: &str) -> Vec<(String, OffsetDateTime, String, String)> {
    let mut out: Vec<_> = meetings(app, token)
        .await
        .into_iter()
        .filter(|m| m["microsoft_event_id"].as_str().is_some_and(|id| id.starts_with(series)))
        .map(|m| {
            let start = syncgate::store::timefmt::parse(m["starts_at"].as_str().unwrap()).expect("a start time");
            let s = |k: &str| m[k].as_str().unwrap_or_default().to_string();
            (s("microsoft_event_id"), start, s("title"), s("status"))
        })
        .collect();
    out.sort_by_key(|m| m.1);
    out
}

#[tokio::test]
async fn a_weekly_series_syncs_its_occurrences_in_the_window_and_follows_exceptions_and_cancellations() {
    // A window of 14 days back and 21 ahead; the fake lists the series'
    // master too, which must not become a meeting.
    let (fake, app, user, token) = connected_with(
        |fake| fake.list_series_masters(true),
        |c| {
            c.microsoft.sync_past = syncgate::duration::Dur::secs(14 * DAY as u64);
            c.microsoft.sync_future = syncgate::duration::Dur::secs(21 * DAY as u64);
        },
    )
    .await;
    let cal = fake.default_calendar(UPN);
    // Weekly from 66.5 days ago, 20 times: at -66.5, -59.5, …, +66.5 days.
    // In the window: -10.5, -3.5, +3.5, +10.5, +17.5 (each 3.5 days from an edge).
    let first = now_minute() - time::Duration::seconds(66 * DAY + DAY / 2);
    let mut series = event_at("Weekly review", first, 60);
    series["recurrence"] = json!({
        "pattern": {"type": "weekly", "interval": 1},
        "range": {"type": "numbered", "startDate": &naive(first)[..10], "numberOfOccurrences": 20},
    });
    let series_id = fake.create_event(UPN, &cal, series);
    fake.notify(UPN, "created", &series_id).await;
    within(15, "the occurrences in the window", || async { (series_meetings(&app, &token, &series_id).await.len() >= 5).then_some(()) })
        .await;
    settled(&app, user).await;
    let synced = series_meetings(&app, &token, &series_id).await;
    let starts: Vec<i64> = synced.iter().map(|m| (m.1 - first).whole_seconds()).collect();
    let weeks = |k: i64| k * 7 * DAY;
    assert_eq!(starts, vec![weeks(8), weeks(9), weeks(10), weeks(11), weeks(12)], "the five occurrences in the window, nothing else");
    assert!(synced.iter().all(|m| m.0 != series_id && m.2 == "Weekly review" && m.3 != "canceled"), "{synced:?}");
    let all = meetings(&app, &token).await;
    assert_eq!(all.len(), 5, "the series master is not a meeting: {all:?}");
    let ids: Vec<String> = synced.iter().map(|m| m.0.clone()).collect();

    // One occurrence moved by two hours and retitled: that meeting only.
    let moved_to = synced[2].1 + time::Duration::hours(2);
    fake.update_occurrence(
        UPN,
        &ids[2],
        json!({"subject": "Weekly review (moved)", "start": {"dateTime": naive(moved_to), "timeZone": "UTC"},
               "end": {"dateTime": naive(moved_to + time::Duration::hours(1)), "timeZone": "UTC"}}),
    );
    fake.notify(UPN, "updated", &series_id).await;
    let after = within(15, "the exception", || async {
        let m = series_meetings(&app, &token, &series_id).await;
        m.iter().any(|m| m.2 == "Weekly review (moved)").then_some(m)
    })
    .await;
    let moved = after.iter().find(|m| m.0 == ids[2]).expect("the moved occurrence keeps its id");
    assert_eq!((moved.1, moved.2.as_str()), (moved_to, "Weekly review (moved)"));
    let others: Vec<&(String, OffsetDateTime, String, String)> = after.iter().filter(|m| m.0 != ids[2]).collect();
    assert_eq!(others.len(), 4);
    assert!(others.iter().all(|m| m.2 == "Weekly review" && m.3 != "canceled"), "the others unchanged: {after:?}");

    // One occurrence cancelled: only its meeting is canceled.
    fake.cancel_occurrence(UPN, &ids[3]);
    fake.notify(UPN, "updated", &series_id).await;
    let after = within(15, "the cancelled occurrence", || async {
        let m = series_meetings(&app, &token, &series_id).await;
        m.iter().any(|m| m.0 == ids[3] && m.3 == "canceled").then_some(m)
    })
    .await;
    let canceled: Vec<&str> = after.iter().filter(|m| m.3 == "canceled").map(|m| m.0.as_str()).collect();
    assert_eq!(canceled, vec![ids[3].as_str()], "only that one: {after:?}");
    assert_eq!(after.len(), 5);

    // The series deleted: every meeting of it canceled.
    fake.delete_event(UPN, &series_id);
    fake.notify(UPN, "deleted", &series_id).await;
    let after = within(15, "the deleted series", || async {
        let m = series_meetings(&app, &token, &series_id).await;
        m.iter().all(|m| m.3 == "canceled").then_some(m)
    })
    .await;
    assert_eq!(after.len(), 5, "{after:?}");
    let none: Vec<Value> = meetings(&app, &token).await.into_iter().filter(|m| m["status"] != "canceled").collect();
    assert!(none.is_empty(), "{none:?}");
}
