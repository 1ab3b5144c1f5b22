//! Deleting what is past its retention, one chunk per call: each chunk is one
//! short request through the writer, so a prune never holds it for long and
//! never races it for SQLite's write lock. Each op returns how many rows went
//! (a chunk that comes back short means nothing more is due).
//!
//! A cutoff of None means "no age limit" (a retention too long to compute).

use time::OffsetDateTime;

use super::error::StoreResult;
use super::sql::args;
use super::{changes, rejections, timefmt, Store};

/// The stored form of a cutoff: rows stamped before it are due. None keeps
/// every row (no stored time is before year 0). Bound as a parameter, it is
/// compared as text on SQLite and as a timestamptz on PostgreSQL.
fn stamp(before: Option<OffsetDateTime>) -> String {
    before.map(timefmt::format).unwrap_or_else(|| "0000-01-01T00:00:00.000Z".into())
}

impl Store {
    /// Delete up to `limit` changes committed before `before`, or beyond the
    /// newest `keep_last` (whichever reaches further), oldest first.
    pub async fn prune_changes(&self, before: Option<OffsetDateTime>, keep_last: u64, limit: usize) -> StoreResult<usize> {
        let cutoff = stamp(before);
        let keep = i64::try_from(keep_last).unwrap_or(i64::MAX);
        self.writer
            .write(move |tx| {
                let head = changes::head(tx.conn())?;
                tx.conn().execute(
                    "DELETE FROM changes WHERE seq IN (
                        SELECT seq FROM changes WHERE committed_at < ?1 OR seq <= ?2 ORDER BY seq LIMIT ?3)",
                    args![cutoff, head.saturating_sub(keep), limit as i64],
                )
            })
            .await
    }

    /// Drop the raw payload of up to `limit` Calendly deliveries received
    /// before `before`; each delivery's row (event, invitee, outcome, error,
    /// times) stays.
    pub async fn drop_calendly_payloads(&self, before: Option<OffsetDateTime>, limit: usize) -> StoreResult<usize> {
        let cutoff = stamp(before);
        self.writer
            .write(move |tx| {
                tx.conn().execute(
                    "UPDATE calendly_webhook_events SET payload = NULL WHERE id IN (
                        SELECT id FROM calendly_webhook_events WHERE payload IS NOT NULL AND received_at < ?1 LIMIT ?2)",
                    args![cutoff, limit as i64],
                )
            })
            .await
    }

    /// Delete up to `limit` account audit entries written before `before`.
    pub async fn prune_audit(&self, before: Option<OffsetDateTime>, limit: usize) -> StoreResult<usize> {
        let cutoff = stamp(before);
        self.writer
            .write(move |tx| {
                tx.conn().execute(
                    "DELETE FROM audit_log WHERE id IN (SELECT id FROM audit_log WHERE at < ?1 ORDER BY id LIMIT ?2)",
                    args![cutoff, limit as i64],
                )
            })
            .await
    }

    /// Delete up to `limit` Calendly delivery rows (every outcome) and up to
    /// `limit` per-minute rejection counts from before `before`; returns the
    /// larger of the two counts.
    pub async fn drop_calendly_outcomes(&self, before: Option<OffsetDateTime>, limit: usize) -> StoreResult<usize> {
        let cutoff = stamp(before);
        self.writer
            .write(move |tx| {
                let events = tx.conn().execute(
                    "DELETE FROM calendly_webhook_events WHERE id IN (
                        SELECT id FROM calendly_webhook_events WHERE received_at < ?1 LIMIT ?2)",
                    args![cutoff, limit as i64],
                )?;
                let minutes = rejections::prune(tx.conn(), &cutoff, limit as i64)?;
                Ok(events.max(minutes))
            })
            .await
    }
}
