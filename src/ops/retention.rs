//! Background retention: the `changes` log is pruned by age and by count,
//! raw Calendly payloads (personal data: names, emails, answers) older than
//! `calendly.keep_payloads` are dropped, keeping each delivery's outcome row,
//! account audit entries older than `auth.audit_retention` are deleted,
//! and outcome rows and per-minute rejection counts older than
//! `calendly.keep_outcomes` are deleted.
//! Deletes go through the writer in small chunks, so a prune never holds the
//! writer for long and never races it for SQLite's write lock.

use std::time::Duration;

use crate::startup::App;

const CHUNK: i64 = 2000;

/// The stored time `age` ago: rows stamped before it are past their
/// retention. Config caps durations at 100 years; a longer one (set in code)
/// keeps everything rather than overflow.
fn cutoff(age: &crate::duration::Dur) -> String {
    let age = time::Duration::seconds(i64::try_from(age.as_secs()).unwrap_or(i64::MAX));
    match crate::store::timefmt::now().checked_sub(age) {
        Some(t) => crate::store::timefmt::format(t),
        None => "0000-01-01T00:00:00.000Z".into(),
    }
}

/// Delete one chunk of changes past retention; returns how many went.
pub async fn prune_once(app: &App) -> crate::store::StoreResult<usize> {
    let cutoff = cutoff(&app.config.changes.retention_age);
    let keep = app.config.changes.retention_rows as i64;
    app.store
        .writer
        .write(move |tx| {
            let head = crate::store::changes::head(tx.conn())?;
            let n = tx.conn().execute(
                "DELETE FROM changes WHERE seq IN (
                    SELECT seq FROM changes WHERE committed_at < ?1 OR seq <= ?2 ORDER BY seq LIMIT ?3)",
                rusqlite::params![cutoff, head - keep, CHUNK],
            )?;
            Ok(n)
        })
        .await
}

/// Drop one chunk of raw Calendly payloads past `calendly.keep_payloads`;
/// the event row (event, invitee, outcome, error, times) stays.
pub async fn reduce_payloads_once(app: &App) -> crate::store::StoreResult<usize> {
    let cutoff = cutoff(&app.config.calendly.keep_payloads);
    app.store
        .writer
        .write(move |tx| {
            Ok(tx.conn().execute(
                "UPDATE calendly_webhook_events SET payload = NULL WHERE id IN (
                    SELECT id FROM calendly_webhook_events WHERE payload IS NOT NULL AND received_at < ?1 LIMIT ?2)",
                rusqlite::params![cutoff, CHUNK],
            )?)
        })
        .await
}

/// Delete one chunk of audit entries older than `auth.audit_retention`.
pub async fn prune_audit_once(app: &App) -> crate::store::StoreResult<usize> {
    let cutoff = cutoff(&app.config.auth.audit_retention);
    app.store.prune_audit(cutoff, CHUNK).await
}

/// Delete one chunk of Calendly delivery rows (every outcome) and of
/// per-minute rejection counts older than `calendly.keep_outcomes`.
pub async fn drop_outcomes_once(app: &App) -> crate::store::StoreResult<usize> {
    let cutoff = cutoff(&app.config.calendly.keep_outcomes);
    app.store
        .writer
        .write(move |tx| {
            let events = tx.conn().execute(
                "DELETE FROM calendly_webhook_events WHERE id IN (
                    SELECT id FROM calendly_webhook_events WHERE received_at < ?1 LIMIT ?2)",
                rusqlite::params![cutoff, CHUNK],
            )?;
            let minutes = crate::store::rejections::prune(tx.conn(), &cutoff, CHUNK)?;
            Ok(events.max(minutes))
        })
        .await
}

/// Run a chunked job until a chunk comes back short; returns the total.
async fn drain<F, Fut>(app: &App, what: &str, chunk: F) -> usize
where
    F: Fn(App) -> Fut,
    Fut: std::future::Future<Output = crate::store::StoreResult<usize>>,
{
    let mut total = 0;
    loop {
        // A shutdown stops between chunks: each chunk is its own transaction.
        if *app.shutdown.borrow() {
            return total;
        }
        match chunk(app.clone()).await {
            Ok(n) => {
                total += n;
                if (n as i64) < CHUNK {
                    return total;
                }
                tokio::task::yield_now().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "{what} failed");
                return total;
            }
        }
    }
}

/// Prune every `changes.prune_interval`, chunk by chunk, until shutdown.
pub async fn run(app: App) {
    let mut tick = tokio::time::interval(app.config.changes.prune_interval.0.max(Duration::from_millis(100)));
    let mut shutdown = app.shutdown.clone();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let pruned = drain(&app, "pruning the change log", |a| async move { prune_once(&a).await }).await;
        if pruned > 0 {
            tracing::info!(pruned, "change log pruned");
        }
        let reduced = drain(&app, "dropping old Calendly payloads", |a| async move { reduce_payloads_once(&a).await }).await;
        if reduced > 0 {
            tracing::info!(payloads = reduced, "old Calendly payloads dropped; their outcome rows are kept");
        }
        let audited = drain(&app, "pruning the audit log", |a| async move { prune_audit_once(&a).await }).await;
        if audited > 0 {
            tracing::info!(entries = audited, "old audit entries deleted (auth.audit_retention)");
        }
        let dropped = drain(&app, "deleting old Calendly outcome rows", |a| async move { drop_outcomes_once(&a).await }).await;
        if dropped > 0 {
            tracing::info!(rows = dropped, "Calendly delivery rows older than calendly.keep_outcomes deleted");
        }
    }
}
