//! Forged Calendly webhooks cost next to nothing: no row each, a count per
//! minute and reason that health, the alert and /metrics read and that
//! survives a restart; delivery rows are deleted after `calendly.keep_outcomes`.

use serde_json::{json, Value};

use crate::helpers::*;
use crate::metrics::scrape;

const KEY: &str = "calendly-signing-key-current-0123456789";

async fn forge(app: &TestApp, n: usize) {
    let mut pending = Vec::new();
    for i in 0..n {
        let http = app.http.clone();
        let url = app.url("/api/calendly/webhook");
        // Half carry a signature that does not match, half none.
        let header = (i % 2 == 0).then(|| format!("t={},v1={}", syncgate::auth::unix_now(), "ab".repeat(32)));
        pending.push(tokio::spawn(async move {
            let mut req = http.post(url).header("content-type", "application/json").body(r#"{"event":"invitee.created","payload":{}}"#);
            if let Some(h) = header {
                req = req.header("Calendly-Webhook-Signature", h);
            }
            req.send().await.unwrap().status().as_u16()
        }));
    }
    for p in pending {
        assert_eq!(p.await.unwrap(), 401);
    }
}

fn delivery_rows(app: &TestApp) -> i64 {
    app.db().value("SELECT COUNT(*) FROM calendly_webhook_events", &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_deliveries_write_no_rows_and_their_count_survives_a_restart() {
    let app = spawn_app_with(|c| c.calendly.signing_keys = vec![KEY.into()]).await;
    let (_, admin) = app.add_user("root@example.com", "admin");
    let m = scrape(&app, None).await;
    assert_eq!(m.get("syncgate_calendly_rejected_total{reason=mismatch}"), Some(&0.0), "exported at 0 from the start");

    forge(&app, 400).await;
    assert_eq!(delivery_rows(&app), 0, "a refused delivery writes no row of its own");
    let minutes: i64 = app.db().value("SELECT COUNT(*) FROM calendly_rejections", &[]);
    assert!((1..=4).contains(&minutes), "one row per minute and reason, not per delivery: {minutes}");

    let m = scrape(&app, None).await;
    assert_eq!(m.get("syncgate_calendly_rejected_total{reason=mismatch}"), Some(&200.0));
    assert_eq!(m.get("syncgate_calendly_rejected_total{reason=missing}"), Some(&200.0));
    let check = |v: &Value| {
        assert_eq!(v["outcomes_24h"]["rejected"], 400, "{v}");
        assert_eq!(v["rejected_by_reason_24h"]["mismatch"], 200, "{v}");
        assert_eq!(v["rejected_by_reason_24h"]["missing"], 200, "{v}");
    };
    let (s, v) = app.get("/api/admin/health/calendly", &admin).await;
    assert_eq!(s, 200);
    check(&v);

    let (config, dir) = app.stop().await;
    let app = start(config, dir).await;
    let (s, v) = app.get("/api/admin/health/calendly", &admin).await;
    assert_eq!(s, 200);
    check(&v);
    assert_eq!(delivery_rows(&app), 0);
}

#[tokio::test]
async fn delivery_rows_of_every_outcome_are_deleted_after_keep_outcomes() {
    let app = spawn_app_with(|c| c.calendly.signing_keys = vec![KEY.into()]).await;
    let fmt = |days: i64| syncgate::store::timefmt::format(syncgate::store::timefmt::now() - time::Duration::days(days));
    let db = app.db();
    for (outcome, days) in [("accepted", 91), ("unmatched", 120), ("invalid", 95), ("failed", 100), ("accepted", 89), ("ignored", 1)] {
        db.execute(
            "INSERT INTO calendly_webhook_events (event, received_at, outcome) VALUES ('invitee.created', ?1, ?2)",
            &[json!(fmt(days)), json!(outcome)],
        );
    }
    db.execute(
        "INSERT INTO calendly_rejections (minute, reason, count, last_at) VALUES ('2000-01-01T00:00Z', 'mismatch', 5, ?1)",
        &[json!(fmt(91))],
    );
    db.execute(
        "INSERT INTO calendly_rejections (minute, reason, count, last_at) VALUES ('2000-01-02T00:00Z', 'mismatch', 5, ?1)",
        &[json!(fmt(2))],
    );
    syncgate::ops::retention::Retention::new(app.app.store.clone(), &app.config).drop_outcomes_once().await.unwrap();
    let kept: Vec<String> = db.column("SELECT outcome FROM calendly_webhook_events ORDER BY id", &[]);
    assert_eq!(kept, vec!["accepted", "ignored"]);
    let minutes: i64 = db.value("SELECT COUNT(*) FROM calendly_rejections", &[]);
    assert_eq!(minutes, 1);
}

#[tokio::test]
async fn refused_deliveries_are_logged_once_per_source_per_minute() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_syncgate");
    let mut serve = Command::new(bin);
    serve
        .current_dir(dir.path())
        .envs(crate::helpers::engine_env(dir.path()))
        .env("SYNCGATE_DATABASE__PATH", dir.path().join("s.db"))
        .env("SYNCGATE_AUTH__JWT_SECRET", SECRET)
        .env("SYNCGATE_SERVER__BIND", "127.0.0.1:0")
        .env("SYNCGATE_CALENDLY__SIGNING_KEYS", KEY)
        .env_remove("SYNCGATE_LOG");
    let mut child = serve.args(["--log-format", "json", "serve"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let base = line.trim().trim_start_matches("syncgate listening on ").to_string();
    syncgate::provider::install_tls();
    let http = reqwest::Client::new();
    // The same minute, as far as the clock allows: two sources, many refusals each.
    let minute = syncgate::auth::unix_now() / 60;
    for i in 0..30 {
        let mut req = http.post(format!("{base}/api/calendly/webhook")).body("{}");
        if i % 2 == 0 {
            req = req.header("x-forwarded-for", "203.0.113.9, 10.0.0.1");
        }
        assert_eq!(req.send().await.unwrap().status().as_u16(), 401);
    }
    let same_minute = syncgate::auth::unix_now() / 60 == minute;
    std::process::Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    let out = child.wait_with_output().unwrap();
    let logs = String::from_utf8(out.stderr).unwrap();
    let rejected: Vec<&str> = logs.lines().filter(|l| l.contains(": rejected,")).collect();
    if same_minute {
        assert_eq!(rejected.len(), 2, "one line per source: {rejected:#?}");
    } else {
        assert!((2..=4).contains(&rejected.len()), "one line per source and minute: {rejected:#?}");
    }
    assert!(rejected.iter().any(|l| l.contains("203.0.113.9")) && rejected.iter().any(|l| l.contains("127.0.0.1")), "{rejected:#?}");
}
