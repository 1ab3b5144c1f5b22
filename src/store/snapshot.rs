//! Snapshot reads for realtime joins: the rows a channel's bindings match,
//! read in pages from ONE read transaction together with the head seq they
//! are consistent with, handed over a page at a time so memory stays bounded
//! however many rows there are and however slowly the client reads.
//!
//! The transaction lives on a blocking thread with a connection of its own
//! (not the REST read pool, which stalled clients must not drain); it ends
//! when the last page is taken or the reader is dropped (a client too slow
//! for `realtime.flush_timeout` is dropped, so that bounds how long it is held).

use std::ops::ControlFlow;

use rusqlite::Connection;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use super::error::{StoreError, StoreResult};
use super::{changes, rows, Store, Table};

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
        let readers = self.readers.clone();
        let (opened_tx, opened_rx) = oneshot::channel::<Header>();
        // One page waits while the session writes the previous one.
        let (page_tx, pages) = mpsc::channel::<StoreResult<Page>>(1);
        tokio::task::spawn_blocking(move || {
            let conn = match r2d2::ManageConnection::connect(&*readers) {
                Ok(c) => c,
                Err(e) => {
                    let _ = opened_tx.send(Header::Failed(StoreError::internal(format!("cannot open a snapshot connection: {e}"))));
                    return;
                }
            };
            if let Err(e) = read(&conn, req, opened_tx, page_tx) {
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

fn read<F>(
    conn: &Connection,
    req: Request<F>,
    opened: oneshot::Sender<Header>,
    pages: mpsc::Sender<StoreResult<Page>>,
) -> rusqlite::Result<()>
where
    F: Fn(Table, Value) -> Option<Value>,
{
    // A snapshot reads each row once: a small page cache is enough, and 16
    // connections at SQLite's default 2 MB each would be most of the cost.
    conn.pragma_update(None, "cache_size", -256)?;
    let tx = conn.unchecked_transaction()?;
    let head = match changes::head(&tx) {
        Ok(h) => h,
        Err(e) => {
            let _ = opened.send(Header::Failed(StoreError::internal(format!("snapshot head: {e}"))));
            return Err(e);
        }
    };
    let page = req.page.max(1);
    // Count only when the owner's rows could exceed the cap: counting the
    // matches means reading every row once more.
    let mut upper = 0usize;
    for &t in &req.tables {
        upper += count(&tx, t, req.owner)?;
    }
    if upper > req.cap {
        let mut matching = 0usize;
        for &t in &req.tables {
            let walked = walk(&tx, t, req.owner, page, |batch| {
                matching += batch.into_iter().filter_map(|r| (req.keep)(t, r)).count();
                if matching > req.cap {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })?;
            if walked.is_break() {
                let _ = opened.send(Header::TooMany(matching));
                return Ok(());
            }
        }
    }
    if opened.send(Header::Head(head)).is_err() {
        return Ok(());
    }
    for &t in &req.tables {
        let walked = walk(&tx, t, req.owner, page, |batch| {
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
            return Ok(());
        }
    }
    tx.commit()
}

/// Hand `visit` the owner's rows of `t` in id order, `page` at a time (keyset
/// paging, so each page is one indexed range read), until they run out or
/// `visit` breaks.
fn walk(
    conn: &Connection,
    t: Table,
    owner: Option<i64>,
    page: usize,
    mut visit: impl FnMut(Vec<Value>) -> ControlFlow<()>,
) -> rusqlite::Result<ControlFlow<()>> {
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

fn count(conn: &Connection, t: Table, owner: Option<i64>) -> rusqlite::Result<usize> {
    let n: i64 = match owner {
        Some(u) => conn.query_row(&format!("SELECT COUNT(*) FROM {} WHERE user_id = ?1", t.name()), [u], |r| r.get(0))?,
        None => conn.query_row(&format!("SELECT COUNT(*) FROM {}", t.name()), [], |r| r.get(0))?,
    };
    Ok(n.max(0) as usize)
}

fn read_page(conn: &Connection, t: Table, owner: Option<i64>, after: i64, limit: usize) -> rusqlite::Result<Vec<Value>> {
    let base = rows::select_sql(t);
    match owner {
        Some(u) => {
            let mut stmt = conn.prepare_cached(&format!("{base} WHERE user_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3"))?;
            let r = stmt.query_map(rusqlite::params![u, after, limit as i64], |r| rows::row_to_json(t, r))?;
            r.collect()
        }
        None => {
            let mut stmt = conn.prepare_cached(&format!("{base} WHERE id > ?1 ORDER BY id LIMIT ?2"))?;
            let r = stmt.query_map(rusqlite::params![after, limit as i64], |r| rows::row_to_json(t, r))?;
            r.collect()
        }
    }
}
