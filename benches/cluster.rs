//! Several nodes on one PostgreSQL: 1, then 2, then 3 `syncgate serve`
//! processes (the release binary, as children) on one fresh database, each
//! count in the same run. W writers `POST /api/clients` over keep-alive
//! connections, spread round-robin over the nodes, for a fixed time; S
//! realtime subscribers per node (vsn 2.0.0, `postgres_changes` on `clients`)
//! receive every write. Printed per node count: acknowledged writes/s,
//! delivered change frames/s, the CPU per write of the nodes and of their
//! PostgreSQL backends, and write → frame latency p50/p99 split into
//! subscribers on the node that took the write and on another node (which
//! receive it through their tail of the change log), then the same as ratios
//! to the 1-node run. Every subscriber must receive
//! every write once, in seq order: missing, duplicate and out-of-order frames
//! are counted and printed.
//!
//! One box cannot show a speed-up (the nodes, PostgreSQL and this client
//! share its cores); the point is the cost of the cluster path.
//!
//! Run: `SYNCGATE_BENCH_DATABASE_URL=postgres://user@127.0.0.1:5432/postgres
//! cargo bench --bench cluster` (a superuser URL on 127.0.0.1: each node count
//! gets a database of its own, dropped afterwards; `SYNCGATE_TEST_DATABASE_URL`
//! is used when the first is not set). Knobs: `SYNCGATE_BENCH_SECS` (measured
//! seconds per node count, 10), `SYNCGATE_BENCH_WARM` (seconds of warm-up
//! before, 2), `SYNCGATE_BENCH_WRITERS` (16), `SYNCGATE_BENCH_SUBSCRIBERS`
//! (per node, 8), `SYNCGATE_BENCH_NODES` (largest count, 3),
//! `SYNCGATE_BENCH_ROUNDS` (the 1..N sequence repeated, with medians at the
//! end, 1), `SYNCGATE_BENCH_BASELINE_BIN` (another build of syncgate, run
//! with 1 node first in each round: the cost of the cluster path on one node). Other
//! `SYNCGATE_*` variables reach the nodes (e.g. `SYNCGATE_CLUSTER__POLL_INTERVAL`).

#[path = "common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{connect_pg, cpu_secs, env_usize, fresh_database, median};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// A fixed secret, the same on every node (as a cluster requires), so the
/// bench can mint tokens they all accept.
const SECRET: &str = "cluster-bench-secret-0123456789abcdef-not-for-production";

struct Knobs {
    secs: u64,
    warm: u64,
    writers: usize,
    subscribers: usize,
    nodes: usize,
    rounds: usize,
    /// Another build, run with 1 node at the start of each round (e.g. the tree before #18).
    baseline: Option<String>,
}

impl Knobs {
    fn from_env() -> Knobs {
        let num = env_usize;
        Knobs {
            secs: num("SYNCGATE_BENCH_SECS", 10) as u64,
            warm: std::env::var("SYNCGATE_BENCH_WARM").ok().and_then(|s| s.parse().ok()).unwrap_or(2),
            writers: num("SYNCGATE_BENCH_WRITERS", 16),
            subscribers: num("SYNCGATE_BENCH_SUBSCRIBERS", 8),
            nodes: num("SYNCGATE_BENCH_NODES", 3),
            rounds: num("SYNCGATE_BENCH_ROUNDS", 1),
            baseline: std::env::var("SYNCGATE_BENCH_BASELINE_BIN").ok().filter(|b| !b.is_empty()),
        }
    }
}

/// One `syncgate serve` child in a data folder of its own.
struct Node {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Node {
    /// Start a node on `db_url` and wait until it announces its address in
    /// `server.json` (the first node also migrates the database).
    fn start(bin: &str, db_url: &str, id: &str, subscribers: usize) -> Result<Node, String> {
        let dir = tempfile::Builder::new().prefix("cluster-bench").tempdir().map_err(|e| e.to_string())?;
        let data = dir.path().join("data");
        let log = std::fs::File::create(dir.path().join("node.log")).map_err(|e| e.to_string())?;
        let child = Command::new(bin)
            .arg("serve")
            .env("SYNCGATE_DATABASE__URL", db_url)
            .env("SYNCGATE_DATABASE__PATH", data.join("syncgate.db"))
            .env("SYNCGATE_AUTH__JWT_SECRET", SECRET)
            .env("SYNCGATE_SERVER__BIND", "127.0.0.1:0")
            // The same on every node, as a cluster requires (the default, http://<bind>, differs by port).
            .env("SYNCGATE_SERVER__PUBLIC_URL", "http://127.0.0.1:8080")
            .env("SYNCGATE_CLUSTER__NODE_ID", id)
            .env("SYNCGATE_REALTIME__MAX_SOCKETS_PER_USER", (subscribers + 100).to_string())
            // The subscribers send no heartbeats; none should be closed as idle mid-run.
            .env("SYNCGATE_REALTIME__IDLE_TIMEOUT", "1h")
            .env_remove("SYNCGATE_LOG")
            .env("SYNCGATE_LOG__LEVEL", std::env::var("SYNCGATE_LOG__LEVEL").unwrap_or_else(|_| "warn".into()))
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("{bin}: {e}"))?;
        let mut node = Node { child, addr: SocketAddr::from(([127, 0, 0, 1], 0)), dir };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(addr) = announced(&data) {
                node.addr = addr;
                return Ok(node);
            }
            if let Ok(Some(status)) = node.child.try_wait() {
                return Err(format!("node {id} exited ({status}): {}", node.log_tail()));
            }
            if Instant::now() > deadline {
                return Err(format!("node {id} did not announce its address within 60 s: {}", node.log_tail()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("node.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }

    /// SIGTERM, as a deploy stops a node; SIGKILL if it has not exited within 15 s.
    fn stop(mut self) {
        // SAFETY: a signal to our own child, which has not been reaped yet.
        unsafe { libc::kill(self.pid() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("  a node did not stop within 15 s of SIGTERM; killed");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The loopback address in `<data>/server.json`, once the node serves.
fn announced(data: &Path) -> Option<SocketAddr> {
    #[derive(Deserialize)]
    struct ServerFile {
        url: String,
    }
    let bytes = std::fs::read(data.join("server.json")).ok()?;
    let file: ServerFile = serde_json::from_slice(&bytes).ok()?;
    file.url.strip_prefix("http://")?.parse().ok()
}

/// CPU seconds of each PostgreSQL backend connected to the client's database
/// (the server runs on this machine, so its processes are in `/proc`).
async fn backend_cpu(client: &tokio_postgres::Client) -> HashMap<u32, f64> {
    let rows = client.query("SELECT pid FROM pg_stat_activity WHERE datname = current_database()", &[]).await.unwrap_or_default();
    rows.iter().map(|r| r.get::<_, i32>(0) as u32).map(|pid| (pid, cpu_secs(&pid.to_string()))).collect()
}

/// The nodes' counters over the measured window, summed over the nodes
/// (`None`: a build that does not export them).
struct Counters {
    tail_reads: Option<f64>,
    batches: Option<f64>,
    requests: Option<f64>,
}

/// Every sample of the nodes' `/metrics`, summed by name over labels and nodes.
async fn scrape(addrs: &[SocketAddr]) -> HashMap<String, f64> {
    let mut sums = HashMap::new();
    for addr in addrs {
        let Ok(mut stream) = TcpStream::connect(addr).await else { continue };
        let req = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        let mut text = String::new();
        if stream.write_all(req.as_bytes()).await.is_err() || stream.read_to_string(&mut text).await.is_err() {
            continue;
        }
        for line in text.lines().filter(|l| l.starts_with("syncgate_")) {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            if let Some(v) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) {
                *sums.entry(name.to_string()).or_insert(0.0) += v;
            }
        }
    }
    sums
}

/// One acknowledged write: the row id, which node took it, when it was sent
/// and when its response arrived (ns after the run's base instant).
struct Write {
    id: i64,
    node: usize,
    sent: u64,
    done: u64,
}

/// One change frame as a subscriber received it.
struct Frame {
    id: i64,
    seq: i64,
    at: u64,
}

/// A keep-alive HTTP/1.1 connection that creates clients; returns each new row's id.
struct RestWriter {
    stream: TcpStream,
    head: String,
    buf: Vec<u8>,
}

impl RestWriter {
    async fn connect(addr: SocketAddr, token: &str) -> Result<RestWriter, String> {
        let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let head =
            format!("POST /api/clients HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\n");
        Ok(RestWriter { stream, head, buf: Vec::with_capacity(4096) })
    }

    async fn create(&mut self, name: &str) -> Result<i64, String> {
        let body = format!(r#"{{"name":"{name}"}}"#);
        let req = format!("{}Content-Length: {}\r\n\r\n{body}", self.head, body.len());
        self.stream.write_all(req.as_bytes()).await.map_err(|e| e.to_string())?;
        self.buf.clear();
        let mut chunk = [0u8; 4096];
        let (end, len) = loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).to_ascii_lowercase();
                if !head.starts_with("http/1.1 201") {
                    return Err(format!("write refused: {}", head.lines().next().unwrap_or("")));
                }
                let len = head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse::<usize>().ok());
                break (end, len.ok_or("a response without Content-Length")?);
            }
            self.read_more(&mut chunk).await?;
        };
        while self.buf.len() < end + 4 + len {
            self.read_more(&mut chunk).await?;
        }
        #[derive(Deserialize)]
        struct Row {
            id: i64,
        }
        let row: Row = serde_json::from_slice(&self.buf[end + 4..end + 4 + len]).map_err(|e| format!("response body: {e}"))?;
        Ok(row.id)
    }

    async fn read_more(&mut self, chunk: &mut [u8]) -> Result<(), String> {
        let n = self.stream.read(chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed before the response".into());
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

/// What a subscriber reads of a frame: `[join_ref, ref, topic, event, payload]`.
#[derive(Deserialize)]
struct WireFrame<'a>(serde::de::IgnoredAny, serde::de::IgnoredAny, serde::de::IgnoredAny, &'a str, Payload);

#[derive(Deserialize)]
struct Payload {
    status: Option<String>,
    data: Option<ChangeData>,
}

#[derive(Deserialize)]
struct ChangeData {
    seq: i64,
    record: Option<RowId>,
}

#[derive(Deserialize)]
struct RowId {
    id: i64,
}

/// Connect and join `realtime:bench` for every change to `clients`; returns
/// once the join is answered ok. The socket then records every change frame
/// until `stop` is set.
async fn subscribe(
    addr: SocketAddr,
    token: &str,
    base: Instant,
    received: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> Result<tokio::task::JoinHandle<Result<Vec<Frame>, String>>, String> {
    let url = format!("ws://{addr}/realtime/v1/websocket?apikey={token}&vsn=2.0.0");
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.map_err(|e| format!("connect: {e}"))?;
    let join = format!(
        r#"["1","1","realtime:bench","phx_join",{{"config":{{"broadcast":{{"ack":false,"self":false}},"presence":{{"key":"","enabled":false}},"postgres_changes":[{{"event":"*","schema":"public","table":"clients"}}],"private":false}},"access_token":"{token}"}}]"#
    );
    ws.send(Message::text(join)).await.map_err(|e| format!("join: {e}"))?;
    loop {
        let msg = ws.next().await.ok_or("closed before the join reply")?.map_err(|e| format!("join reply: {e}"))?;
        if let Message::Text(text) = msg {
            let frame: WireFrame = serde_json::from_str(text.as_str()).map_err(|e| format!("join reply {text}: {e}"))?;
            if frame.3 == "phx_reply" {
                if frame.4.status.as_deref() != Some("ok") {
                    return Err(format!("join refused: {text}"));
                }
                break;
            }
        }
    }
    Ok(tokio::spawn(async move {
        let mut frames = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        loop {
            tokio::select! {
                msg = ws.next() => {
                    let Some(msg) = msg else { return Err("socket closed".into()) };
                    let at = base.elapsed().as_nanos() as u64;
                    let Message::Text(text) = msg.map_err(|e| e.to_string())? else { continue };
                    let Ok(frame) = serde_json::from_str::<WireFrame>(text.as_str()) else { continue };
                    if frame.3 != "postgres_changes" {
                        continue;
                    }
                    if let Some(ChangeData { seq, record: Some(RowId { id }) }) = frame.4.data {
                        frames.push(Frame { id, seq, at });
                        received.fetch_add(1, Ordering::Relaxed);
                    }
                }
                _ = tick.tick() => {
                    if stop.load(Ordering::Relaxed) {
                        return Ok(frames);
                    }
                }
            }
        }
    }))
}

/// The numbers of one node count.
#[derive(Clone)]
struct Outcome {
    nodes: usize,
    /// Run by the baseline build.
    baseline: bool,
    subscribers: usize,
    writes_per_sec: f64,
    frames_per_sec: f64,
    write_p50_ms: f64,
    /// Write → frame, ms: p50 and p99 on the node that took the write, on another node.
    same: Option<(f64, f64)>,
    other: Option<(f64, f64)>,
    cpu_us_per_write: f64,
    pg_cpu_us_per_write: f64,
    /// Writer requests per transaction, over all nodes.
    mean_batch: Option<f64>,
    /// Reads of the change log by all the nodes' tails, per write (none before #18).
    tail_reads_per_write: Option<f64>,
    missing: u64,
    duplicates: u64,
    out_of_order: u64,
    errors: Vec<String>,
}

fn percentile(sorted: &[u64], q: f64) -> f64 {
    let i = ((sorted.len() as f64 * q) as usize).min(sorted.len().saturating_sub(1));
    sorted.get(i).map_or(0.0, |ns| *ns as f64 / 1e6)
}

fn p50_p99(mut ns: Vec<u64>) -> Option<(f64, f64)> {
    if ns.is_empty() {
        return None;
    }
    ns.sort_unstable();
    Some((percentile(&ns, 0.5), percentile(&ns, 0.99)))
}

/// Start `n` nodes on a fresh database, load them, stop them.
async fn run(n: usize, k: &Knobs, bin: &str, admin: &tokio_postgres::Client, base_url: &str) -> Result<Outcome, String> {
    let db_name = format!("sg_bench_cluster_{n}");
    let db_url = fresh_database(admin, base_url, &db_name).await;
    let mut nodes = Vec::with_capacity(n);
    for i in 0..n {
        let (url, bin) = (db_url.clone(), bin.to_string());
        let sockets = k.subscribers;
        let node = tokio::task::spawn_blocking(move || Node::start(&bin, &url, &format!("bench-{}", i + 1), sockets))
            .await
            .map_err(|e| e.to_string())??;
        nodes.push(node);
    }
    let result = load(&nodes, k, &db_url).await;
    for node in nodes {
        if result.is_err() {
            eprintln!("  node log tail:\n{}", node.log_tail());
        }
        tokio::task::spawn_blocking(move || node.stop()).await.map_err(|e| e.to_string())?;
    }
    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)")).await.map_err(|e| e.to_string())?;
    result
}

async fn load(nodes: &[Node], k: &Knobs, db_url: &str) -> Result<Outcome, String> {
    let n = nodes.len();
    let uid: i64 = connect_pg(db_url)
        .await
        .query_one(
            "INSERT INTO users (email, role, created_at, updated_at) VALUES ('bench@example.com', 'user', now(), now()) RETURNING id",
            &[],
        )
        .await
        .map_err(|e| format!("add the user: {e}"))?
        .get(0);
    let token = syncgate::auth::Tokens::new(SECRET).user_token(uid, "user", 3600);
    let base = Instant::now();
    let received = Arc::new(AtomicU64::new(0));
    let stop_subscribers = Arc::new(AtomicBool::new(false));
    let mut subscribers = Vec::with_capacity(n * k.subscribers);
    for (i, node) in nodes.iter().enumerate() {
        for _ in 0..k.subscribers {
            let task = subscribe(node.addr, &token, base, received.clone(), stop_subscribers.clone()).await?;
            subscribers.push((i, task));
        }
    }

    let window_start = base.elapsed() + Duration::from_secs(k.warm);
    let window_end = window_start + Duration::from_secs(k.secs);
    let (from_ns, to_ns) = (window_start.as_nanos() as u64, window_end.as_nanos() as u64);
    let mut writers = Vec::with_capacity(k.writers);
    for w in 0..k.writers {
        let node = w % n;
        let mut rest = RestWriter::connect(nodes[node].addr, &token).await?;
        writers.push(tokio::spawn(async move {
            let (mut done, mut error) = (Vec::new(), None);
            let mut i = 0;
            while base.elapsed() < window_end {
                let sent = base.elapsed().as_nanos() as u64;
                match rest.create(&format!("w{w}-{i}")).await {
                    Ok(id) => done.push(Write { id, node, sent, done: base.elapsed().as_nanos() as u64 }),
                    Err(e) => {
                        error = Some(e);
                        break;
                    }
                }
                i += 1;
            }
            (done, error)
        }));
    }
    // Read at the measured window's edges: the nodes' CPU, that of the
    // PostgreSQL backends serving this database (the tails' reads included),
    // and the nodes' tail and writer counters.
    let probe = {
        let pids: Vec<u32> = nodes.iter().map(Node::pid).collect();
        let addrs: Vec<SocketAddr> = nodes.iter().map(|nd| nd.addr).collect();
        let pg = connect_pg(db_url).await;
        tokio::spawn(async move {
            tokio::time::sleep(window_start.saturating_sub(base.elapsed())).await;
            let nodes_before = pids.iter().map(|p| cpu_secs(&p.to_string())).sum::<f64>();
            let (pg_before, metrics_before) = (backend_cpu(&pg).await, scrape(&addrs).await);
            tokio::time::sleep(window_end.saturating_sub(base.elapsed())).await;
            let nodes_after = pids.iter().map(|p| cpu_secs(&p.to_string())).sum::<f64>();
            let (pg_after, metrics_after) = (backend_cpu(&pg).await, scrape(&addrs).await);
            // A backend that started in the window counts from zero.
            let pg = pg_after.iter().map(|(pid, after)| after - pg_before.get(pid).copied().unwrap_or(0.0)).sum::<f64>();
            let counted = |name: &str| Some(metrics_after.get(name)? - metrics_before.get(name)?);
            let counters = Counters {
                tail_reads: counted("syncgate_tail_reads_total"),
                batches: counted("syncgate_writer_batch_size_count"),
                requests: counted("syncgate_writer_batch_size_sum"),
            };
            (nodes_after - nodes_before, pg, counters)
        })
    };
    let mut writes = Vec::new();
    let mut errors = Vec::new();
    for w in writers {
        let (mut done, error) = w.await.map_err(|e| e.to_string())?;
        writes.append(&mut done);
        errors.extend(error);
    }
    let (nodes_cpu, pg_cpu, counters) = probe.await.map_err(|e| e.to_string())?;

    // Every subscriber should now get every acknowledged write; wait for the
    // stragglers (generously: a node that missed a wake-up polls).
    let expected = (writes.len() * subscribers.len()) as u64;
    let drain_until = Instant::now() + Duration::from_secs(10);
    while received.load(Ordering::Relaxed) < expected && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop_subscribers.store(true, Ordering::Relaxed);

    let by_id: HashMap<i64, &Write> = writes.iter().map(|w| (w.id, w)).collect();
    let (mut same, mut other) = (Vec::new(), Vec::new());
    let (mut frames_in_window, mut missing, mut duplicates, mut out_of_order) = (0u64, 0u64, 0u64, 0u64);
    for (node, task) in subscribers {
        let frames = match task.await.map_err(|e| e.to_string())? {
            Ok(frames) => frames,
            Err(e) => {
                errors.push(format!("a subscriber on node {}: {e}", node + 1));
                Vec::new()
            }
        };
        let mut seen = std::collections::HashSet::with_capacity(frames.len());
        let mut last_seq = i64::MIN;
        for f in &frames {
            if !seen.insert(f.id) {
                duplicates += 1;
            }
            if f.seq <= last_seq {
                out_of_order += 1;
            }
            last_seq = last_seq.max(f.seq);
            if (from_ns..to_ns).contains(&f.at) {
                frames_in_window += 1;
            }
            if let Some(w) = by_id.get(&f.id) {
                if (from_ns..to_ns).contains(&w.sent) {
                    let lat = f.at.saturating_sub(w.sent);
                    if w.node == node {
                        same.push(lat);
                    } else {
                        other.push(lat);
                    }
                }
            }
        }
        missing += by_id.keys().filter(|id| !seen.contains(id)).count() as u64;
    }
    let measured: Vec<&Write> = writes.iter().filter(|w| (from_ns..to_ns).contains(&w.sent)).collect();
    let mut rtt: Vec<u64> = measured.iter().map(|w| w.done - w.sent).collect();
    rtt.sort_unstable();
    let secs = k.secs as f64;
    Ok(Outcome {
        nodes: n,
        baseline: false,
        subscribers: n * k.subscribers,
        writes_per_sec: measured.len() as f64 / secs,
        frames_per_sec: frames_in_window as f64 / secs,
        write_p50_ms: percentile(&rtt, 0.5),
        same: p50_p99(same),
        other: p50_p99(other),
        cpu_us_per_write: nodes_cpu * 1e6 / measured.len().max(1) as f64,
        pg_cpu_us_per_write: pg_cpu * 1e6 / measured.len().max(1) as f64,
        mean_batch: counters.requests.zip(counters.batches).map(|(r, b)| r / b.max(1.0)),
        tail_reads_per_write: counters.tail_reads.map(|t| t / measured.len().max(1) as f64),
        missing,
        duplicates,
        out_of_order,
        errors,
    })
}

fn ms(p: Option<(f64, f64)>) -> String {
    p.map_or("–".into(), |(p50, p99)| format!("{p50:.2} / {p99:.2}"))
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}×", a / b)
    } else {
        "–".into()
    }
}

fn label(o: &Outcome) -> String {
    if o.baseline {
        format!("{} (baseline)", o.nodes)
    } else {
        o.nodes.to_string()
    }
}

fn print_round(outcomes: &[Outcome]) {
    println!(
        "| nodes | subscribers | writes/s | frames/s | write round trip p50 (ms) | same node p50 / p99 (ms) | other node p50 / p99 (ms) | CPU per write, nodes + PostgreSQL (µs) | mean batch | tail reads per write | missing / duplicate / out of order |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for o in outcomes {
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.2} | {} | {} | {:.0} + {:.0} | {} | {} | {} / {} / {} |",
            label(o),
            o.subscribers,
            o.writes_per_sec,
            o.frames_per_sec,
            o.write_p50_ms,
            ms(o.same),
            ms(o.other),
            o.cpu_us_per_write,
            o.pg_cpu_us_per_write,
            o.mean_batch.map_or("–".into(), |b| format!("{b:.1}")),
            o.tail_reads_per_write.map_or("–".into(), |t| format!("{t:.2}")),
            o.missing,
            o.duplicates,
            o.out_of_order
        );
    }
    let Some(one) = outcomes.iter().find(|o| o.nodes == 1 && !o.baseline) else { return };
    let (one_p50, one_p99) = one.same.unwrap_or((0.0, 0.0));
    println!();
    println!("against 1 node of this build (latencies against its p50 / p99, where every subscriber is on the writer's node):");
    println!();
    println!("| nodes | writes/s | frames/s | frames/s per subscriber | CPU per write (nodes + PostgreSQL) | same node p50 / p99 | other node p50 / p99 |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for o in outcomes.iter().filter(|o| !std::ptr::eq(*o, one)) {
        let pair = |p: Option<(f64, f64)>| p.map_or("–".into(), |(a, b)| format!("{} / {}", ratio(a, one_p50), ratio(b, one_p99)));
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            label(o),
            ratio(o.writes_per_sec, one.writes_per_sec),
            ratio(o.frames_per_sec, one.frames_per_sec),
            ratio(o.frames_per_sec / o.subscribers as f64, one.frames_per_sec / one.subscribers as f64),
            ratio(o.cpu_us_per_write + o.pg_cpu_us_per_write, one.cpu_us_per_write + one.pg_cpu_us_per_write),
            pair(o.same),
            pair(o.other)
        );
    }
}

/// The median of each number over the rounds' runs of one setup; the counts of
/// missing, duplicate and out-of-order frames are summed.
fn median_outcome(runs: &[&Outcome]) -> Outcome {
    let med = |f: &dyn Fn(&Outcome) -> f64| median(runs.iter().map(|o| f(o)).collect());
    let med_opt = |f: &dyn Fn(&Outcome) -> Option<f64>| {
        let xs: Vec<f64> = runs.iter().filter_map(|o| f(o)).collect();
        (!xs.is_empty()).then(|| median(xs))
    };
    let med_pair = |f: &dyn Fn(&Outcome) -> Option<(f64, f64)>| {
        let pairs: Vec<(f64, f64)> = runs.iter().filter_map(|o| f(o)).collect();
        (!pairs.is_empty()).then(|| (median(pairs.iter().map(|p| p.0).collect()), median(pairs.iter().map(|p| p.1).collect())))
    };
    Outcome {
        nodes: runs[0].nodes,
        baseline: runs[0].baseline,
        subscribers: runs[0].subscribers,
        writes_per_sec: med(&|o| o.writes_per_sec),
        frames_per_sec: med(&|o| o.frames_per_sec),
        write_p50_ms: med(&|o| o.write_p50_ms),
        same: med_pair(&|o| o.same),
        other: med_pair(&|o| o.other),
        cpu_us_per_write: med(&|o| o.cpu_us_per_write),
        pg_cpu_us_per_write: med(&|o| o.pg_cpu_us_per_write),
        mean_batch: med_opt(&|o| o.mean_batch),
        tail_reads_per_write: med_opt(&|o| o.tail_reads_per_write),
        missing: runs.iter().map(|o| o.missing).sum(),
        duplicates: runs.iter().map(|o| o.duplicates).sum(),
        out_of_order: runs.iter().map(|o| o.out_of_order).sum(),
        errors: Vec::new(),
    }
}

/// Whether the URL's host is this machine's loopback (the bench talks to nothing else).
fn is_loopback(url: &str) -> bool {
    url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .is_some_and(|h| h == "127.0.0.1" || h == "localhost" || h == "[::1]")
}

fn main() {
    let Some(base_url) = ["SYNCGATE_BENCH_DATABASE_URL", "SYNCGATE_TEST_DATABASE_URL"].iter().find_map(|v| std::env::var(v).ok()) else {
        eprintln!("set SYNCGATE_BENCH_DATABASE_URL to a PostgreSQL superuser URL on 127.0.0.1 to run this benchmark");
        return;
    };
    if !is_loopback(&base_url) {
        eprintln!("the benchmark runs only against a PostgreSQL on 127.0.0.1");
        std::process::exit(2);
    }
    let k = Knobs::from_env();
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_syncgate"));
    let bin = bin.to_string_lossy();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let admin = rt.block_on(connect_pg(&base_url));
    let version: String = rt.block_on(admin.query_one("SHOW server_version", &[])).expect("version").get(0);
    let fsync: String = rt.block_on(admin.query_one("SHOW fsync", &[])).expect("setting").get(0);
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    println!(
        "syncgate cluster benchmark: 1..{} nodes on one PostgreSQL, {} writers spread over the nodes, {} subscribers per node, {} s measured after {} s warm-up, {} round(s)",
        k.nodes, k.writers, k.subscribers, k.secs, k.warm, k.rounds
    );
    println!("  PostgreSQL {version} on 127.0.0.1 (fsync={fsync}); cores: {cores}");
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        println!("  load average at start: {}", load.split_whitespace().take(3).collect::<Vec<_>>().join(" "));
    }
    if let Some(b) = &k.baseline {
        println!("  baseline: 1 node of {b} first in each round");
    }
    let mut failed = false;
    let mut all: Vec<Outcome> = Vec::new();
    for r in 0..k.rounds {
        println!();
        if k.rounds > 1 {
            println!("round {}:", r + 1);
            println!();
        }
        let mut outcomes = Vec::new();
        let setups = k.baseline.iter().map(|b| (1, b.as_str(), true)).chain((1..=k.nodes).map(|n| (n, bin.as_ref(), false)));
        for (n, bin, baseline) in setups {
            match rt.block_on(run(n, &k, bin, &admin, &base_url)) {
                Ok(mut o) => {
                    o.baseline = baseline;
                    if let Some(e) = o.errors.first() {
                        eprintln!("  {n} node(s): {} errors, first: {e}", o.errors.len());
                    }
                    failed |= !o.errors.is_empty() || o.missing > 0 || o.duplicates > 0 || o.out_of_order > 0;
                    outcomes.push(o);
                }
                Err(e) => {
                    eprintln!("  {n} node(s): {e}");
                    failed = true;
                }
            }
        }
        print_round(&outcomes);
        all.extend(outcomes);
    }
    if k.rounds > 1 {
        let mut setups: Vec<(usize, bool)> = all.iter().map(|o| (o.nodes, o.baseline)).collect();
        setups.sort_by_key(|(n, baseline)| (*n, !*baseline));
        setups.dedup();
        let medians: Vec<Outcome> =
            setups.iter().map(|s| median_outcome(&all.iter().filter(|o| (o.nodes, o.baseline) == *s).collect::<Vec<_>>())).collect();
        println!();
        println!("medians of {} rounds:", k.rounds);
        println!();
        print_round(&medians);
    }
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        println!();
        println!("  load average at end: {}", load.split_whitespace().take(3).collect::<Vec<_>>().join(" "));
    }
    if failed {
        std::process::exit(1);
    }
}
