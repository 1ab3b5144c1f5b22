//! The writer on PostgreSQL: acknowledged writes/s with 64 concurrent
//! callers through the group-commit writer, next to its ceiling — a bare
//! tokio-postgres loop that commits the same rows and change rows in the
//! same batch sizes and takes the same seq lock (`UPDATE seq_head …
//! RETURNING`) — and next to the SQLite writer on this machine, all in one
//! run, interleaved round by round, so the ratios compare like with like.
//!
//! Run: `SYNCGATE_BENCH_DATABASE_URL=postgres://user@127.0.0.1:5432/postgres
//! cargo bench --bench pg_writer` (a superuser URL: each round makes a
//! database of its own and drops it; `SYNCGATE_TEST_DATABASE_URL` is used
//! when the first is not set). `SYNCGATE_BENCH_WRITES` (writes per task per
//! mode and round, default 50), `SYNCGATE_BENCH_ROUNDS` (default 5).

#[path = "common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{connect_pg, env_usize, fresh_database, median};
use serde_json::{json, Value};
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

fn client_values(uid: i64, task: usize, i: usize) -> Vec<(&'static str, Value)> {
    vec![
        ("user_id", Value::from(uid)),
        ("name", Value::from(format!("Client {task}-{i}"))),
        ("email", Value::from(format!("c{task}-{i}@example.com"))),
        ("phone", Value::from("+1 555 0100")),
        ("notes", Value::Null),
    ]
}

/// 64 tasks, each awaiting one acknowledged write after another.
async fn writer_run(cfg: DatabaseConfig, add_user: impl AsyncFnOnce() -> i64, per_task: usize) -> Run {
    let opened = Store::open(&cfg).expect("open store");
    let store = opened.store.clone();
    let mut feed = opened.feed;
    let drain = tokio::spawn(async move { while feed.recv().await.is_some() {} });
    let uid = add_user().await;
    for i in 0..TASKS {
        store.insert_row_for_benchmark(Table::Clients, client_values(uid, usize::MAX, i)).await.expect("warm-up");
    }
    let stats = store.writer_stats().clone();
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    let (b0, r0) = (load(&stats.batches), load(&stats.requests));
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
    let (batches, requests) = (load(&stats.batches) - b0, load(&stats.requests) - r0);
    store.shutdown_writer().await;
    drain.abort();
    Run { writes: TASKS * per_task, elapsed, mean_batch: requests as f64 / batches.max(1) as f64 }
}

/// The ceiling: one connection, no channel, no savepoints, no read-back of
/// the row; each batch writes its rows, takes the seq lock, numbers and
/// inserts the change rows in one statement, and commits.
async fn bare_run(url: &str, batch: usize, writes: usize) -> Run {
    let client = connect_pg(url).await;
    let uid: i64 = client
        .query_one(
            "INSERT INTO users (email, role, created_at, updated_at) VALUES ('bare@example.com', 'user', now(), now()) RETURNING id",
            &[],
        )
        .await
        .expect("user")
        .get(0);
    let insert = client
        .prepare(
            "INSERT INTO clients (user_id, name, email, phone, notes, created_at, updated_at)
             VALUES ($1, $2, $3, $4, NULL, $5, $5) RETURNING id",
        )
        .await
        .expect("prepare");
    let seq = client.prepare("UPDATE seq_head SET seq = seq + $1 WHERE id = 1 RETURNING seq").await.expect("prepare");
    let now = time::OffsetDateTime::now_utc();
    let one_batch = |from: usize, n: usize| {
        let (client, insert, seq) = (&client, &insert, &seq);
        async move {
            client.batch_execute("BEGIN").await.unwrap();
            let mut records = Vec::with_capacity(n);
            for w in from..from + n {
                let (t, i) = (w % TASKS, w / TASKS);
                let (name, email) = (format!("Client {t}-{i}"), format!("c{t}-{i}@example.com"));
                let id: i64 = client.query_one(insert, &[&uid, &name, &email, &"+1 555 0100", &now]).await.unwrap().get(0);
                records.push(json!({"id": id, "user_id": uid, "name": name, "email": email, "phone": "+1 555 0100", "notes": null}));
            }
            let last: i64 = client.query_one(seq, &[&(n as i64)]).await.unwrap().get(0);
            let mut sql =
                String::from("INSERT INTO changes (seq, table_name, op, row_id, user_id, record, old_record, committed_at) VALUES ");
            for (k, r) in records.iter().enumerate() {
                let s = last - n as i64 + 1 + k as i64;
                if k > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!(
                    "({s}, 'clients', 'INSERT', {}, {uid}, '{}', NULL, now())",
                    r["id"],
                    r.to_string().replace('\'', "''")
                ));
            }
            client.batch_execute(&sql).await.unwrap();
            client.batch_execute("COMMIT").await.unwrap();
        }
    };
    one_batch(0, TASKS).await; // warm-up, as the writer runs have
    let started = Instant::now();
    let mut done = 0;
    while done < writes {
        let n = batch.min(writes - done);
        one_batch(TASKS + done, n).await;
        done += n;
    }
    Run { writes, elapsed: started.elapsed(), mean_batch: batch as f64 }
}

fn main() {
    let Some(base) = ["SYNCGATE_BENCH_DATABASE_URL", "SYNCGATE_TEST_DATABASE_URL"].iter().find_map(|v| std::env::var(v).ok()) else {
        eprintln!("set SYNCGATE_BENCH_DATABASE_URL to a PostgreSQL superuser URL to run this benchmark");
        return;
    };
    let per_task = env_usize("SYNCGATE_BENCH_WRITES", 50);
    let rounds = env_usize("SYNCGATE_BENCH_ROUNDS", 5);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let admin = rt.block_on(connect_pg(&base));
    let version: String = rt.block_on(admin.query_one("SHOW server_version", &[])).expect("version").get(0);
    let sync: String = rt.block_on(admin.query_one("SHOW synchronous_commit", &[])).expect("setting").get(0);
    let fsync: String = rt.block_on(admin.query_one("SHOW fsync", &[])).expect("setting").get(0);
    println!("syncgate PostgreSQL writer benchmark: {TASKS} concurrent tasks x {per_task} writes per mode, {rounds} rounds");
    println!(
        "  PostgreSQL {version} on 127.0.0.1, synchronous_commit={sync}, fsync={fsync}; SQLite synchronous=full on the project's disk"
    );
    println!("  cores: {cores}");
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        println!("  load average at start: {}", load.split_whitespace().take(3).collect::<Vec<_>>().join(" "));
    }
    println!();
    println!("| round | PostgreSQL writer w/s (mean batch) | bare loop, same batches + seq lock w/s | writer / bare | SQLite writer w/s (mean batch) |");
    println!("|---:|---:|---:|---:|---:|");
    let (mut pg, mut bare, mut ratio, mut sqlite) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for r in 0..rounds {
        let url = rt.block_on(fresh_database(&admin, &base, &format!("sg_bench_writer_{r}")));
        let cfg = DatabaseConfig { url: url.clone().into(), ..DatabaseConfig::default() };
        let user_url = url.clone();
        let w = rt.block_on(writer_run(
            cfg,
            async move || {
                connect_pg(&user_url)
                    .await
                    .query_one("INSERT INTO users (email, role, created_at, updated_at) VALUES ('w@example.com', 'user', now(), now()) RETURNING id", &[])
                    .await
                    .expect("user")
                    .get(0)
            },
            per_task,
        ));
        let batch = w.mean_batch.round().max(1.0) as usize;
        let b = rt.block_on(bare_run(&url, batch, TASKS * per_task));
        let path = dir.path().join(format!("sqlite-{r}.db"));
        let sqlite_cfg = DatabaseConfig { path: path.to_string_lossy().into_owned(), ..DatabaseConfig::default() };
        let user_path = path.clone();
        let s = rt.block_on(writer_run(
            sqlite_cfg,
            async move || {
                let conn = rusqlite::Connection::open(&user_path).expect("open");
                conn.execute(
                    "INSERT INTO users (email, role, created_at, updated_at) VALUES ('w@example.com', 'user', '2026-11-23T10:00:00.000Z', '2026-11-23T10:00:00.000Z')",
                    [],
                )
                .expect("user");
                conn.last_insert_rowid()
            },
            per_task,
        ));
        println!(
            "| {} | {:.0} ({:.1}) | {:.0} | {:.2} | {:.0} ({:.1}) |",
            r + 1,
            w.per_sec(),
            w.mean_batch,
            b.per_sec(),
            w.per_sec() / b.per_sec(),
            s.per_sec(),
            s.mean_batch
        );
        pg.push(w.per_sec());
        bare.push(b.per_sec());
        ratio.push(w.per_sec() / b.per_sec());
        sqlite.push(s.per_sec());
        rt.block_on(admin.batch_execute(&format!("DROP DATABASE IF EXISTS sg_bench_writer_{r} WITH (FORCE)"))).expect("drop");
    }
    println!("| median | {:.0} | {:.0} | {:.2} | {:.0} |", median(pg), median(bare), median(ratio), median(sqlite));
}
