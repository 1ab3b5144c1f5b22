//! Several real `syncgate serve` processes on one PostgreSQL schema, for the
//! cluster tests: start, SIGKILL, SIGTERM, SIGSTOP/SIGCONT and restart a
//! node; users and tokens; a realtime subscriber that follows its seqs and
//! moves to another node (resuming from its last seq) when its node goes.
//!
//! Each node runs in a data folder of its own (its `server.json` and its
//! log, `node.log`) on a port picked before the first start and kept across
//! restarts, as a load balancer's upstream list would. Every node shares
//! `server.public_url` (node 1's address, standing in for the balancer).
//! When a test fails, the tail of every node's log is printed.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};
use syncgate::config::Config;
use tokio::process::Child;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{self, TestDb, Ws};

/// Cluster tests run one at a time, whatever the test threads: three nodes
/// each hold a pool of PostgreSQL connections and two cores of CPU.
static ONE_CLUSTER_AT_A_TIME: Semaphore = Semaphore::const_new(1);

/// Cluster tests run on the PostgreSQL pass only: on SQLite, say so (past
/// the test harness's capture, as `helpers::sqlite_only` does) and return true.
pub fn sqlite_pass(test: &str) -> bool {
    if helpers::on_postgres() {
        return false;
    }
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "skipped {test} on SQLite: several nodes share one PostgreSQL");
    true
}

/// The seconds a load phase runs: `SYNCGATE_TEST_CLUSTER_SECS` (CI: unset, 10).
pub fn load_secs() -> u64 {
    std::env::var("SYNCGATE_TEST_CLUSTER_SECS").ok().and_then(|s| s.trim().parse().ok()).filter(|s| *s > 0).unwrap_or(10)
}

pub struct Node {
    pub id: String,
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub base: String,
    child: Option<Child>,
    /// Starts so far (a restart is the second).
    pub starts: u32,
}

impl Node {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("node.log")
    }
}

/// A row of `cluster_leases`: (name, holder, token, expires_at).
pub type Lease = (String, Option<String>, i64, Option<String>);

pub struct Cluster {
    pub nodes: Vec<Node>,
    /// The folder whose schema every node uses (see `helpers::database_url`).
    pub shared: tempfile::TempDir,
    pub db_url: String,
    pub http: reqwest::Client,
    pub tokens: syncgate::auth::Tokens,
    env: Vec<(String, String)>,
    _one_at_a_time: SemaphorePermit<'static>,
}

/// A free port on 127.0.0.1 (bound and released; the node binds it again).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().unwrap().port()
}

impl Cluster {
    /// Start `n` nodes (node1 first, so it migrates the schema alone, then
    /// the others) with the cluster settings shortened for tests and `env`
    /// on top. Returns once every node answers `/health/ready`.
    pub async fn start(n: usize, env: &[(&str, String)]) -> Cluster {
        let permit = ONE_CLUSTER_AT_A_TIME.acquire().await.expect("the cluster semaphore is never closed");
        let _ = rustls::crypto::ring::default_provider().install_default();
        let shared = tempfile::tempdir().expect("temp dir");
        let db_url = helpers::database_url(shared.path()).expect("cluster tests run on PostgreSQL");
        let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let public = format!("http://127.0.0.1:{}", ports[0]);
        let mut base_env: Vec<(String, String)> = vec![
            ("SYNCGATE_DATABASE__URL".into(), db_url.clone()),
            ("SYNCGATE_AUTH__JWT_SECRET".into(), helpers::SECRET.into()),
            ("SYNCGATE_SERVER__PUBLIC_URL".into(), public),
            ("SYNCGATE_SERVER__SHUTDOWN_GRACE".into(), "5s".into()),
            ("SYNCGATE_CLUSTER__POLL_INTERVAL".into(), "200ms".into()),
            ("SYNCGATE_CLUSTER__LEASE_TTL".into(), "2s".into()),
        ];
        base_env.extend(env.iter().map(|(k, v)| (k.to_string(), v.clone())));
        let nodes = ports
            .iter()
            .enumerate()
            .map(|(i, port)| Node {
                id: format!("node{}", i + 1),
                dir: tempfile::tempdir().expect("temp dir"),
                port: *port,
                base: format!("http://127.0.0.1:{port}"),
                child: None,
                starts: 0,
            })
            .collect();
        let mut cluster = Cluster {
            nodes,
            shared,
            db_url,
            // Idle connections are dropped before the nodes' keep-alive
            // (server.header_timeout, 10 s) ends them, also across a pause.
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(30))
                .pool_idle_timeout(Duration::from_secs(5))
                .build()
                .unwrap(),
            tokens: syncgate::auth::Tokens::new(helpers::SECRET),
            env: base_env,
            _one_at_a_time: permit,
        };
        cluster.spawn(0);
        cluster.wait_ready(0).await;
        for i in 1..n {
            cluster.spawn(i);
        }
        for i in 1..n {
            cluster.wait_ready(i).await;
        }
        cluster
    }

    /// Start node `i`'s process (same id, port, folder and environment as before).
    fn spawn(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        assert!(node.child.is_none(), "{} is already running", node.id);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(node.log_path()).expect("the node's log file");
        let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_syncgate"));
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("SYNCGATE") {
                c.env_remove(k);
            }
        }
        c.current_dir(node.dir.path())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("SYNCGATE_SERVER__BIND", format!("127.0.0.1:{}", node.port))
            .env("SYNCGATE_CLUSTER__NODE_ID", &node.id)
            .arg("serve")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("log handle")))
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        node.child = Some(c.spawn().expect("start syncgate serve"));
        node.starts += 1;
    }

    /// Wait until node `i` has announced itself (`server.json` with its pid)
    /// and answers `/health/ready` with 200.
    async fn wait_ready(&mut self, i: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let file = self.nodes[i].dir.path().join("data").join(syncgate::ops::running::FILE_NAME);
        loop {
            if let Some(child) = self.nodes[i].child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("{} exited while starting ({status}):\n{}", self.nodes[i].id, self.log_tail(i, 40));
                }
            }
            let pid = self.nodes[i].pid();
            let announced = std::fs::read(&file)
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .filter(|v| v["pid"].as_u64().is_some() && v["pid"].as_u64() == pid.map(u64::from));
            if let Some(v) = announced {
                let url = v["url"].as_str().unwrap_or_default();
                assert_eq!(url, self.nodes[i].base, "{} serves where it was told to", self.nodes[i].id);
                let ready = self.http.get(format!("{url}/health/ready")).timeout(Duration::from_secs(5)).send().await;
                if ready.is_ok_and(|r| r.status().as_u16() == 200) {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "{} not ready within 60 s:\n{}", self.nodes[i].id, self.log_tail(i, 40));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Start node `i` again after it stopped or was killed; returns once ready.
    pub async fn restart(&mut self, i: usize) {
        self.spawn(i);
        self.wait_ready(i).await;
    }

    fn signal(&self, i: usize, sig: libc::c_int) {
        let pid = self.nodes[i].pid().unwrap_or_else(|| panic!("{} is not running", self.nodes[i].id));
        let r = unsafe { libc::kill(pid as libc::pid_t, sig) };
        assert_eq!(r, 0, "signal {sig} to {}: {}", self.nodes[i].id, std::io::Error::last_os_error());
    }

    /// SIGKILL node `i` and reap it.
    pub async fn kill(&mut self, i: usize) {
        self.signal(i, libc::SIGKILL);
        let mut child = self.nodes[i].child.take().unwrap();
        let _ = child.wait().await;
    }

    /// SIGTERM node `i` and wait for it to exit (a clean shutdown); panics
    /// when it takes longer than a minute or exits with a failure.
    pub async fn terminate(&mut self, i: usize) {
        self.signal(i, libc::SIGTERM);
        let mut child = self.nodes[i].child.take().unwrap();
        match tokio::time::timeout(Duration::from_secs(60), child.wait()).await {
            Ok(Ok(status)) => assert!(status.success(), "{} exited with {status}:\n{}", self.nodes[i].id, self.log_tail(i, 40)),
            Ok(Err(e)) => panic!("waiting for {}: {e}", self.nodes[i].id),
            Err(_) => panic!("{} still running a minute after SIGTERM:\n{}", self.nodes[i].id, self.log_tail(i, 40)),
        }
    }

    /// SIGSTOP node `i`: its process is frozen, its sockets stay open.
    pub fn pause(&self, i: usize) {
        self.signal(i, libc::SIGSTOP);
    }

    /// SIGCONT node `i`.
    pub fn resume(&self, i: usize) {
        self.signal(i, libc::SIGCONT);
    }

    pub fn base(&self, i: usize) -> &str {
        &self.nodes[i].base
    }

    /// Every node's base URL, in node order (they stay the same across restarts).
    pub fn bases(&self) -> Arc<Vec<String>> {
        Arc::new(self.nodes.iter().map(|n| n.base.clone()).collect())
    }

    pub fn url(&self, i: usize, path: &str) -> String {
        format!("{}{}", self.nodes[i].base, path)
    }

    /// A config that reaches the cluster's database (for [`helpers::open_db`]).
    pub fn config(&self) -> Config {
        let mut c = helpers::test_config(self.shared.path());
        c.database.url = self.db_url.clone().into();
        c
    }

    /// The test's own connection to the shared database.
    pub fn db(&self) -> TestDb {
        helpers::open_db(&self.config())
    }

    /// Add a user directly in the database; returns (id, token).
    pub fn add_user(&self, email: &str, role: &str) -> (i64, String) {
        let now = syncgate::store::timefmt::format(syncgate::store::timefmt::now());
        let id: i64 = self.db().value(
            "INSERT INTO users (email, name, role, created_at, updated_at) VALUES (?1, 'Test User', ?2, ?3, ?3) RETURNING id",
            &[json!(email), json!(role), json!(now)],
        );
        (id, self.tokens.user_token(id, role, 3600))
    }

    pub async fn get(&self, i: usize, path: &str, token: &str) -> (u16, Value) {
        let r = self.http.get(self.url(i, path)).bearer_auth(token).send().await.expect("request");
        helpers::decode(r).await
    }

    pub async fn post(&self, i: usize, path: &str, token: &str, body: &Value) -> (u16, Value) {
        let r = self.http.post(self.url(i, path)).bearer_auth(token).json(body).send().await.expect("request");
        helpers::decode(r).await
    }

    /// `GET /health/ready` of node `i`.
    pub async fn ready(&self, i: usize) -> (u16, Value) {
        let r = self.http.get(self.url(i, "/health/ready")).send().await.expect("request");
        helpers::decode(r).await
    }

    /// The `cluster` part of node `i`'s `/api/admin/health`.
    pub async fn cluster_health(&self, i: usize, admin: &str) -> Value {
        let (s, v) = self.get(i, "/api/admin/health", admin).await;
        assert_eq!(s, 200, "{v}");
        v["cluster"].clone()
    }

    /// `cluster_leases` as (name, holder, token, expires_at); the error when
    /// the table is not there.
    pub fn leases(&self) -> Result<Vec<Lease>, String> {
        let rows = self.db().try_rows("SELECT name, holder, CAST(token AS BIGINT), expires_at FROM cluster_leases ORDER BY name", &[])?;
        rows.into_iter().map(|r| serde_json::from_value(Value::Array(r.clone())).map_err(|e| format!("{r:?}: {e}"))).collect()
    }

    /// The holder of lease `name`, if any node holds it (expired or not).
    pub fn lease_holder(&self, name: &str) -> Option<String> {
        self.leases().ok()?.into_iter().find(|l| l.0 == name).and_then(|l| l.1)
    }

    /// PostgreSQL sessions (of the whole server) waiting for a lock or idle
    /// inside a transaction for more than a second, with their last
    /// statement: why writes stall while a node is paused.
    pub fn stalled_sessions(&self) -> Vec<String> {
        let rows = self.db().try_rows(
            "SELECT pid, state, COALESCE(wait_event_type, ''), left(query, 100), CAST(EXTRACT(EPOCH FROM now() - xact_start) AS DOUBLE PRECISION) \
             FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND xact_start < now() - interval '1 second' \
             AND (wait_event_type = 'Lock' OR state LIKE 'idle in transaction%')",
            &[],
        );
        match rows {
            Ok(rows) => {
                rows.iter().map(|r| format!("pid {} {} {} for {:.1} s: {}", r[0], r[1], r[2], r[4].as_f64().unwrap_or(0.0), r[3])).collect()
            }
            Err(e) => vec![format!("(cannot read pg_stat_activity: {e})")],
        }
    }

    /// The index of the node with this id.
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.id == id)
    }

    /// The last `n` lines of node `i`'s log, without colours and without
    /// the informational lines of requests (the load would hide everything else).
    pub fn log_tail(&self, i: usize, n: usize) -> String {
        let text = self.log(i);
        let lines: Vec<&str> = text.lines().filter(|l| !l.contains(" INFO request{")).collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Node `i`'s whole log, without colours.
    pub fn log(&self, i: usize) -> String {
        let raw = std::fs::read_to_string(self.nodes[i].log_path()).unwrap_or_default();
        strip_ansi(&raw)
    }
}

/// `text` without terminal escape sequences (`ESC [ … letter`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for i in 0..self.nodes.len() {
                eprintln!("---- {} (last 30 lines of its log) ----\n{}", self.nodes[i].id, self.log_tail(i, 30));
            }
        }
        // A paused node must not outlive the test (kill_on_drop sends SIGKILL,
        // which a stopped process takes too).
        for n in &mut self.nodes {
            if let Some(c) = n.child.as_mut() {
                let _ = c.start_kill();
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Realtime subscribers.
// ---------------------------------------------------------------------------

/// One change frame as a subscriber received it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Seen {
    pub seq: i64,
    pub table: String,
    pub op: String,
    pub row_id: i64,
}

/// What a subscriber has gone through so far.
#[derive(Debug, Default)]
pub struct SubState {
    /// The head seq of its first join: it may see every change after it.
    pub start: Option<i64>,
    pub seen: Vec<Seen>,
    /// The node it is on now.
    pub node: usize,
    /// Connections after the first (each resumes from the last seq).
    pub reconnects: u32,
    /// `status: gap` system messages (a resume point older than the log).
    pub gaps: u32,
    /// Refused joins and unexpected frames, as sentences.
    pub errors: Vec<String>,
    /// Whether the current connection's join was answered ok.
    pub joined: bool,
    /// How each connection ended: the close code, 1006 for none (a reset).
    pub closes: Vec<u16>,
}

/// A realtime client joined to every data table (`event: *`), following
/// seqs; when its node closes or dies it connects to the next node and
/// resumes from its last seq (from the head of its first join before any).
pub struct Subscriber {
    pub user: i64,
    pub admin: bool,
    pub first_node: usize,
    pub state: Arc<Mutex<SubState>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Subscriber {
    pub fn spawn(bases: Arc<Vec<String>>, node: usize, user: i64, token: String, admin: bool, v2: bool) -> Subscriber {
        let state = Arc::new(Mutex::new(SubState { node, ..Default::default() }));
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(follow(bases, token, v2, state.clone(), stop.clone()));
        Subscriber { user, admin, first_node: node, state, stop, task }
    }

    pub fn st(&self) -> std::sync::MutexGuard<'_, SubState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn joined(&self) -> bool {
        let st = self.st();
        st.joined && st.start.is_some()
    }

    pub fn last_seq(&self) -> i64 {
        let st = self.st();
        st.seen.last().map(|s| s.seq).or(st.start).unwrap_or(0)
    }

    /// Whether this subscriber may see `change` (the rules of protocol.md,
    /// for a binding on every data table).
    pub fn may_see(&self, change: &helpers::ChangeRow) -> bool {
        matches!(change.1.as_str(), "clients" | "meetings" | "pipeline") && (self.admin || change.4 == self.user)
    }

    /// Every change of `log` it should have received: after its start, visible to it.
    pub fn expected(&self, log: &[helpers::ChangeRow]) -> Vec<Seen> {
        let start = self.st().start.unwrap_or(i64::MAX);
        log.iter()
            .filter(|c| c.0 > start && self.may_see(c))
            .map(|c| Seen { seq: c.0, table: c.1.clone(), op: c.2.clone(), row_id: c.3 })
            .collect()
    }

    /// Stop following (the socket is dropped) and give back what it saw.
    pub async fn finish(self) -> SubState {
        self.stop.store(true, Ordering::Release);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
        std::mem::take(&mut *self.state.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// How a subscriber's stream differs from what it should have received.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StreamCheck {
    pub expected: usize,
    pub received: usize,
    pub missing: usize,
    pub duplicates: usize,
    pub out_of_order: usize,
    /// Received, but not a visible change of the log (another user's, or unknown).
    pub foreign: usize,
    /// Same seq, different table/op/row than the log says.
    pub mismatched: usize,
}

impl StreamCheck {
    pub fn of(seen: &[Seen], expected: &[Seen]) -> StreamCheck {
        let want: BTreeMap<i64, &Seen> = expected.iter().map(|s| (s.seq, s)).collect();
        let mut got: BTreeMap<i64, usize> = BTreeMap::new();
        let mut check = StreamCheck { expected: expected.len(), received: seen.len(), ..Default::default() };
        let mut last = i64::MIN;
        for s in seen {
            if s.seq <= last {
                check.out_of_order += 1;
            }
            last = last.max(s.seq);
            *got.entry(s.seq).or_default() += 1;
            match want.get(&s.seq) {
                None => check.foreign += 1,
                Some(w) if *w != s => check.mismatched += 1,
                Some(_) => {}
            }
        }
        check.duplicates = got.values().map(|n| n.saturating_sub(1)).sum();
        check.missing = want.keys().filter(|s| !got.contains_key(s)).count();
        check
    }

    pub fn clean(&self) -> bool {
        self.missing == 0 && self.duplicates == 0 && self.out_of_order == 0 && self.foreign == 0 && self.mismatched == 0
    }

    /// Everything that is not exactly once, in order.
    pub fn faults(&self) -> usize {
        self.missing + self.duplicates + self.out_of_order + self.foreign + self.mismatched
    }
}

/// The subscriber's task: connect, join (resuming), record, move on when the node goes.
async fn follow(bases: Arc<Vec<String>>, token: String, v2: bool, state: Arc<Mutex<SubState>>, stop: Arc<AtomicBool>) {
    let st = || state.lock().unwrap_or_else(|p| p.into_inner());
    let mut first = true;
    while !stop.load(Ordering::Acquire) {
        let node = st().node;
        let ws_url = format!(
            "{}/realtime/v1/websocket?apikey={}&vsn={}",
            bases[node].replacen("http://", "ws://", 1),
            token,
            if v2 { "2.0.0" } else { "1.0.0" }
        );
        let connected = tokio::time::timeout(Duration::from_secs(5), tokio_tungstenite::connect_async(ws_url)).await;
        let Ok(Ok((inner, _))) = connected else {
            // Down (or not answering): try the next node, as a balancer would.
            st().node = (node + 1) % bases.len();
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        if !first {
            st().reconnects += 1;
        }
        first = false;
        let mut ws = Ws { inner, v2, next_ref: 1 };
        let mut config = json!({"postgres_changes": [{"event": "*", "schema": "public"}]});
        let since = {
            let s = st();
            s.seen.last().map(|x| x.seq).or(s.start)
        };
        if let Some(since) = since {
            config["resume"] = json!({"since": since});
        }
        let join_ref = ws.join_with("realtime:cluster", config, Some(&token)).await;
        let mut heartbeat = tokio::time::interval(Duration::from_secs(20));
        heartbeat.tick().await;
        let mut poll_stop = tokio::time::interval(Duration::from_millis(50));
        let closed = loop {
            let msg = tokio::select! {
                m = ws.inner.next() => m,
                _ = heartbeat.tick() => {
                    use futures_util::SinkExt;
                    let text = if v2 { r#"[null,"hb","phoenix","heartbeat",{}]"#.to_string() } else { r#"{"topic":"phoenix","event":"heartbeat","payload":{},"ref":"hb","join_ref":null}"#.to_string() };
                    let _ = ws.inner.send(Message::text(text)).await;
                    continue;
                }
                _ = poll_stop.tick() => {
                    if stop.load(Ordering::Acquire) { break false; }
                    continue;
                }
            };
            let text = match msg {
                Some(Ok(Message::Text(t))) => t,
                Some(Ok(Message::Close(frame))) => {
                    st().closes.push(frame.map(|f| u16::from(f.code)).unwrap_or(1005));
                    break true;
                }
                None | Some(Err(_)) => {
                    st().closes.push(1006);
                    break true;
                }
                Some(Ok(_)) => continue,
            };
            let f = helpers::parse_frame(text.as_str(), v2);
            if !record(&mut st(), &f, &join_ref, node) {
                break true;
            }
        };
        {
            let mut s = st();
            s.joined = false;
            if closed {
                s.node = (node + 1) % bases.len();
            }
        }
        if closed {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Take one frame into the subscriber's state; false when the connection
/// is over for it (a refused join, the channel closed).
fn record(s: &mut SubState, f: &helpers::Frame, join_ref: &str, node: usize) -> bool {
    match f.event.as_str() {
        "phx_reply" if f.reference.as_deref() == Some(join_ref) => {
            if f.payload["status"] != "ok" {
                s.errors.push(format!("join refused on node{}: {}", node + 1, f.payload));
                return false;
            }
            s.joined = true;
            if s.start.is_none() {
                s.start = f.payload["response"]["seq"].as_i64();
            }
        }
        "system" if f.payload["status"] == "gap" => s.gaps += 1,
        "system" if f.payload["status"] == "error" => s.errors.push(format!("node{}: {}", node + 1, f.payload)),
        "postgres_changes" => {
            let d = &f.payload["data"];
            let row = if d["record"].is_object() { &d["record"] } else { &d["old_record"] };
            match d["seq"].as_i64() {
                Some(seq) => s.seen.push(Seen {
                    seq,
                    table: d["table"].as_str().unwrap_or_default().to_string(),
                    op: d["type"].as_str().unwrap_or_default().to_string(),
                    row_id: row["id"].as_i64().unwrap_or(0),
                }),
                None => s.errors.push(format!("a change without a seq: {}", f.payload)),
            }
        }
        "phx_close" | "phx_error" => {
            s.errors.push(format!("node{}: {} {}", node + 1, f.event, f.payload));
            return false;
        }
        _ => {}
    }
    true
}

/// What one subscriber received, checked against the log.
#[derive(Debug)]
pub struct Delivered {
    pub user: i64,
    pub admin: bool,
    pub first_node: usize,
    pub state: SubState,
    pub check: StreamCheck,
}

/// Wait until every subscriber has received up to the last change it may
/// see (or `secs` pass); then stop them all and check their streams against
/// the log, in the order given.
pub async fn settle(cluster: &Cluster, subs: Vec<Subscriber>, secs: u64) -> Vec<Delivered> {
    let log = cluster.db_changes();
    let targets: Vec<i64> = subs.iter().map(|s| s.expected(&log).last().map(|x| x.seq).unwrap_or(0)).collect();
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline && subs.iter().zip(&targets).any(|(s, t)| s.last_seq() < *t) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A moment more for anything extra (a duplicate) to arrive.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut out = Vec::new();
    for s in subs {
        let expected = s.expected(&log);
        let (user, admin, first_node) = (s.user, s.admin, s.first_node);
        let state = s.finish().await;
        let check = StreamCheck::of(&state.seen, &expected);
        out.push(Delivered { user, admin, first_node, state, check });
    }
    out
}

impl Cluster {
    /// Every row of `changes`, oldest first.
    pub fn db_changes(&self) -> Vec<helpers::ChangeRow> {
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
