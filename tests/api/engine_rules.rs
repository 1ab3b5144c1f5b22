//! Where SQLite and PostgreSQL differ by nature, syncgate answers the same.
//! These run on whichever engine the suite runs on (both in CI): times keep
//! exactly milliseconds, search ignores case and takes `%` and `_` literally,
//! emails are unique without regard to case, and lists come back in the same
//! order whatever columns are NULL.

use serde_json::{json, Value};

use crate::helpers::spawn_app;

#[tokio::test]
async fn times_keep_milliseconds_in_utc_on_every_path() {
    let app = spawn_app().await;
    let (_, token) = app.add_user("ada@example.com", "user");
    // Microseconds and an offset in; milliseconds in UTC out (truncated, never rounded up).
    let (status, m) = app
        .post(
            "/api/meetings",
            &token,
            &json!({"title": "Precise", "starts_at": "2026-12-02T10:00:00.123999+01:00", "ends_at": "2026-12-02T10:30:00.5Z"}),
        )
        .await;
    assert_eq!(status, 201, "{m}");
    assert_eq!(m["starts_at"], "2026-12-02T09:00:00.123Z");
    assert_eq!(m["ends_at"], "2026-12-02T10:30:00.500Z");
    let (_, read) = app.get(&format!("/api/meetings/{}", m["id"]), &token).await;
    assert_eq!(read["starts_at"], m["starts_at"], "the stored time reads back as written");
    assert_eq!(read["created_at"].as_str().map(str::len), Some(24), "server times are fixed width too: {}", read["created_at"]);
    // The range filter compares instants, not text: a bound one millisecond
    // after the end excludes nothing, one at the start includes the meeting.
    let (_, list) = app.get("/api/meetings?from=2026-12-02T10:30:00.499Z&to=2026-12-02T10:30:00.501Z", &token).await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1), "{list}");
    let (_, list) = app.get("/api/meetings?from=2026-12-02T10:30:00.500Z", &token).await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(0), "a meeting ending at `from` does not overlap: {list}");
    // The change log holds the same text.
    let logged = app.changes().into_iter().rev().find(|c| c.1 == "meetings").expect("logged");
    assert_eq!(logged.5.as_ref().map(|r| r["starts_at"].clone()), Some(Value::from("2026-12-02T09:00:00.123Z")));
}

#[tokio::test]
async fn search_ignores_case_and_takes_wildcards_literally() {
    let app = spawn_app().await;
    let (_, token) = app.add_user("ada@example.com", "user");
    for (name, email) in [("Ann Smith", Some("ANN@Example.com")), ("ben_jones", None), ("100% Cotton Ltd", Some("sales@cotton.example"))] {
        let (s, _) = app.post("/api/clients", &token, &json!({"name": name, "email": email})).await;
        assert_eq!(s, 201);
    }
    let names =
        |v: &Value| -> Vec<String> { v["items"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap().to_string()).collect() };
    for (q, want) in [
        ("smith", vec!["Ann Smith"]),
        ("SMITH", vec!["Ann Smith"]),
        ("ann@example", vec!["Ann Smith"]),
        ("_", vec!["ben_jones"]),
        ("%", vec!["100% Cotton Ltd"]),
        ("n_j", vec!["ben_jones"]),
        ("nj", vec![]),
    ] {
        let (s, v) = app.get(&format!("/api/clients?q={}", urlencode(q)), &token).await;
        assert_eq!(s, 200);
        assert_eq!(names(&v), want, "q={q}");
    }
}

fn urlencode(s: &str) -> String {
    s.bytes().map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

#[tokio::test]
async fn emails_are_unique_without_regard_to_case() {
    let app = spawn_app().await;
    let (_, token) = app.add_user("ada@example.com", "user");
    let (_, admin) = app.add_user("root@example.com", "admin");
    let (s, _) = app.post("/api/clients", &token, &json!({"name": "Ann", "email": "ann@example.com"})).await;
    assert_eq!(s, 201);
    let (s, e) = app.post("/api/clients", &token, &json!({"name": "Ann again", "email": "Ann@Example.COM"})).await;
    assert_eq!(s, 409, "{e}");
    assert_eq!(e["error"], "conflict");
    let (s, e) = app.post("/api/admin/users", &admin, &json!({"email": "ADA@example.com"})).await;
    assert_eq!(s, 409, "{e}");
}

#[tokio::test]
async fn lists_keep_their_order_whatever_is_null() {
    let app = spawn_app().await;
    let (_, token) = app.add_user("ada@example.com", "user");
    let mut ids = Vec::new();
    for (i, email) in [None, Some("b@example.com"), None, Some("a@example.com")].into_iter().enumerate() {
        let (_, c) = app.post("/api/clients", &token, &json!({"name": format!("c{i}"), "email": email})).await;
        ids.push(c["id"].as_i64().unwrap());
    }
    // Pages of two: the cursor carries the order across pages on both engines.
    let mut seen = Vec::new();
    let mut path = "/api/clients?limit=2".to_string();
    loop {
        let (_, page) = app.get(&path, &token).await;
        seen.extend(page["items"].as_array().unwrap().iter().map(|c| c["id"].as_i64().unwrap()));
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/api/clients?limit=2&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen, ids, "by id, NULL emails or not");
}
