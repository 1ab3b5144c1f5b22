//! Bad input gets the right 4xx with the JSON error shape and writes nothing:
//! malformed or mistyped bodies, unknown fields, oversize bodies, every kind
//! of bad token, bad ids, unknown paths, bad paging parameters.

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Value};

use crate::helpers::{decode, spawn_app, TestApp, SECRET};

/// What a refused request must not change: the change log and every synced table.
fn snapshot(app: &TestApp) -> (usize, i64, i64, i64) {
    let db = app.db();
    let n = |t: &str| db.count(t);
    (app.changes().len(), n("clients"), n("meetings"), n("pipeline"))
}

fn assert_error(what: &str, got: (u16, Value), status: u16, code: &str) {
    let (s, body) = got;
    assert_eq!(s, status, "{what}: {body}");
    assert_eq!(body["error"], code, "{what}: {body}");
    let msg = body["message"].as_str().unwrap_or_else(|| panic!("{what}: the error has a message: {body}"));
    assert!(!msg.trim().is_empty(), "{what}: the message is a sentence");
    assert_eq!(body.as_object().unwrap().len(), 2, "{what}: exactly error and message: {body}");
}

fn b64(v: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

/// A JWT with any header, signed with `alg` over exactly those bytes.
fn forge(header: Value, claims: Value, alg: Algorithm, secret: &str) -> String {
    let msg = format!("{}.{}", b64(&header), b64(&claims));
    let sig = jsonwebtoken::crypto::sign(msg.as_bytes(), &EncodingKey::from_secret(secret.as_bytes()), alg).expect("sign");
    format!("{msg}.{sig}")
}

fn exp_in(secs: i64) -> i64 {
    syncgate::auth::unix_now() + secs
}

#[tokio::test]
async fn malformed_mistyped_and_unknown_bodies_are_400() {
    let app = spawn_app().await;
    let (_, tok) = app.add_user("ada@example.com", "user");
    let (_, c) = app.post("/api/clients", &tok, &json!({"name": "Grace"})).await;
    let (_, m) = app
        .post("/api/meetings", &tok, &json!({"title": "x", "starts_at": "2026-11-23T10:00:00Z", "ends_at": "2026-11-23T11:00:00Z"}))
        .await;
    let (_, d) = app.post("/api/pipeline", &tok, &json!({"title": "x"})).await;
    let before = snapshot(&app);
    let rows = [("clients", c), ("meetings", m), ("pipeline", d)];

    // Not JSON, or not an object, on every create and patch.
    for (table, row) in &rows {
        for raw in ["{\"name\": ", "", "not json", "[1, 2]", "\"text\"", "null", "42", "{\"name\": \"a\",}"] {
            assert_error(&format!("POST {table} {raw:?}"), app.post_raw(&format!("/api/{table}"), &tok, raw).await, 400, "bad_request");
            let r = app
                .http
                .patch(app.url(&format!("/api/{table}/{}", row["id"])))
                .bearer_auth(&tok)
                .header("content-type", "application/json")
                .body(raw)
                .send()
                .await
                .unwrap();
            assert_error(&format!("PATCH {table} {raw:?}"), decode(r).await, 400, "bad_request");
        }
    }

    let meeting = |extra: Value| {
        let mut b = json!({"title": "t", "starts_at": "2026-11-23T10:00:00Z", "ends_at": "2026-11-23T11:00:00Z"});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    let bad_creates = [
        // Wrong types.
        ("clients", json!({"name": 5})),
        ("clients", json!({"name": "x", "email": 7})),
        ("clients", json!({"name": ["x"]})),
        ("clients", json!({"name": "x", "user_id": "1"})),
        ("clients", json!({"email": "no-name@example.com"})),
        ("meetings", meeting(json!({"starts_at": 1764000000}))),
        ("meetings", meeting(json!({"all_day": "yes"}))),
        ("meetings", meeting(json!({"client_id": "1"}))),
        ("meetings", meeting(json!({"attendees": "everyone"}))),
        ("meetings", meeting(json!({"starts_at": "tomorrow at ten"}))),
        ("meetings", meeting(json!({"ends_at": "2026-11-23 11:00"}))),
        ("pipeline", json!({"title": "x", "value": "lots"})),
        ("pipeline", json!({"title": "x", "client_id": 1.5})),
        ("pipeline", json!({"title": "x", "expected_close": "next month"})),
        // Unknown fields, including read-only ones.
        ("clients", json!({"name": "x", "colour": "red"})),
        ("clients", json!({"name": "x", "id": 99})),
        ("meetings", meeting(json!({"source": "google"}))),
        ("meetings", meeting(json!({"created_at": "2026-11-23T10:00:00Z"}))),
        ("pipeline", json!({"title": "x", "probability": 0.5})),
    ];
    for (table, body) in &bad_creates {
        assert_error(&format!("POST {table} {body}"), app.post(&format!("/api/{table}"), &tok, body).await, 400, "bad_request");
    }
    let bad_patches = [
        ("clients", json!({"nmae": "typo"})),
        ("clients", json!({"phone": 12345})),
        ("meetings", json!({"source": "manual"})),
        ("meetings", json!({"user_id": 2})),
        ("meetings", json!({"status": 1})),
        ("pipeline", json!({"value": "lots"})),
        ("pipeline", json!({"stage": "won", "id": 7})),
    ];
    for (table, body) in &bad_patches {
        let row = &rows.iter().find(|(t, _)| t == table).unwrap().1;
        let path = format!("/api/{table}/{}", row["id"]);
        assert_error(&format!("PATCH {path} {body}"), app.patch(&path, &tok, body).await, 400, "bad_request");
    }

    assert_eq!(snapshot(&app), before, "nothing written");
    for (table, row) in &rows {
        let (_, now) = app.get(&format!("/api/{table}/{}", row["id"]), &tok).await;
        assert_eq!(&now, row, "{table} row unchanged");
    }
}

#[tokio::test]
async fn bodies_over_64_kib_are_413() {
    let app = spawn_app().await;
    let (_, tok) = app.add_user("ada@example.com", "user");
    let (_, c) = app.post("/api/clients", &tok, &json!({"name": "Grace"})).await;
    let before = snapshot(&app);
    let big = json!({"name": "Big", "notes": "n".repeat(70_000)});
    assert_error("POST 70 kB", app.post("/api/clients", &tok, &big).await, 413, "payload_too_large");
    let big_patch = json!({"notes": "n".repeat(70_000)});
    assert_error("PATCH 70 kB", app.patch(&format!("/api/clients/{}", c["id"]), &tok, &big_patch).await, 413, "payload_too_large");
    // Just over the limit, and invalid JSON besides: the size is checked first.
    let raw = format!("{{\"name\": \"{}", "x".repeat(64 * 1024));
    assert_error("POST 64 KiB + 10", app.post_raw("/api/meetings", &tok, raw).await, 413, "payload_too_large");
    assert_eq!(snapshot(&app), before, "nothing written");

    // A body of exactly 64 KiB is accepted (the limit is on the body; a
    // meeting's attendees have no smaller limit of their own).
    let edge = |pad: usize| json!({"title": "Edge", "starts_at": "2026-11-23T10:00:00Z", "ends_at": "2026-11-23T11:00:00Z", "attendees": ["e".repeat(pad)]});
    let pad = 64 * 1024 - edge(0).to_string().len();
    assert_eq!(edge(pad).to_string().len(), 64 * 1024);
    let (s, e) = app.post("/api/meetings", &tok, &edge(pad + 1)).await;
    assert_eq!((s, e["error"].as_str()), (413, Some("payload_too_large")), "one byte more is too large");
    let (s, e) = app.post("/api/meetings", &tok, &edge(pad)).await;
    assert_eq!(s, 201, "a body of exactly 64 KiB is fine: {e}");
}

#[tokio::test]
async fn every_bad_token_is_401_and_writes_nothing() {
    let app = spawn_app().await;
    let (a_id, a_tok) = app.add_user("ada@example.com", "user");
    let (b_id, _) = app.add_user("bob@example.com", "admin");
    let good = json!({"sub": a_id.to_string(), "exp": exp_in(3600)});
    let hs256 = json!({"alg": "HS256", "typ": "JWT"});

    let tampered_sig = {
        let mut parts: Vec<String> = a_tok.split('.').map(str::to_string).collect();
        let sig = parts[2].clone().into_bytes();
        let mut sig = sig;
        let mid = sig.len() / 2;
        sig[mid] = if sig[mid] == b'A' { b'B' } else { b'A' };
        parts[2] = String::from_utf8(sig).unwrap();
        parts.join(".")
    };
    let tampered_claims = {
        // A's valid signature on claims that now say "B, admin".
        let parts: Vec<&str> = a_tok.split('.').collect();
        format!("{}.{}.{}", parts[0], b64(&json!({"sub": b_id.to_string(), "exp": exp_in(3600), "role": "admin"})), parts[2])
    };
    let none_alg = format!("{}.{}.", b64(&json!({"alg": "none", "typ": "JWT"})), b64(&good));
    let none_alg_upper = format!("{}.{}.", b64(&json!({"alg": "None"})), b64(&good));
    let cases: Vec<(&str, Option<String>)> = vec![
        ("no Authorization header", None),
        ("empty bearer", Some("Bearer ".into())),
        ("not bearer", Some(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("ada:pw")))),
        ("token without scheme", Some(a_tok.clone())),
        ("garbage", Some("Bearer not.a.jwt".into())),
        ("expired", Some(format!("Bearer {}", app.token_for(a_id, "user", -60)))),
        ("expiring now (no leeway)", Some(format!("Bearer {}", app.token_for(a_id, "user", 0)))),
        ("tampered signature", Some(format!("Bearer {tampered_sig}"))),
        ("tampered claims", Some(format!("Bearer {tampered_claims}"))),
        ("alg none", Some(format!("Bearer {none_alg}"))),
        ("alg None", Some(format!("Bearer {none_alg_upper}"))),
        (
            "HS512 with the right secret",
            Some(format!("Bearer {}", forge(json!({"alg": "HS512", "typ": "JWT"}), good.clone(), Algorithm::HS512, SECRET))),
        ),
        (
            "HS384 with the right secret",
            Some(format!("Bearer {}", forge(json!({"alg": "HS384", "typ": "JWT"}), good.clone(), Algorithm::HS384, SECRET))),
        ),
        (
            "RS256 header, HMAC signature",
            Some(format!("Bearer {}", forge(json!({"alg": "RS256", "typ": "JWT"}), good.clone(), Algorithm::HS256, SECRET))),
        ),
        (
            "ES256 header, HMAC signature",
            Some(format!("Bearer {}", forge(json!({"alg": "ES256", "typ": "JWT"}), good.clone(), Algorithm::HS256, SECRET))),
        ),
        (
            "another secret",
            Some(format!("Bearer {}", forge(hs256.clone(), good.clone(), Algorithm::HS256, "some-other-secret-some-other-secret"))),
        ),
        (
            "sub naming no user",
            Some(format!("Bearer {}", forge(hs256.clone(), json!({"sub": "424242", "exp": exp_in(3600)}), Algorithm::HS256, SECRET))),
        ),
        (
            "numeric sub",
            Some(format!("Bearer {}", forge(hs256.clone(), json!({"sub": a_id, "exp": exp_in(3600)}), Algorithm::HS256, SECRET))),
        ),
        ("sub 0", Some(format!("Bearer {}", forge(hs256.clone(), json!({"sub": "0", "exp": exp_in(3600)}), Algorithm::HS256, SECRET)))),
        (
            "sub not a number",
            Some(format!("Bearer {}", forge(hs256.clone(), json!({"sub": "ada", "exp": exp_in(3600)}), Algorithm::HS256, SECRET))),
        ),
        ("no exp", Some(format!("Bearer {}", forge(hs256.clone(), json!({"sub": a_id.to_string()}), Algorithm::HS256, SECRET)))),
        (
            "exp as text",
            Some(format!("Bearer {}", forge(hs256.clone(), json!({"sub": a_id.to_string(), "exp": "soon"}), Algorithm::HS256, SECRET))),
        ),
        ("anon key", Some(format!("Bearer {}", app.app.tokens.anon_key()))),
    ];
    // Sanity: the same request with the real token works, so each 401 is the token's doing.
    let (s, _) = app.get("/api/clients", &a_tok).await;
    assert_eq!(s, 200);
    let before = snapshot(&app);

    for (what, header) in &cases {
        for (method, path, body) in [
            ("GET", "/api/clients".to_string(), None),
            ("POST", "/api/clients".to_string(), Some(json!({"name": "Mallory"}))),
            (
                "POST",
                "/api/meetings".to_string(),
                Some(json!({"title": "x", "starts_at": "2026-11-23T10:00:00Z", "ends_at": "2026-11-23T11:00:00Z"})),
            ),
            ("GET", "/api/me".to_string(), None),
        ] {
            let mut req = match method {
                "GET" => app.http.get(app.url(&path)),
                _ => app.http.post(app.url(&path)).json(body.as_ref().unwrap()),
            };
            if let Some(h) = header {
                req = req.header("authorization", h.as_str());
            }
            let got = decode(req.send().await.unwrap()).await;
            assert_error(&format!("{what}: {method} {path}"), got, 401, "unauthorized");
        }
    }
    assert_eq!(snapshot(&app), before, "nothing written with a bad token");
    let (s, _) = app.get("/api/clients", &a_tok).await;
    assert_eq!(s, 200, "the real token still works");
}

#[tokio::test]
async fn secrets_and_tokens_never_appear_in_errors() {
    let app = spawn_app().await;
    let (a_id, _) = app.add_user("ada@example.com", "user");
    let expired = app.token_for(a_id, "user", -60);
    let (_, e) = app.get("/api/clients", &expired).await;
    let text = e.to_string();
    assert!(!text.contains(SECRET), "{text}");
    assert!(!text.contains(&expired), "the token is not echoed: {text}");
}

#[tokio::test]
async fn bad_ids_and_unknown_paths() {
    let app = spawn_app().await;
    let (_, tok) = app.add_user("ada@example.com", "user");
    let (_, c) = app.post("/api/clients", &tok, &json!({"name": "Grace"})).await;
    let before = snapshot(&app);

    for table in ["clients", "meetings", "pipeline"] {
        for id in ["abc", "0", "-3", "1.5", "99999999999999999999", "1e3", "%20"] {
            let path = format!("/api/{table}/{id}");
            assert_error(&format!("GET {path}"), app.get(&path, &tok).await, 400, "bad_request");
            assert_error(&format!("PATCH {path}"), app.patch(&path, &tok, &json!({"notes": "x"})).await, 400, "bad_request");
            assert_error(&format!("DELETE {path}"), app.delete(&path, &tok).await, 400, "bad_request");
        }
    }

    for path in [
        "/api/nope",
        "/api/clients/1/extra",
        &format!("/api/clients/{}/meetings", c["id"]),
        "/api",
        "/api/",
        "/health/nope",
        "/nothing.png",
    ] {
        assert_error(&format!("GET {path}"), app.get(path, &tok).await, 404, "not_found");
    }
    // The path is checked before the token: an unknown path is a 404 even without one.
    let r = app.http.get(app.url("/api/nope")).send().await.unwrap();
    assert_error("GET /api/nope without a token", decode(r).await, 404, "not_found");
    let r = app.http.post(app.url("/api/nope")).json(&json!({})).send().await.unwrap();
    assert_error("POST /api/nope without a token", decode(r).await, 404, "not_found");
    assert_error("DELETE /api/nope/1", app.delete("/api/nope/1", &tok).await, 404, "not_found");

    // A method the path does not have: a 4xx with the JSON shape, nothing written.
    let r = app.http.put(app.url(&format!("/api/clients/{}", c["id"]))).bearer_auth(&tok).json(&json!({"name": "x"})).send().await.unwrap();
    let (s, body) = decode(r).await;
    assert!((400..500).contains(&s), "PUT: {s}");
    assert!(body["error"].is_string() && body["message"].is_string(), "PUT: {body}");

    assert_eq!(snapshot(&app), before, "nothing written");
    let (_, still) = app.get(&format!("/api/clients/{}", c["id"]), &tok).await;
    assert_eq!(still, c);
}

#[tokio::test]
async fn bad_paging_parameters_are_400() {
    let app = spawn_app().await;
    let (_, tok) = app.add_user("ada@example.com", "user");
    for i in 0..3 {
        app.post("/api/clients", &tok, &json!({"name": format!("c{i}")})).await;
    }
    let (_, page) = app.get("/api/clients?limit=1", &tok).await;
    let good_cursor = page["next_cursor"].as_str().expect("a cursor").to_string();
    let e = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let before = snapshot(&app);

    for table in ["clients", "meetings", "pipeline"] {
        for q in [
            "limit=0".to_string(),
            "limit=-1".into(),
            "limit=abc".into(),
            "limit=1.5".into(),
            "limit=100000".into(),
            "limit=".into(),
            "cursor=!!!".into(),
            "cursor=".into(),
            format!("cursor={}", e(&json!({"id": 1}))),
            format!("cursor={}", e(&json!([true]))),
            format!("cursor={}", e(&json!([1, 2, 3]))),
            format!("cursor={}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("not json")),
            "colour=red".into(),
        ] {
            let path = format!("/api/{table}?{q}");
            assert_error(&format!("GET {path}"), app.get(&path, &tok).await, 400, "bad_request");
        }
    }
    // A clients cursor does not fit meetings (a different sort key).
    assert_error("clients cursor on meetings", app.get(&format!("/api/meetings?cursor={good_cursor}"), &tok).await, 400, "bad_request");
    // The good cursor works where it came from.
    let (s, _) = app.get(&format!("/api/clients?limit=1&cursor={good_cursor}"), &tok).await;
    assert_eq!(s, 200);
    assert_eq!(snapshot(&app), before);
}

#[tokio::test]
async fn a_body_without_a_length_is_refused_unread() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app().await;
    let (_, tok) = app.add_user("ada@example.com", "user");
    let before = snapshot(&app);
    // Chunked, no Content-Length, far over the limit: the server must not
    // read it into memory nor write anything.
    let mut s = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST /api/clients HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {tok}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        app.addr
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let body = format!("{{\"name\": \"x\", \"notes\": \"{}\"}}", "n".repeat(200_000));
    let chunk = format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len());
    // The server may answer and close before taking it all; that is fine.
    let _ = s.write_all(chunk.as_bytes()).await;
    let mut resp = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut resp)).await;
    let resp = String::from_utf8_lossy(&resp);
    let status: u16 = resp.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    assert!((400..500).contains(&status), "a 4xx: {resp}");
    let json_body = resp.split("\r\n\r\n").nth(1).unwrap_or_default();
    assert!(json_body.contains("\"error\""), "the JSON error shape: {resp}");
    assert_eq!(snapshot(&app), before, "nothing written");
}

/// A null for a column that always has a value is refused, not read as
/// "leave it as it is" (a 200 that changed nothing would tell the caller it worked).
#[tokio::test]
async fn null_for_a_required_column_is_refused_not_ignored() {
    let app = crate::helpers::spawn_app().await;
    let (_, tok) = app.add_user("ann@example.com", "user");
    let (_, c) = app.post("/api/clients", &tok, &serde_json::json!({"name": "Acme"})).await;
    let before = app.changes().len();
    let (s, e) = app.patch(&format!("/api/clients/{}", c["id"]), &tok, &serde_json::json!({"name": null})).await;
    assert_eq!((s, e["message"].as_str()), (422, Some("name may not be null")));
    let (s, _) = app.post("/api/pipeline", &tok, &serde_json::json!({"title": "Deal", "value": null})).await;
    assert_eq!(s, 422);
    assert_eq!(app.changes().len(), before);
    assert_eq!(app.get(&format!("/api/clients/{}", c["id"]), &tok).await.1["name"], "Acme");
}
