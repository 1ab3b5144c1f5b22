//! Writer benchmark: acknowledged writes/s with 64 concurrent callers through
//! the group-commit writer, the same with one transaction per write, and the
//! ceiling — a bare rusqlite loop committing the same rows and change rows in
//! batches of the writer's mean batch size. All with `synchronous=full` on a
//! real file, in one run, so the ratios compare like with like.
//!
//! Run: `cargo bench --bench writer`. Environment: `SYNCGATE_BENCH_WRITES`
//! (writes per task per mode and round, default 50), `SYNCGATE_BENCH_ROUNDS`
//! (default 5), `SYNCGATE_BENCH_DIR` (where the database files go; default
//! the target folder's tmp, i.e. the project's disk, not a tmpfs).

#[path = "common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{env_usize, median};
use rusqlite::types::Value as SqlValue;
use serde_json::Value;
use syncgate::config::DatabaseConfig;
use syncgate::store::{Store, Table};

const TASKS: usize = 64;

struct Run {
    writes: usize,
    elapsed: Duration,
    mean_batch: f64,
}

impl Run {
    fn per_sec(&self) -> f64 {
        self.writes as f64 / self.elapsed.as_secs_f64()
    }
}

/// `full` unless `SYNCGATE_BENCH_SYNCHRONOUS` says otherwise (e.g. `off`, to
/// see the CPU cost alone, without fsync).
fn synchronous() -> String {
    std::env::var("SYNCGATE_BENCH_SYNCHRONOUS").unwrap_or_else(|_| "full".into())
}

fn db_config(path: &Path, max_batch: usize) -> DatabaseConfig {
    DatabaseConfig { path: path.to_string_lossy().into_owned(), synchronous: synchronous(), max_batch, ..DatabaseConfig::default() }
}

/// The row every mode writes: what `POST /api/clients` would insert.
fn client_values(uid: i64, task: usize, i: usize) -> Vec<(&'static str, Value)> {
    vec![
        ("user_id", Value::from(uid)),
        ("name", Value::from(format!("Client {task}-{i}"))),
        ("email", Value::from(format!("c{task}-{i}@example.com"))),
        ("phone", Value::from("+1 555 0100")),
        ("notes", Value::Null),
    ]
}

/// A user to own the rows, written straight into the (migrated) file.
fn add_user(conn: &rusqlite::Connection) -> i64 {
    conn.execute(
        "INSERT INTO users (email, name, role, created_at, updated_at)
         VALUES ('bench@example.com', NULL, 'user', '2026-11-23T10:00:00.000Z', '2026-11-23T10:00:00.000Z')",
        [],
    )
    .expect("user");
    conn.last_insert_rowid()
}

/// A connection to the file with the pragmas the store's writer uses (the
/// file is migrated and in WAL mode: `Store::open` made it).
fn bare_connection(path: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(path).expect("open");
    conn.busy_timeout(Duration::from_secs(10)).expect("busy timeout");
    conn.pragma_update(None, "foreign_keys", "ON").expect("foreign keys");
    conn.pragma_update(None, "synchronous", synchronous()).expect("synchronous");
    conn
}

/// 64 tasks, each awaiting one acknowledged write after another.
async fn writer_run(path: &Path, max_batch: usize, per_task: usize) -> Run {
    let opened = Store::open(&db_config(path, max_batch)).expect("open store");
    let store = opened.store.clone();
    let mut feed = opened.feed;
    // The realtime hub normally drains this; keep it drained the same way.
    let drain = tokio::spawn(async move { while feed.recv().await.is_some() {} });
    let uid = add_user(&bare_connection(path));
    // Warm up (file growth, statement cache), outside the measurement.
    for i in 0..TASKS {
        store.insert_row_for_benchmark(Table::Clients, client_values(uid, usize::MAX, i)).await.expect("warm-up");
    }
    let stats = store.writer_stats().clone();
    let (b0, r0) = (stats.batches.load(Ordering::Relaxed), stats.requests.load(Ordering::Relaxed));

    let started = Instant::now();
    let mut tasks = Vec::with_capacity(TASKS);
    for t in 0..TASKS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per_task {
                store.insert_row_for_benchmark(Table::Clients, client_values(uid, t, i)).await.expect("write acknowledged");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let elapsed = started.elapsed();

    let batches = stats.batches.load(Ordering::Relaxed) - b0;
    let requests = stats.requests.load(Ordering::Relaxed) - r0;
    store.shutdown_writer().await;
    let _ = opened.writer_thread.join();
    drain.abort();
    let writes = TASKS * per_task;
    assert_eq!(requests as usize, writes, "every write went through the writer");
    check(path, writes + TASKS);
    Run { writes, elapsed, mean_batch: requests as f64 / batches.max(1) as f64 }
}

/// The ceiling: one connection, no channel, no savepoints, no read-back —
/// just the row and its change row, committed every `batch` writes.
fn bare_run(path: &Path, batch: usize, writes: usize) -> Run {
    // Store::open creates, migrates and switches the file to WAL, as for the writer runs.
    let opened = Store::open(&db_config(path, batch)).expect("open store");
    drop(opened.feed);
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    rt.block_on(opened.store.shutdown_writer());
    let _ = opened.writer_thread.join();
    drop(opened.store);
    let conn = bare_connection(path);
    let uid = add_user(&conn);
    let now = "2026-11-23T10:00:00.000Z";
    let write = |conn: &rusqlite::Connection, t: usize, i: usize| -> rusqlite::Result<()> {
        let vals: Vec<(&str, SqlValue)> = client_values(uid, t, i)
            .into_iter()
            .map(|(c, v)| (c, v.as_str().map_or(SqlValue::Null, |s| SqlValue::Text(s.into()))))
            .map(|(c, v)| if c == "user_id" { (c, SqlValue::Integer(uid)) } else { (c, v) })
            .collect();
        conn.prepare_cached(
            "INSERT INTO clients (user_id, name, email, phone, notes, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
        )?
        .execute(rusqlite::params![vals[0].1, vals[1].1, vals[2].1, vals[3].1, vals[4].1, now])?;
        let id = conn.last_insert_rowid();
        let text = |v: &SqlValue| match v {
            SqlValue::Text(s) => serde_json::Value::String(s.clone()),
            SqlValue::Integer(n) => serde_json::Value::from(*n),
            _ => serde_json::Value::Null,
        };
        let record = serde_json::json!({
            "id": id, "user_id": uid, "name": text(&vals[1].1), "email": text(&vals[2].1), "phone": text(&vals[3].1),
            "notes": null, "created_at": now, "updated_at": now
        });
        conn.prepare_cached(
            "INSERT INTO changes (table_name, op, row_id, user_id, record, old_record, committed_at) VALUES ('clients', 'INSERT', ?1, ?2, ?3, NULL, ?4)",
        )?
        .execute(rusqlite::params![id, uid, record.to_string(), now])?;
        Ok(())
    };
    // The same warm-up as the writer runs.
    conn.execute_batch("BEGIN IMMEDIATE").unwrap();
    for i in 0..TASKS {
        write(&conn, usize::MAX, i).unwrap();
    }
    conn.execute_batch("COMMIT").unwrap();

    let started = Instant::now();
    let mut done = 0;
    while done < writes {
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        let n = batch.min(writes - done);
        for k in 0..n {
            let w = done + k;
            write(&conn, w % TASKS, w / TASKS).unwrap();
        }
        conn.execute_batch("COMMIT").unwrap();
        done += n;
    }
    let elapsed = started.elapsed();
    drop(conn);
    check(path, writes + TASKS);
    Run { writes, elapsed, mean_batch: batch as f64 }
}

/// Every write is a row and a change, nothing more.
fn check(path: &Path, want: usize) {
    let conn = rusqlite::Connection::open(path).unwrap();
    let rows: i64 = conn.query_row("SELECT COUNT(*) FROM clients", [], |r| r.get(0)).unwrap();
    let changes: i64 = conn.query_row("SELECT COUNT(*) FROM changes", [], |r| r.get(0)).unwrap();
    assert_eq!((rows as usize, changes as usize), (want, want), "{}", path.display());
}

fn file_system(dir: &Path) -> String {
    let df = std::process::Command::new("df").arg("-T").arg(dir).output().ok().and_then(|o| {
        let s = String::from_utf8_lossy(&o.stdout).into_owned();
        let line = s.lines().nth(1)?.to_string();
        let cols: Vec<&str> = line.split_whitespace().collect();
        Some(format!("{} on {} (df -T)", cols.get(1)?, cols.first()?))
    });
    df.or_else(|| {
        let o = std::process::Command::new("stat").args(["-f", "-c", "%T"]).arg(dir).output().ok()?;
        Some(format!("{} (stat -f)", String::from_utf8_lossy(&o.stdout).trim()))
    })
    .unwrap_or_else(|| "unknown".into())
}

fn bench_dir() -> PathBuf {
    match std::env::var_os("SYNCGATE_BENCH_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_TARGET_TMPDIR")),
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a plain main ignores its arguments.
    let per_task = env_usize("SYNCGATE_BENCH_WRITES", 50);
    let rounds = env_usize("SYNCGATE_BENCH_ROUNDS", 5);
    let base = bench_dir();
    std::fs::create_dir_all(&base).expect("bench folder");
    let dir = tempfile::tempdir_in(&base).expect("temp dir");
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");

    println!(
        "syncgate writer benchmark: {TASKS} concurrent tasks x {per_task} writes per mode, {rounds} rounds, synchronous={}",
        synchronous()
    );
    println!("  folder: {}", dir.path().display());
    println!("  file system: {}", file_system(dir.path()));
    println!("  cores: {cores}, SQLite {}", rusqlite::version());
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        println!("  load average at start: {}", load.split_whitespace().take(3).collect::<Vec<_>>().join(" "));
    }
    println!();

    // The modes run interleaved, round after round, each on a fresh file:
    // fsync latency on a shared disk drifts over seconds, and interleaving
    // exposes every mode to the same drift. The bare loop runs right after
    // the group-commit run it is compared with, using that run's batch size.
    let mut all: Vec<[Run; 4]> = Vec::new();
    println!("| round | group commit w/s (mean batch) | one per write w/s | bare, same batches w/s | bare, one per write w/s | group / one | writer / bare |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for r in 0..rounds {
        let file = |name: &str| dir.path().join(format!("{name}-{r}.db"));
        let group = rt.block_on(writer_run(&file("group"), 256, per_task));
        let batch = group.mean_batch.round().max(1.0) as usize;
        let bare = bare_run(&file("bare"), batch, TASKS * per_task);
        let single = rt.block_on(writer_run(&file("single"), 1, per_task));
        // For scale only: what one fsync'd transaction per write costs without the writer.
        let bare_single = bare_run(&file("bare1"), 1, TASKS * per_task);
        println!(
            "| {} | {:.0} ({:.1}) | {:.0} | {:.0} | {:.0} | {:.1}x | {:.2}x |",
            r + 1,
            group.per_sec(),
            group.mean_batch,
            single.per_sec(),
            bare.per_sec(),
            bare_single.per_sec(),
            group.per_sec() / single.per_sec(),
            group.per_sec() / bare.per_sec()
        );
        for f in ["group", "bare", "single", "bare1"] {
            let _ = std::fs::remove_file(file(f));
        }
        all.push([group, single, bare, bare_single]);
    }

    println!();
    println!("Medians over {rounds} rounds ({} writes per mode per round):", TASKS * per_task);
    println!();
    println!("| mode | writes/s | mean batch |");
    println!("|---|---:|---:|");
    let labels = [
        "writer, group commit (max_batch 256)".to_string(),
        "writer, one transaction per write (max_batch 1)".to_string(),
        "bare rusqlite, batches of the writer's mean batch".to_string(),
        "bare rusqlite, one transaction per write".to_string(),
    ];
    for (i, label) in labels.iter().enumerate() {
        let ws = median(all.iter().map(|round| round[i].per_sec()).collect());
        let mb = median(all.iter().map(|round| round[i].mean_batch).collect());
        println!("| {label} | {ws:.0} | {mb:.1} |");
    }
    println!();
    let g_over_s = median(all.iter().map(|x| x[0].per_sec() / x[1].per_sec()).collect());
    let w_over_b = median(all.iter().map(|x| x[0].per_sec() / x[2].per_sec()).collect());
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    println!("median group commit / one-per-write = {g_over_s:.1}x (target >= 5x): {}", verdict(g_over_s >= 5.0));
    println!("median writer / bare ceiling        = {w_over_b:.2}x (target >= 0.5x): {}", verdict(w_over_b >= 0.5));
}
