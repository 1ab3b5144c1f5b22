//! `spawn_app()` starts syncgate exactly as `serve` does, on 127.0.0.1:0 with a
//! throwaway data folder, and returns a `TestApp` with verb helpers.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use syncgate::config::Config;
use syncgate::startup::{App, Server};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const SECRET: &str = "test-secret-test-secret-test-secret-0123";

/// One row of `changes`: (seq, table, op, row_id, user_id, record, old_record).
pub type ChangeRow = (i64, String, String, i64, i64, Option<Value>, Option<Value>);

pub struct TestApp {
    pub addr: SocketAddr,
    pub base: String,
    pub app: App,
    pub config: Config,
    pub http: reqwest::Client,
    pub dir: tempfile::TempDir,
    stop: std::sync::Mutex<Option<oneshot::Sender<()>>>,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

pub fn test_config(dir: &std::path::Path) -> Config {
    let mut c = Config::default();
    c.server.bind = "127.0.0.1:0".into();
    c.database.path = dir.join("syncgate.db").to_string_lossy().into_owned();
    c.auth.jwt_secret = SECRET.into();
    c
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Start with a tweaked config (the data folder is fresh).
pub async fn spawn_app_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = test_config(dir.path());
    tweak(&mut config);
    start(config, dir).await
}

/// Start a server on an existing data folder and config (e.g. after a restart).
pub async fn start(config: Config, dir: tempfile::TempDir) -> TestApp {
    // reqwest is built without a default TLS provider; the tests' client needs one too.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let server = Server::build(config.clone()).await.expect("server builds");
    let addr = server.addr();
    let app = server.app();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async move {
        let _ = rx.await;
    }));
    TestApp {
        addr,
        base: format!("http://{addr}"),
        app,
        config,
        http: reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap(),
        dir,
        stop: std::sync::Mutex::new(Some(tx)),
        task: std::sync::Mutex::new(Some(task)),
    }
}

impl TestApp {
    /// Shut down cleanly (as on SIGTERM) and wait until the writer has stopped.
    /// Returns the data folder and config so the test can start again on them.
    pub async fn stop(mut self) -> (Config, tempfile::TempDir) {
        self.begin_stop();
        self.wait_stopped().await;
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        (self.config.clone(), dir)
    }

    /// Start a clean shutdown (as SIGTERM does) without waiting for it.
    pub fn begin_stop(&self) {
        if let Some(tx) = self.stop.lock().unwrap().take() {
            let _ = tx.send(());
        }
    }

    /// Wait until the server has fully stopped (writer queue committed).
    pub async fn wait_stopped(&self) {
        let task = self.task.lock().unwrap().take();
        if let Some(t) = task {
            let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
        }
    }

    /// Add a user directly in the database; returns (id, token).
    pub fn add_user(&self, email: &str, role: &str) -> (i64, String) {
        let conn = open_db(&self.config);
        let now = syncgate::store::timefmt::format(syncgate::store::timefmt::now());
        conn.execute(
            "INSERT INTO users (email, name, role, created_at, updated_at) VALUES (?1, 'Test User', ?2, ?3, ?3)",
            rusqlite::params![email, role, now],
        )
        .expect("create user");
        let id = conn.last_insert_rowid();
        (id, self.app.tokens.user_token(id, role, 3600))
    }

    pub fn token_for(&self, id: i64, role: &str, ttl_secs: i64) -> String {
        self.app.tokens.user_token(id, role, ttl_secs)
    }

    /// A read-only connection to the test's database file.
    pub fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(&self.config.database.path).expect("open db")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        let r = self.http.get(self.url(path)).bearer_auth(token).send().await.expect("request");
        decode(r).await
    }

    pub async fn post(&self, path: &str, token: &str, body: &Value) -> (u16, Value) {
        let r = self.http.post(self.url(path)).bearer_auth(token).json(body).send().await.expect("request");
        decode(r).await
    }

    pub async fn post_raw(&self, path: &str, token: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
        let r = self
            .http
            .post(self.url(path))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request");
        decode(r).await
    }

    pub async fn patch(&self, path: &str, token: &str, body: &Value) -> (u16, Value) {
        let r = self.http.patch(self.url(path)).bearer_auth(token).json(body).send().await.expect("request");
        decode(r).await
    }

    pub async fn delete(&self, path: &str, token: &str) -> (u16, Value) {
        let r = self.http.delete(self.url(path)).bearer_auth(token).send().await.expect("request");
        decode(r).await
    }

    /// Open a realtime socket (`vsn` 1.0.0 or 2.0.0) with `apikey`.
    pub async fn ws(&self, apikey: &str, vsn: &str) -> Ws {
        let url = format!("ws://{}/realtime/v1/websocket?apikey={}&vsn={}", self.addr, apikey, vsn);
        let (s, _) = tokio_tungstenite::connect_async(url).await.expect("websocket connects");
        Ws { inner: s, v2: vsn == "2.0.0", next_ref: 1 }
    }

    /// Every row of `changes`, oldest first: (seq, table, op, row_id, user_id, record, old_record).
    pub fn changes(&self) -> Vec<ChangeRow> {
        let conn = self.db();
        let mut stmt = conn.prepare("SELECT seq, table_name, op, row_id, user_id, record, old_record FROM changes ORDER BY seq").unwrap();
        stmt.query_map([], |r| {
            let rec: Option<String> = r.get(5)?;
            let old: Option<String> = r.get(6)?;
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                rec.map(|s| serde_json::from_str(&s).unwrap()),
                old.map(|s| serde_json::from_str(&s).unwrap()),
            ))
        })
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
    }
}

/// The accounts tests' name for a [`ChangeRow`].
pub type LoggedChange = ChangeRow;

pub async fn decode(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// A raw realtime client speaking frames as JSON values, normalized to
/// `{join_ref, ref, topic, event, payload}` whatever the vsn.
pub struct Ws {
    pub inner: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub v2: bool,
    pub next_ref: u64,
}

#[derive(Debug, Clone)]
pub struct Frame {
    pub join_ref: Option<String>,
    pub reference: Option<String>,
    pub topic: String,
    pub event: String,
    pub payload: Value,
}

impl Ws {
    pub async fn send_raw(&mut self, text: &str) {
        self.inner.send(Message::text(text.to_string())).await.expect("send");
    }

    /// Send a frame; returns the ref used.
    pub async fn send(&mut self, join_ref: Option<&str>, topic: &str, event: &str, payload: Value) -> String {
        let r = self.next_ref.to_string();
        self.next_ref += 1;
        let text = if self.v2 {
            serde_json::json!([join_ref, r, topic, event, payload]).to_string()
        } else {
            serde_json::json!({"join_ref": join_ref, "ref": r, "topic": topic, "event": event, "payload": payload}).to_string()
        };
        self.send_raw(&text).await;
        r
    }

    /// Join `topic` with postgres_changes bindings and an access token. Returns the join ref.
    pub async fn join(&mut self, topic: &str, bindings: Value, token: Option<&str>) -> String {
        self.join_with(topic, serde_json::json!({"postgres_changes": bindings}), token).await
    }

    pub async fn join_with(&mut self, topic: &str, config: Value, token: Option<&str>) -> String {
        let jr = self.next_ref.to_string();
        let mut payload = serde_json::json!({"config": config});
        if let Some(t) = token {
            payload["access_token"] = Value::String(t.into());
        }
        self.send(Some(&jr.clone()), topic, "phx_join", payload).await;
        jr
    }

    /// Next frame within `wait`, or None.
    pub async fn recv_within(&mut self, wait: Duration) -> Option<Frame> {
        loop {
            let msg = tokio::time::timeout(wait, self.inner.next()).await.ok()??.ok()?;
            match msg {
                Message::Text(t) => return Some(parse_frame(t.as_str(), self.v2)),
                Message::Close(_) => return None,
                _ => continue,
            }
        }
    }

    pub async fn recv(&mut self) -> Frame {
        self.recv_within(Duration::from_secs(10)).await.expect("a frame within 10 s")
    }

    /// Skip frames until one with this event arrives.
    pub async fn recv_event(&mut self, event: &str) -> Frame {
        loop {
            let f = self.recv().await;
            if f.event == event {
                return f;
            }
        }
    }

    /// Wait for the ok reply and the "Subscribed" system message of a join.
    pub async fn joined(&mut self) -> Frame {
        let reply = self.recv_event("phx_reply").await;
        assert_eq!(reply.payload["status"], "ok", "join refused: {:?}", reply.payload);
        reply
    }

    /// The close frame (code, reason) if the server closes within `wait`.
    pub async fn closed_with(&mut self, wait: Duration) -> Option<(u16, String)> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.inner.next()).await {
                Err(_) => return None,
                Ok(None) => return Some((1006, String::new())),
                Ok(Some(Err(_))) => return Some((1006, String::new())),
                Ok(Some(Ok(Message::Close(Some(f))))) => return Some((u16::from(f.code), f.reason.to_string())),
                Ok(Some(Ok(Message::Close(None)))) => return Some((1005, String::new())),
                Ok(Some(Ok(_))) => continue,
            }
        }
    }
}

pub fn parse_frame(text: &str, v2: bool) -> Frame {
    let v: Value = serde_json::from_str(text).expect("server frames are JSON");
    let s = |v: &Value| v.as_str().map(str::to_string);
    if v2 {
        let a = v.as_array().expect("vsn 2 frames are arrays");
        assert_eq!(a.len(), 5, "vsn 2 frames have 5 elements: {text}");
        Frame { join_ref: s(&a[0]), reference: s(&a[1]), topic: s(&a[2]).unwrap(), event: s(&a[3]).unwrap(), payload: a[4].clone() }
    } else {
        Frame {
            join_ref: s(&v["join_ref"]),
            reference: s(&v["ref"]),
            topic: s(&v["topic"]).unwrap(),
            event: s(&v["event"]).unwrap(),
            payload: v["payload"].clone(),
        }
    }
}

/// The test's own connection to the server's SQLite file, for setting up
/// rows and reading back what the server wrote (the way an operator's
/// `sqlite3` would), never through syncgate's store internals.
pub fn open_db(config: &syncgate::config::Config) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(&config.database.path).expect("open the database file");
    conn.busy_timeout(Duration::from_secs(10)).expect("busy timeout");
    conn
}
