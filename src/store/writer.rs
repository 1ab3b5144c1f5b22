//! `GroupCommitWriter`: the only writer of the synced tables, on either
//! engine. One thread owns one connection; requests queue on a channel and
//! are committed in batches (group commit), each request inside its own
//! savepoint so a failing request rolls back alone. A caller hears back only
//! after COMMIT; then the batch's changes are published, in seq order, on
//! the feed the realtime hub reads.
//!
//! A request is a closure over `WriteTx`; row writes go through
//! `insert` / `update` / `delete`, which write the row and remember its
//! change. The batch's change rows are numbered and inserted at the end of
//! the batch, in the same transaction (see [`log_changes`] for why the end),
//! so nothing can change a synced row without logging it.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use std::time::{Duration, Instant};

use rusqlite::types::Value as SqlValue;
use rusqlite::Connection;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use super::changes::{Change, ChangeBatch, Op};
use super::error::{StoreError, StoreResult};
use super::pg::conn::PgConn;
use super::rows;
use super::sql::{args, Conn, Engine, ToSqlValue};
use super::tables::Table;
use super::timefmt;

type Deliver = Box<dyn FnOnce(StoreResult<()>) + Send>;
/// A queued request: run in the batch's transaction (`Ok`), or refused
/// without running when the writer has no database to run it on (`Err`).
type JobFn = Box<dyn FnOnce(Result<&mut WriteTx<'_, '_>, StoreError>) -> (bool, Deliver) + Send>;

/// PostgreSQL keeps the state of 64 subtransactions (savepoints) per
/// transaction in a fast cache; a transaction with more overflows it, which
/// slows snapshot checks in every session of the server. One savepoint per
/// request, so a batch stops at 64 there.
const PG_MAX_BATCH: usize = 64;

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

    /// Another node committed up to `seq` (the change-log tail saw it).
    pub fn advance(&self, seq: i64) {
        self.0.fetch_max(seq, Ordering::AcqRel);
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
pub(super) struct WriteTx<'a, 'c> {
    conn: &'a Conn<'c>,
    now: String,
    /// This request's changes, numbered when the batch ends.
    changes: Vec<Change>,
}

impl<'a, 'c> WriteTx<'a, 'c> {
    /// The connection, for reads and for writes to tables that are not synced
    /// (users, channels, webhook events). Never write clients/meetings/pipeline here.
    pub(super) fn conn(&self) -> &'a Conn<'c> {
        self.conn
    }

    /// The batch's timestamp, used for `created_at` / `updated_at` / `committed_at`.
    pub fn now(&self) -> &str {
        &self.now
    }

    pub fn get(&self, table: Table, id: i64) -> StoreResult<Option<Value>> {
        rows::get(self.conn, table, id)
    }

    /// Insert a row (`created_at` / `updated_at` are set here) and log it.
    pub fn insert(&mut self, table: Table, values: &[(&str, SqlValue)]) -> StoreResult<Value> {
        check_columns(table, values)?;
        let mut cols: Vec<&str> = values.iter().map(|(c, _)| *c).collect();
        let mut params: Vec<&dyn ToSqlValue> = values.iter().map(|(_, v)| v as &dyn ToSqlValue).collect();
        for c in ["created_at", "updated_at"] {
            if !cols.contains(&c) {
                cols.push(c);
                params.push(&self.now);
            }
        }
        let placeholders: Vec<String> = (1..=cols.len()).map(|i| format!("?{i}")).collect();
        let sql = format!(
            "INSERT INTO {} ({}) VALUES ({}) RETURNING {}",
            table.name(),
            cols.join(", "),
            placeholders.join(", "),
            rows::column_list(table)
        );
        let row = self.conn.query_one(&sql, &params)?;
        let record = rows::row_to_json(table, &row);
        let id = record.get("id").and_then(Value::as_i64).ok_or_else(|| StoreError::internal("the inserted row has no id"))?;
        self.log(table, Op::Insert, id, Some(record.clone()), None);
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
        let mut params: Vec<&dyn ToSqlValue> = values.iter().map(|(_, v)| v as &dyn ToSqlValue).collect();
        params.push(&id);
        let sql =
            format!("UPDATE {} SET {} WHERE id = ?{} RETURNING {}", table.name(), sets.join(", "), params.len(), rows::column_list(table));
        let row = self.conn.query_opt(&sql, &params)?.ok_or_else(|| StoreError::internal("updated row vanished"))?;
        if rows::row_to_json(table, &row) == old {
            return Ok(Some(old));
        }
        let sql = format!("UPDATE {} SET updated_at = ?1 WHERE id = ?2 RETURNING {}", table.name(), rows::column_list(table));
        let row = self.conn.query_opt(&sql, args![self.now, id])?.ok_or_else(|| StoreError::internal("updated row vanished"))?;
        let new = rows::row_to_json(table, &row);
        self.log(table, Op::Update, id, Some(new.clone()), Some(old));
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
        self.log(table, Op::Insert, id, Some(record), None);
        Ok(())
    }

    /// A user's calendar connection changed (connected, must reconnect,
    /// disconnected): columns the log does not carry. Their row's
    /// `updated_at` moves and the UPDATE is logged, so pages that follow
    /// `users` (the Team page) read it again. Only for `users`.
    pub fn log_updated(&mut self, table: Table, id: i64) -> StoreResult<()> {
        if table != Table::Users {
            return Err(StoreError::internal("rows of the data tables are updated with WriteTx::update"));
        }
        let Some(old) = rows::get(self.conn, table, id)? else { return Ok(()) };
        let sql = format!("UPDATE {} SET updated_at = ?1 WHERE id = ?2 RETURNING {}", table.name(), rows::column_list(table));
        let row = self.conn.query_opt(&sql, args![self.now, id])?.ok_or_else(|| StoreError::internal("updated row vanished"))?;
        let new = rows::row_to_json(table, &row);
        self.log(table, Op::Update, id, Some(new), Some(old));
        Ok(())
    }

    /// Delete a row and log it. Returns the deleted row, or None if absent.
    pub fn delete(&mut self, table: Table, id: i64) -> StoreResult<Option<Value>> {
        let Some(old) = rows::get(self.conn, table, id)? else { return Ok(None) };
        self.conn.execute(&format!("DELETE FROM {} WHERE id = ?1", table.name()), args![id])?;
        self.log(table, Op::Delete, id, None, Some(old.clone()));
        Ok(Some(old))
    }

    /// Remember a change; its seq is given when the batch ends.
    fn log(&mut self, table: Table, op: Op, row_id: i64, record: Option<Value>, old_record: Option<Value>) {
        let owner = table.owner_of(record.as_ref().or(old_record.as_ref()).unwrap_or(&Value::Null));
        self.changes.push(Change { seq: 0, table, op, row_id, user_id: owner, record, old_record, committed_at: self.now.clone() });
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

/// Number the batch's changes and insert them, just before COMMIT.
///
/// Why here and why this way: `seq` must grow in commit order, or a reader
/// that has seen seq 6 skips a seq 5 that commits after it, for good. A
/// sequence or identity column hands out numbers at INSERT time, which is
/// not commit order once two writers (two nodes) commit concurrently. So
/// the numbers come from the one-row `seq_head`, whose row lock serializes
/// them: the `UPDATE … RETURNING` takes that lock here, after every request
/// of the batch has run and outside all their savepoints (a lock taken in a
/// savepoint that rolls back would be released with it), and COMMIT releases
/// it. It is held only across the change-row insert and the commit, and as
/// the last lock the transaction takes it cannot close a deadlock cycle with
/// the row locks taken earlier in the batch. The next writer's numbers start
/// after ours and its commit comes after ours: seq order is commit order.
/// (SQLite has one writer for the file, but uses the same code.)
fn log_changes(conn: &Conn<'_>, changes: &mut [Change]) -> StoreResult<()> {
    if changes.is_empty() {
        return Ok(());
    }
    let n = changes.len() as i64;
    let last: i64 = conn.value("UPDATE seq_head SET seq = seq + ?1 WHERE id = 1 RETURNING seq", args![n])?;
    for (i, c) in changes.iter_mut().enumerate() {
        c.seq = last - n + 1 + i as i64;
    }
    // Few statement shapes (so each stays prepared), few statements per batch.
    let mut rest: &[Change] = changes;
    while !rest.is_empty() {
        let take = [64, 16, 4, 1].into_iter().find(|&k| k <= rest.len()).unwrap_or(1);
        let (chunk, tail) = rest.split_at(take);
        insert_change_rows(conn, chunk)?;
        rest = tail;
    }
    Ok(())
}

const CHANGE_COLUMNS: usize = 8;

fn insert_change_rows(conn: &Conn<'_>, chunk: &[Change]) -> StoreResult<()> {
    let tuples: Vec<String> = (0..chunk.len())
        .map(|r| {
            let ph: Vec<String> = (1..=CHANGE_COLUMNS).map(|c| format!("?{}", r * CHANGE_COLUMNS + c)).collect();
            format!("({})", ph.join(", "))
        })
        .collect();
    let sql = format!(
        "INSERT INTO changes (seq, table_name, op, row_id, user_id, record, old_record, committed_at) VALUES {}",
        tuples.join(", ")
    );
    let texts: Vec<(Option<String>, Option<String>)> =
        chunk.iter().map(|c| (c.record.as_ref().map(Value::to_string), c.old_record.as_ref().map(Value::to_string))).collect();
    let names: Vec<(&str, &str)> = chunk.iter().map(|c| (c.table.name(), c.op.as_str())).collect();
    let mut params: Vec<&dyn ToSqlValue> = Vec::with_capacity(chunk.len() * CHANGE_COLUMNS);
    for ((c, (record, old)), (table, op)) in chunk.iter().zip(&texts).zip(&names) {
        params.extend_from_slice(&[&c.seq, table, op, &c.row_id, &c.user_id, record, old, &c.committed_at]);
    }
    conn.execute(&sql, &params)?;
    Ok(())
}

impl Writer {
    /// Run `f` in the writer's transaction; resolves after COMMIT. An `Err`
    /// from `f` rolls back everything `f` did and nothing else.
    ///
    /// Made under a lease (`cluster::fenced`), the request first checks, in
    /// the same transaction, that the lease is still this holder's.
    pub(super) async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut WriteTx<'_, '_>) -> StoreResult<T> + Send + 'static,
    {
        self.write_under(super::cluster::current_fence(), f).await
    }

    /// [`Writer::write`] without the lease check: the lease and registry
    /// writes themselves, which a lease holder makes too.
    pub(super) async fn write_unfenced<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut WriteTx<'_, '_>) -> StoreResult<T> + Send + 'static,
    {
        self.write_under(None, f).await
    }

    async fn write_under<T, F>(&self, fence: Option<super::cluster::Fence>, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut WriteTx<'_, '_>) -> StoreResult<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<StoreResult<T>>();
        let job: JobFn = Box::new(move |wtx| match wtx {
            Ok(wtx) => {
                let result = match &fence {
                    Some(fence) => super::cluster::check_fence(wtx.conn, fence, &wtx.now).and_then(|()| f(wtx)),
                    None => f(wtx),
                };
                let ok = result.is_ok();
                let deliver: Deliver = Box::new(move |commit| {
                    let _ = tx.send(match commit {
                        Ok(()) => result,
                        Err(e) => Err(e),
                    });
                });
                (ok, deliver)
            }
            Err(refused) => {
                let _ = tx.send(Err(refused));
                (false, Box::new(|_| ()))
            }
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

/// Where the writer's transactions go.
enum Target {
    Sqlite(Connection),
    Postgres(PgTarget),
}

/// The writer's PostgreSQL connection, taken again after it is lost.
struct PgTarget {
    pool: deadpool_postgres::Pool,
    client: Option<deadpool_postgres::Object>,
    /// After a failed attempt to connect, the next one waits until then.
    retry_at: Option<Instant>,
    backoff: crate::backoff::Backoff,
    /// Failed attempts to connect in a row.
    attempts: u32,
    /// A COMMIT whose outcome is unknown (the connection dropped during it):
    /// the log holds the truth, to be read and published before anything else.
    unsure: bool,
}

impl PgTarget {
    /// The connection, reconnecting when it is gone; refuses fast while
    /// backing off, so callers get 503 at once rather than queueing.
    fn client(&mut self) -> StoreResult<&deadpool_postgres::Object> {
        if self.client.as_ref().is_some_and(|c| c.is_closed()) {
            self.client = None;
        }
        if self.client.is_none() {
            if self.retry_at.is_some_and(|t| Instant::now() < t) {
                return Err(StoreError::Unavailable("the database is not reachable; reconnecting".into()));
            }
            match super::pg::conn::get(&self.pool) {
                Ok(c) => {
                    if self.retry_at.take().is_some() {
                        tracing::info!("writer reconnected to PostgreSQL");
                    }
                    self.attempts = 0;
                    self.client = Some(c);
                }
                Err(e) => {
                    let wait = self.backoff.delay(self.attempts);
                    self.attempts = self.attempts.saturating_add(1);
                    tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "writer cannot reach PostgreSQL");
                    self.retry_at = Some(Instant::now() + wait);
                    return Err(e);
                }
            }
        }
        self.client.as_ref().ok_or_else(|| StoreError::internal("no writer connection"))
    }
}

/// Start the writer thread on an open, migrated SQLite connection.
pub(super) fn spawn_sqlite(conn: Connection, max_batch: usize, feed: mpsc::UnboundedSender<ChangeBatch>) -> (Writer, JoinHandle<()>) {
    // Every row write uses a cached statement (parsing costs more than the
    // write itself); keep enough for the column sets of all tables and ops.
    conn.set_prepared_statement_cache_capacity(256);
    let head = super::changes::head(&Conn::Sqlite(&conn)).unwrap_or(0);
    spawn(Target::Sqlite(conn), head, max_batch, feed)
}

/// Start the writer thread on a migrated PostgreSQL database (`pool` holds
/// the writer's one connection).
pub(super) fn spawn_postgres(
    pool: deadpool_postgres::Pool,
    max_batch: usize,
    feed: mpsc::UnboundedSender<ChangeBatch>,
) -> StoreResult<(Writer, JoinHandle<()>)> {
    let client = super::pg::conn::get(&pool)?;
    let head = super::changes::head(&Conn::Pg(PgConn::new(&client)))?;
    let target = PgTarget {
        pool,
        client: Some(client),
        retry_at: None,
        backoff: crate::backoff::Backoff::new(Duration::from_millis(100), Duration::from_secs(5)),
        attempts: 0,
        unsure: false,
    };
    Ok(spawn(Target::Postgres(target), head, max_batch.min(PG_MAX_BATCH), feed))
}

fn spawn(target: Target, head: i64, max_batch: usize, feed: mpsc::UnboundedSender<ChangeBatch>) -> (Writer, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel::<Msg>(max_batch.max(1) * 16);
    let head = Arc::new(AtomicI64::new(head));
    let stats = Arc::new(WriterStats::default());
    let writer = Writer { tx, head: head.clone(), stats: stats.clone() };
    let handle = std::thread::Builder::new()
        .name("syncgate-writer".into())
        .spawn(move || run(target, rx, max_batch.max(1), feed, head, stats))
        .expect("spawning the writer thread");
    (writer, handle)
}

fn run(
    mut target: Target,
    mut rx: mpsc::Receiver<Msg>,
    max_batch: usize,
    feed: mpsc::UnboundedSender<ChangeBatch>,
    head: Arc<AtomicI64>,
    stats: Arc<WriterStats>,
) {
    let mut stopping: Option<oneshot::Sender<()>> = None;
    loop {
        let mut batch: Vec<JobFn> = Vec::new();
        let first = match next_message(&mut target, &mut rx, &feed, &head) {
            Some(m) => m,
            None => break,
        };
        let mut take = |m: Msg, batch: &mut Vec<JobFn>| match m {
            Msg::Job(j) => batch.push(j),
            // Commit what is already queued, then stop accepting.
            Msg::Shutdown(done) => stopping = Some(done),
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
        // On shutdown everything left is committed, in batches of the cap.
        while !batch.is_empty() {
            let rest = batch.split_off(batch.len().min(max_batch));
            match &mut target {
                Target::Sqlite(conn) => {
                    commit_batch(&Conn::Sqlite(conn), batch, &feed, &head, &stats);
                }
                Target::Postgres(pg) => commit_pg_batch(pg, batch, &feed, &head, &stats),
            }
            batch = rest;
        }
        if let Some(done) = stopping.take() {
            let _ = done.send(());
            break;
        }
    }
    tracing::info!("writer stopped; every queued write is committed");
}

/// The next request. On PostgreSQL, while a commit's outcome is unknown,
/// keep trying (with backoff) to publish from the log what did commit, even
/// when no request comes.
fn next_message(
    target: &mut Target,
    rx: &mut mpsc::Receiver<Msg>,
    feed: &mpsc::UnboundedSender<ChangeBatch>,
    head: &AtomicI64,
) -> Option<Msg> {
    let Target::Postgres(pg) = target else { return rx.blocking_recv() };
    loop {
        if pg.unsure {
            recover(pg, feed, head);
        }
        if !pg.unsure {
            return rx.blocking_recv();
        }
        let wait = pg.retry_at.map_or(Duration::from_millis(200), |t| t.saturating_duration_since(Instant::now()));
        let wait = wait.max(Duration::from_millis(50));
        match super::pg::conn::block_on(async { tokio::time::timeout(wait, rx.recv()).await }) {
            Ok(m) => return m,
            Err(_) => continue,
        }
    }
}

/// After a COMMIT whose outcome is unknown: publish, from the log, every
/// change past the published head (a write that did commit is broadcast
/// even though its caller heard 503), then carry on from the log's head.
fn recover(pg: &mut PgTarget, feed: &mpsc::UnboundedSender<ChangeBatch>, head: &AtomicI64) {
    let Ok(client) = pg.client() else { return };
    let conn = Conn::Pg(PgConn::new(client));
    loop {
        let after = head.load(Ordering::Acquire);
        match super::changes::read_after(&conn, after, 1000) {
            Ok(found) if found.is_empty() => {
                pg.unsure = false;
                tracing::info!(head = after, "writer resumed after a commit of unknown outcome; the log and the feed agree");
                return;
            }
            Ok(found) => {
                let n = found.len();
                if let Some(last) = found.last() {
                    head.fetch_max(last.seq, Ordering::AcqRel);
                }
                tracing::warn!(changes = n, "published changes of a commit whose caller heard 503: it did commit");
                let _ = feed.send(Arc::new(found.into_iter().map(Arc::new).collect()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the change log after a lost commit; retrying");
                pg.client = None;
                return;
            }
        }
    }
}

fn commit_pg_batch(pg: &mut PgTarget, batch: Vec<JobFn>, feed: &mpsc::UnboundedSender<ChangeBatch>, head: &AtomicI64, stats: &WriterStats) {
    if pg.unsure {
        recover(pg, feed, head);
    }
    let refused = if pg.unsure {
        Err(StoreError::Unavailable("the database connection was lost; reconnecting".into()))
    } else {
        pg.client().map(|_| ())
    };
    if let Err(e) = refused {
        for job in batch {
            let _ = catch_unwind(AssertUnwindSafe(|| job(Err(e.clone()))));
        }
        return;
    }
    let Some(client) = pg.client.as_ref() else { return };
    let outcome = commit_batch(&Conn::Pg(PgConn::new(client)), batch, feed, head, stats);
    match outcome {
        CommitOutcome::Committed | CommitOutcome::RolledBack => {}
        CommitOutcome::Unknown => {
            pg.unsure = true;
            pg.client = None;
        }
    }
}

/// Run a parameterless statement (transaction control on the hot path).
fn exec(conn: &Conn<'_>, sql: &str) -> StoreResult<()> {
    conn.execute(sql, args![]).map(|_| ())
}

/// Transaction-control statements in order. On PostgreSQL each message is a
/// round trip to the server, so they go as one (ending one request's
/// savepoint and opening the next costs one wait, not two); SQLite runs
/// them as cached statements, which is cheaper than parsing a batch.
fn step(conn: &Conn<'_>, statements: &[&str]) -> StoreResult<()> {
    match conn.engine() {
        Engine::Sqlite => statements.iter().try_for_each(|s| exec(conn, s)),
        Engine::Postgres => conn.batch(&statements.join("; ")),
    }
}

/// The channel every node LISTENs on: a payload-free wake-up to read the
/// change log (`cluster::tail`).
pub const CHANGES_CHANNEL: &str = "syncgate_changes";

/// COMMIT; on PostgreSQL a batch with changes also wakes every node's tail,
/// in the same message (a NOTIFY is delivered only if the transaction
/// commits, and after it has).
fn commit(conn: &Conn<'_>, changed: bool) -> StoreResult<()> {
    match conn.engine() {
        Engine::Postgres if changed => conn.batch(&format!("NOTIFY {CHANGES_CHANNEL}; COMMIT")),
        _ => exec(conn, "COMMIT"),
    }
}

enum CommitOutcome {
    Committed,
    /// Nothing of the batch remains; callers heard why.
    RolledBack,
    /// The connection dropped during COMMIT: the batch may or may not have
    /// committed. Callers heard 503; the log decides what is published.
    Unknown,
}

fn commit_batch(
    conn: &Conn<'_>,
    batch: Vec<JobFn>,
    feed: &mpsc::UnboundedSender<ChangeBatch>,
    head: &AtomicI64,
    stats: &WriterStats,
) -> CommitOutcome {
    let started = Instant::now();
    let n = batch.len() as u64;
    let now = timefmt::format(timefmt::now());
    let mut delivers: Vec<Deliver> = Vec::with_capacity(batch.len());
    let mut committed: Vec<Change> = Vec::new();
    let begin = match conn.engine() {
        Engine::Sqlite => "BEGIN IMMEDIATE",
        Engine::Postgres => "BEGIN",
    };
    // Each request runs inside the savepoint `request`, opened before it and
    // released (or rolled back to) after it, together with opening the next.
    let mut broken = step(conn, &[begin, "SAVEPOINT request"]).err();
    if let Some(e) = &broken {
        tracing::error!(error = %e, "writer could not begin a transaction");
    }
    let last = batch.len().saturating_sub(1);
    for (i, job) in batch.into_iter().enumerate() {
        if let Some(e) = &broken {
            let _ = catch_unwind(AssertUnwindSafe(|| job(Err(e.clone()))));
            continue;
        }
        let mut wtx = WriteTx { conn, now: now.clone(), changes: Vec::new() };
        let outcome = catch_unwind(AssertUnwindSafe(|| job(Ok(&mut wtx))));
        let mut next: Vec<&str> = match outcome {
            Ok((true, deliver)) => {
                committed.extend(wtx.changes);
                delivers.push(deliver);
                vec!["RELEASE request"]
            }
            Ok((false, deliver)) => {
                stats.failed_requests.fetch_add(1, Ordering::Relaxed);
                delivers.push(deliver);
                vec!["ROLLBACK TO request", "RELEASE request"]
            }
            Err(_) => {
                // A panicking request loses only itself; its caller sees an internal error.
                tracing::error!("a write request panicked; it was rolled back");
                stats.failed_requests.fetch_add(1, Ordering::Relaxed);
                vec!["ROLLBACK TO request", "RELEASE request"]
            }
        };
        if i < last {
            next.push("SAVEPOINT request");
        }
        if let Err(e) = step(conn, &next) {
            // The transaction cannot go on: later requests are refused, and
            // COMMIT fails, so earlier ones hear the error too.
            tracing::error!(error = %e, "writer could not end or open a savepoint");
            broken = Some(e);
        }
    }
    // A transaction that could not end or open a savepoint is not committed
    // at all: on PostgreSQL it is aborted, and COMMIT of an aborted
    // transaction answers like a success while it rolls back, which would
    // acknowledge writes that never happened.
    // `at_commit`: the failure is COMMIT's own, whose outcome a lost
    // connection leaves unknown; any earlier failure surely rolled back.
    let commit = match broken {
        Some(e) => Err((e, false)),
        None => log_changes(conn, &mut committed)
            .map_err(|e| (e, false))
            .and_then(|()| commit(conn, !committed.is_empty()).map_err(|e| (e, true))),
    };
    match commit {
        Ok(()) => {
            if let Some(last) = committed.last() {
                head.fetch_max(last.seq, Ordering::AcqRel);
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
            CommitOutcome::Committed
        }
        Err((e, at_commit)) => {
            // A connection lost during COMMIT says nothing about whether the
            // server committed before it went; any other failure (a refused
            // COMMIT, a failed change-row insert, a broken savepoint) rolled
            // everything back.
            let lost = matches!(conn, Conn::Pg(c) if c.is_closed()) || matches!(e, StoreError::Unavailable(_));
            if lost && at_commit && !committed.is_empty() {
                tracing::error!(error = %e, "the database connection was lost during COMMIT; its outcome is unknown");
                let answer =
                    StoreError::Unavailable("the database connection was lost while saving; the change may or may not be saved".into());
                for d in delivers {
                    d(Err(answer.clone()));
                }
                return CommitOutcome::Unknown;
            }
            tracing::error!(error = %e, "commit failed; the batch was rolled back");
            let _ = exec(conn, "ROLLBACK");
            for d in delivers {
                d(Err(e.clone()));
            }
            CommitOutcome::RolledBack
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
        let (writer, _thread) = spawn_sqlite(conn, 64, feed_tx);
        (writer, uid, feed)
    }

    /// `(seq, record)` of every logged change, read in the writer's own transaction.
    async fn logged(writer: &Writer) -> Vec<(i64, Option<Value>)> {
        writer
            .write(|tx| {
                let rows: Vec<(i64, Option<String>)> =
                    tx.conn().query_map("SELECT seq, record FROM changes ORDER BY seq", args![], |r| Ok((r.get(0)?, r.get(1)?)))?;
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
        let names: Vec<String> =
            writer.write(|tx| tx.conn().query_map("SELECT name FROM clients ORDER BY id", args![], |r| r.get::<String>(0))).await.unwrap();
        assert_eq!(names, vec!["first", "third"]);
        let ch = logged(&writer).await;
        assert_eq!(ch.len(), 2, "only the committed inserts are logged: {ch:?}");
        assert_eq!(ch[0].1.as_ref(), Some(&r1));
        assert_eq!(ch[1].1.as_ref(), Some(&r3));
        assert_eq!((ch[0].0, ch[1].0), (1, 2), "a rolled-back change leaves no hole in seq");
    }
}
