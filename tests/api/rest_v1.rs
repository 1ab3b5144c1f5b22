//! `/rest/v1`, Supabase's data API in PostgREST's dialect, over real HTTP on
//! whichever engine the suite runs (SQLite, then PostgreSQL): filters,
//! order, ranges and counts pick the same rows on both; writes go through
//! the change log like `/api`'s; every refusal is PostgREST-shaped and
//! writes nothing; the limits hold; the anon key reads nothing and writes
//! nothing; a user never reaches another user's rows. (The real
//! supabase-js client is driven against the binary in `tests/js`.)

use reqwest::{Method, RequestBuilder};
use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_with, TestApp};

/// A `/rest/v1` request as supabase-js sends it: the anon key as `apikey`,
/// the user's token as the bearer.
fn rest(app: &TestApp, method: Method, path_and_query: &str, token: Option<&str>) -> RequestBuilder {
    let anon = syncgate::auth::Tokens::new(crate::helpers::SECRET).anon_key();
    let r = app.http.request(method, app.url(&format!("/rest/v1/{path_and_query}"))).header("apikey", &anon);
    match token {
        Some(t) => r.bearer_auth(t),
        None => r,
    }
}

struct Answer {
    status: u16,
    range: Option<String>,
    content_type: String,
    body: Value,
}

async fn send(r: RequestBuilder) -> Answer {
    let res = r.send().await.expect("request");
    let status = res.status().as_u16();
    let header = |n: &str| res.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
    let range = header("content-range");
    let content_type = header("content-type").unwrap_or_default();
    let text = res.text().await.unwrap_or_default();
    Answer { status, range, content_type, body: serde_json::from_str(&text).unwrap_or(Value::Null) }
}

async fn get(app: &TestApp, q: &str, token: &str) -> Answer {
    send(rest(app, Method::GET, q, Some(token))).await
}

fn ids(body: &Value) -> Vec<i64> {
    body.as_array().unwrap_or_else(|| panic!("an array: {body}")).iter().map(|r| r["id"].as_i64().unwrap()).collect()
}

/// Six meetings of one user with values that tell the operators apart.
async fn meetings(app: &TestApp, token: &str) -> (Vec<i64>, i64) {
    let client = app.post("/api/clients", token, &json!({"name": "Acme"})).await.1["id"].as_i64().unwrap();
    let rows = [
        ("Intro call", "2026-12-01T09:00:00Z", Some(client), "scheduled", false),
        ("intro follow-up", "2026-12-02T09:00:00Z", None, "scheduled", false),
        ("Review 100%", "2026-12-03T09:00:00Z", Some(client), "canceled", true),
        ("Review_Q4", "2026-12-04T09:00:00Z", None, "no_show", false),
        ("Planning, \"big\" (Q1)", "2026-12-05T09:00:00+01:00", Some(client), "scheduled", true),
        ("Wrap-up", "2026-12-06T09:00:00Z", None, "canceled", false),
    ];
    let mut out = Vec::new();
    for (title, starts, client_id, status, all_day) in rows {
        let ends = starts.replace("T09:", "T10:");
        let body =
            json!({"title": title, "starts_at": starts, "ends_at": ends, "client_id": client_id, "status": status, "all_day": all_day});
        let (code, row) = app.post("/api/meetings", token, &body).await;
        assert_eq!(code, 201, "{row}");
        out.push(row["id"].as_i64().unwrap());
    }
    (out, client)
}

#[tokio::test]
async fn filters_order_and_ranges_pick_the_same_rows_on_every_engine() {
    let app = spawn_app().await;
    let (_, token) = app.add_user("ann@example.com", "user");
    let (m, client) = meetings(&app, &token).await;
    let cases: Vec<(String, Vec<i64>)> = vec![
        ("meetings?status=eq.canceled".into(), vec![m[2], m[5]]),
        ("meetings?status=neq.scheduled&order=id".into(), vec![m[2], m[3], m[5]]),
        // like is case-sensitive, ilike is not; `*` is `%`, `_` one character, `\` escapes.
        ("meetings?title=like.Intro*".into(), vec![m[0]]),
        ("meetings?title=ilike.intro*".into(), vec![m[0], m[1]]),
        ("meetings?title=like.*100\\%25".into(), vec![m[2]]),
        ("meetings?title=like.Review?Q4".into(), vec![]),
        ("meetings?title=like.Review_Q4".into(), vec![m[3]]),
        ("meetings?client_id=is.null".into(), vec![m[1], m[3], m[5]]),
        ("meetings?client_id=not.is.null".into(), vec![m[0], m[2], m[4]]),
        ("meetings?all_day=is.true".into(), vec![m[2], m[4]]),
        (format!("meetings?id=in.({},{},999)", m[1], m[4]), vec![m[1], m[4]]),
        (format!("meetings?id=not.in.({},{})&status=eq.scheduled", m[1], m[4]), vec![m[0]]),
        ("meetings?title=in.(\"Planning, \\\"big\\\" (Q1)\",Wrap-up)".into(), vec![m[4], m[5]]),
        // Timestamps compare as instants, whatever offset or form the value has.
        ("meetings?starts_at=gte.2026-12-05&starts_at=lt.2026-12-06T09:00:00Z".into(), vec![m[4]]),
        ("meetings?starts_at=gt.2026-12-05T08:00:00%2B00:00".into(), vec![m[5]]),
        ("meetings?or=(status.eq.no_show,and(client_id.eq.CLIENT,all_day.is.false))".into(), vec![m[0], m[3]]),
        ("meetings?not.or=(status.eq.scheduled,status.eq.canceled)".into(), vec![m[3]]),
        // Order: several keys, NULLs where PostgreSQL puts them unless told.
        ("meetings?order=client_id.asc,starts_at.desc".into(), vec![m[4], m[2], m[0], m[5], m[3], m[1]]),
        ("meetings?order=client_id.asc.nullsfirst,id.desc".into(), vec![m[5], m[3], m[1], m[4], m[2], m[0]]),
        ("meetings?order=client_id.desc,id".into(), vec![m[1], m[3], m[5], m[0], m[2], m[4]]),
        ("meetings?order=starts_at.desc&limit=2&offset=1".into(), vec![m[4], m[3]]),
        ("meetings?select=id&title=ilike.*review*&order=title".into(), vec![m[2], m[3]]),
    ];
    for (q, want) in cases {
        let q = q.replace("CLIENT", &client.to_string());
        let a = get(&app, &q, &token).await;
        assert_eq!(a.status, 200, "{q}: {}", a.body);
        let mut got = ids(&a.body);
        if !q.contains("order=") {
            got.sort_unstable();
        }
        assert_eq!(got, want, "{q}");
    }

    // select= shapes each row; Content-Range and an exact count; 206 for part of the rows.
    let a =
        send(rest(&app, Method::GET, "meetings?select=id,title&order=id&limit=2&offset=2", Some(&token)).header("prefer", "count=exact"))
            .await;
    assert_eq!((a.status, a.range.as_deref()), (206, Some("2-3/6")));
    assert_eq!(a.body, json!([{"id": m[2], "title": "Review 100%"}, {"id": m[3], "title": "Review_Q4"}]));
    let all = send(rest(&app, Method::GET, "meetings?status=eq.canceled", Some(&token)).header("prefer", "count=exact")).await;
    assert_eq!((all.status, all.range.as_deref()), (200, Some("0-1/2")));
    let none = send(rest(&app, Method::GET, "meetings?status=eq.none", Some(&token)).header("prefer", "count=exact")).await;
    assert_eq!((none.status, none.range.as_deref(), none.body), (200, Some("*/0"), json!([])));
    let past = send(rest(&app, Method::GET, "meetings?offset=10", Some(&token)).header("prefer", "count=exact")).await;
    assert_eq!((past.status, past.body["code"].as_str()), (416, Some("PGRST103")));
    // The Range header of older clients, and HEAD with a count.
    let ranged = send(rest(&app, Method::GET, "meetings?order=id", Some(&token)).header("range", "1-2")).await;
    assert_eq!((ids(&ranged.body), ranged.range.as_deref()), (vec![m[1], m[2]], Some("1-2/*")));
    let head = send(rest(&app, Method::HEAD, "meetings?status=eq.scheduled", Some(&token)).header("prefer", "count=exact")).await;
    assert_eq!((head.status, head.range.as_deref(), head.body), (200, Some("0-2/3"), Value::Null));

    // .single(): exactly one row as an object, else PostgREST's 406 with the row count.
    let one = send(
        rest(&app, Method::GET, &format!("meetings?id=eq.{}", m[0]), Some(&token)).header("accept", "application/vnd.pgrst.object+json"),
    )
    .await;
    assert_eq!((one.status, one.body["title"].as_str()), (200, Some("Intro call")));
    assert!(one.content_type.starts_with("application/vnd.pgrst.object+json"), "{}", one.content_type);
    for (q, n) in [("meetings?id=eq.999", 0), ("meetings?status=eq.canceled", 2)] {
        let a = send(rest(&app, Method::GET, q, Some(&token)).header("accept", "application/vnd.pgrst.object+json")).await;
        assert_eq!(a.status, 406);
        assert_eq!(
            a.body,
            json!({"code": "PGRST116", "details": format!("The result contains {n} rows"), "hint": null, "message": "Cannot coerce the result to a single JSON object"})
        );
    }
}

#[tokio::test]
async fn writes_are_logged_like_api_writes_and_answer_as_asked() {
    let app = spawn_app().await;
    let (ann, token) = app.add_user("ann@example.com", "user");
    let before = app.changes().len();

    // Many rows at once with the columns= parameter supabase-js adds; one statement, all logged.
    let r = rest(&app, Method::POST, "clients?columns=%22name%22,%22email%22&select=id,name,user_id", Some(&token))
        .header("prefer", "return=representation")
        .json(&json!([{"name": "Ann Client", "email": "a@x.com"}, {"name": "Bob Client"}]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let made: Value = r.json().await.unwrap();
    assert_eq!(made.as_array().unwrap().len(), 2);
    assert_eq!(made[0]["user_id"], ann);
    assert!(made[0].get("email").is_none(), "select= shapes the answer: {made}");
    let client = made[0]["id"].as_i64().unwrap();
    // Without return=representation: 201 and no body.
    let minimal = send(rest(&app, Method::POST, "clients", Some(&token)).json(&json!({"name": "Quiet"}))).await;
    assert_eq!((minimal.status, minimal.body), (201, Value::Null));

    let meeting = json!({"title": "Intro", "starts_at": "2026-12-01T10:00:00Z", "ends_at": "2026-12-01T11:00:00Z", "client_id": client});
    assert_eq!(send(rest(&app, Method::POST, "meetings", Some(&token)).json(&meeting)).await.status, 201);
    let deal = json!({"client_id": client, "title": "Deal", "stage": "lead"});
    assert_eq!(send(rest(&app, Method::POST, "pipeline", Some(&token)).json(&deal)).await.status, 201);

    // PATCH by filter: only the matching rows, each logged as an UPDATE.
    let patched = send(
        rest(&app, Method::PATCH, "clients?name=ilike.*client*&select=name,notes", Some(&token))
            .header("prefer", "return=representation")
            .json(&json!({"notes": "met in December"})),
    )
    .await;
    assert_eq!(patched.status, 200, "{}", patched.body);
    assert_eq!(patched.body.as_array().unwrap().len(), 2);
    assert!(patched.body.as_array().unwrap().iter().all(|r| r["notes"] == "met in December"));
    let quiet = app.get("/api/clients?limit=10", &token).await.1["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "Quiet")
        .cloned()
        .unwrap();
    assert!(quiet["notes"].is_null(), "rows the filter did not pick are untouched");

    // DELETE by filter does what /api's delete does: the client's deal goes, its meeting stays unlinked.
    let gone = send(rest(&app, Method::DELETE, &format!("clients?id=eq.{client}"), Some(&token))).await;
    assert_eq!((gone.status, gone.body), (204, Value::Null));
    let m = app.get("/api/meetings", &token).await.1;
    assert!(m["items"][0]["client_id"].is_null(), "{m}");
    assert_eq!(app.get("/api/pipeline", &token).await.1["items"], json!([]));

    let ops: Vec<(String, String)> = app.changes()[before..].iter().map(|c| (c.1.clone(), c.2.clone())).collect();
    let want: Vec<(String, String)> = [
        ("clients", "INSERT"),
        ("clients", "INSERT"),
        ("clients", "INSERT"),
        ("meetings", "INSERT"),
        ("pipeline", "INSERT"),
        ("clients", "UPDATE"),
        ("clients", "UPDATE"),
        ("meetings", "UPDATE"),
        ("pipeline", "DELETE"),
        ("clients", "DELETE"),
    ]
    .iter()
    .map(|(t, o)| (t.to_string(), o.to_string()))
    .collect();
    assert_eq!(ops, want);

    // Realtime sees a /rest/v1 write like any other.
    let mut ws = app.ws(&syncgate::auth::Tokens::new(crate::helpers::SECRET).anon_key(), "1.0.0").await;
    ws.join("realtime:m", json!([{"event": "*", "schema": "public", "table": "clients"}]), Some(&token)).await;
    ws.joined().await;
    send(rest(&app, Method::POST, "clients", Some(&token)).json(&json!({"name": "Live"}))).await;
    let frame = ws.recv_event("postgres_changes").await;
    assert_eq!(frame.payload["data"]["record"]["name"], "Live", "{:?}", frame.payload);
}

#[tokio::test]
async fn every_refusal_is_postgrest_shaped_and_writes_nothing() {
    let app = spawn_app().await;
    let (_, token) = app.add_user("ann@example.com", "user");
    let (bob, _) = app.add_user("bob@example.com", "user");
    let (m, _) = meetings(&app, &token).await;
    app.post("/api/clients", &token, &json!({"name": "Taken", "email": "t@x.com"})).await;
    // A synced meeting: its source owns the title and times.
    app.db().execute("UPDATE meetings SET source = 'calendly', external_id = 'ev-1' WHERE id = ?1", &[json!(m[5])]);
    let before = (app.changes().len(), app.db().count("clients"), app.db().count("meetings"));
    let cases: Vec<(Method, String, Option<Value>, u16, &str)> = vec![
        (Method::GET, "meetings?colour=eq.red".into(), None, 400, "42703"),
        (Method::GET, "meetings?select=id,colour".into(), None, 400, "42703"),
        (Method::GET, "meetings?client_id=eq.seven".into(), None, 400, "22P02"),
        (Method::GET, "meetings?status=regex.x".into(), None, 400, "PGRST100"),
        (Method::GET, "meetings?select=id,clients(name)".into(), None, 400, "PGRST100"),
        (Method::GET, "users".into(), None, 404, "PGRST205"),
        (Method::POST, "rpc/anything".into(), Some(json!({})), 404, "PGRST202"),
        (Method::PATCH, "clients".into(), Some(json!({"notes": "all of them"})), 400, "21000"),
        (Method::DELETE, "meetings".into(), None, 400, "21000"),
        (Method::POST, "clients".into(), Some(json!({"name": "X", "colour": "red"})), 400, "PGRST204"),
        (Method::POST, "clients".into(), Some(json!({"name": "X", "id": 77})), 400, "428C9"),
        (Method::POST, "clients".into(), Some(json!([{"name": "A"}, {"name": "B", "email": "b@x.com"}])), 400, "PGRST102"),
        (Method::POST, "clients".into(), Some(json!("just text")), 400, "PGRST102"),
        (Method::POST, "clients".into(), Some(json!({"name": "Dup", "email": "t@x.com"})), 409, "23505"),
        (Method::POST, "clients".into(), Some(json!({"name": "Theirs", "user_id": bob})), 403, "42501"),
        (
            Method::POST,
            "meetings".into(),
            Some(json!({"title": "Back", "starts_at": "2026-12-01T10:00:00Z", "ends_at": "2026-12-01T09:00:00Z"})),
            400,
            "23514",
        ),
        (
            Method::POST,
            "meetings".into(),
            Some(
                json!({"title": "Other's client", "starts_at": "2026-12-01T10:00:00Z", "ends_at": "2026-12-01T11:00:00Z", "client_id": 99999}),
            ),
            409,
            "23503",
        ),
        // One bad row in an array: none of the rows are inserted.
        (
            Method::POST,
            "clients?columns=name,email".into(),
            Some(json!([{"name": "Fine"}, {"name": "Bad", "email": "not an email"}])),
            400,
            "23514",
        ),
        (Method::PATCH, format!("meetings?id=eq.{}", m[5]), Some(json!({"title": "Renamed"})), 409, "P0001"),
        (Method::PATCH, format!("meetings?id=eq.{}", m[0]), Some(json!({"source": "google"})), 400, "428C9"),
        (Method::PATCH, format!("meetings?id=eq.{}", m[0]), Some(json!({"user_id": bob})), 403, "42501"),
        (Method::PATCH, format!("meetings?id=eq.{}", m[0]), Some(json!({"title": null})), 400, "23502"),
        (Method::POST, "pipeline".into(), Some(json!({"title": "Deal", "value": null})), 400, "23502"),
        (Method::POST, "clients?on_conflict=email".into(), Some(json!({"name": "Up"})), 400, "PGRST100"),
    ];
    for (method, q, body, status, code) in cases {
        let mut r = rest(&app, method.clone(), &q, Some(&token));
        if let Some(b) = &body {
            r = r.json(b);
        }
        let a = send(r).await;
        assert_eq!((a.status, a.body["code"].as_str()), (status, Some(code)), "{method} {q}: {}", a.body);
        for key in ["code", "details", "hint", "message"] {
            assert!(a.body.get(key).is_some(), "{method} {q}: {key} missing in {}", a.body);
        }
        assert!(a.body["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // .single() on a write that would change two rows: 406 and nothing changed.
    let two = send(
        rest(&app, Method::PATCH, "meetings?status=eq.canceled", Some(&token))
            .header("accept", "application/vnd.pgrst.object+json")
            .json(&json!({"notes": "x"})),
    )
    .await;
    assert_eq!((two.status, two.body["details"].as_str()), (406, Some("The result contains 2 rows")));
    let del =
        send(rest(&app, Method::DELETE, "meetings?status=eq.canceled", Some(&token)).header("accept", "application/vnd.pgrst.object+json"))
            .await;
    assert_eq!(del.status, 406);
    assert_eq!((app.changes().len(), app.db().count("clients"), app.db().count("meetings")), before, "nothing was written");
    // /api keeps its own error shape.
    let api = app.get("/api/meetings?status=maybe", &token).await;
    assert_eq!((api.0, api.1["error"].as_str()), (400, Some("bad_request")));
}

#[tokio::test]
async fn limits_bound_every_answer_and_every_bulk_write() {
    let app = spawn_app_with(|c| {
        c.rest.max_rows = 3;
        c.rest.max_conditions = 4;
        c.rest.max_query_bytes = 300;
    })
    .await;
    let (_, token) = app.add_user("ann@example.com", "user");
    meetings(&app, &token).await;
    let capped = send(rest(&app, Method::GET, "meetings?limit=100", Some(&token)).header("prefer", "count=exact")).await;
    assert_eq!((ids(&capped.body).len(), capped.range.as_deref(), capped.status), (3, Some("0-2/6"), 206));
    let unasked = get(&app, "meetings", &token).await;
    assert_eq!(ids(&unasked.body).len(), 3, "rest.max_rows caps a list without a limit too");

    let before = app.changes().len();
    let wide = send(rest(&app, Method::PATCH, "meetings?id=gt.0", Some(&token)).json(&json!({"notes": "bulk"}))).await;
    assert_eq!((wide.status, wide.body["code"].as_str()), (400, Some("PGRST124")));
    let wide = send(rest(&app, Method::DELETE, "meetings?id=gt.0", Some(&token))).await;
    assert_eq!((wide.status, wide.body["code"].as_str()), (400, Some("PGRST124")));
    // Prefer: handling=strict, max-affected=N (postgrest-js's maxAffected) is honoured too.
    let strict =
        send(rest(&app, Method::DELETE, "meetings?status=eq.canceled", Some(&token)).header("prefer", "handling=strict, max-affected=1"))
            .await;
    assert_eq!((strict.status, strict.body["details"].as_str()), (400, Some("The query affects 2 rows")));
    assert_eq!(app.changes().len(), before, "a refused bulk write changes nothing");

    let many = get(&app, "meetings?id=gt.0&id=gt.1&id=gt.2&id=gt.3&id=gt.4", &token).await;
    assert_eq!((many.status, many.body["code"].as_str()), (400, Some("PGRST100")));
    let long = get(&app, &format!("meetings?title=eq.{}", "x".repeat(400)), &token).await;
    assert_eq!((long.status, long.body["code"].as_str()), (414, Some("PGRST100")));
}

#[tokio::test]
async fn the_anon_key_reads_nothing_and_users_reach_only_their_rows() {
    let app = spawn_app().await;
    let (_, ann) = app.add_user("ann@example.com", "user");
    let (bob_id, bob) = app.add_user("bob@example.com", "user");
    let (_, admin) = app.add_user("root@example.com", "admin");
    let (m, _) = meetings(&app, &ann).await;

    // Only the anon key: 200 with no rows (row-level security's answer), writes 401.
    let anon = send(rest(&app, Method::GET, "meetings", None).header("prefer", "count=exact")).await;
    assert_eq!((anon.status, anon.body.clone(), anon.range.as_deref()), (200, json!([]), Some("*/0")));
    let w = send(rest(&app, Method::POST, "clients", None).json(&json!({"name": "Sneaky"}))).await;
    assert_eq!((w.status, w.body["code"].as_str()), (401, Some("42501")));
    // An apikey this server did not sign, a bad bearer, or no key at all: 401.
    let forged = send(app.http.get(app.url("/rest/v1/meetings")).header("apikey", "eyJhbGciOiJIUzI1NiJ9.e30.x").bearer_auth(&ann)).await;
    assert_eq!((forged.status, forged.body["code"].as_str()), (401, Some("PGRST301")));
    let bad = send(rest(&app, Method::GET, "meetings", Some("not-a-token"))).await;
    assert_eq!((bad.status, bad.body["code"].as_str()), (401, Some("PGRST301")));
    let bare = send(app.http.get(app.url("/rest/v1/meetings"))).await;
    assert_eq!((bare.status, bare.body["code"].as_str()), (401, Some("PGRST302")));

    // Bob sees none of Ann's rows and his filters never reach them.
    assert_eq!(get(&app, "meetings", &bob).await.body, json!([]));
    let p = send(
        rest(&app, Method::PATCH, &format!("meetings?id=eq.{}", m[0]), Some(&bob))
            .header("prefer", "return=representation")
            .json(&json!({"notes": "mine now"})),
    )
    .await;
    assert_eq!((p.status, p.body), (200, json!([])));
    let d = send(rest(&app, Method::DELETE, "meetings?id=gt.0", Some(&bob)).header("prefer", "return=representation")).await;
    assert_eq!((d.status, d.body), (200, json!([])));
    assert_eq!(ids(&get(&app, "meetings?order=id", &ann).await.body), m, "Ann's rows are all there, unchanged");

    // An admin sees everyone's and may create a row for another user.
    assert_eq!(ids(&get(&app, "meetings?order=id", &admin).await.body), m);
    let made = send(
        rest(&app, Method::POST, "clients", Some(&admin))
            .header("prefer", "return=representation")
            .header("accept", "application/vnd.pgrst.object+json")
            .json(&json!({"name": "For Bob", "user_id": bob_id})),
    )
    .await;
    assert_eq!((made.status, made.body["user_id"].as_i64()), (201, Some(bob_id)));
    assert_eq!(get(&app, "clients?select=name", &bob).await.body, json!([{"name": "For Bob"}]));
}

#[tokio::test]
async fn browsers_on_listed_origins_may_call_with_supabase_js_headers() {
    let app = spawn_app_with(|c| c.server.cors_origins = vec!["https://app.example.com".into()]).await;
    let preflight = app
        .http
        .request(Method::OPTIONS, app.url("/rest/v1/meetings?select=*"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "PATCH")
        .header(
            "access-control-request-headers",
            "apikey, authorization, content-type, prefer, x-client-info, accept-profile, content-profile, range",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status().as_u16(), 200);
    assert_eq!(preflight.headers()["access-control-allow-origin"], "https://app.example.com");
    let (_, token) = app.add_user("ann@example.com", "user");
    let r = rest(&app, Method::GET, "meetings", Some(&token)).header("origin", "https://app.example.com").send().await.unwrap();
    let exposed = r.headers().get("access-control-expose-headers").and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
    assert!(exposed.contains("content-range"), "the page's script reads the count from Content-Range: {exposed}");
    let other = app
        .http
        .request(Method::OPTIONS, app.url("/rest/v1/meetings"))
        .header("origin", "https://evil.example.com")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
}

/// The NOT NULL columns the server refuses a null for are the schema's own.
#[tokio::test]
async fn required_columns_are_the_schema_s_not_null_columns() {
    let app = spawn_app().await;
    let db = app.db();
    for table in [syncgate::store::Table::Clients, syncgate::store::Table::Meetings, syncgate::store::Table::Pipeline] {
        let sql = match db.engine() {
            crate::helpers::Engine::Sqlite => "SELECT name, \"notnull\" FROM pragma_table_info(?1)",
            crate::helpers::Engine::Postgres => {
                "SELECT column_name::text, CASE WHEN is_nullable = 'NO' THEN 1 ELSE 0 END FROM information_schema.columns \
                 WHERE table_name = ?1 AND table_schema = current_schema()"
            }
        };
        for row in db.rows(sql, &[json!(table.name())]) {
            let (name, not_null) = (row[0].as_str().unwrap().to_string(), row[1].as_i64().unwrap() == 1);
            // SQLite reports its INTEGER PRIMARY KEY as nullable; it never is.
            if name != "id" {
                assert_eq!(table.required(&name), not_null, "{}.{name}", table.name());
            }
        }
    }
}
