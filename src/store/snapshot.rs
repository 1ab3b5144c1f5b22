//! Snapshot reads for realtime joins: the rows a channel's bindings match,
//! read in pages from ONE read transaction together with the head seq they
//! are consistent with, handed over a page at a time so memory stays bounded
//! however many rows there are and however slowly the client reads.
//!
//! The transaction lives on a blocking thread with a connection of its own
//! (not the REST read pool (on PostgreSQL, one of the snapshot pool), which stalled clients must not drain); it ends
//! when the last page is taken or the reader is dropped (a client too slow
//! for `realtime.flush_timeout` is dropped, so that bounds how long it is held).

use std::ops::ControlFlow;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use super::error::{StoreError, StoreResult};
use super::sql::{args, Conn, Row};
use super::{changes, pg, rows, Db, Store, Table};

/// One page: matching rows, each with its table.
pub type Page = Vec<(Table, Value)>;

/// What opening a snapshot found.
pub enum Opened {
    /// The matching rows are within the cap: read them page by page.
    Rows(SnapshotReader),
    /// More rows match than the cap allows (at least this many).
    TooMany(usize),
}

/// Pages of a snapshot being read.
pub struct SnapshotReader {
    /// The head seq the rows reflect.
    pub head: i64,
    pages: mpsc::Receiver<StoreResult<Page>>,
}

impl SnapshotReader {
    /// The next page, or None when every row has been handed over.
    pub async fn next_page(&mut self) -> Option<StoreResult<Page>> {
        self.pages.recv().await
    }
}

/// What to read: `tables` in order, only `owner`'s rows unless None
/// (admins), only rows `keep` gives back (it takes each row by value so a
/// check needs no copy), at most `cap` of them, `page` at a time.
pub struct Request<F> {
    pub tables: Vec<Table>,
    pub owner: Option<i64>,
    pub cap: usize,
    pub page: usize,
    pub keep: F,
}

impl Store {
    /// Begin a snapshot: the transaction, its head seq and the cap check
    /// happen before this returns; the rows follow through the reader.
    pub async fn snapshot<F>(&self, req: Request<F>) -> StoreResult<Opened>
    where
        F: Fn(Table, Value) -> Option<Value> + Send + 'static,
    {
        let db = self.db.clone();
        let (opened_tx, opened_rx) = oneshot::channel::<Header>();
        // One page waits while the session writes the previous one.
        let (page_tx, pages) = mpsc::channel::<StoreResult<Page>>(1);
        tokio::task::spawn_blocking(move || {
            let failed = |e: String, opened: oneshot::Sender<Header>| {
                let _ = opened.send(Header::Failed(StoreError::Unavailable(format!("cannot open a snapshot connection: {e}"))));
            };
            let outcome = match db {
                Db::Sqlite { readers, .. } => match r2d2::ManageConnection::connect(&*readers) {
                    Ok(c) => {
                        // A snapshot reads each row once: a small page cache is enough, and 16
                        // connections at SQLite's default 2 MB each would be most of the cost.
                        let _ = c.pragma_update(None, "cache_size", -256);
                        read(&Conn::Sqlite(&c), req, opened_tx, page_tx)
                    }
                    Err(e) => return failed(e.to_string(), opened_tx),
                },
                Db::Postgres { snapshots, .. } => match pg::conn::get(&snapshots) {
                    Ok(client) => {
                        let conn = Conn::Pg(pg::conn::PgConn::new(&client));
                        let outcome = read(&conn, req, opened_tx, page_tx);
                        if let Conn::Pg(c) = &conn {
                            c.release();
                        }
                        outcome
                    }
                    Err(e) => return failed(e.to_string(), opened_tx),
                },
            };
            if let Err(e) = outcome {
                tracing::warn!(error = %e, "snapshot read failed");
            }
        });
        match opened_rx.await {
            Ok(Header::Head(head)) => Ok(Opened::Rows(SnapshotReader { head, pages })),
            Ok(Header::TooMany(n)) => Ok(Opened::TooMany(n)),
            Ok(Header::Failed(e)) => Err(e),
            Err(_) => Err(StoreError::internal("the snapshot reader stopped before reading the head")),
        }
    }
}

/// The reader thread's first word: the head, or why there are no rows.
enum Header {
    Head(i64),
    TooMany(usize),
    Failed(StoreError),
}

fn read<F>(conn: &Conn<'_>, req: Request<F>, opened: oneshot::Sender<Header>, pages: mpsc::Sender<StoreResult<Page>>) -> StoreResult<()>
where
    F: Fn(Table, Value) -> Option<Value>,
{
    conn.begin_snapshot()?;
    let head = match changes::head(conn) {
        Ok(h) => h,
        Err(e) => {
            let _ = opened.send(Header::Failed(e.clone()));
            return Err(e);
        }
    };
    let page = req.page.max(1);
    // Count only when the owner's rows could exceed the cap: counting the
    // matches means reading every row once more.
    let mut upper = 0usize;
    for &t in &req.tables {
        upper += count(conn, t, req.owner)?;
    }
    if upper > req.cap {
        let mut matching = 0usize;
        for &t in &req.tables {
            let walked = walk(conn, t, req.owner, page, |batch| {
                matching += batch.into_iter().filter_map(|r| (req.keep)(t, r)).count();
                if matching > req.cap {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })?;
            if walked.is_break() {
                let _ = opened.send(Header::TooMany(matching));
                return conn.end_snapshot();
            }
        }
    }
    if opened.send(Header::Head(head)).is_err() {
        return conn.end_snapshot();
    }
    for &t in &req.tables {
        let walked = walk(conn, t, req.owner, page, |batch| {
            // Pages are cut by size too (rows may carry large notes), so a
            // stalled client holds at most a few of them.
            let mut out: Page = Vec::new();
            let mut bytes = 0;
            for row in batch.into_iter().filter_map(|r| (req.keep)(t, r)) {
                bytes += approx_size(&row);
                out.push((t, row));
                if bytes >= PAGE_BYTES {
                    // The session went away (closed, too slow): end the transaction.
                    if pages.blocking_send(Ok(std::mem::take(&mut out))).is_err() {
                        return ControlFlow::Break(());
                    }
                    bytes = 0;
                }
            }
            if !out.is_empty() && pages.blocking_send(Ok(out)).is_err() {
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        })?;
        if walked.is_break() {
            return conn.end_snapshot();
        }
    }
    conn.end_snapshot()
}

/// Hand `visit` the owner's rows of `t` in id order, `page` at a time (keyset
/// paging, so each page is one indexed range read), until they run out or
/// `visit` breaks.
fn walk(
    conn: &Conn<'_>,
    t: Table,
    owner: Option<i64>,
    page: usize,
    mut visit: impl FnMut(Vec<Value>) -> ControlFlow<()>,
) -> StoreResult<ControlFlow<()>> {
    let mut after = 0;
    loop {
        let batch = read_page(conn, t, owner, after, page)?;
        let full = batch.len() == page;
        let Some(last) = batch.last().and_then(|r| r.get("id")).and_then(Value::as_i64) else { return Ok(ControlFlow::Continue(())) };
        after = last;
        if visit(batch).is_break() {
            return Ok(ControlFlow::Break(()));
        }
        if !full {
            return Ok(ControlFlow::Continue(()));
        }
    }
}

/// A page handed to the session holds about this many bytes of row text at most
/// (plus one row).
const PAGE_BYTES: usize = 128 * 1024;

/// Roughly the bytes of text a row's frame will carry.
fn approx_size(v: &Value) -> usize {
    match v {
        Value::String(s) => s.len() + 2,
        Value::Array(a) => a.iter().map(approx_size).sum::<usize>() + 2,
        Value::Object(o) => o.iter().map(|(k, v)| k.len() + 3 + approx_size(v)).sum::<usize>() + 2,
        _ => 8,
    }
}

fn count(conn: &Conn<'_>, t: Table, owner: Option<i64>) -> StoreResult<usize> {
    let n: i64 = match owner {
        Some(u) => conn.value(&format!("SELECT COUNT(*) FROM {} WHERE user_id = ?1", t.name()), args![u])?,
        None => conn.value(&format!("SELECT COUNT(*) FROM {}", t.name()), args![])?,
    };
    Ok(n.max(0) as usize)
}

fn read_page(conn: &Conn<'_>, t: Table, owner: Option<i64>, after: i64, limit: usize) -> StoreResult<Vec<Value>> {
    let base = rows::select_sql(t);
    let to_json = |r: &Row| Ok(rows::row_to_json(t, r));
    match owner {
        Some(u) => conn.query_map(&format!("{base} WHERE user_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3"), args![u, after, limit], to_json),
        None => conn.query_map(&format!("{base} WHERE id > ?1 ORDER BY id LIMIT ?2"), args![after, limit], to_json),
    }
}
