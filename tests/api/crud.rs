//! CRUD round trips for clients, meetings and pipeline with the exact status
//! codes and shapes of interfaces.md, cursor paging, the meeting time and
//! status filters, and timestamps normalized to UTC with `Z`.

use std::collections::HashSet;

use serde_json::{json, Value};
use syncgate::store::Table;

use crate::helpers::{spawn_app, TestApp};

/// The row has exactly the table's columns (the one REST/realtime row shape).
fn assert_row_shape(table: Table, row: &Value) {
    let obj = row.as_object().unwrap_or_else(|| panic!("a {} row is a JSON object: {row}", table.name()));
    let got: Vec<&str> = obj.keys().map(String::as_str).collect();
    let want: Vec<&str> = table.columns().iter().map(|(n, _)| *n).collect();
    assert_eq!(got, want, "{} row has the table's columns in order", table.name());
    assert!(row["id"].as_i64().is_some_and(|id| id > 0), "ids are positive integers: {row}");
    assert!(row["user_id"].is_i64(), "user_id is an integer: {row}");
    for ts in ["created_at", "updated_at"] {
        assert_utc(&row[ts]);
    }
}

/// `2026-11-23T10:00:00.000Z`: UTC, milliseconds, `Z`.
fn assert_utc(v: &Value) {
    let s = v.as_str().unwrap_or_else(|| panic!("timestamp is a string: {v}"));
    assert_eq!(s.len(), 24, "fixed-width UTC timestamp: {s}");
    assert!(s.ends_with('Z'), "UTC timestamps end with Z: {s}");
    assert!(syncgate::store::timefmt::parse(s).is_some(), "RFC 3339: {s}");
}

fn assert_empty_list_shape(v: &Value) {
    let obj = v.as_object().expect("list is an object");
    let keys: HashSet<&str> = obj.keys().map(String::as_str).collect();
    assert_eq!(keys, HashSet::from(["items", "next_cursor"]), "list shape: {v}");
    assert!(v["items"].is_array());
}

#[tokio::test]
async fn clients_round_trip() {
    let app = spawn_app().await;
    let (uid, tok) = app.add_user("ada@example.com", "user");

    let (s, list) = app.get("/api/clients", &tok).await;
    assert_eq!(s, 200);
    assert_empty_list_shape(&list);
    assert_eq!(list, json!({"items": [], "next_cursor": null}));

    let (s, created) = app
        .post(
            "/api/clients",
            &tok,
            &json!({"name": "  Grace Hopper ", "email": "grace@example.com", "phone": "+1 555 0100", "notes": "met at conf"}),
        )
        .await;
    assert_eq!(s, 201, "{created}");
    assert_row_shape(Table::Clients, &created);
    assert_eq!(created["user_id"], uid);
    assert_eq!(created["name"], "Grace Hopper", "names are trimmed");
    assert_eq!(created["email"], "grace@example.com");
    assert_eq!(created["phone"], "+1 555 0100");
    assert_eq!(created["notes"], "met at conf");
    let id = created["id"].as_i64().unwrap();

    let (s, got) = app.get(&format!("/api/clients/{id}"), &tok).await;
    assert_eq!(s, 200);
    assert_eq!(got, created, "GET returns the row POST returned");

    let (s, patched) = app.patch(&format!("/api/clients/{id}"), &tok, &json!({"phone": null, "notes": "second meeting"})).await;
    assert_eq!(s, 200, "{patched}");
    assert_row_shape(Table::Clients, &patched);
    assert_eq!(patched["phone"], Value::Null, "explicit null clears");
    assert_eq!(patched["notes"], "second meeting");
    assert_eq!(patched["name"], "Grace Hopper", "absent fields are kept");
    assert_eq!(patched["created_at"], created["created_at"]);
    assert!(patched["updated_at"].as_str().unwrap() >= created["updated_at"].as_str().unwrap());

    let (s, list) = app.get("/api/clients", &tok).await;
    assert_eq!(s, 200);
    assert_eq!(list, json!({"items": [patched], "next_cursor": null}));

    let (s, body) = app.delete(&format!("/api/clients/{id}"), &tok).await;
    assert_eq!(s, 204);
    assert_eq!(body, Value::Null, "204 has no body");

    let (s, err) = app.get(&format!("/api/clients/{id}"), &tok).await;
    assert_eq!(s, 404);
    assert_eq!(err["error"], "not_found");
    let (s, err) = app.delete(&format!("/api/clients/{id}"), &tok).await;
    assert_eq!(s, 404, "deleting twice is a 404");
    assert_eq!(err["error"], "not_found");
    let (s, err) = app.patch(&format!("/api/clients/{id}"), &tok, &json!({"name": "x"})).await;
    assert_eq!(s, 404);
    assert_eq!(err["error"], "not_found");
}

#[tokio::test]
async fn meetings_round_trip_with_offsets_returned_as_utc() {
    let app = spawn_app().await;
    let (uid, tok) = app.add_user("ada@example.com", "user");
    let (_, client) = app.post("/api/clients", &tok, &json!({"name": "Grace"})).await;

    let (s, m) = app
        .post(
            "/api/meetings",
            &tok,
            &json!({
                "title": "Portfolio review",
                "starts_at": "2026-11-23T11:00:00+01:00",
                "ends_at": "2026-11-23T06:30:00-05:00",
                "location": "Office",
                "meeting_url": "https://meet.example.com/abc",
                "timezone": "Europe/Berlin",
                "client_id": client["id"],
                "attendees": [{"email": "grace@example.com"}],
                "notes": "bring statements"
            }),
        )
        .await;
    assert_eq!(s, 201, "{m}");
    assert_row_shape(Table::Meetings, &m);
    assert_eq!(m["user_id"], uid);
    assert_eq!(m["source"], "manual", "REST-made meetings are manual");
    assert_eq!(m["starts_at"], "2026-11-23T10:00:00.000Z");
    assert_eq!(m["ends_at"], "2026-11-23T11:30:00.000Z");
    assert_eq!(m["status"], "scheduled");
    assert_eq!(m["all_day"], false);
    assert_eq!(m["client_id"], client["id"]);
    assert_eq!(m["attendees"], json!([{"email": "grace@example.com"}]));
    assert_eq!(m["title"], "Portfolio review");
    let id = m["id"].as_i64().unwrap();

    let (s, got) = app.get(&format!("/api/meetings/{id}"), &tok).await;
    assert_eq!(s, 200);
    assert_eq!(got, m);

    let (s, p) = app
        .patch(
            &format!("/api/meetings/{id}"),
            &tok,
            &json!({"starts_at": "2026-11-23T12:15:00.5+02:00", "status": "no_show", "client_id": null}),
        )
        .await;
    assert_eq!(s, 200, "{p}");
    assert_eq!(p["starts_at"], "2026-11-23T10:15:00.500Z");
    assert_eq!(p["ends_at"], "2026-11-23T11:30:00.000Z");
    assert_eq!(p["status"], "no_show");
    assert_eq!(p["client_id"], Value::Null);
    assert_eq!(p["notes"], "bring statements");

    let (s, err) = app.patch(&format!("/api/meetings/{id}"), &tok, &json!({"ends_at": "2026-11-23T10:15:00Z"})).await;
    assert_eq!(s, 422, "ends_at <= starts_at: {err}");
    assert_eq!(err["error"], "unprocessable");

    let (s, list) = app.get("/api/meetings", &tok).await;
    assert_eq!(s, 200);
    assert_eq!(list, json!({"items": [p], "next_cursor": null}));

    let (s, _) = app.delete(&format!("/api/meetings/{id}"), &tok).await;
    assert_eq!(s, 204);
    let (s, _) = app.get(&format!("/api/meetings/{id}"), &tok).await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn pipeline_round_trip() {
    let app = spawn_app().await;
    let (uid, tok) = app.add_user("ada@example.com", "user");
    let (_, client) = app.post("/api/clients", &tok, &json!({"name": "Grace"})).await;

    let (s, d) = app
        .post(
            "/api/pipeline",
            &tok,
            &json!({"title": "Retirement plan", "client_id": client["id"], "value": 1500.5, "expected_close": "2026-12-01"}),
        )
        .await;
    assert_eq!(s, 201, "{d}");
    assert_row_shape(Table::Pipeline, &d);
    assert_eq!(d["user_id"], uid);
    assert_eq!(d["stage"], "lead", "stage defaults to lead");
    assert_eq!(d["value"], 1500.5);
    assert_eq!(d["expected_close"], "2026-12-01");
    assert_eq!(d["client_id"], client["id"]);
    let id = d["id"].as_i64().unwrap();

    let (s, got) = app.get(&format!("/api/pipeline/{id}"), &tok).await;
    assert_eq!(s, 200);
    assert_eq!(got, d);

    let (s, p) = app.patch(&format!("/api/pipeline/{id}"), &tok, &json!({"stage": "won", "value": 2000, "expected_close": null})).await;
    assert_eq!(s, 200, "{p}");
    assert_eq!(p["stage"], "won");
    assert_eq!(p["value"].as_f64(), Some(2000.0));
    assert_eq!(p["expected_close"], Value::Null);
    assert_eq!(p["title"], "Retirement plan");

    let (s, err) = app.patch(&format!("/api/pipeline/{id}"), &tok, &json!({"stage": "maybe"})).await;
    assert_eq!(s, 422, "{err}");
    assert_eq!(err["error"], "unprocessable");

    let (s, list) = app.get("/api/pipeline", &tok).await;
    assert_eq!(s, 200);
    assert_eq!(list, json!({"items": [p], "next_cursor": null}));
    let (s, list) = app.get("/api/pipeline?stage=lead", &tok).await;
    assert_eq!(s, 200);
    assert_eq!(list["items"], json!([]));

    let (s, _) = app.delete(&format!("/api/pipeline/{id}"), &tok).await;
    assert_eq!(s, 204);
    let (s, _) = app.get(&format!("/api/pipeline/{id}"), &tok).await;
    assert_eq!(s, 404);
}

/// Follow `next_cursor` until it is null; returns every page's items.
async fn all_pages(app: &TestApp, tok: &str, first: &str) -> Vec<Vec<Value>> {
    let mut pages = Vec::new();
    let mut path = first.to_string();
    loop {
        let (s, page) = app.get(&path, tok).await;
        assert_eq!(s, 200, "{path}: {page}");
        assert_empty_list_shape(&page);
        pages.push(page["items"].as_array().unwrap().clone());
        match page["next_cursor"].as_str() {
            Some(c) => {
                let sep = if first.contains('?') { '&' } else { '?' };
                // Cursors are base64url, safe in a query as they are.
                path = format!("{first}{sep}cursor={c}");
            }
            None => break,
        }
        assert!(pages.len() < 100, "paging terminates");
    }
    pages
}

#[tokio::test]
async fn paging_returns_every_row_once() {
    let app = spawn_app().await;
    let (_, tok) = app.add_user("ada@example.com", "user");
    let (_, other) = app.add_user("bob@example.com", "user");
    let mut want = Vec::new();
    for i in 0..23 {
        let (s, c) = app.post("/api/clients", &tok, &json!({"name": format!("client {i}")})).await;
        assert_eq!(s, 201);
        want.push(c["id"].as_i64().unwrap());
        // Another user's rows interleave and must not show up.
        app.post("/api/clients", &other, &json!({"name": format!("other {i}")})).await;
    }

    let pages = all_pages(&app, &tok, "/api/clients?limit=5").await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), vec![5, 5, 5, 5, 3]);
    let got: Vec<i64> = pages.iter().flatten().map(|r| r["id"].as_i64().unwrap()).collect();
    assert_eq!(got, want, "every row once, in id order");

    // A limit that divides the count exactly ends with a null cursor, not an empty page.
    let (_, c) = app.post("/api/clients", &tok, &json!({"name": "client 23"})).await;
    want.push(c["id"].as_i64().unwrap());
    let pages = all_pages(&app, &tok, "/api/clients?limit=8").await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), vec![8, 8, 8]);

    // Default limit returns everything here in one page.
    let (s, page) = app.get("/api/clients", &tok).await;
    assert_eq!(s, 200);
    assert_eq!(page["items"].as_array().unwrap().len(), 24);
    assert_eq!(page["next_cursor"], Value::Null);
}

#[tokio::test]
async fn meetings_page_by_start_time_with_ties() {
    let app = spawn_app().await;
    let (_, tok) = app.add_user("ada@example.com", "user");
    // Created out of time order, several sharing a start time.
    let hours = [5, 1, 3, 3, 3, 0, 7, 3, 2, 6, 1, 4, 3];
    let mut want: Vec<(String, i64)> = Vec::new();
    for h in hours {
        let (s, m) = app
            .post(
                "/api/meetings",
                &tok,
                &json!({"title": format!("h{h}"), "starts_at": format!("2026-11-23T{h:02}:00:00Z"), "ends_at": format!("2026-11-23T{h:02}:30:00Z")}),
            )
            .await;
        assert_eq!(s, 201, "{m}");
        want.push((m["starts_at"].as_str().unwrap().to_string(), m["id"].as_i64().unwrap()));
    }
    want.sort();
    let pages = all_pages(&app, &tok, "/api/meetings?limit=3").await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), vec![3, 3, 3, 3, 1]);
    let got: Vec<(String, i64)> =
        pages.iter().flatten().map(|r| (r["starts_at"].as_str().unwrap().to_string(), r["id"].as_i64().unwrap())).collect();
    assert_eq!(got, want, "ordered by start time then id, no duplicates, no misses");
}

#[tokio::test]
async fn meeting_filters_by_overlap_and_status() {
    let app = spawn_app().await;
    let (_, tok) = app.add_user("ada@example.com", "user");
    let mk = |title: &str, s: &str, e: &str, status: &str| json!({"title": title, "starts_at": format!("2026-11-23T{s}Z"), "ends_at": format!("2026-11-23T{e}Z"), "status": status});
    let mut ids = std::collections::HashMap::new();
    for (t, s, e, st) in [
        ("before", "08:00:00", "09:00:00", "scheduled"),
        ("ends_at_from", "09:00:00", "10:00:00", "scheduled"),
        ("inside", "10:15:00", "10:45:00", "scheduled"),
        ("straddles_start", "09:30:00", "10:30:00", "canceled"),
        ("straddles_end", "10:30:00", "11:30:00", "scheduled"),
        ("covers", "07:00:00", "13:00:00", "no_show"),
        ("starts_at_to", "11:00:00", "12:00:00", "scheduled"),
        ("after", "12:00:00", "13:00:00", "canceled"),
    ] {
        let (s, m) = app.post("/api/meetings", &tok, &mk(t, s, e, st)).await;
        assert_eq!(s, 201, "{m}");
        ids.insert(t, m["id"].as_i64().unwrap());
    }
    let titles = |v: &Value| -> HashSet<String> {
        v["items"].as_array().unwrap().iter().map(|r| r["title"].as_str().unwrap().to_string()).collect()
    };
    let set = |xs: &[&str]| -> HashSet<String> { xs.iter().map(|s| s.to_string()).collect() };

    // Rows overlapping [10:00, 11:00): touching at an edge is not overlapping.
    let (s, v) = app.get("/api/meetings?from=2026-11-23T10:00:00Z&to=2026-11-23T11:00:00Z", &tok).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(titles(&v), set(&["inside", "straddles_start", "straddles_end", "covers"]));

    // The same range written with an offset (`+` must be percent-encoded in a query).
    let (s, v) = app.get("/api/meetings?from=2026-11-23T11:00:00%2B01:00&to=2026-11-23T06:00:00-05:00", &tok).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(titles(&v), set(&["inside", "straddles_start", "straddles_end", "covers"]));

    // Only `from`: everything ending after it.
    let (s, v) = app.get("/api/meetings?from=2026-11-23T12:00:00Z", &tok).await;
    assert_eq!(s, 200);
    assert_eq!(titles(&v), set(&["covers", "after"]));
    // Only `to`: everything starting before it.
    let (s, v) = app.get("/api/meetings?to=2026-11-23T09:00:00Z", &tok).await;
    assert_eq!(s, 200);
    assert_eq!(titles(&v), set(&["before", "covers"]));

    let (s, v) = app.get("/api/meetings?status=canceled", &tok).await;
    assert_eq!(s, 200);
    assert_eq!(titles(&v), set(&["straddles_start", "after"]));
    let (s, v) = app.get("/api/meetings?status=scheduled&from=2026-11-23T10:00:00Z&to=2026-11-23T11:00:00Z", &tok).await;
    assert_eq!(s, 200);
    assert_eq!(titles(&v), set(&["inside", "straddles_end"]));

    // Filters combine with paging.
    let pages = all_pages(&app, &tok, "/api/meetings?from=2026-11-23T10:00:00Z&to=2026-11-23T11:00:00Z&limit=1").await;
    let got: Vec<String> = pages.iter().flatten().map(|r| r["title"].as_str().unwrap().to_string()).collect();
    assert_eq!(got, vec!["covers", "straddles_start", "inside", "straddles_end"]);

    let (s, e) = app.get("/api/meetings?status=maybe", &tok).await;
    assert_eq!(s, 400);
    assert_eq!(e["error"], "bad_request");
    let (s, e) = app.get("/api/meetings?from=yesterday", &tok).await;
    assert_eq!(s, 400);
    assert_eq!(e["error"], "bad_request");
}
