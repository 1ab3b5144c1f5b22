//! `spawn_app()` starts syncgate exactly as `serve` does, on 127.0.0.1:0 with a
//! throwaway data folder, and returns a `TestApp` with verb helpers.
//!
//! The engine: SQLite (the file in the data folder) unless
//! `SYNCGATE_TEST_ENGINE=postgres`, where every server a test starts (and
//! every `syncgate` subprocess, through [`engine_env`] / [`config_env`]) uses
//! a fresh schema of its own on the PostgreSQL server
//! `SYNCGATE_TEST_DATABASE_URL` names. Tests read and write the database
//! through [`TestDb`] (`app.db()`, [`open_db`]), the same SQL on both engines.
//! Tests about SQLite itself return early through [`sqlite_only`].

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
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

/// A config for a server on `dir`. On the PostgreSQL engine its
/// `database.url` names the place of that folder (see [`database_url`]), so a
/// config made again for the same folder reaches the same data.
pub fn test_config(dir: &std::path::Path) -> Config {
    let mut c = Config::default();
    c.server.bind = "127.0.0.1:0".into();
    c.database.path = dir.join("syncgate.db").to_string_lossy().into_owned();
    if let Some(url) = database_url(dir) {
        c.database.url = url.into();
    }
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
        let now = syncgate::store::timefmt::format(syncgate::store::timefmt::now());
        let id: i64 = self.db().value(
            "INSERT INTO users (email, name, role, created_at, updated_at) VALUES (?1, 'Test User', ?2, ?3, ?3) RETURNING id",
            &[json!(email), json!(role), json!(now)],
        );
        (id, self.app.tokens.user_token(id, role, 3600))
    }

    pub fn token_for(&self, id: i64, role: &str, ttl_secs: i64) -> String {
        self.app.tokens.user_token(id, role, ttl_secs)
    }

    /// The test's own connection to the server's database, whichever the engine.
    pub fn db(&self) -> TestDb {
        open_db(&self.config)
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
        let json = |v: &Value| v.as_str().map(|s| serde_json::from_str(s).expect("a JSON record"));
        self.db()
            .rows("SELECT seq, table_name, op, row_id, user_id, record, old_record FROM changes ORDER BY seq", &[])
            .iter()
            .map(|r| {
                let int = |i: usize| r[i].as_i64().expect("an integer column");
                let text = |i: usize| r[i].as_str().expect("a text column").to_string();
                (int(0), text(1), text(2), int(3), int(4), json(&r[5]), json(&r[6]))
            })
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

// ---------------------------------------------------------------------------
// The engine the suite runs on.
// ---------------------------------------------------------------------------

/// Which database the suite's servers run on: `SYNCGATE_TEST_ENGINE=postgres`
/// selects PostgreSQL (each test's server gets a schema of its own on the
/// server `SYNCGATE_TEST_DATABASE_URL` names); unset (or `sqlite`), the
/// SQLite file in the test's data folder, as always.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

pub const ENGINE_VARIABLE: &str = "SYNCGATE_TEST_ENGINE";

pub fn engine() -> Engine {
    static ENGINE: std::sync::OnceLock<Engine> = std::sync::OnceLock::new();
    *ENGINE.get_or_init(|| match std::env::var(ENGINE_VARIABLE).unwrap_or_default().trim().to_ascii_lowercase().as_str() {
        "" | "sqlite" => Engine::Sqlite,
        "postgres" | "postgresql" | "pg" => {
            if !std::env::var(crate::pg_database::URL_VARIABLE).is_ok_and(|u| !u.trim().is_empty()) {
                panic!(
                    "{ENGINE_VARIABLE}=postgres, but {} is not set: set it to a PostgreSQL superuser URL \
                     (scripts/test.sh starts a throwaway cluster and sets it)",
                    crate::pg_database::URL_VARIABLE
                );
            }
            Engine::Postgres
        }
        other => panic!("{ENGINE_VARIABLE}={other:?}: expected sqlite or postgres"),
    })
}

pub fn on_postgres() -> bool {
    engine() == Engine::Postgres
}

/// For a test about SQLite itself (its file, WAL, backup, PRAGMAs): on the
/// PostgreSQL engine, print why it does not apply and return true (the test
/// then returns, passing). The line goes straight to stderr, past the test
/// harness's capture, so a run shows what it skipped.
pub fn sqlite_only(test: &str, why: &str) -> bool {
    if on_postgres() {
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "skipped {test} on PostgreSQL: {why}");
        return true;
    }
    false
}

/// The `SYNCGATE_DATABASE__URL` a server on the data folder `dir` gets on the
/// PostgreSQL engine (None on SQLite): a fresh empty schema, made the first
/// time the folder asks, then the same one for that folder (a restart, or
/// the CLI run again on the folder, reaches the same data).
pub fn database_url(dir: &std::path::Path) -> Option<String> {
    if !on_postgres() {
        return None;
    }
    static PLACES: std::sync::Mutex<Vec<(std::path::PathBuf, String)>> = std::sync::Mutex::new(Vec::new());
    let mut places = PLACES.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, url)) = places.iter().find(|(d, _)| d == dir) {
        return Some(url.clone());
    }
    let url = new_schema();
    places.push((dir.to_path_buf(), url.clone()));
    Some(url)
}

/// The environment a `syncgate` subprocess on the data folder `dir` needs to
/// reach the test's database: on PostgreSQL, `SYNCGATE_DATABASE__URL`.
pub fn engine_env(dir: &std::path::Path) -> Vec<(&'static str, String)> {
    database_url(dir).map(|u| vec![("SYNCGATE_DATABASE__URL", u)]).unwrap_or_default()
}

/// A new schema on the test server's database, and a URL whose sessions use it
/// (`options=-c search_path=<schema>`: the server's connections and its
/// migrations make and find every table there).
fn new_schema() -> String {
    let admin = std::env::var(crate::pg_database::URL_VARIABLE).expect("SYNCGATE_TEST_DATABASE_URL");
    let schema = format!("sg_t_{}", uuid::Uuid::new_v4().simple());
    let created = off_runtime(|| {
        test_db_runtime().block_on(async {
            let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls).await?;
            let driver = tokio::spawn(connection);
            let done = client.batch_execute(&format!("CREATE SCHEMA {schema}")).await;
            drop(client);
            let _ = driver.await;
            done
        })
    });
    created.unwrap_or_else(|e| panic!("cannot create the test's schema on PostgreSQL ({}): {e}", safe_url(&admin)));
    let sep = if admin.contains('?') { '&' } else { '?' };
    format!("{admin}{sep}options=-c%20search_path%3D{schema}")
}

/// `url` without its password, for messages.
fn safe_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "(not a URL)".into(),
    }
}

/// The runtime that drives the tests' own PostgreSQL connections: never a
/// test's runtime (a test may call the database from sync or async code).
fn test_db_runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("test-db")
            .enable_all()
            .build()
            .expect("the test database runtime")
    })
}

/// Run `f` (which blocks on [`test_db_runtime`]) where blocking is allowed:
/// here when no runtime is current, else on a thread of its own, so a test's
/// runtime is neither blocked from inside nor nested.
fn off_runtime<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if tokio::runtime::Handle::try_current().is_err() {
        return f();
    }
    std::thread::scope(|s| s.spawn(f).join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
}

// ---------------------------------------------------------------------------
// The tests' own handle on the database.
// ---------------------------------------------------------------------------

/// The test's own connection to the server's database, whichever the engine,
/// for setting up rows and reading back what the server wrote (the way an
/// operator's `sqlite3` or `psql` would), never through syncgate's store.
///
/// SQL is written once, with `?N` placeholders (`$N` on PostgreSQL) and in
/// the dialect both engines share (`RETURNING id`, `lower(email)`, booleans
/// as bound parameters). Parameters are JSON values, converted on PostgreSQL
/// to the type it infers for each placeholder. Results come back as SQLite
/// returns them: integers as numbers, booleans as 0/1, times as our
/// `2026-11-23T10:00:00.123Z` text, JSON columns as their text.
pub enum TestDb {
    Sqlite(rusqlite::Connection),
    Postgres(tokio_postgres::Client),
}

/// The test's own connection to the database of a server with `config`.
pub fn open_db(config: &Config) -> TestDb {
    use secrecy::ExposeSecret;
    let url = config.database.url.expose_secret().trim().to_string();
    if url.is_empty() {
        let conn = rusqlite::Connection::open(&config.database.path).expect("open the database file");
        conn.busy_timeout(Duration::from_secs(10)).expect("busy timeout");
        return TestDb::Sqlite(conn);
    }
    let client = off_runtime(|| {
        test_db_runtime().block_on(async {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
            tokio::spawn(connection);
            Ok::<_, tokio_postgres::Error>(client)
        })
    });
    TestDb::Postgres(client.unwrap_or_else(|e| panic!("cannot connect to the test's PostgreSQL ({}): {e}", safe_url(&url))))
}

impl TestDb {
    pub fn engine(&self) -> Engine {
        match self {
            TestDb::Sqlite(_) => Engine::Sqlite,
            TestDb::Postgres(_) => Engine::Postgres,
        }
    }

    /// Run a statement; the number of rows it changed. Panics on error.
    pub fn execute(&self, sql: &str, args: &[Value]) -> usize {
        self.try_execute(sql, args).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Run a statement; the engine's error as text on failure.
    pub fn try_execute(&self, sql: &str, args: &[Value]) -> Result<usize, String> {
        match self {
            TestDb::Sqlite(c) => c.execute(sql, rusqlite::params_from_iter(args.iter().map(sqlite_value))).map_err(|e| e.to_string()),
            TestDb::Postgres(client) => off_runtime(|| {
                test_db_runtime().block_on(async {
                    let stmt = client.prepare(&pg_placeholders(sql)).await.map_err(pg_message)?;
                    let values = pg_args(&stmt, args);
                    let refs: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
                    client.execute(&stmt, &refs).await.map(|n| n as usize).map_err(pg_message)
                })
            }),
        }
    }

    /// Every row a query (or `… RETURNING …`) returns, each as its columns.
    pub fn rows(&self, sql: &str, args: &[Value]) -> Vec<Vec<Value>> {
        self.try_rows(sql, args).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    pub fn try_rows(&self, sql: &str, args: &[Value]) -> Result<Vec<Vec<Value>>, String> {
        match self {
            TestDb::Sqlite(c) => {
                let mut stmt = c.prepare(sql).map_err(|e| e.to_string())?;
                let n = stmt.column_count();
                let mut rows = stmt.query(rusqlite::params_from_iter(args.iter().map(sqlite_value))).map_err(|e| e.to_string())?;
                let mut out = Vec::new();
                while let Some(row) = rows.next().map_err(|e| e.to_string())? {
                    out.push((0..n).map(|i| sqlite_json(row.get_ref(i).expect("a column"))).collect());
                }
                Ok(out)
            }
            TestDb::Postgres(client) => off_runtime(|| {
                test_db_runtime().block_on(async {
                    let stmt = client.prepare(&pg_placeholders(sql)).await.map_err(pg_message)?;
                    let values = pg_args(&stmt, args);
                    let refs: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
                    let rows = client.query(&stmt, &refs).await.map_err(pg_message)?;
                    rows.iter()
                        .map(|r| (0..r.len()).map(|i| r.try_get::<_, PgJson>(i).map(|v| v.0).map_err(pg_message)).collect())
                        .collect()
                })
            }),
        }
    }

    /// The one row a query returns, or None; panics on more than one.
    pub fn row_opt(&self, sql: &str, args: &[Value]) -> Option<Vec<Value>> {
        let mut rows = self.rows(sql, args);
        assert!(rows.len() <= 1, "{sql}: {} rows, expected at most one", rows.len());
        rows.pop()
    }

    /// The one row a query returns.
    pub fn row(&self, sql: &str, args: &[Value]) -> Vec<Value> {
        self.row_opt(sql, args).unwrap_or_else(|| panic!("{sql}: no row"))
    }

    /// The first column of the one row a query returns, as `T`
    /// (0/1 read as `bool` too).
    pub fn value<T: serde::de::DeserializeOwned>(&self, sql: &str, args: &[Value]) -> T {
        let row = self.row(sql, args);
        from_json(sql, row.into_iter().next().expect("a column"))
    }

    /// Like [`value`](Self::value), None when the query returns no row.
    pub fn value_opt<T: serde::de::DeserializeOwned>(&self, sql: &str, args: &[Value]) -> Option<T> {
        self.row_opt(sql, args).map(|row| from_json(sql, row.into_iter().next().expect("a column")))
    }

    /// The one row a query returns, read as `T` (a tuple, most often).
    pub fn row_as<T: serde::de::DeserializeOwned>(&self, sql: &str, args: &[Value]) -> T {
        let row = self.row(sql, args);
        serde_json::from_value(Value::Array(row.clone())).unwrap_or_else(|e| panic!("{sql}: cannot read {row:?}: {e}"))
    }

    /// Every row a query returns, each read as `T` (a tuple, most often).
    pub fn rows_as<T: serde::de::DeserializeOwned>(&self, sql: &str, args: &[Value]) -> Vec<T> {
        self.rows(sql, args)
            .into_iter()
            .map(|row| serde_json::from_value(Value::Array(row.clone())).unwrap_or_else(|e| panic!("{sql}: cannot read {row:?}: {e}")))
            .collect()
    }

    /// The first column of every row, each as `T`.
    pub fn column<T: serde::de::DeserializeOwned>(&self, sql: &str, args: &[Value]) -> Vec<T> {
        self.rows(sql, args).into_iter().map(|row| from_json(sql, row.into_iter().next().expect("a column"))).collect()
    }

    /// Several statements without parameters (`BEGIN`, `COMMIT`, …).
    pub fn batch(&self, sql: &str) {
        match self {
            TestDb::Sqlite(c) => c.execute_batch(sql).unwrap_or_else(|e| panic!("{sql}: {e}")),
            TestDb::Postgres(client) => {
                off_runtime(|| test_db_runtime().block_on(client.batch_execute(sql))).unwrap_or_else(|e| panic!("{sql}: {}", pg_message(e)))
            }
        }
    }

    /// `SELECT COUNT(*) FROM table`.
    pub fn count(&self, table: &str) -> i64 {
        self.value(&format!("SELECT COUNT(*) FROM {table}"), &[])
    }
}

fn from_json<T: serde::de::DeserializeOwned>(sql: &str, v: Value) -> T {
    match serde_json::from_value::<T>(v.clone()) {
        Ok(t) => t,
        Err(e) => match v.as_i64() {
            Some(n @ (0 | 1)) => serde_json::from_value(Value::Bool(n == 1)).unwrap_or_else(|_| panic!("{sql}: {v} ({e})")),
            _ => panic!("{sql}: cannot read {v}: {e}"),
        },
    }
}

fn sqlite_value(v: &Value) -> rusqlite::types::Value {
    use rusqlite::types::Value as V;
    match v {
        Value::Null => V::Null,
        Value::Bool(b) => V::Integer(i64::from(*b)),
        Value::Number(n) => match n.as_i64() {
            Some(i) => V::Integer(i),
            None => V::Real(n.as_f64().unwrap_or_default()),
        },
        Value::String(s) => V::Text(s.clone()),
        other => V::Text(other.to_string()),
    }
}

fn sqlite_json(v: rusqlite::types::ValueRef<'_>) -> Value {
    use rusqlite::types::ValueRef as V;
    match v {
        V::Null => Value::Null,
        V::Integer(i) => json!(i),
        V::Real(f) => json!(f),
        V::Text(t) => Value::String(String::from_utf8_lossy(t).into_owned()),
        V::Blob(b) => json!(b),
    }
}

/// `?N` placeholders (outside quotes) as PostgreSQL's `$N`.
fn pg_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quote: Option<char> = None;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                out.push(c);
                if c == q {
                    quote = None;
                }
            }
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                out.push(c);
            }
            None if c == '?' && chars.peek().is_some_and(char::is_ascii_digit) => out.push('$'),
            None => out.push(c),
        }
    }
    out
}

fn pg_message(e: tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

use tokio_postgres::types::{FromSql, IsNull, ToSql, Type};

type BoxError = Box<dyn std::error::Error + Sync + Send>;

fn pg_args(stmt: &tokio_postgres::Statement, args: &[Value]) -> Vec<PgArg> {
    assert_eq!(stmt.params().len(), args.len(), "the statement has {} placeholders, {} values given", stmt.params().len(), args.len());
    args.iter().cloned().map(PgArg).collect()
}

/// A JSON value as the type PostgreSQL inferred for its placeholder.
#[derive(Debug)]
struct PgArg(Value);

impl ToSql for PgArg {
    fn to_sql(&self, ty: &Type, out: &mut bytes::BytesMut) -> Result<IsNull, BoxError> {
        let bad = || -> BoxError { format!("{} cannot be a {ty}", self.0).into() };
        match (&self.0, ty) {
            (Value::Null, _) => Ok(IsNull::Yes),
            (Value::Bool(b), &Type::BOOL) => b.to_sql(ty, out),
            (Value::Bool(b), _) => PgArg(json!(i64::from(*b))).to_sql(ty, out),
            (Value::Number(n), &Type::BOOL) => (n.as_f64() != Some(0.0)).to_sql(ty, out),
            (Value::Number(n), &Type::INT8) => n.as_i64().ok_or_else(bad)?.to_sql(ty, out),
            (Value::Number(n), &Type::INT4) => i32::try_from(n.as_i64().ok_or_else(bad)?)?.to_sql(ty, out),
            (Value::Number(n), &Type::INT2) => i16::try_from(n.as_i64().ok_or_else(bad)?)?.to_sql(ty, out),
            (Value::Number(n), &Type::FLOAT8) => n.as_f64().ok_or_else(bad)?.to_sql(ty, out),
            (Value::Number(n), &Type::FLOAT4) => (n.as_f64().ok_or_else(bad)? as f32).to_sql(ty, out),
            (v @ (Value::Number(_) | Value::Object(_) | Value::Array(_)), &Type::JSONB | &Type::JSON) => v.to_sql(ty, out),
            (Value::Number(n), _) => n.to_string().to_sql(&Type::TEXT, out),
            (Value::String(s), &Type::TIMESTAMPTZ) => {
                let t = syncgate::store::timefmt::parse(s).ok_or_else(|| format!("not a timestamp: {s:?}"))?;
                t.replace_nanosecond(t.nanosecond() / 1_000_000 * 1_000_000)?.to_sql(ty, out)
            }
            (Value::String(s), &Type::JSONB | &Type::JSON) => serde_json::from_str::<Value>(s)?.to_sql(ty, out),
            (Value::String(s), &Type::INT8) => s.trim().parse::<i64>()?.to_sql(ty, out),
            (Value::String(s), &Type::INT4) => s.trim().parse::<i32>()?.to_sql(ty, out),
            (Value::String(s), &Type::FLOAT8) => s.trim().parse::<f64>()?.to_sql(ty, out),
            (Value::String(s), &Type::BOOL) => matches!(s.trim(), "1" | "true" | "t").to_sql(ty, out),
            (Value::String(s), &Type::DATE) => {
                syncgate::store::timefmt::parse_date(s).ok_or_else(|| format!("not a date: {s:?}"))?.to_sql(ty, out)
            }
            (Value::String(s), _) => s.as_str().to_sql(&Type::TEXT, out),
            (v, _) => v.to_string().to_sql(&Type::TEXT, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    tokio_postgres::types::to_sql_checked!();
}

/// A result column as SQLite would have returned it, as JSON.
struct PgJson(Value);

impl<'a> FromSql<'a> for PgJson {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<PgJson, BoxError> {
        use syncgate::store::timefmt;
        let v = match *ty {
            Type::BOOL => json!(i64::from(bool::from_sql(ty, raw)?)),
            Type::INT2 => json!(i16::from_sql(ty, raw)?),
            Type::INT4 => json!(i32::from_sql(ty, raw)?),
            Type::INT8 => json!(i64::from_sql(ty, raw)?),
            Type::OID => json!(u32::from_sql(ty, raw)?),
            Type::FLOAT4 => json!(f32::from_sql(ty, raw)?),
            Type::FLOAT8 => json!(f64::from_sql(ty, raw)?),
            Type::TIMESTAMPTZ => json!(timefmt::format(time::OffsetDateTime::from_sql(ty, raw)?)),
            Type::TIMESTAMP => json!(timefmt::format(time::PrimitiveDateTime::from_sql(ty, raw)?.assume_utc())),
            Type::DATE => json!(timefmt::format_date(time::Date::from_sql(ty, raw)?)),
            Type::JSONB | Type::JSON => json!(Value::from_sql(ty, raw)?.to_string()),
            Type::BYTEA => json!(<Vec<u8>>::from_sql(ty, raw)?),
            Type::NUMERIC => return Err("a numeric column: cast it to BIGINT or DOUBLE PRECISION in the query".into()),
            _ => json!(String::from_sql(&Type::TEXT, raw)?),
        };
        Ok(PgJson(v))
    }

    fn from_sql_null(_: &Type) -> Result<PgJson, BoxError> {
        Ok(PgJson(Value::Null))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// Bring the database of a server with `config` to schema `version` without
/// starting it (an old schema, for the upgrade tests), whichever the engine.
pub fn migrate_to(config: &Config, version: i64) {
    use secrecy::ExposeSecret;
    let url = config.database.url.expose_secret().trim().to_string();
    if url.is_empty() {
        syncgate::store::migrations::migrate_file_to(std::path::Path::new(&config.database.path), version).expect("migrate the file");
        return;
    }
    let url = syncgate::store::pg::PgUrl::parse(&url).expect("a PostgreSQL URL");
    let version = i32::try_from(version).expect("a schema version");
    off_runtime(|| test_db_runtime().block_on(syncgate::store::pg::migrations::migrate_to(&url, version))).expect("migrate PostgreSQL");
}

/// The schema version the database records (SQLite's `user_version`, the
/// newest row of PostgreSQL's `syncgate_schema`).
pub fn schema_version(db: &TestDb) -> i64 {
    match db.engine() {
        Engine::Sqlite => db.value("PRAGMA user_version", &[]),
        Engine::Postgres => db.value("SELECT CAST(COALESCE(MAX(version), 0) AS BIGINT) FROM syncgate_schema", &[]),
    }
}

/// The test's own connection to the database of a `syncgate` subprocess run
/// on the data folder `dir` (see [`engine_env`]) whose SQLite file is `file`.
pub fn open_db_in(dir: &std::path::Path, file: &std::path::Path) -> TestDb {
    let mut config = Config::default();
    config.database.path = file.to_string_lossy().into_owned();
    if let Some(url) = database_url(dir) {
        config.database.url = url.into();
    }
    open_db(&config)
}

/// The environment a `syncgate` subprocess needs to reach the database of a
/// server with `config`: on PostgreSQL, its `SYNCGATE_DATABASE__URL`.
pub fn config_env(config: &Config) -> Vec<(&'static str, String)> {
    use secrecy::ExposeSecret;
    let url = config.database.url.expose_secret().trim();
    if url.is_empty() {
        Vec::new()
    } else {
        vec![("SYNCGATE_DATABASE__URL", url.to_string())]
    }
}

/// Poll `f` (which may await: API calls, database reads) until it gives a
/// value; panics with `what` after `secs`.
pub async fn within<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "timed out after {secs} s waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
