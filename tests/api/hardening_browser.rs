//! Browser hardening on the wire: the UI's Content-Security-Policy and
//! nosniff, and the public config the UI opens its socket with.

use serde_json::Value;

use crate::helpers::*;

#[tokio::test]
async fn ui_responses_carry_the_csp_and_nosniff() {
    let app = spawn_app_with(|c| c.server.cors_origins = vec!["https://app.example.com".into()]).await;
    for path in ["/", "/meetings", "/app.js", "/live.js", "/app.css"] {
        let r = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let csp = r.headers().get("content-security-policy").unwrap_or_else(|| panic!("{path}: no CSP")).to_str().unwrap().to_string();
        for part in [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "frame-ancestors 'none'",
            "object-src 'none'",
            "base-uri 'none'",
        ] {
            assert!(csp.contains(part), "{path}: {part} missing in {csp}");
        }
        let connect = csp.split(';').map(str::trim).find(|d| d.starts_with("connect-src")).expect("connect-src");
        assert!(connect.contains("'self'"), "{connect}");
        assert!(connect.contains(&format!("ws://{}", app.addr)), "{connect}");
        assert!(connect.contains("https://app.example.com"), "{connect}");
        assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{csp}");
        assert_eq!(r.headers()["x-content-type-options"], "nosniff", "{path}");
    }
    // The page itself has no inline script or style the policy would block.
    let html = app.http.get(app.url("/")).send().await.unwrap().text().await.unwrap();
    assert!(!html.contains("<script>") && !html.contains("<style") && !html.contains(" style="), "{html}");
    // API answers are not sniffed either.
    let r = app.http.get(app.url("/health")).send().await.unwrap();
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
}

#[tokio::test]
async fn the_public_config_gives_the_anon_key_and_nothing_that_signs_in() {
    let app = spawn_app().await;
    let r = app.http.get(app.url("/api/config")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["realtime"]["path"], "/realtime/v1/websocket");
    let key = v["realtime"]["apikey"].as_str().expect("an anon key");
    let claims = app.app.tokens.verify(key).expect("a valid key");
    assert!(claims.user_id().is_none() && !claims.is_admin(), "no user in the anon key");
    // It opens the socket, but REST refuses it.
    let (status, body) = app.get("/api/meetings", key).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("unauthorized")));
    let _ws = app.ws(key, "2.0.0").await;
}
