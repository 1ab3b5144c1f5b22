//! Connect Outlook and sign in with Microsoft, through the HTTP flow against
//! the fake identity platform (`fake_graph`): PKCE, the signed single-use
//! cookie-bound state, accounts keyed by tenant + object id (never the
//! `email` claim), sign-in of linked accounts only, sign-up only for a
//! verified identity the policy allows, token refresh with rotation,
//! `invalid_grant` → needs reconnect, and no Microsoft token in any answer
//! or log line.

use base64::Engine;
use serde_json::{json, Value};

use crate::fake_graph::{self, FakeGraph};
use crate::helpers::{spawn_app_with, TestApp};

pub(crate) const T1: &str = "11111111-1111-4111-8111-111111111111";
const T2: &str = "22222222-2222-4222-8222-222222222222";
pub(crate) const O1: &str = "aaaaaaaa-0000-4000-8000-000000000001";
const O2: &str = "aaaaaaaa-0000-4000-8000-000000000002";

pub(crate) async fn ms_app(fake: &FakeGraph, tweak: impl FnOnce(&mut syncgate::config::Config)) -> TestApp {
    // Every log line of the binary is captured from here on (see `google`).
    crate::google::logs_text();
    let app = spawn_app_with(|c| {
        fake.configure(c);
        tweak(c);
    })
    .await;
    fake.register_redirect_uri(app.app.microsoft.redirect_url());
    app
}

fn location(r: &reqwest::Response) -> String {
    r.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
}

/// The `syncgate_microsoft_state=…` pair a start sets.
fn state_cookie(r: &reqwest::Response) -> String {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("syncgate_microsoft_state="))
        .and_then(|c| c.split(';').next())
        .expect("a state cookie")
        .to_string()
}

/// A sign-in start: (state cookie, Microsoft's sign-in URL).
async fn start_sign_in(app: &TestApp) -> (String, String) {
    let r = app.http.get(app.url("/api/auth/microsoft/start")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 303);
    (state_cookie(&r), location(&r))
}

/// A "Connect Outlook" start for a signed-in page: (state cookie, sign-in URL).
async fn start_connect(app: &TestApp, token: &str) -> (String, String) {
    let r = app.http.post(app.url("/api/auth/microsoft/connect")).bearer_auth(token).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let cookie = state_cookie(&r);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["url"], body["location"]);
    (cookie, body["url"].as_str().unwrap().to_string())
}

/// The fake's sign-in page: where it sends the browser back to.
async fn authorize(app: &TestApp, url: &str) -> String {
    let r = app.http.get(url).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 302, "the fake sign-in page accepts the request: {}", r.text().await.unwrap_or_default());
    location(&r)
}

/// The callback, as the browser with `cookie` makes it.
async fn callback(app: &TestApp, url: &str, cookie: Option<&str>) -> reqwest::Response {
    let mut req = app.http.get(url);
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    req.send().await.unwrap()
}

/// Status and body of an answer.
async fn decode(r: reqwest::Response) -> (u16, String) {
    let s = r.status().as_u16();
    (s, r.text().await.unwrap_or_default())
}

/// A whole sign-in as `upn`: the callback's answer.
async fn sign_in_as(app: &TestApp, fake: &FakeGraph, upn: &str) -> reqwest::Response {
    fake.consent_as(upn);
    let (cookie, url) = start_sign_in(app).await;
    let back = authorize(app, &url).await;
    callback(app, &back, Some(&cookie)).await
}

/// A whole "Connect Outlook" as `upn` by the holder of `token`.
pub(crate) async fn connect_as(app: &TestApp, fake: &FakeGraph, token: &str, upn: &str) -> reqwest::Response {
    fake.consent_as(upn);
    let (cookie, url) = start_connect(app, token).await;
    let back = authorize(app, &url).await;
    callback(app, &back, Some(&cookie)).await
}

/// The user a successful sign-in's redirect signs in (the token's `sub`).
fn signed_in_user(r: &reqwest::Response) -> i64 {
    assert_eq!(r.status().as_u16(), 303, "signed in");
    let loc = location(r);
    let token = loc.strip_prefix("/#access_token=").expect("the token redirect");
    let payload = token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    claims["sub"].as_str().unwrap().parse().unwrap()
}

fn account_row(app: &TestApp, user: i64) -> Option<(String, String)> {
    app.db()
        .row_opt("SELECT tenant_id, object_id FROM microsoft_accounts WHERE user_id = ?1", &[json!(user)])
        .map(|r| (r[0].as_str().unwrap().to_string(), r[1].as_str().unwrap().to_string()))
}

fn accounts(app: &TestApp) -> i64 {
    app.db().value("SELECT COUNT(*) FROM microsoft_accounts", &[])
}

#[tokio::test]
async fn connect_links_tenant_and_object_id_to_the_signed_in_user_who_then_signs_in_with_it() {
    let fake = FakeGraph::start().await;
    let app = ms_app(&fake, |_| {}).await;
    let (ada, token) = app.add_user("ada@firm.example", "user");
    fake.add_account(T1, O1, "ada@firm.example", "Ada Adviser");

    let (s, me) = app.get("/api/me", &token).await;
    assert_eq!(s, 200);
    assert_eq!(me["microsoft"], json!({"connected": false, "username": null, "needs_reconnect": false}));

    let r = connect_as(&app, &fake, &token, "ada@firm.example").await;
    assert_eq!(signed_in_user(&r), ada);
    assert_eq!(account_row(&app, ada), Some((T1.into(), O1.into())));
    let (_, me) = app.get("/api/me", &token).await;
    assert_eq!(me["microsoft"], json!({"connected": true, "username": "ada@firm.example", "needs_reconnect": false}));

    // The linked account now signs its user in.
    let r = sign_in_as(&app, &fake, "ada@firm.example").await;
    assert_eq!(signed_in_user(&r), ada);

    // A disabled user is not signed in by it.
    app.db().execute("UPDATE users SET status = 'disabled' WHERE id = ?1", &[json!(ada)]);
    let (s, body) = decode(sign_in_as(&app, &fake, "ada@firm.example").await).await;
    assert_eq!(s, 401, "{body}");
    app.db().execute("UPDATE users SET status = 'active' WHERE id = ?1", &[json!(ada)]);

    // Saying no at Microsoft's page changes nothing.
    fake.deny_next_consent();
    let (s, body) = decode(sign_in_as(&app, &fake, "ada@firm.example").await).await;
    assert_eq!(s, 403, "{body}");
    assert!(body.contains("cancelled"), "{body}");
    assert_eq!(account_row(&app, ada), Some((T1.into(), O1.into())));

    // Disconnect forgets it: no more sign-in with it.
    let (s, _) = app.delete("/api/me/microsoft", &token).await;
    assert_eq!(s, 204);
    assert_eq!(account_row(&app, ada), None);
    let (_, me) = app.get("/api/me", &token).await;
    assert_eq!(me["microsoft"]["connected"], false);
    let (s, body) = decode(sign_in_as(&app, &fake, "ada@firm.example").await).await;
    assert_eq!(s, 403, "{body}");
    assert!(body.contains("Connect Outlook"), "{body}");
}

#[tokio::test]
async fn an_account_already_connected_to_another_user_is_refused() {
    let fake = FakeGraph::start().await;
    let app = ms_app(&fake, |_| {}).await;
    let (ada, ada_token) = app.add_user("ada@firm.example", "user");
    let (bob, bob_token) = app.add_user("bob@firm.example", "user");
    fake.add_account(T1, O1, "ada@firm.example", "Ada");
    assert_eq!(signed_in_user(&connect_as(&app, &fake, &ada_token, "ada@firm.example").await), ada);
    let (s, body) = decode(connect_as(&app, &fake, &bob_token, "ada@firm.example").await).await;
    assert_eq!(s, 409, "{body}");
    assert_eq!(account_row(&app, ada), Some((T1.into(), O1.into())));
    assert_eq!(account_row(&app, bob), None);
}

#[tokio::test]
async fn the_fake_checks_pkce_and_a_wrong_verifier_fails() {
    let fake = FakeGraph::start().await;
    let app = ms_app(&fake, |_| {}).await;
    let (ada, token) = app.add_user("ada@firm.example", "user");
    fake.add_account(T1, O1, "ada@firm.example", "Ada");
    fake.consent_as("ada@firm.example");

    let (cookie, url) = start_connect(&app, &token).await;
    let mut parsed = url::Url::parse(&url).unwrap();
    let q: std::collections::HashMap<String, String> = parsed.query_pairs().into_owned().collect();
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["scope"], fake_graph::SCOPES);
    assert_eq!(q["response_mode"], "query");
    assert_eq!(q["code_challenge"].len(), 43);
    // A challenge syncgate's verifier does not answer: the redemption fails.
    let tampered: Vec<(String, String)> = q
        .iter()
        .map(|(k, v)| (k.clone(), if k == "code_challenge" { fake_graph::s256("someone else's verifier") } else { v.clone() }))
        .collect();
    parsed.query_pairs_mut().clear().extend_pairs(tampered);
    let back = authorize(&app, parsed.as_str()).await;
    let (s, body) = decode(callback(&app, &back, Some(&cookie)).await).await;
    assert_eq!(s, 400, "{body}");
    assert!(body.contains("refused the sign-in code"), "{body}");
    assert_eq!(account_row(&app, ada), None);

    // Untouched, the same flow works.
    assert_eq!(signed_in_user(&connect_as(&app, &fake, &token, "ada@firm.example").await), ada);
}

/// The state key as the server derives it from the JWT secret.
fn state_key() -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(b"syncgate microsoft oauth state\0");
    h.update(crate::helpers::SECRET.as_bytes());
    h.finalize().into()
}

#[tokio::test]
async fn a_state_reused_expired_or_from_another_browser_is_refused() {
    use syncgate::auth::oauth_state::{code_challenge, code_verifier, sign_state, Purpose};

    let fake = FakeGraph::start().await;
    let app = ms_app(&fake, |_| {}).await;
    let (ada, token) = app.add_user("ada@firm.example", "user");
    fake.add_account(T1, O1, "ada@firm.example", "Ada");
    fake.consent_as("ada@firm.example");

    // Another browser: no cookie, or the cookie of another sign-in.
    let (_, url) = start_connect(&app, &token).await;
    let back = authorize(&app, &url).await;
    let (s, body) = decode(callback(&app, &back, None).await).await;
    assert_eq!(s, 400, "{body}");
    assert!(body.contains("another browser"), "{body}");
    let (other_cookie, _) = start_sign_in(&app).await;
    let (s, body) = decode(callback(&app, &back, Some(&other_cookie)).await).await;
    assert_eq!(s, 400, "{body}");
    assert!(body.contains("another browser"), "{body}");
    assert_eq!(account_row(&app, ada), None);

    // Used once, refused the second time.
    let (cookie, url) = start_connect(&app, &token).await;
    let back = authorize(&app, &url).await;
    assert_eq!(signed_in_user(&callback(&app, &back, Some(&cookie)).await), ada);
    let (s, body) = decode(callback(&app, &back, Some(&cookie)).await).await;
    assert_eq!(s, 400, "{body}");
    assert!(body.contains("already used"), "{body}");

    // Signed with the server's key (the test derives it as the server does):
    // good until its expiry, refused after.
    let key = state_key();
    let (app, fake) = (&app, &fake);
    let go = |exp: i64, nonce: &'static str| async move {
        let state = sign_state(&key, nonce, exp, Purpose::SignIn);
        let mut url = url::Url::parse(&fake.authorize_url("organizations")).unwrap();
        url.query_pairs_mut()
            .append_pair("client_id", fake_graph::CLIENT_ID)
            .append_pair("response_type", "code")
            .append_pair("redirect_uri", app.app.microsoft.redirect_url())
            .append_pair("scope", fake_graph::SCOPES)
            .append_pair("state", &state)
            .append_pair("code_challenge", &code_challenge(&code_verifier(&key, nonce)))
            .append_pair("code_challenge_method", "S256");
        let back = authorize(app, url.as_str()).await;
        callback(app, &back, Some(&format!("syncgate_microsoft_state={nonce}"))).await
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert_eq!(signed_in_user(&go(now + 60, "test-nonce-live").await), ada, "the test makes states as the server does");
    let (s, body) = decode(go(now - 1, "test-nonce-expired").await).await;
    assert_eq!(s, 400, "{body}");
    assert!(body.contains("expired"), "{body}");
}

#[tokio::test]
async fn another_tenant_with_the_same_address_or_object_id_is_another_account_and_the_email_claim_is_ignored() {
    let fake = FakeGraph::start().await;
    let app = ms_app(&fake, |c| c.auth.allowed_domains = vec!["firm.example".into()]).await;
    let (ada, token) = app.add_user("ada@firm.example", "user");
    fake.add_account(T1, O1, "ada@firm.example", "Ada");
    fake.set_verified_domains(T1, &["firm.example"]);
    assert_eq!(signed_in_user(&connect_as(&app, &fake, &token, "ada@firm.example").await), ada);

    // A tenant anyone can create: an account whose `email` claim is Ada's,
    // and one with Ada's object id.
    fake.add_account(T2, O2, "mallory@evil.example", "Mallory");
    fake.set_email_claim("mallory@evil.example", Some("ada@firm.example"));
    fake.add_account(T2, O1, "ada@evil.example", "Not Ada");
    fake.set_email_claim("ada@evil.example", Some("ada@firm.example"));
    for upn in ["mallory@evil.example", "ada@evil.example"] {
        let (s, body) = decode(sign_in_as(&app, &fake, upn).await).await;
        assert_eq!(s, 403, "{upn}: {body}");
        assert!(!body.contains("access_token"), "{body}");
    }
    // An `email` claim in the allowed domain does not make a sign-up either.
    fake.add_account(T2, "aaaaaaaa-0000-4000-8000-000000000003", "eve@evil.example", "Eve");
    fake.set_email_claim("eve@evil.example", Some("eve@firm.example"));
    let (s, body) = decode(sign_in_as(&app, &fake, "eve@evil.example").await).await;
    assert_eq!(s, 403, "{body}");

    assert_eq!(accounts(&app), 1, "only Ada's account");
    assert_eq!(account_row(&app, ada), Some((T1.into(), O1.into())));
    assert_eq!(app.db().count("users"), 1, "nobody signed up");
}

#[tokio::test]
async fn an_unlinked_account_with_an_existing_users_address_is_refused_even_when_verified() {
    let fake = FakeGraph::start().await;
    let app = ms_app(&fake, |c| c.auth.allowed_domains = vec!["firm.example".into()]).await;
    let (ada, _) = app.add_user("ada@firm.example", "user");
    fake.add_account(T1, O1, "ada@firm.example", "Ada");
    fake.set_verified_domains(T1, &["firm.example"]);
    let (s, body) = decode(sign_in_as(&app, &fake, "ada@firm.example").await).await;
    assert_eq!(s, 403, "{body}");
    assert!(body.contains("Connect Outlook"), "tells them how: {body}");
    assert_eq!(account_row(&app, ada), None);
    assert_eq!(app.db().count("users"), 1);
}

#[tokio::test]
async fn sign_up_needs_a_verified_identity_and_an_allowed_address() {
    let fake = FakeGraph::start().await;
    let app = ms_app(&fake, |c| c.auth.allowed_domains = vec!["firm.example".into()]).await;
    fake.set_verified_domains(T1, &["firm.example", "other.example"]);

    // Verified by its tenant, allowed by the policy: a new user.
    fake.add_account(T1, O1, "new@firm.example", "New Comer");
    let id = signed_in_user(&sign_in_as(&app, &fake, "new@firm.example").await);
    assert_eq!(app.db().value::<String>("SELECT email FROM users WHERE id = ?1", &[json!(id)]), "new@firm.example");
    assert_eq!(account_row(&app, id), Some((T1.into(), O1.into())));

    // The same address domain from a tenant that has not verified it.
    fake.add_account(T2, O2, "x@firm.example", "X");
    let (s, body) = decode(sign_in_as(&app, &fake, "x@firm.example").await).await;
    assert_eq!(s, 403, "{body}");

    // Verified, but the policy does not allow the address.
    fake.add_account(T1, O2, "y@other.example", "Y");
    let (s, body) = decode(sign_in_as(&app, &fake, "y@other.example").await).await;
    assert_eq!(s, 403, "{body}");
    assert!(body.contains("allowed_domains"), "{body}");
    assert_eq!(app.db().count("users"), 1);
}

#[tokio::test]
async fn the_firms_own_tenant_vouches_for_its_accounts() {
    let fake = FakeGraph::start().await;
    let app = ms_app(&fake, |c| {
        c.microsoft.tenant = T1.into();
        c.auth.allowed_domains = vec!["firm.example".into()];
    })
    .await;
    // No verified domains listed: being in the configured tenant is enough.
    fake.add_account(T1, O1, "new@firm.example", "New Comer");
    let id = signed_in_user(&sign_in_as(&app, &fake, "new@firm.example").await);
    assert_eq!(account_row(&app, id), Some((T1.into(), O1.into())));
    assert_eq!(fake.calls("organization"), 0, "no need to ask Graph");
}

#[tokio::test]
async fn refresh_rotates_and_stores_the_new_refresh_token_one_refresh_at_a_time() {
    let fake = FakeGraph::start().await;
    let app = ms_app(&fake, |_| {}).await;
    let (ada, token) = app.add_user("ada@firm.example", "user");
    fake.add_account(T1, O1, "ada@firm.example", "Ada");
    // Within a minute of expiry: the first use refreshes.
    fake.set_access_token_lifetime(30);
    assert_eq!(signed_in_user(&connect_as(&app, &fake, &token, "ada@firm.example").await), ada);
    let stored = |app: &TestApp| -> (String, String) {
        let r = app.db().row("SELECT access_token, refresh_token FROM microsoft_accounts WHERE user_id = ?1", &[json!(ada)]);
        (r[0].as_str().unwrap().into(), r[1].as_str().unwrap().into())
    };
    let (access0, refresh0) = stored(&app);
    fake.retire_used_refresh_tokens();
    fake.set_access_token_lifetime(3599);

    let calls = fake.calls("token");
    let ms = app.app.microsoft.clone();
    let got = futures_util::future::join_all((0..5).map(|_| {
        let ms = ms.clone();
        async move { ms.access_token(ada).await.expect("a token") }
    }))
    .await;
    assert_eq!(fake.calls("token"), calls + 1, "one refresh for five callers");
    let (access1, refresh1) = stored(&app);
    assert!(got.iter().all(|t| t.expose() == access1));
    assert_ne!(access1, access0);
    assert_ne!(refresh1, refresh0, "the new refresh token is stored");

    // The next refresh needs the new one (the old one is retired at the fake).
    fake.set_access_token_lifetime(30);
    app.db().execute("UPDATE microsoft_accounts SET token_expires_at = NULL WHERE user_id = ?1", &[json!(ada)]);
    let t = ms.access_token(ada).await.expect("refreshed with the rotated token");
    assert_ne!(t.expose(), access1);
    let (s, me) = app.get("/api/me", &token).await;
    assert_eq!(s, 200);
    assert_eq!(me["microsoft"]["needs_reconnect"], false);
}

#[tokio::test]
async fn invalid_grant_shows_needs_reconnect_and_no_token_is_in_any_answer_or_log_line() {
    let fake = FakeGraph::start().await;
    let app = ms_app(&fake, |c| c.auth.allowed_domains = vec!["firm.example".into()]).await;
    let (ada, token) = app.add_user("ada@firm.example", "user");
    fake.add_account(T1, O1, "ada@firm.example", "Ada");
    fake.set_verified_domains(T1, &["firm.example"]);
    let mut bodies = vec![];

    fake.consent_as("ada@firm.example");
    let r = app.http.post(app.url("/api/auth/microsoft/connect")).bearer_auth(&token).send().await.unwrap();
    let cookie = state_cookie(&r);
    let connect_body: Value = r.json().await.unwrap();
    bodies.push(connect_body.to_string());
    let back = authorize(&app, connect_body["url"].as_str().unwrap()).await;
    let r = callback(&app, &back, Some(&cookie)).await;
    assert_eq!(signed_in_user(&r), ada);
    bodies.push(format!("{:?}", r.headers()));
    let r = sign_in_as(&app, &fake, "ada@firm.example").await;
    bodies.push(format!("{:?}", r.headers()));
    let (_, me) = app.get("/api/me", &token).await;
    bodies.push(me.to_string());
    // A sign-up through the organization check, and a refusal.
    fake.add_account(T1, O2, "new@firm.example", "New");
    let r = sign_in_as(&app, &fake, "new@firm.example").await;
    assert_eq!(r.status().as_u16(), 303);
    bodies.push(format!("{:?}", r.headers()));
    fake.add_account(T2, "aaaaaaaa-0000-4000-8000-000000000003", "eve@evil.example", "Eve");
    bodies.push(decode(sign_in_as(&app, &fake, "eve@evil.example").await).await.1);

    // Revoked: the refresh says invalid_grant.
    fake.revoke("ada@firm.example");
    app.db().execute("UPDATE microsoft_accounts SET token_expires_at = NULL WHERE user_id = ?1", &[json!(ada)]);
    let calls = fake.calls("token");
    let e = app.app.microsoft.access_token(ada).await.unwrap_err();
    assert!(e.to_string().contains("connect Outlook again"), "{e}");
    let e = app.app.microsoft.access_token(ada).await.unwrap_err();
    bodies.push(e.to_string());
    assert_eq!(fake.calls("token"), calls + 1, "not retried once marked");
    let counted = |outcome: &str| app.app.metrics.microsoft_api_calls.with_label_values(&["token", outcome]).get();
    assert_eq!(counted("invalid_grant"), 1, "the identity platform's calls are counted");
    assert!(counted("ok") >= 3);
    assert_eq!(app.app.metrics.microsoft_api_calls.with_label_values(&["organization", "ok"]).get(), 2);
    let (s, me) = app.get("/api/me", &token).await;
    assert_eq!(s, 200);
    assert_eq!(me["microsoft"], json!({"connected": true, "username": "ada@firm.example", "needs_reconnect": true}));
    bodies.push(me.to_string());

    let logs = crate::google::logs_text();
    assert!(logs.contains("signed in with Microsoft"), "the capture works");
    assert!(logs.contains(&format!("user={ada}")) && logs.contains("invalid_grant"), "said once in the log");
    let tokens = fake.issued_tokens();
    assert!(tokens.len() >= 6, "{}", tokens.len());
    for t in &tokens {
        assert!(!logs.contains(t.as_str()), "a Microsoft token is in the logs");
        for b in &bodies {
            assert!(!b.contains(t.as_str()), "a Microsoft token is in an answer: {b}");
        }
    }
}

#[tokio::test]
async fn every_microsoft_route_answers_503_when_microsoft_is_not_configured() {
    let app = spawn_app_with(|_| {}).await;
    let (_, token) = app.add_user("ada@firm.example", "user");
    let r = app.http.get(app.url("/api/auth/microsoft/start")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 503);
    let r = app.http.post(app.url("/api/auth/microsoft/connect")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 503);
    let r = app.http.get(app.url("/api/auth/microsoft/callback?code=x&state=y")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 503);
    let body: Value = r.json().await.unwrap();
    assert!(body.to_string().contains("microsoft.client_id"), "{body}");
    let (s, _) = app.delete("/api/me/microsoft", &token).await;
    assert_eq!(s, 503);
    let (_, me) = app.get("/api/me", &token).await;
    assert_eq!(me["microsoft"]["connected"], false);
}
