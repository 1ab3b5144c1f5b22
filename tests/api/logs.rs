//! Logs: JSON lines with `--log-format json`, a request id on every request's
//! lines (the same one the response carries), and no secret ever.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use serde_json::Value;

#[tokio::test]
async fn json_logs_carry_request_ids_and_never_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "log-test-secret-log-test-secret-log-0001";
    let db = dir.path().join("s.db");
    let env = |c: &mut Command| {
        c.current_dir(dir.path())
            .envs(crate::helpers::engine_env(dir.path()))
            .env("SYNCGATE_DATABASE__PATH", &db)
            .env("SYNCGATE_AUTH__JWT_SECRET", secret)
            .env("SYNCGATE_SERVER__BIND", "127.0.0.1:0")
            .env("SYNCGATE_CALENDLY__SIGNING_KEYS", "calendly-signing-key-do-not-log")
            .env("SYNCGATE_METRICS__TOKEN", "metrics-token-do-not-log")
            .env_remove("SYNCGATE_LOG");
    };
    let bin = env!("CARGO_BIN_EXE_syncgate");
    let mut add = Command::new(bin);
    env(&mut add);
    let id = String::from_utf8(add.args(["user", "add", "--email", "ann@example.com"]).output().unwrap().stdout).unwrap();
    let mut tok = Command::new(bin);
    env(&mut tok);
    let token = String::from_utf8(tok.args(["token", "--user", id.trim()]).output().unwrap().stdout).unwrap().trim().to_string();
    let mut link = Command::new(bin);
    env(&mut link);
    let login_url = String::from_utf8(link.args(["login-link", "--user", id.trim()]).output().unwrap().stdout).unwrap();
    let code = login_url.trim().split("code=").nth(1).unwrap().to_string();

    let mut serve = Command::new(bin);
    env(&mut serve);
    let mut child = serve.args(["--log-format", "json", "serve"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert!(line.starts_with("syncgate listening on http://127.0.0.1:"), "{line}");
    let base = line.trim().trim_start_matches("syncgate listening on ").to_string();

    syncgate::provider::install_tls();
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let r = http.get(format!("{base}/api/clients")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let rid = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let r = http.get(format!("{base}/api/clients")).bearer_auth(format!("{token}tampered")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = crate::hardening_input::follow_login_link(&http, &format!("{base}/auth/link?code={code}")).await;
    assert_eq!(r.status().as_u16(), 303);
    let r = http.get(format!("{base}/metrics")).bearer_auth("metrics-token-do-not-log").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);

    std::process::Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let logs = String::from_utf8(out.stderr).unwrap();
    let mut request_lines = 0;
    for l in logs.lines() {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|_| panic!("every log line is JSON: {l}"));
        if v["fields"]["message"] == "request" {
            request_lines += 1;
            assert!(v["span"]["id"].is_string(), "request lines carry the request id: {l}");
        }
    }
    assert!(request_lines >= 4, "one line per request:\n{logs}");
    assert!(logs.contains(&format!("\"id\":\"{rid}\"")), "the response's x-request-id is on its log line:\n{logs}");
    for secret in [secret, token.as_str(), code.as_str(), "calendly-signing-key-do-not-log", "metrics-token-do-not-log"] {
        assert!(!logs.contains(secret), "a secret appeared in the logs:\n{logs}");
    }
    let landed = logs.lines().any(|l| l.contains("signed in with a login link"));
    assert!(landed, "the sign-in is logged (without the code)");
}
