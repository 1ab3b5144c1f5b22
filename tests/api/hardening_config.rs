//! Startup validates every config value before listening (issue 13, item 7):
//! a bad value ends the process with a sentence naming its key and no
//! listening line; the listening line means requests are answered.

use crate::cli::{run, serve, syncgate, SECRET};

#[tokio::test]
async fn a_bad_value_stops_serve_before_the_listening_line_naming_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases = [
        ("SYNCGATE_SERVER__CORS_ORIGINS", "app.example.com", "server.cors_origins"),
        ("SYNCGATE_SERVER__CORS_ORIGINS", "https://app.example.com/path", "server.cors_origins"),
        ("SYNCGATE_SERVER__CORS_ORIGINS", "ftp://app.example.com", "server.cors_origins"),
        ("SYNCGATE_SERVER__PUBLIC_URL", "sync.example.com", "server.public_url"),
        ("SYNCGATE_SERVER__STATIC_DIR", "no/such/folder", "server.static_dir"),
        ("SYNCGATE_GOOGLE__WEBHOOK_URL", "not a url", "google.webhook_url"),
        ("SYNCGATE_ALERTS__WEBHOOK_URL", "hooks.slack.com/x", "alerts.webhook_url"),
        ("SYNCGATE_CHANGES__PRUNE_INTERVAL", "0s", "changes.prune_interval"),
        ("SYNCGATE_CHANGES__RETENTION_AGE", "1000y", "changes.retention_age"),
        ("SYNCGATE_REALTIME__MAX_SOCKETS_PER_USER", "0", "realtime.max_sockets_per_user"),
        ("SYNCGATE_LOG__LEVEL", "syncgate=loudest", "log.level"),
        ("SYNCGATE_MICROSOFT__SUBSCRIPTION_TTL", "10081m", "microsoft.subscription_ttl"),
        ("SYNCGATE_MICROSOFT__TENANT", "not a tenant!", "microsoft.tenant"),
    ];
    for (var, value, key) in cases {
        let mut cmd = syncgate(d);
        cmd.env("SYNCGATE_AUTH__JWT_SECRET", SECRET).env(var, value);
        let out = run(cmd, &["serve"]).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{var}={value} must stop serve; stderr:\n{stderr}");
        assert!(stderr.contains(key), "{var}={value}: the sentence names {key}: {stderr}");
        assert!(!stderr.contains("panicked"), "{var}={value}: no panic: {stderr}");
        assert!(!String::from_utf8_lossy(&out.stdout).contains("listening"), "{var}={value}: no listening line");
    }
}

#[tokio::test]
async fn a_non_ascii_log_filter_is_a_sentence_not_a_panic() {
    // Found by the property tests: tracing-subscriber's parser panicked on this.
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = syncgate(dir.path());
    cmd.env("SYNCGATE_AUTH__JWT_SECRET", SECRET).env("SYNCGATE_LOG__LEVEL", "\ta\u{a1}=");
    let out = run(cmd, &["token", "--anon"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("log.level") && !stderr.contains("panicked"), "{stderr}");
    // SYNCGATE_LOG (the override) with the same text is ignored, not fatal.
    let mut cmd = syncgate(dir.path());
    cmd.env("SYNCGATE_AUTH__JWT_SECRET", SECRET).env("SYNCGATE_LOG", "\ta\u{a1}=");
    let out = run(cmd, &["token", "--anon"]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn a_config_built_in_code_is_held_to_the_same_rules() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::helpers::test_config(dir.path());
    config.server.cors_origins = vec!["app.example.com".into()];
    let err = syncgate::startup::Server::build(config).await.err().expect("refused");
    assert!(err.to_string().contains("server.cors_origins"), "{err}");
}

#[tokio::test]
async fn with_good_origins_the_listening_line_means_serving() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut cmd = syncgate(d);
    cmd.env("SYNCGATE_AUTH__JWT_SECRET", SECRET).env("SYNCGATE_SERVER__CORS_ORIGINS", "https://app.example.com/, http://localhost:3000");
    let server = serve(cmd).await;
    // The first request after the line is answered (no panic after printing it).
    let r = crate::cli::http()
        .request(reqwest::Method::OPTIONS, server.url("/api/clients"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .expect("the server answers right after its listening line");
    assert!(r.status().is_success(), "{}", r.status());
    let (s, body) = server.get("/health", "").await;
    assert_eq!((s, body["status"].as_str()), (200, Some("ok")));
    let log = server.stderr.lock().unwrap().clone();
    assert!(!log.contains("panicked"), "{log}");
    assert!(server.terminate().await.success());
}
