//! `GroupCommitWriter`: the only writer of the synced tables. One thread owns
//! one connection; requests queue on a channel and are committed in batches
//! (group commit), each request inside its own savepoint so a failing request
//! rolls back alone. A caller hears back only after COMMIT; then the batch's
//! changes are published, in seq order, on the feed the realtime hub reads.
//!
//! A request is a closure over `WriteTx`; row writes go through
//! `insert` / `update` / `delete`, which write the row and its `changes` row
//! together, so nothing can change a synced row without logging it.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use rusqlite::types::Value as SqlValue;
use rusqlite::Connection;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use super::changes::{Change, ChangeBatch, Op};
use super::error::{StoreError, StoreResult};
use super::rows;
use super::tables::Table;
use super::timefmt;

type Deliver = Box<dyn FnOnce(StoreResult<()>) + Send>;
type JobFn = Box<dyn FnOnce(&mut WriteTx<'_>) -> (bool, Deliver) + Send>;

enum Msg {
    Job(JobFn),
    Shutdown(oneshot::Sender<()>),
}

/// Counters the benchmark and `/metrics` read.
#[derive(Debug)]
pub struct WriterStats {
    pub batches: AtomicU64,
    pub requests: AtomicU64,
    pub failed_requests: AtomicU64,
    pub commit_micros_total: AtomicU64,
    /// Requests per committed batch.
    pub batch_size: prometheus::Histogram,
    /// From BEGIN to the end of COMMIT.
    pub commit_seconds: prometheus::Histogram,
}

impl Default for WriterStats {
    fn default() -> Self {
        let hist = |name: &str, help: &str, buckets: Vec<f64>| {
            prometheus::Histogram::with_opts(prometheus::HistogramOpts::new(name, help).buckets(buckets)).unwrap_or_else(|_| {
                prometheus::Histogram::with_opts(prometheus::HistogramOpts::new("invalid", "invalid")).expect("static opts")
            })
        };
        WriterStats {
            batches: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            failed_requests: AtomicU64::new(0),
            commit_micros_total: AtomicU64::new(0),
            batch_size: hist(
                "syncgate_writer_batch_size",
                "Write requests committed per transaction (group commit).",
                vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0],
            ),
            commit_seconds: hist(
                "syncgate_writer_commit_seconds",
                "Time from BEGIN to the end of COMMIT of one batch.",
                prometheus::exponential_buckets(0.0001, 2.0, 16).unwrap_or_default(),
            ),
        }
    }
}

/// The head of the change log (seq of the newest committed change) as the
/// writer advances it after each COMMIT: read without touching the database.
#[derive(Debug, Clone)]
pub struct LogHead(Arc<AtomicI64>);

impl LogHead {
    /// A head that starts at `seq` (a hub with no writer behind it, e.g. in a benchmark).
    pub fn new(seq: i64) -> LogHead {
        LogHead(Arc::new(AtomicI64::new(seq)))
    }

    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Acquire)
    }
}

impl super::Store {
    /// The log's head, as a handle that can be read later without the store.
    pub fn log_head(&self) -> LogHead {
        LogHead(self.writer.head.clone())
    }

    /// The writer's counters (batches, requests, commit times).
    pub fn writer_stats(&self) -> &Arc<WriterStats> {
        &self.writer.stats
    }

    /// Commit everything queued so far, then stop the writer: later writes
    /// fail with `StoreError::Unavailable`.
    pub async fn shutdown_writer(&self) {
        self.writer.shutdown().await
    }

    /// Insert one row of `table` (its columns as JSON values) and log it, as
    /// one write request; returns the row. For `benches/writer.rs` only,
    /// which measures the writer with exactly what a REST create writes:
    /// features write through their own store operations.
    #[doc(hidden)]
    pub async fn insert_row_for_benchmark(&self, table: Table, row: Vec<(&'static str, Value)>) -> StoreResult<Value> {
        let values: Vec<(&str, SqlValue)> = row
            .into_iter()
            .map(|(column, v)| {
                let v = match v {
                    Value::Null => SqlValue::Null,
                    Value::Bool(b) => SqlValue::Integer(b.into()),
                    Value::Number(n) => n.as_i64().map(SqlValue::Integer).unwrap_or_else(|| SqlValue::Real(n.as_f64().unwrap_or(0.0))),
                    Value::String(s) => SqlValue::Text(s),
                    other => SqlValue::Text(other.to_string()),
                };
                (column, v)
            })
            .collect();
        self.writer.write(move |tx| tx.insert(table, &values)).await
    }
}

/// A cheap, cloneable handle for sending write requests.
#[derive(Clone)]
pub(super) struct Writer {
    tx: mpsc::Sender<Msg>,
    pub head: Arc<AtomicI64>,
    pub stats: Arc<WriterStats>,
}

/// The open transaction a request runs in.
pub(super) struct WriteTx<'c> {
    conn: &'c Connection,
    now: String,
    changes: Vec<Change>,
}

impl<'c> WriteTx<'c> {
    /// The connection, for reads and for writes to tables that are not synced
    /// (users, channels, webhook events). Never write clients/meetings/pipeline here.
    pub(super) fn conn(&self) -> &Connection {
        self.conn
    }

    /// The batch's timestamp, used for `created_at` / `updated_at` / `committed_at`.
    pub fn now(&self) -> &str {
        &self.now
    }

    pub fn get(&self, table: Table, id: i64) -> StoreResult<Option<Value>> {
        Ok(rows::get(self.conn, table, id)?)
    }

    /// Insert a row (`created_at` / `updated_at` are set here) and log it.
    pub fn insert(&mut self, table: Table, values: &[(&str, SqlValue)]) -> StoreResult<Value> {
        check_columns(table, values)?;
        let mut cols: Vec<&str> = values.iter().map(|(c, _)| *c).collect();
        let mut params: Vec<SqlValue> = values.iter().map(|(_, v)| v.clone()).collect();
        for c in ["created_at", "updated_at"] {
            if !cols.contains(&c) {
                cols.push(c);
                params.push(SqlValue::Text(self.now.clone()));
            }
        }
        let placeholders: Vec<String> = (1..=cols.len()).map(|i| format!("?{i}")).collect();
        let sql = format!("INSERT INTO {} ({}) VALUES ({})", table.name(), cols.join(", "), placeholders.join(", "));
        self.conn.prepare_cached(&sql)?.execute(rusqlite::params_from_iter(params.iter())).map_err(constraint_error)?;
        let id = self.conn.last_insert_rowid();
        let record = rows::get(self.conn, table, id)?.ok_or_else(|| StoreError::internal("inserted row vanished"))?;
        self.log(table, Op::Insert, id, Some(record.clone()), None)?;
        Ok(record)
    }

    /// Update columns of a row and log it. When nothing actually changes, no
    /// write and no change event happen (so replays are silent). Returns the
    /// row after, or None when the row does not exist.
    pub fn update(&mut self, table: Table, id: i64, values: &[(&str, SqlValue)]) -> StoreResult<Option<Value>> {
        check_columns(table, values)?;
        let Some(old) = rows::get(self.conn, table, id)? else { return Ok(None) };
        if values.is_empty() {
            return Ok(Some(old));
        }
        let sets: Vec<String> = values.iter().enumerate().map(|(i, (c, _))| format!("{c} = ?{}", i + 1)).collect();
        let mut params: Vec<SqlValue> = values.iter().map(|(_, v)| v.clone()).collect();
        params.push(SqlValue::Integer(id));
        let sql = format!("UPDATE {} SET {} WHERE id = ?{}", table.name(), sets.join(", "), params.len());
        self.conn.prepare_cached(&sql)?.execute(rusqlite::params_from_iter(params.iter())).map_err(constraint_error)?;
        let new = rows::get(self.conn, table, id)?.ok_or_else(|| StoreError::internal("updated row vanished"))?;
        if new == old {
            return Ok(Some(old));
        }
        self.conn
            .prepare_cached(&format!("UPDATE {} SET updated_at = ?1 WHERE id = ?2", table.name()))?
            .execute(rusqlite::params![self.now, id])?;
        let new = rows::get(self.conn, table, id)?.ok_or_else(|| StoreError::internal("updated row vanished"))?;
        self.log(table, Op::Update, id, Some(new.clone()), Some(old))?;
        Ok(Some(new))
    }

    /// Log the INSERT of a row written in this transaction by other means
    /// (a user created together with their Google credentials, which are not
    /// among the logged columns). Only for `users`: the synced data tables
    /// are written with [`WriteTx::insert`].
    pub fn log_inserted(&mut self, table: Table, id: i64) -> StoreResult<()> {
        if table != Table::Users {
            return Err(StoreError::internal("rows of the data tables are inserted with WriteTx::insert"));
        }
        let record = rows::get(self.conn, table, id)?.ok_or_else(|| StoreError::internal("the row to log does not exist"))?;
        self.log(table, Op::Insert, id, Some(record), None)
    }

    /// Delete a row and log it. Returns the deleted row, or None if absent.
    pub fn delete(&mut self, table: Table, id: i64) -> StoreResult<Option<Value>> {
        let Some(old) = rows::get(self.conn, table, id)? else { return Ok(None) };
        self.conn.prepare_cached(&format!("DELETE FROM {} WHERE id = ?1", table.name()))?.execute([id]).map_err(constraint_error)?;
        self.log(table, Op::Delete, id, None, Some(old.clone()))?;
        Ok(Some(old))
    }

    fn log(&mut self, table: Table, op: Op, row_id: i64, record: Option<Value>, old_record: Option<Value>) -> StoreResult<()> {
        let owner = table.owner_of(record.as_ref().or(old_record.as_ref()).unwrap_or(&Value::Null));
        self.conn
            .prepare_cached(
                "INSERT INTO changes (table_name, op, row_id, user_id, record, old_record, committed_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(rusqlite::params![
                table.name(),
                op.as_str(),
                row_id,
                owner,
                record.as_ref().map(Value::to_string),
                old_record.as_ref().map(Value::to_string),
                self.now,
            ])?;
        let seq = self.conn.last_insert_rowid();
        self.changes.push(Change { seq, table, op, row_id, user_id: owner, record, old_record, committed_at: self.now.clone() });
        Ok(())
    }
}

fn check_columns(table: Table, values: &[(&str, SqlValue)]) -> StoreResult<()> {
    for (c, _) in values {
        if table.column_type(c).is_none() {
            return Err(StoreError::internal(format!("{} has no column {c}", table.name())));
        }
    }
    Ok(())
}

/// Constraint failures are the caller's input problem (e.g. a duplicate
/// email), everything else is ours.
fn constraint_error(e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, msg) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
            let m = msg.clone().unwrap_or_default();
            if m.contains("UNIQUE") {
                StoreError::Conflict(format!("a row with the same unique value already exists ({m})"))
            } else if m.contains("FOREIGN KEY") {
                StoreError::Invalid("the row refers to something that does not exist".into())
            } else {
                StoreError::Invalid(format!("the row breaks a rule of the table ({m})"))
            }
        }
        _ => StoreError::from(e),
    }
}

impl Writer {
    /// Run `f` in the writer's transaction; resolves after COMMIT. An `Err`
    /// from `f` rolls back everything `f` did and nothing else.
    pub(super) async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut WriteTx<'_>) -> StoreResult<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<StoreResult<T>>();
        let job: JobFn = Box::new(move |wtx| {
            let result = f(wtx);
            let ok = result.is_ok();
            let deliver: Deliver = Box::new(move |commit| {
                let _ = tx.send(match commit {
                    Ok(()) => result,
                    Err(e) => Err(e),
                });
            });
            (ok, deliver)
        });
        self.tx.send(Msg::Job(job)).await.map_err(|_| StoreError::Unavailable("the server is shutting down".into()))?;
        rx.await.map_err(|_| StoreError::internal("the write request was lost (writer stopped or the request panicked)"))?
    }

    /// Commit everything queued so far, then stop the writer thread.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Shutdown(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// Start the writer thread on an open, migrated connection.
pub(super) fn spawn(conn: Connection, max_batch: usize, feed: mpsc::UnboundedSender<ChangeBatch>) -> (Writer, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel::<Msg>(max_batch.max(1) * 16);
    // Every row write uses a cached statement (parsing costs more than the
    // write itself); keep enough for the column sets of all tables and ops.
    conn.set_prepared_statement_cache_capacity(256);
    let head = Arc::new(AtomicI64::new(super::changes::head(&conn).unwrap_or(0)));
    let stats = Arc::new(WriterStats::default());
    let writer = Writer { tx, head: head.clone(), stats: stats.clone() };
    let handle = std::thread::Builder::new()
        .name("syncgate-writer".into())
        .spawn(move || run(conn, rx, max_batch, feed, head, stats))
        .expect("spawning the writer thread");
    (writer, handle)
}

fn run(
    conn: Connection,
    mut rx: mpsc::Receiver<Msg>,
    max_batch: usize,
    feed: mpsc::UnboundedSender<ChangeBatch>,
    head: Arc<AtomicI64>,
    stats: Arc<WriterStats>,
) {
    let mut stopping: Option<oneshot::Sender<()>> = None;
    loop {
        let mut batch: Vec<JobFn> = Vec::new();
        let first = match rx.blocking_recv() {
            Some(m) => m,
            None => break,
        };
        let mut take = |m: Msg, batch: &mut Vec<JobFn>| match m {
            Msg::Job(j) => batch.push(j),
            Msg::Shutdown(done) => {
                // Commit what is already queued, then stop accepting.
                rx_close_later(&mut stopping, done);
            }
        };
        take(first, &mut batch);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(m) => take(m, &mut batch),
                Err(_) => break,
            }
        }
        if stopping.is_some() {
            rx.close();
            while let Ok(m) = rx.try_recv() {
                if let Msg::Job(j) = m {
                    batch.push(j);
                }
            }
        }
        if !batch.is_empty() {
            commit_batch(&conn, batch, &feed, &head, &stats);
        }
        if let Some(done) = stopping.take() {
            let _ = done.send(());
            break;
        }
    }
    tracing::info!("writer stopped; every queued write is committed");
}

/// Run a parameterless statement, parsed once per connection: the per-request
/// savepoint statements are on the hot path of every write.
fn exec_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

fn rx_close_later(slot: &mut Option<oneshot::Sender<()>>, done: oneshot::Sender<()>) {
    *slot = Some(done);
}

fn commit_batch(conn: &Connection, batch: Vec<JobFn>, feed: &mpsc::UnboundedSender<ChangeBatch>, head: &AtomicI64, stats: &WriterStats) {
    let started = std::time::Instant::now();
    let n = batch.len() as u64;
    let now = timefmt::format(timefmt::now());
    let mut delivers: Vec<Deliver> = Vec::with_capacity(batch.len());
    let mut committed: Vec<Change> = Vec::new();
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        tracing::error!(error = %e, "writer could not begin a transaction");
        // Nothing ran; every caller hears about it.
        drop(batch);
        return;
    }
    for job in batch {
        if let Err(e) = exec_cached(conn, "SAVEPOINT request") {
            tracing::error!(error = %e, "writer could not open a savepoint");
            continue;
        }
        let mut wtx = WriteTx { conn, now: now.clone(), changes: Vec::new() };
        let outcome = catch_unwind(AssertUnwindSafe(|| job(&mut wtx)));
        match outcome {
            Ok((true, deliver)) => {
                let _ = exec_cached(conn, "RELEASE request");
                committed.extend(wtx.changes);
                delivers.push(deliver);
            }
            Ok((false, deliver)) => {
                let _ = exec_cached(conn, "ROLLBACK TO request").and_then(|()| exec_cached(conn, "RELEASE request"));
                stats.failed_requests.fetch_add(1, Ordering::Relaxed);
                delivers.push(deliver);
            }
            Err(_) => {
                // A panicking request loses only itself; its caller sees an internal error.
                tracing::error!("a write request panicked; it was rolled back");
                let _ = exec_cached(conn, "ROLLBACK TO request").and_then(|()| exec_cached(conn, "RELEASE request"));
                stats.failed_requests.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    match conn.execute_batch("COMMIT") {
        Ok(()) => {
            if let Some(last) = committed.last() {
                head.store(last.seq, Ordering::Release);
            }
            stats.batches.fetch_add(1, Ordering::Relaxed);
            stats.requests.fetch_add(n, Ordering::Relaxed);
            stats.commit_micros_total.fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
            stats.batch_size.observe(n as f64);
            stats.commit_seconds.observe(started.elapsed().as_secs_f64());
            if !committed.is_empty() {
                let _ = feed.send(Arc::new(committed.into_iter().map(Arc::new).collect()));
            }
            for d in delivers {
                d(Ok(()));
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "commit failed; the batch was rolled back");
            let _ = conn.execute_batch("ROLLBACK");
            for d in delivers {
                d(Err(StoreError::internal(format!("commit failed: {e}"))));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A migrated in-memory database with one user, its writer, and the
    /// writer's feed (kept so publishing never fails).
    fn writer_with_user() -> (Writer, i64, mpsc::UnboundedReceiver<ChangeBatch>) {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::store::migrations::migrate(&mut conn).unwrap();
        conn.execute(
            "INSERT INTO users (email, name, role, created_at, updated_at) VALUES ('ada@example.com', 'Ada', 'user', ?1, ?1)",
            [timefmt::format(timefmt::now())],
        )
        .unwrap();
        let uid = conn.last_insert_rowid();
        let (feed_tx, feed) = mpsc::unbounded_channel();
        let (writer, _thread) = spawn(conn, 64, feed_tx);
        (writer, uid, feed)
    }

    /// `(seq, record)` of every logged change, read in the writer's own transaction.
    async fn logged(writer: &Writer) -> Vec<(i64, Option<Value>)> {
        writer
            .write(|tx| {
                let mut st = tx.conn().prepare("SELECT seq, record FROM changes ORDER BY seq")?;
                let rows = st.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Option<String>>(1)?)))?;
                let rows: Vec<(i64, Option<String>)> = rows.collect::<rusqlite::Result<_>>()?;
                Ok(rows.into_iter().map(|(seq, rec)| (seq, rec.and_then(|s| serde_json::from_str(&s).ok()))).collect())
            })
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_failing_request_rolls_back_only_its_own_writes() {
        let (writer, uid, _feed) = writer_with_user();
        let client = |name: &str| vec![("user_id", SqlValue::Integer(uid)), ("name", SqlValue::Text(name.into()))];
        // Queue a good write, a write that inserts and then fails, and another good one
        // together so they can share a batch.
        let (c1, c2, c3) = (client("first"), client("doomed"), client("third"));
        let (w1, w2, w3) = (writer.clone(), writer.clone(), writer.clone());
        let (r1, r2, r3) = tokio::join!(
            w1.write(move |tx| tx.insert(Table::Clients, &c1)),
            w2.write(move |tx| {
                tx.insert(Table::Clients, &c2)?;
                Err::<Value, _>(StoreError::Conflict("changed my mind".into()))
            }),
            w3.write(move |tx| tx.insert(Table::Clients, &c3)),
        );
        let (r1, r3) = (r1.expect("first commits"), r3.expect("third commits"));
        assert!(matches!(r2, Err(StoreError::Conflict(_))), "the failing request hears its own error");
        let names: Vec<String> = writer
            .write(|tx| {
                let mut st = tx.conn().prepare("SELECT name FROM clients ORDER BY id")?;
                let names = st.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
                Ok(names)
            })
            .await
            .unwrap();
        assert_eq!(names, vec!["first", "third"]);
        let ch = logged(&writer).await;
        assert_eq!(ch.len(), 2, "only the committed inserts are logged: {ch:?}");
        assert_eq!(ch[0].1.as_ref(), Some(&r1));
        assert_eq!(ch[1].1.as_ref(), Some(&r3));
        assert_eq!((ch[0].0, ch[1].0), (1, 2), "a rolled-back change leaves no hole in seq");
    }
}
