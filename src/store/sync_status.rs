//! Per user and provider, how their calendar sync is doing (the provider's
//! `*_sync_status` row, the same columns for each): the last notification,
//! the last pass and its outcome, channel renewals, what the safety net
//! found. Written once for Google and Microsoft; never a token.

use super::provider_accounts::provider_sql;
use super::sql::args;
use super::{Store, StoreResult};
use crate::model::{Provider, SyncKind, SyncOutcome};

/// How one sync pass went, for the user's status row.
#[derive(Debug, Clone)]
pub struct SyncRecord {
    /// What the pass did; None when it failed before it knew.
    pub kind: Option<SyncKind>,
    pub outcome: SyncOutcome,
    pub error: Option<String>,
    /// The pass listed a calendar in full (and succeeded).
    pub full: bool,
    /// The pass was the safety net's.
    pub safety_net: bool,
    pub created: u64,
    pub updated: u64,
    pub canceled: u64,
    /// Meeting changes the pass made (created, updated, canceled, removed).
    pub changes: u64,
}

/// A channel renewal that failed, and when it is tried again.
#[derive(Debug, Clone)]
pub struct RenewalFailure {
    /// Failures in a row.
    pub failures: u32,
    pub error: String,
    pub next_attempt_at: Option<String>,
}

/// The `last_sync_outcome` column's words, which admins read: a failure has
/// been stored as `failed` since the column exists (the metric says `error`).
fn stored_outcome(outcome: SyncOutcome) -> &'static str {
    match outcome {
        SyncOutcome::Error => "failed",
        other => other.as_str(),
    }
}

impl Store {
    /// The provider notified a change for this user.
    pub async fn record_notification(&self, provider: Provider, user_id: i64) -> StoreResult<()> {
        let table = provider_sql(provider).status_table;
        self.writer
            .write(move |tx| {
                tx.conn().execute(
                    &format!(
                        "INSERT INTO {table} (user_id, last_notification_at, notifications) VALUES (?1, ?2, 1)
                         ON CONFLICT (user_id) DO UPDATE SET last_notification_at = excluded.last_notification_at,
                             notifications = {table}.notifications + 1"
                    ),
                    args![user_id, tx.now()],
                )?;
                Ok(())
            })
            .await
    }

    /// A sync pass of this user ended.
    pub async fn record_sync(&self, provider: Provider, user_id: i64, pass: SyncRecord) -> StoreResult<()> {
        let table = provider_sql(provider).status_table;
        self.writer
            .write(move |tx| {
                let now = tx.now().to_string();
                let ok = pass.outcome == SyncOutcome::Ok;
                tx.conn()
                    .execute(&format!("INSERT INTO {table} (user_id) VALUES (?1) ON CONFLICT (user_id) DO NOTHING"), args![user_id])?;
                tx.conn().execute(
                    &format!(
                        "UPDATE {table} SET
                        last_sync_at = ?2,
                        last_sync_kind = COALESCE(CAST(?3 AS TEXT), last_sync_kind),
                        last_sync_outcome = ?4,
                        last_error = ?5,
                        last_full_sync_at = CASE WHEN ?6 THEN ?2 ELSE last_full_sync_at END,
                        syncs = syncs + 1,
                        failed_syncs = failed_syncs + ?7,
                        created = created + ?8,
                        updated = updated + ?9,
                        canceled = canceled + ?10,
                        safety_net_syncs = safety_net_syncs + ?11,
                        safety_net_changes = safety_net_changes + ?12,
                        last_safety_net_at = CASE WHEN ?13 THEN ?2 ELSE last_safety_net_at END,
                        last_safety_net_changes_at = CASE WHEN ?13 AND ?12 > 0 THEN ?2 ELSE last_safety_net_changes_at END
                     WHERE user_id = ?1"
                    ),
                    args![
                        user_id,
                        now,
                        pass.kind.map(SyncKind::as_str),
                        stored_outcome(pass.outcome),
                        pass.error,
                        ok && pass.full,
                        (!ok) as i64,
                        pass.created as i64,
                        pass.updated as i64,
                        pass.canceled as i64,
                        pass.safety_net as i64,
                        if pass.safety_net { pass.changes as i64 } else { 0 },
                        // ?11 is a count on PostgreSQL (bigint); the CASEs need a boolean of their own.
                        pass.safety_net
                    ],
                )?;
                Ok(())
            })
            .await
    }

    /// A channel renewal of this user worked (None) or failed.
    pub async fn record_channel_renewal(&self, provider: Provider, user_id: i64, failure: Option<RenewalFailure>) -> StoreResult<()> {
        let table = provider_sql(provider).status_table;
        self.writer
            .write(move |tx| {
                let now = tx.now().to_string();
                let conn = tx.conn();
                conn.execute(&format!("INSERT INTO {table} (user_id) VALUES (?1) ON CONFLICT (user_id) DO NOTHING"), args![user_id])?;
                match &failure {
                    None => conn.execute(
                        &format!(
                            "UPDATE {table} SET renewals = renewals + 1, last_renewal_at = ?2, renewal_failures = 0,
                                next_renewal_attempt_at = NULL WHERE user_id = ?1"
                        ),
                        args![user_id, now],
                    )?,
                    Some(f) => conn.execute(
                        &format!(
                            "UPDATE {table} SET renewal_failures = ?2, last_renewal_error = ?3, last_renewal_error_at = ?4,
                                next_renewal_attempt_at = ?5 WHERE user_id = ?1"
                        ),
                        args![user_id, f.failures, f.error, now, f.next_attempt_at],
                    )?,
                };
                Ok(())
            })
            .await
    }

    /// When the provider last notified, for anyone (the public status page).
    pub async fn last_notification_at(&self, provider: Provider) -> StoreResult<Option<String>> {
        let table = provider_sql(provider).status_table;
        self.read(move |c| c.value(&format!("SELECT MAX(last_notification_at) FROM {table}"), args![])).await
    }
}
