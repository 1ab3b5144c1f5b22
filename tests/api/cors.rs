//! `/health` and CORS: same origin only by default; `server.cors_origins`
//! opens the REST API to the listed origins and no others.

use crate::helpers::{spawn_app, spawn_app_with};

#[tokio::test]
async fn health_answers_without_auth() {
    let app = spawn_app().await;
    let r = app.http.get(app.url("/health")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers().get("x-request-id").is_some(), "every response names its request id");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["status"], "ok");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
}

#[tokio::test]
async fn cors_only_for_listed_origins() {
    let app = spawn_app_with(|c| c.server.cors_origins = vec!["https://app.example.com".into()]).await;
    let (_, token) = app.add_user("ann@example.com", "user");
    let preflight = |origin: &'static str| {
        app.http
            .request(reqwest::Method::OPTIONS, app.url("/api/clients"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization, content-type")
            .send()
    };
    let ok = preflight("https://app.example.com").await.unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    assert_eq!(ok.headers()["access-control-allow-origin"], "https://app.example.com");
    let refused = preflight("https://evil.example.com").await.unwrap();
    assert!(refused.headers().get("access-control-allow-origin").is_none());
    assert!(refused.status().is_client_error());

    let r = app.http.get(app.url("/api/clients")).bearer_auth(&token).header("origin", "https://app.example.com").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["access-control-allow-origin"], "https://app.example.com");

    // Default: no CORS headers for anyone.
    let plain = spawn_app().await;
    let (_, t2) = plain.add_user("bob@example.com", "user");
    let r = plain.http.get(plain.url("/api/clients")).bearer_auth(&t2).header("origin", "https://app.example.com").send().await.unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
}
