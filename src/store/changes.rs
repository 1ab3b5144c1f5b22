//! A committed change as the rest of the process sees it, and reads of the
//! durable `changes` log (for resume and catch-up): [`Store::log_bounds`] and
//! [`Store::replay_after`].

use std::sync::Arc;

use serde_json::Value;

use super::error::StoreResult;
use super::sql::{args, Conn, Row};
use super::tables::Table;
use super::Store;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Insert,
    Update,
    Delete,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Insert => "INSERT",
            Op::Update => "UPDATE",
            Op::Delete => "DELETE",
        }
    }
    pub fn parse(s: &str) -> Option<Op> {
        match s {
            "INSERT" => Some(Op::Insert),
            "UPDATE" => Some(Op::Update),
            "DELETE" => Some(Op::Delete),
            _ => None,
        }
    }
}

/// One committed row change, exactly as logged in `changes`.
#[derive(Debug, Clone)]
pub struct Change {
    pub seq: i64,
    pub table: Table,
    pub op: Op,
    pub row_id: i64,
    /// The row's owner (`user_id`); who may see the change.
    pub user_id: i64,
    pub record: Option<Value>,
    pub old_record: Option<Value>,
    /// UTC, milliseconds, `Z`.
    pub committed_at: String,
}

/// What the writer publishes after each COMMIT: that batch's changes in seq order.
pub type ChangeBatch = Arc<Vec<Arc<Change>>>;

/// Read logged changes with `seq > after`, oldest first, at most `limit`.
pub(super) fn read_after(conn: &Conn<'_>, after: i64, limit: usize) -> StoreResult<Vec<Change>> {
    conn.query_map(
        "SELECT seq, table_name, op, row_id, user_id, record, old_record, committed_at
         FROM changes WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        args![after, limit],
        change_from_row,
    )
}

/// The same, only `user_id`'s changes (by the `(user_id, seq)` index): a
/// non-admin replay never reads everyone's rows.
pub(super) fn read_after_for_user(conn: &Conn<'_>, user_id: i64, after: i64, limit: usize) -> StoreResult<Vec<Change>> {
    conn.query_map(
        "SELECT seq, table_name, op, row_id, user_id, record, old_record, committed_at
         FROM changes WHERE user_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
        args![user_id, after, limit],
        change_from_row,
    )
}

fn change_from_row(r: &Row) -> StoreResult<Change> {
    let table = Table::parse(&r.get::<String>(1)?).unwrap_or(Table::Meetings);
    // Records come back in the table's column order whatever the engine
    // kept (PostgreSQL's jsonb orders keys its own way).
    let record = |i: usize| -> StoreResult<Option<Value>> {
        Ok(r.get::<Option<String>>(i)?.and_then(|s| serde_json::from_str(&s).ok()).map(|v| table.in_column_order(v)))
    };
    Ok(Change {
        seq: r.get(0)?,
        table,
        op: Op::parse(&r.get::<String>(2)?).unwrap_or(Op::Update),
        row_id: r.get(3)?,
        user_id: r.get(4)?,
        record: record(5)?,
        old_record: record(6)?,
        committed_at: r.get(7)?,
    })
}

/// The newest seq ever logged (0 when none was); pruning never lowers it.
pub(super) fn head(conn: &Conn<'_>) -> StoreResult<i64> {
    conn.value("SELECT seq FROM seq_head WHERE id = 1", args![])
}

/// The oldest seq still retained (None when the log is empty).
pub(super) fn oldest(conn: &Conn<'_>) -> StoreResult<Option<i64>> {
    conn.value("SELECT MIN(seq) FROM changes", args![])
}

/// What the log holds right now, read in one snapshot: a resume decides from
/// these whether the changes it asks for are still all there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogBounds {
    /// The oldest seq still retained; None when the log is empty.
    pub oldest: Option<i64>,
    /// The newest seq ever logged (0 when none was); pruning never lowers it.
    pub head: i64,
}

/// A page of the log and the head it was read at (one snapshot): when the
/// page is not full, every change up to `head` that the reader may see is in it.
#[derive(Debug, Default)]
pub struct ReplayPage {
    pub changes: Vec<Change>,
    pub head: i64,
}

impl Store {
    /// The log's oldest retained seq and its head, from one read snapshot.
    pub async fn log_bounds(&self) -> StoreResult<LogBounds> {
        self.read(|c| {
            c.begin_snapshot()?;
            let bounds = LogBounds { oldest: oldest(c)?, head: head(c)? };
            c.end_snapshot()?;
            Ok(bounds)
        })
        .await
    }

    /// Up to `limit` logged changes with a seq above `after`, oldest first,
    /// in one statement (the change-log tail's read after every commit).
    pub async fn changes_after(&self, after: i64, limit: usize) -> StoreResult<Vec<Change>> {
        self.read(move |c| read_after(c, after, limit)).await
    }

    /// Up to `limit` logged changes with a seq above `after`, oldest first:
    /// only `owner`'s (by the `(user_id, seq)` index) or, with None,
    /// everyone's; with the head seen by the same read.
    pub async fn replay_after(&self, owner: Option<i64>, after: i64, limit: usize) -> StoreResult<ReplayPage> {
        self.read(move |c| {
            c.begin_snapshot()?;
            let changes = match owner {
                Some(u) => read_after_for_user(c, u, after, limit)?,
                None => read_after(c, after, limit)?,
            };
            let head = head(c)?;
            c.end_snapshot()?;
            Ok(ReplayPage { changes, head })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    /// A user's replay reads through the (user_id, seq) index, not a scan of everyone's changes.
    #[test]
    fn a_users_replay_uses_the_user_index() {
        let mut conn = rusqlite::Connection::open_in_memory().unwrap();
        crate::store::migrations::migrate(&mut conn).unwrap();
        let plan: Vec<String> = conn
            .prepare("EXPLAIN QUERY PLAN SELECT seq FROM changes WHERE user_id = 7 AND seq > 3 ORDER BY seq LIMIT 10")
            .unwrap()
            .query_map([], |r| r.get::<_, String>(3))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert!(plan.iter().any(|p| p.contains("changes_user_seq")), "{plan:?}");
        assert!(!plan.iter().any(|p| p.contains("TEMP B-TREE")), "{plan:?}");
    }
}
