//! The `syncgate` binary as operators use it: `user add`, `token`,
//! `token --anon`, `login-link` against a running `syncgate serve`; the
//! generated secret file; refusing a public bind without a secret; a clean
//! exit on SIGTERM; `./config.toml` and `SYNCGATE_*` names.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::helpers::decode;

const WAIT: Duration = Duration::from_secs(10);
pub(crate) const SECRET: &str = "cli-test-secret-cli-test-secret-0123456789";

/// A `syncgate` command run in `dir` with nothing inherited from the
/// caller's SYNCGATE_* environment, the database in `dir/data`, port 0.
pub(crate) fn syncgate(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_syncgate"));
    c.current_dir(dir);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("SYNCGATE") {
            c.env_remove(k);
        }
    }
    c.envs(crate::helpers::engine_env(dir));
    c.env("SYNCGATE_DATABASE__PATH", db_path(dir)).env("SYNCGATE_SERVER__BIND", "127.0.0.1:0").kill_on_drop(true);
    c
}

pub(crate) fn db_path(dir: &Path) -> PathBuf {
    dir.join("data").join("syncgate.db")
}

pub(crate) async fn run(mut cmd: Command, args: &[&str]) -> Output {
    cmd.args(args).stdin(Stdio::null());
    tokio::time::timeout(WAIT, cmd.output()).await.unwrap_or_else(|_| panic!("syncgate {args:?} finishes")).expect("runs")
}

/// Run a command that must succeed; returns its stdout.
pub(crate) async fn ok(cmd: Command, args: &[&str]) -> String {
    let out = run(cmd, args).await;
    let stdout = String::from_utf8(out.stdout).expect("utf-8 stdout");
    assert!(out.status.success(), "syncgate {args:?} failed: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    stdout
}

/// The only line of stdout (there must be exactly one).
pub(crate) fn only_line(stdout: &str) -> &str {
    assert!(stdout.ends_with('\n'), "one line ending in a newline: {stdout:?}");
    let line = &stdout[..stdout.len() - 1];
    assert!(!line.contains('\n') && !line.trim().is_empty() && line.trim() == line, "exactly one bare line: {stdout:?}");
    line
}

fn claims(jwt: &str) -> Value {
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3, "a JWT has three parts: {jwt}");
    for p in &parts {
        assert!(!p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "base64url: {jwt}");
    }
    let header: Value = serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    assert_eq!(header["alg"], "HS256");
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap()
}

/// `syncgate serve` as a child process, with its address from the listening line.
pub(crate) struct Served {
    pub(crate) child: Child,
    pub(crate) base: String,
    pub(crate) stderr: Arc<Mutex<String>>,
}

pub(crate) async fn serve(mut cmd: Command) -> Served {
    cmd.arg("serve").stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("serve starts");
    let stderr = Arc::new(Mutex::new(String::new()));
    let mut err_pipe = child.stderr.take().unwrap();
    let sink = stderr.clone();
    tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        while let Ok(n) = err_pipe.read(&mut buf).await {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(WAIT, lines.next_line()).await;
    let line = match first {
        Ok(Ok(Some(l))) => l,
        other => panic!("serve printed no listening line ({other:?}); stderr:\n{}", stderr.lock().unwrap()),
    };
    let base =
        line.strip_prefix("syncgate listening on ").unwrap_or_else(|| panic!("the first stdout line is the listening line: {line:?}"));
    assert!(base.starts_with("http://127.0.0.1:") && !base.ends_with(":0"), "a real port: {line}");
    let base = base.to_string();
    // Keep draining stdout so the server never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Served { child, base, stderr }
}

impl Served {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub(crate) async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        decode(http().get(self.url(path)).bearer_auth(token).send().await.expect("request")).await
    }

    /// SIGTERM, then the exit status within the wait.
    pub(crate) async fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().expect("still running").to_string();
        let killed = std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill runs");
        assert!(killed.success());
        match tokio::time::timeout(WAIT, self.child.wait()).await {
            Ok(s) => s.expect("wait"),
            Err(_) => panic!("serve did not exit after SIGTERM; stderr:\n{}", self.stderr.lock().unwrap()),
        }
    }
}

pub(crate) fn http() -> reqwest::Client {
    // reqwest has no TLS provider of its own here; one must be installed first.
    syncgate::provider::install_tls();
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

#[tokio::test]
async fn users_tokens_and_login_links_work_against_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cmd = || {
        let mut c = syncgate(d);
        c.env("SYNCGATE_AUTH__JWT_SECRET", SECRET);
        c
    };

    let id = ok(cmd(), &["user", "add", "--email", "ada@example.com", "--name", "Ada"]).await;
    let id = only_line(&id).to_string();
    assert!(id.bytes().all(|b| b.is_ascii_digit()), "user add prints digits only: {id:?}");
    // The data folder comes from database.path on both engines; on SQLite the file is in it.
    let used = if crate::helpers::on_postgres() { db_path(d).parent().unwrap().exists() } else { db_path(d).exists() };
    assert!(used, "SYNCGATE_DATABASE__PATH (one `_` after SYNCGATE) was used");
    assert!(!d.join("data").join("jwt_secret").exists(), "a configured secret means no generated one");
    let root = ok(cmd(), &["user", "add", "--email", "root@example.com", "--role", "admin"]).await;
    let root = only_line(&root).to_string();
    assert_ne!(root, id);

    let dup = run(cmd(), &["user", "add", "--email", "ADA@example.com"]).await;
    assert!(!dup.status.success(), "a duplicate email is refused");
    assert!(dup.stdout.is_empty(), "errors go to stderr only");
    assert!(!dup.stderr.is_empty());

    let tok = ok(cmd(), &["token", "--user", &id]).await;
    let tok = only_line(&tok).to_string();
    let c = claims(&tok);
    assert_eq!(c["sub"], json!(id), "sub is the id as a string");
    assert!(c["exp"].is_i64());
    assert!(c.get("role").is_none_or(|r| r != "admin"));
    let root_tok = ok(cmd(), &["token", "--user", &root, "--ttl", "15m"]).await;
    let root_tok = only_line(&root_tok).to_string();
    assert_eq!(claims(&root_tok)["role"], "admin", "the token carries the stored role");
    let anon = ok(cmd(), &["token", "--anon"]).await;
    let anon = only_line(&anon).to_string();
    let ac = claims(&anon);
    assert_eq!(ac["role"], "anon");
    assert!(ac.get("sub").is_none(), "the anon key names no user: {ac}");
    let missing = run(cmd(), &["token", "--user", "987654"]).await;
    assert!(!missing.status.success() && missing.stdout.is_empty(), "no token for a user that does not exist");

    let server = serve(cmd()).await;
    let (s, me) = server.get("/api/me", &tok).await;
    assert_eq!(s, 200, "the server accepts the CLI's token: {me}");
    assert_eq!(me["id"].to_string(), id);
    let r = http().post(server.url("/api/clients")).bearer_auth(&tok).json(&json!({"name": "Grace"})).send().await.unwrap();
    let (s, client) = decode(r).await;
    assert_eq!(s, 201);
    let (s, all) = server.get("/api/clients", &root_tok).await;
    assert_eq!(s, 200);
    assert_eq!(all["items"], json!([client]), "the admin token sees ada's client");
    let (s, e) = server.get("/api/clients", &anon).await;
    assert_eq!((s, e["error"].as_str()), (401, Some("unauthorized")), "the anon key is refused on REST");

    // The CLI works while the server runs.
    let late = ok(cmd(), &["user", "add", "--email", "late@example.com"]).await;
    let late = only_line(&late).to_string();
    let late_tok = ok(cmd(), &["token", "--user", &late]).await;
    let (s, _) = server.get("/api/clients", only_line(&late_tok)).await;
    assert_eq!(s, 200);

    // A login link, made for the address browsers use, signs in once.
    let mut link_cmd = cmd();
    link_cmd.env("SYNCGATE_SERVER__PUBLIC_URL", &server.base);
    let link = ok(link_cmd, &["login-link", "--user", &id]).await;
    let link = only_line(&link).to_string();
    assert!(link.starts_with(&format!("{}/auth/link?code=", server.base)), "{link}");
    let r = crate::hardening_input::follow_login_link(&http(), &link).await;
    assert_eq!(r.status().as_u16(), 303);
    let location = r.headers().get("location").expect("a Location").to_str().unwrap().to_string();
    let jwt =
        location.strip_prefix("/#access_token=").unwrap_or_else(|| panic!("redirects to / with the token in the fragment: {location}"));
    assert_eq!(claims(jwt)["sub"], json!(id));
    let (s, me) = server.get("/api/me", jwt).await;
    assert_eq!(s, 200);
    assert_eq!(me["id"].to_string(), id);
    let again = decode(crate::hardening_input::follow_login_link(&http(), &link).await).await;
    assert_eq!((again.0, again.1["error"].as_str()), (401, Some("unauthorized")), "a link works once: {:?}", again.1);
    let bad = run(cmd(), &["login-link", "--user", "987654"]).await;
    assert!(!bad.status.success() && bad.stdout.is_empty());

    let status = server.terminate().await;
    assert!(status.success(), "SIGTERM exits 0: {status:?}");
    let conn = crate::helpers::open_db_in(d, &db_path(d));
    let n: i64 = conn.value("SELECT COUNT(*) FROM clients", &[]);
    assert_eq!(n, 1, "the acknowledged write is on disk after shutdown");
}

#[tokio::test]
async fn without_a_secret_a_loopback_server_generates_one_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let secret_file = d.join("data").join("jwt_secret");
    if crate::helpers::on_postgres() {
        // A shared database needs one secret for every node: none is generated.
        for args in [&["user", "add", "--email", "ada@example.com"][..], &["serve"][..]] {
            let out = run(syncgate(d), args).await;
            assert!(!out.status.success(), "{args:?} must refuse");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.contains("auth.jwt_secret must be set when database.url is set"), "{stderr}");
        }
        assert!(!secret_file.exists(), "no secret is generated for a shared database");
        return;
    }
    let id = ok(syncgate(d), &["user", "add", "--email", "ada@example.com"]).await;
    let id = only_line(&id).to_string();

    let tok1 = ok(syncgate(d), &["token", "--user", &id]).await;
    let tok1 = only_line(&tok1).to_string();
    let secret = std::fs::read_to_string(&secret_file).expect("the secret is kept in the data folder");
    assert!(secret.trim().len() >= 32, "a long random secret");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&secret_file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "only the owner may read the secret");
    }
    let tok2 = ok(syncgate(d), &["token", "--user", &id]).await;
    assert_eq!(std::fs::read_to_string(&secret_file).unwrap(), secret, "generated once, then reused");

    let server = serve(syncgate(d)).await;
    for t in [&tok1, only_line(&tok2)] {
        let (s, me) = server.get("/api/me", t).await;
        assert_eq!(s, 200, "tokens from the CLI are good on the server: {me}");
    }
    assert!(!server.stderr.lock().unwrap().contains(secret.trim()), "the secret is never logged");
    assert!(server.terminate().await.success());
    assert_eq!(std::fs::read_to_string(&secret_file).unwrap(), secret);

    // A second server run still accepts the first token.
    let server = serve(syncgate(d)).await;
    let (s, _) = server.get("/api/me", &tok1).await;
    assert_eq!(s, 200);
    assert!(server.terminate().await.success());
}

#[tokio::test]
async fn a_public_bind_without_a_secret_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut cmd = syncgate(d);
    cmd.env("SYNCGATE_SERVER__BIND", "0.0.0.0:0");
    let out = run(cmd, &["serve"]).await;
    assert!(!out.status.success(), "serve must exit non-zero");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("auth.jwt_secret"), "the message names the key: {stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("listening"), "it never listened");
    assert!(!d.join("data").join("jwt_secret").exists(), "no secret is generated for a public bind");
}

#[tokio::test]
async fn a_partial_config_toml_in_the_working_directory_is_read() {
    // Which file a setting came from shows in where the SQLite file appears.
    if crate::helpers::sqlite_only(
        "a_partial_config_toml_in_the_working_directory_is_read",
        "it reads database.path through the SQLite file's location",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Only one key, a relative path: it resolves against the working directory.
    std::fs::write(d.join("config.toml"), "[database]\npath = \"db/here.db\"\n").unwrap();
    let mut cmd = syncgate(d);
    cmd.env_remove("SYNCGATE_DATABASE__PATH").env("SYNCGATE_AUTH__JWT_SECRET", SECRET);
    let id = ok(cmd, &["user", "add", "--email", "ada@example.com"]).await;
    only_line(&id);
    assert!(d.join("db").join("here.db").exists(), "database.path from ./config.toml, relative to the working directory");
    assert!(!db_path(d).exists());

    // --config beats ./config.toml; the environment beats both.
    std::fs::write(d.join("other.toml"), "[database]\npath = \"other/x.db\"\n[no_such_section]\nkey = 1\n").unwrap();
    let mut cmd = syncgate(d);
    cmd.env_remove("SYNCGATE_DATABASE__PATH");
    let out = run(cmd, &["--config", "other.toml", "user", "add", "--email", "bob@example.com"]).await;
    assert!(out.status.success(), "an unknown section warns but does not stop: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no_such_section"), "the unknown key is warned about");
    assert!(d.join("other").join("x.db").exists());
    let mut cmd = syncgate(d);
    cmd.env("SYNCGATE_DATABASE__PATH", d.join("env.db"));
    ok(cmd, &["--config", "other.toml", "user", "add", "--email", "cy@example.com"]).await;
    assert!(d.join("env.db").exists(), "the environment wins");
}
