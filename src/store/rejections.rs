//! Counts of Calendly deliveries refused before their signature verified:
//! one row per minute and reason (`calendly_rejections`), added to by upsert,
//! so a flood of forged POSTs costs a counter, not a row each, and the count
//! survives a restart.

use rusqlite::{params, Connection};

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
fn add(conn: &Connection, at: &str, reason: &str, n: u64) -> rusqlite::Result<()> {
    // "2026-12-01T17:20:11.123Z" → "2026-12-01T17:20Z"
    let minute = format!("{}Z", at.get(..16).unwrap_or(at));
    conn.prepare_cached(
        "INSERT INTO calendly_rejections (minute, reason, count, last_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (minute, reason) DO UPDATE SET count = count + excluded.count, last_at = MAX(last_at, excluded.last_at)",
    )?
    .execute(params![minute, reason, n as i64, at])?;
    Ok(())
}

/// Refusals counted in minutes whose last refusal is at or after `since`
/// (a minute that straddles `since` counts whole). For the store's alert reads.
pub(super) fn count_since(conn: &Connection, since: &str) -> rusqlite::Result<i64> {
    conn.query_row("SELECT COALESCE(SUM(count), 0) FROM calendly_rejections WHERE last_at >= ?1", [since], |r| r.get(0))
}

/// The same, by reason.
pub(super) fn by_reason_since(conn: &Connection, since: &str) -> rusqlite::Result<Vec<(String, i64)>> {
    let mut stmt =
        conn.prepare_cached("SELECT reason, SUM(count) FROM calendly_rejections WHERE last_at >= ?1 GROUP BY reason ORDER BY reason")?;
    let rows = stmt.query_map([since], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

/// Delete up to `limit` minutes older than `before`; returns how many went.
pub(super) fn prune(conn: &Connection, before: &str, limit: i64) -> rusqlite::Result<usize> {
    conn.execute(
        "DELETE FROM calendly_rejections WHERE rowid IN (SELECT rowid FROM calendly_rejections WHERE last_at < ?1 LIMIT ?2)",
        params![before, limit],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up_per_minute_and_reason() {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::store::migrations::migrate(&mut conn).unwrap();
        add(&conn, "2026-12-01T17:20:01.000Z", "mismatch", 2).unwrap();
        add(&conn, "2026-12-01T17:20:59.000Z", "mismatch", 1).unwrap();
        add(&conn, "2026-12-01T17:21:00.000Z", "missing", 4).unwrap();
        let rows: i64 = conn.query_row("SELECT COUNT(*) FROM calendly_rejections", [], |r| r.get(0)).unwrap();
        assert_eq!(rows, 2);
        assert_eq!(count_since(&conn, "2026-12-01T17:00:00.000Z").unwrap(), 7);
        assert_eq!(count_since(&conn, "2026-12-01T17:20:59.500Z").unwrap(), 4);
        assert_eq!(by_reason_since(&conn, "2026-12-01T00:00:00.000Z").unwrap(), vec![("mismatch".into(), 3), ("missing".into(), 4)]);
        assert_eq!(prune(&conn, "2026-12-01T17:20:59.500Z", 100).unwrap(), 1);
        assert_eq!(count_since(&conn, "2000-01-01T00:00:00.000Z").unwrap(), 4);
    }
}
