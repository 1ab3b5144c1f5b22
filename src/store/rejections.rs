//! Counts of Calendly deliveries refused before their signature verified:
//! one row per minute and reason (`calendly_rejections`), added to by upsert,
//! so a flood of forged POSTs costs a counter, not a row each, and the count
//! survives a restart.

use super::sql::{args, Conn, Engine};
use super::{Store, StoreResult};

impl Store {
    /// Add refusals, by reason, to the current minute's counts (one writer
    /// request for the whole batch).
    pub async fn count_calendly_rejections(&self, batch: Vec<(&'static str, u64)>) -> StoreResult<()> {
        self.writer
            .write(move |tx| {
                for (reason, n) in &batch {
                    add(tx.conn(), tx.now(), reason, *n)?;
                }
                Ok(())
            })
            .await
    }
}

/// Add `n` refusals for `reason` in the minute that holds `at` (UTC, `Z`).
fn add(conn: &Conn<'_>, at: &str, reason: &str, n: u64) -> StoreResult<()> {
    let minute = match conn.engine() {
        // "2026-12-01T17:20:11.123Z" → "2026-12-01T17:20Z" (the text SQLite has always kept)
        Engine::Sqlite => format!("{}Z", at.get(..16).unwrap_or(at)),
        // A timestamptz: the instant the minute starts, "2026-12-01T17:20:00.000Z".
        Engine::Postgres => format!("{}:00.000Z", at.get(..16).unwrap_or(at)),
    };
    // The later of the two last_at, as a CASE: SQLite's two-argument MAX is
    // PostgreSQL's GREATEST.
    conn.execute(
        "INSERT INTO calendly_rejections (minute, reason, count, last_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (minute, reason) DO UPDATE SET count = calendly_rejections.count + excluded.count,
           last_at = CASE WHEN excluded.last_at > calendly_rejections.last_at THEN excluded.last_at ELSE calendly_rejections.last_at END",
        args![minute, reason, n as i64, at],
    )?;
    Ok(())
}

/// Refusals counted in minutes whose last refusal is at or after `since`
/// (a minute that straddles `since` counts whole). For the store's alert reads.
pub(super) fn count_since(conn: &Conn<'_>, since: &str) -> StoreResult<i64> {
    // SUM of a bigint is numeric on PostgreSQL.
    conn.value("SELECT COALESCE(CAST(SUM(count) AS BIGINT), 0) FROM calendly_rejections WHERE last_at >= ?1", args![since])
}

/// The same, by reason.
pub(super) fn by_reason_since(conn: &Conn<'_>, since: &str) -> StoreResult<Vec<(String, i64)>> {
    conn.query_map(
        "SELECT reason, CAST(SUM(count) AS BIGINT) FROM calendly_rejections WHERE last_at >= ?1 GROUP BY reason ORDER BY reason",
        args![since],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
}

/// Delete up to `limit` minutes older than `before`; returns how many went.
/// Rows are named by their key (PostgreSQL has no rowid).
pub(super) fn prune(conn: &Conn<'_>, before: &str, limit: i64) -> StoreResult<usize> {
    conn.execute(
        "DELETE FROM calendly_rejections WHERE (minute, reason) IN (
            SELECT minute, reason FROM calendly_rejections WHERE last_at < ?1 LIMIT ?2)",
        args![before, limit],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up_per_minute_and_reason() {
        let mut db = rusqlite::Connection::open_in_memory().unwrap();
        crate::store::migrations::migrate(&mut db).unwrap();
        let conn = Conn::Sqlite(&db);
        add(&conn, "2026-12-01T17:20:01.000Z", "mismatch", 2).unwrap();
        add(&conn, "2026-12-01T17:20:59.000Z", "mismatch", 1).unwrap();
        add(&conn, "2026-12-01T17:21:00.000Z", "missing", 4).unwrap();
        let rows: i64 = conn.value("SELECT COUNT(*) FROM calendly_rejections", args![]).unwrap();
        assert_eq!(rows, 2);
        assert_eq!(count_since(&conn, "2026-12-01T17:00:00.000Z").unwrap(), 7);
        assert_eq!(count_since(&conn, "2026-12-01T17:20:59.500Z").unwrap(), 4);
        assert_eq!(by_reason_since(&conn, "2026-12-01T00:00:00.000Z").unwrap(), vec![("mismatch".into(), 3), ("missing".into(), 4)]);
        assert_eq!(prune(&conn, "2026-12-01T17:20:59.500Z", 100).unwrap(), 1);
        assert_eq!(count_since(&conn, "2000-01-01T00:00:00.000Z").unwrap(), 4);
    }
}
