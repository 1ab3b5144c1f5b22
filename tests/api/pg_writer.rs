//! The writer on PostgreSQL: seq follows commit order even with several
//! independent writers (as several nodes would be), and a PostgreSQL
//! restart under write load loses no acknowledged write, leaves no
//! unacknowledged one half-applied, and the server serves again by itself.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use syncgate::config::DatabaseConfig;
use syncgate::store::{Store, Table};

use crate::helpers;
use crate::pg_database::PgDatabase;
use crate::pg_private::PrivateCluster;

fn pg_config(url: &str) -> DatabaseConfig {
    DatabaseConfig { url: url.to_string().into(), ..DatabaseConfig::default() }
}

async fn add_user(db: &PgDatabase, email: &str) -> i64 {
    let client = db.connect().await;
    client
        .query_one("INSERT INTO users (email, role, created_at, updated_at) VALUES ($1, 'user', now(), now()) RETURNING id", &[&email])
        .await
        .expect("user")
        .get(0)
}

/// Two stores on one database are two writers on two connections, as two
/// nodes would be. While both write as fast as they can, a reader tails the
/// log the way a node's hub will (`seq > last seen`, in order): every read
/// must continue exactly where the last one ended. A seq handed out before a
/// smaller one commits would show as a hole that fills later — a change the
/// tail skipped for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn seq_grows_in_commit_order_across_independent_writers() {
    let Some(db) = PgDatabase::create("seq_grows_in_commit_order_across_independent_writers").await else { return };
    let nodes: Vec<_> = (0..2).map(|_| Store::open(&pg_config(&db.url)).expect("store opens")).collect();
    let uid = add_user(&db, "writer@example.com").await;
    let stores: Vec<Store> = nodes.iter().map(|o| o.store.clone()).collect();

    const TASKS_PER_WRITER: usize = 16;
    const WRITES_PER_TASK: usize = 40;
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let done = done.clone();
        let client = db.connect().await;
        tokio::spawn(async move {
            let mut last = 0i64;
            let mut reads = 0usize;
            loop {
                let finished = done.load(Ordering::Acquire);
                let rows = client.query("SELECT seq FROM changes WHERE seq > $1 ORDER BY seq", &[&last]).await.expect("tail");
                for r in rows {
                    let seq: i64 = r.get(0);
                    assert_eq!(
                        seq,
                        last + 1,
                        "the tail saw seq {seq} right after {last}: seq {} committed later than a bigger one",
                        last + 1
                    );
                    last = seq;
                }
                reads += 1;
                if finished {
                    return (last, reads);
                }
            }
        })
    };
    let mut tasks = Vec::new();
    for (w, store) in stores.iter().enumerate() {
        for t in 0..TASKS_PER_WRITER {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..WRITES_PER_TASK {
                    let row = vec![("user_id", Value::from(uid)), ("name", Value::from(format!("w{w} t{t} #{i}")))];
                    store.insert_row_for_benchmark(Table::Clients, row).await.expect("write");
                }
            }));
        }
    }
    for t in tasks {
        t.await.expect("writer task");
    }
    done.store(true, Ordering::Release);
    let (last, reads) = reader.await.expect("the tail never saw a hole");
    let total = (2 * TASKS_PER_WRITER * WRITES_PER_TASK) as i64;
    assert_eq!(last, total, "every write is logged once, seqs 1..={total}");
    assert!(reads > 10, "the tail read while the writers wrote ({reads} reads)");
    for s in &stores {
        s.shutdown_writer().await;
    }
}

/// PostgreSQL restarts while 8 clients create records through the API. Each
/// create answers 201 (committed) or 503 (not saved, or saved without the
/// caller knowing — never a 2xx for a write that did not commit); when the
/// database is back the server serves again without being restarted, every
/// 201 is there, and every row that exists has exactly its one change row
/// (nothing half-applied), and readiness went not-ready and came back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_postgresql_restart_under_write_load_loses_nothing_acknowledged() {
    let Some(cluster) = PrivateCluster::start("a_postgresql_restart_under_write_load").await else { return };
    let url = cluster.url.clone();
    let app = helpers::spawn_app_with(move |c| {
        c.database.url = url.into();
        c.database.connect_timeout = syncgate::duration::Dur::secs(2);
    })
    .await;
    let (_, token) = app.add_user("load@example.com", "user");
    // A browser watching the whole time: the socket is to syncgate, not to
    // PostgreSQL, so it stays open across the restart.
    let mut ws = app.ws(&token, "2.0.0").await;
    ws.join("realtime:clients", json!([{"event": "INSERT", "schema": "public", "table": "clients"}]), Some(&token)).await;
    ws.joined().await;
    let watching = Arc::new(AtomicBool::new(true));
    let watcher = {
        let watching = watching.clone();
        tokio::spawn(async move {
            let mut names = Vec::new();
            loop {
                match ws.recv_within(Duration::from_millis(500)).await {
                    Some(f) if f.event == "postgres_changes" => {
                        names.push(f.payload["data"]["record"]["name"].as_str().unwrap_or_default().to_string())
                    }
                    Some(_) => {}
                    None if !watching.load(Ordering::Acquire) => return names,
                    None => {}
                }
            }
        })
    };
    let app = Arc::new(app);
    let acknowledged = Arc::new(std::sync::Mutex::new(BTreeSet::<String>::new()));
    let refused = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..8 {
        let (app, token, acknowledged, refused, stop) = (app.clone(), token.clone(), acknowledged.clone(), refused.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Acquire) {
                let name = format!("client {w}-{i}");
                i += 1;
                let (status, body) = app.post("/api/clients", &token, &json!({ "name": name })).await;
                match status {
                    201 => {
                        acknowledged.lock().unwrap().insert(name);
                    }
                    503 => {
                        refused.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    other => panic!("a create during a database restart answered {other}: {body}"),
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before_restart = acknowledged.lock().unwrap().len();
    assert!(before_restart > 0, "writes went through before the restart");

    cluster.stop_fast();
    // While it is down: writes are refused with 503 and readiness says so.
    let down_since = Instant::now();
    let mut saw_not_ready = false;
    while down_since.elapsed() < Duration::from_secs(2) {
        let (s, _) = app.get("/health/ready", "").await;
        saw_not_ready |= s == 503;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(saw_not_ready, "/health/ready said not ready while PostgreSQL was down");
    cluster.start_again();

    // The server comes back by itself: a fresh create succeeds within a while.
    let back = Instant::now();
    for attempt in 0.. {
        let (s, _) = app.get("/health/ready", "").await;
        let (c, _) = app.post("/api/clients", &token, &json!({ "name": format!("after the restart {attempt}") })).await;
        if s == 200 && c == 201 {
            break;
        }
        assert!(back.elapsed() < Duration::from_secs(30), "the server did not serve again within 30 s (ready {s}, create {c})");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Release);
    for w in writers {
        w.await.expect("writer");
    }
    assert!(refused.load(Ordering::Relaxed) > 0, "some writes met the restart");

    let client = cluster.connect().await;
    let stored: BTreeSet<String> =
        client.query("SELECT name FROM clients", &[]).await.unwrap().iter().map(|r| r.get::<_, String>(0)).collect();
    let acknowledged = acknowledged.lock().unwrap().clone();
    let lost: Vec<&String> = acknowledged.difference(&stored).collect();
    assert!(lost.is_empty(), "acknowledged creates missing after the restart: {lost:?}");
    let orphans: i64 = client
        .query_one(
            "SELECT count(*) FROM clients c WHERE NOT EXISTS
               (SELECT 1 FROM changes ch WHERE ch.table_name = 'clients' AND ch.row_id = c.id AND ch.op = 'INSERT')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(orphans, 0, "every stored client has its change row");
    let logged: i64 = client.query_one("SELECT count(*) FROM changes WHERE table_name = 'clients'", &[]).await.unwrap().get(0);
    assert_eq!(logged as usize, stored.len(), "no change row without its client");
    // Committed ⇔ broadcast, across the restart: every stored client reached
    // the browser once — those whose caller heard 503 but did commit too —
    // and nothing that was not stored.
    watching.store(false, Ordering::Release);
    let mut broadcast = watcher.await.expect("watcher");
    let received = broadcast.len();
    broadcast.sort();
    broadcast.dedup();
    assert_eq!(broadcast.len(), received, "no change broadcast twice");
    assert_eq!(broadcast.into_iter().collect::<BTreeSet<_>>(), stored, "the browser saw exactly the stored clients");
    let head: i64 = client.query_one("SELECT seq FROM seq_head", &[]).await.unwrap().get(0);
    let max: i64 = client.query_one("SELECT COALESCE(max(seq), 0) FROM changes", &[]).await.unwrap().get(0);
    assert_eq!(head, max, "the log's head is its newest change");
    match Arc::try_unwrap(app) {
        Ok(app) => {
            app.stop().await;
        }
        Err(_) => panic!("writers still hold the app"),
    }
}
