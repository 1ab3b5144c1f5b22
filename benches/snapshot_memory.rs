//! Memory of snapshots that are never read: syncgate (the release binary, a
//! child process so `/proc/<pid>` is the server alone) with one adviser's
//! 400 meetings carrying 19 KB of notes each (~7.6 MB of rows), then 40
//! sockets that join with `snapshot: true` and never read a byte. Prints the
//! server's resident memory (VmRSS) and peak (VmHWM) before, while they are
//! stalled, after `realtime.flush_timeout` has closed them as slow consumers,
//! and after the clients closed their ends; then a second wave the same way
//! (freed memory stays with the allocator and is reused, not added to).
//!
//! Run: `cargo bench --bench snapshot_memory` (results in BENCHMARKS.md).
//! Knobs: SNAPSHOT_SOCKETS (40), SNAPSHOT_ROWS (400), SNAPSHOT_NOTES_KB (19);
//! SYNCGATE_* variables reach the server (e.g. SYNCGATE_REALTIME__FLUSH_TIMEOUT).

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tokio_tungstenite::tungstenite::stream::MaybeTlsStream;
use tokio_tungstenite::tungstenite::{self, Message, WebSocket};

const SECRET: &str = "snapshot-bench-secret-0123456789abcdef-not-for-production";

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// (VmRSS, VmHWM) in MiB.
fn memory(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (field("VmRSS:"), field("VmHWM:"))
}

struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &std::path::Path, rows: usize, notes_kb: usize) -> Result<(Server, String), String> {
    let bin = env!("CARGO_BIN_EXE_syncgate");
    let db = dir.join("syncgate.db");
    let env = [
        ("SYNCGATE_SERVER__BIND", "127.0.0.1:0".to_string()),
        ("SYNCGATE_DATABASE__PATH", db.to_string_lossy().into_owned()),
        ("SYNCGATE_AUTH__JWT_SECRET", SECRET.to_string()),
        ("SYNCGATE_LOG__LEVEL", "error".to_string()),
    ];
    let out = Command::new(bin)
        .args(["user", "add", "--email", "busy@example.com"])
        .envs(env.iter().cloned())
        .current_dir(dir)
        .output()
        .map_err(|e| format!("{bin}: {e}"))?;
    let id: i64 = String::from_utf8_lossy(&out.stdout).trim().parse().map_err(|e| format!("user id: {e}"))?;
    // The rows go straight into the file: this measures the snapshot, not the writes.
    let mut conn = rusqlite::Connection::open(&db).map_err(|e| e.to_string())?;
    let tx = conn.transaction().map_err(|e| e.to_string())?;
    let notes = "n".repeat(notes_kb * 1024);
    for i in 0..rows {
        tx.execute(
            "INSERT INTO meetings (user_id, source, title, starts_at, ends_at, notes, created_at, updated_at)
             VALUES (?1, 'manual', ?2, '2026-06-10T10:00:00.000Z', '2026-06-10T11:00:00.000Z', ?3,
                     '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z')",
            rusqlite::params![id, format!("meeting {i}"), notes],
        )
        .map_err(|e| e.to_string())?;
    }
    tx.commit().map_err(|e| e.to_string())?;
    drop(conn);
    let mut child = Command::new(bin)
        .arg("serve")
        .envs(env)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("{bin}: {e}"))?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().ok_or("no stdout")?).read_line(&mut line).map_err(|e| e.to_string())?;
    let addr = line.trim().strip_prefix("syncgate listening on http://").ok_or(format!("unexpected first line: {line:?}"))?.to_string();
    let token = syncgate::auth::Tokens::new(SECRET).user_token(id, "user", 3600);
    Ok((Server { child, addr }, token))
}

fn stalled_socket(addr: &str, token: &str) -> Result<WebSocket<MaybeTlsStream<TcpStream>>, String> {
    let url = format!("ws://{addr}/realtime/v1/websocket?apikey={token}&vsn=2.0.0");
    let (mut ws, _) = tungstenite::connect(url).map_err(|e| e.to_string())?;
    let join = serde_json::json!([
        "1", "1", "realtime:m", "phx_join",
        {"config": {"postgres_changes": [{"event": "*", "schema": "public", "table": "meetings"}], "snapshot": true}, "access_token": token}
    ]);
    ws.send(Message::text(join.to_string())).map_err(|e| e.to_string())?;
    Ok(ws)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let sockets = env_num("SNAPSHOT_SOCKETS", 40);
    let rows = env_num("SNAPSHOT_ROWS", 400);
    let notes_kb = env_num("SNAPSHOT_NOTES_KB", 19);
    let dir = tempfile::tempdir().expect("temp dir");
    let (server, token) = start(dir.path(), rows, notes_kb).expect("syncgate starts");
    let pid = server.child.id();
    thread::sleep(Duration::from_millis(500));
    let report = |what: &str| {
        let (rss, hwm) = memory(pid);
        println!("| {what} | {rss:.1} | {hwm:.1} |");
    };
    println!("{sockets} sockets join with snapshot and never read; {rows} meetings with {notes_kb} KB notes\n");
    println!("| moment | RSS MiB | peak MiB |\n|---|---|---|");
    report("before");
    for wave in 1..=2 {
        let started = Instant::now();
        let held: Vec<_> = (0..sockets).map(|_| stalled_socket(&server.addr, &token).expect("socket")).collect();
        thread::sleep(Duration::from_secs(3));
        report(&format!("wave {wave}: stalled, 3 s after the joins"));
        // Past realtime.flush_timeout (15 s by default) every stalled snapshot
        // is a slow consumer; the ones waiting for a turn get theirs and stall too.
        let mut last = 0.0;
        for _ in 0..120 {
            thread::sleep(Duration::from_secs(1));
            let (rss, _) = memory(pid);
            if (rss - last).abs() < 0.5 && started.elapsed() > Duration::from_secs(50) {
                break;
            }
            last = rss;
        }
        report(&format!("wave {wave}: after the slow-consumer closes ({} s)", started.elapsed().as_secs()));
        drop(held);
        thread::sleep(Duration::from_secs(3));
        report(&format!("wave {wave}: after the clients closed"));
    }
}
