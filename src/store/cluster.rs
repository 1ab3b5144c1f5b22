//! What several nodes on one database share: the node registry
//! (`cluster_nodes`), the leases for work that must run on one node at a
//! time (`cluster_leases`), and the fence that makes a lease holder's writes
//! check, in their own transaction, that the lease is still theirs.
//!
//! A lease's `token` rises by one on every acquisition. A task running under
//! a lease wraps its work in [`fenced`]; every write it makes through the
//! writer then first reads the lease row (locked `FOR SHARE` on PostgreSQL,
//! so a takeover waits for the write's COMMIT) and refuses to write when the
//! holder, the token or the expiry no longer match. A session advisory lock
//! would not do: it vanishes with its connection while the node's task keeps
//! running, so two nodes could act at once.
//!
//! Times are the nodes' clocks (the same ones that check token expiry), so
//! the nodes' clocks must agree to well within `cluster.lease_ttl`.

use super::error::{StoreError, StoreResult};
use super::provider_accounts::provider_sql;
use super::sql::{args, Conn, Engine, Row};
use super::{changes, timefmt, Store};
use crate::model::Provider;

/// A lease as held: the fencing token of this holder's acquisition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub lease: String,
    pub holder: String,
    pub token: i64,
}

tokio::task_local! {
    /// The lease the current task's writes are made under (see [`fenced`]).
    static FENCE: Fence;
}

/// Run `work` with every write it makes through the store checked against
/// `fence` in the write's own transaction.
pub async fn fenced<F: std::future::Future>(fence: Fence, work: F) -> F::Output {
    FENCE.scope(fence, work).await
}

/// The fence of the task that is submitting a write, if it runs under one.
pub(super) fn current_fence() -> Option<Fence> {
    FENCE.try_with(Fence::clone).ok()
}

/// Refuse the write unless `fence` still holds at `now` (called first in the
/// write's transaction).
pub(super) fn check_fence(conn: &Conn<'_>, fence: &Fence, now: &str) -> StoreResult<()> {
    let lock = match conn.engine() {
        Engine::Sqlite => "",
        // A takeover's UPDATE waits until this write has committed.
        Engine::Postgres => " FOR SHARE",
    };
    let held = conn
        .value_opt::<i64>(
            &format!("SELECT token FROM cluster_leases WHERE name = ?1 AND holder = ?2 AND token = ?3 AND expires_at > ?4{lock}"),
            args![fence.lease.as_str(), fence.holder.as_str(), fence.token, now],
        )?
        .is_some();
    if held {
        Ok(())
    } else {
        Err(StoreError::Unavailable(format!("this node no longer holds the lease {}; another node does this work now", fence.lease)))
    }
}

/// A lease row, as `/api/admin/health` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LeaseRow {
    pub name: String,
    pub holder: Option<String>,
    pub token: i64,
    pub acquired_at: Option<String>,
    pub expires_at: Option<String>,
}

/// A node as it registered itself, with its last heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodeRow {
    pub id: String,
    pub address: String,
    pub version: String,
    pub started_at: String,
    pub heartbeat_at: String,
    /// The newest seq the node's hub had published at its last heartbeat.
    pub published_seq: i64,
    pub settings_fingerprint: String,
}

fn node_from_row(r: &Row) -> StoreResult<NodeRow> {
    Ok(NodeRow {
        id: r.get(0)?,
        address: r.get(1)?,
        version: r.get(2)?,
        started_at: r.get(3)?,
        heartbeat_at: r.get(4)?,
        published_seq: r.get(5)?,
        settings_fingerprint: r.get(6)?,
    })
}

fn later(now: &str, ttl: std::time::Duration) -> String {
    let at = timefmt::parse(now).unwrap_or_else(timefmt::now);
    timefmt::format(at + time::Duration::try_from(ttl).unwrap_or(time::Duration::SECOND))
}

impl Store {
    /// Take `name` for `holder` until `ttl` from now, if nobody holds it or
    /// its holder let it expire; returns the new fencing token, or None
    /// when another holder's lease is live.
    pub async fn acquire_lease(&self, name: &str, holder: &str, ttl: std::time::Duration) -> StoreResult<Option<i64>> {
        let (name, holder) = (name.to_string(), holder.to_string());
        self.bookkeeping(move |conn, now| {
                conn.value_opt::<i64>(
                    "INSERT INTO cluster_leases (name, holder, token, acquired_at, expires_at) VALUES (?1, ?2, 1, ?3, ?4)
                     ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, token = cluster_leases.token + 1,
                         acquired_at = excluded.acquired_at, expires_at = excluded.expires_at
                     WHERE cluster_leases.holder IS NULL OR cluster_leases.expires_at IS NULL OR cluster_leases.expires_at <= excluded.acquired_at
                     RETURNING token",
                    args![name, holder, now, later(now, ttl)],
                )
            })
            .await
    }

    /// Extend a lease this holder still has (same token) to `ttl` from now;
    /// false when it was taken over meanwhile.
    pub async fn renew_lease(&self, fence: &Fence, ttl: std::time::Duration) -> StoreResult<bool> {
        let fence = fence.clone();
        self.bookkeeping(move |conn, now| {
            let until = later(now, ttl);
            let n = conn.execute(
                "UPDATE cluster_leases SET expires_at = ?4 WHERE name = ?1 AND holder = ?2 AND token = ?3",
                args![fence.lease.as_str(), fence.holder.as_str(), fence.token, until],
            )?;
            Ok(n == 1)
        })
        .await
    }

    /// Give a lease up (a clean stop, or the work is done), so another node
    /// can take it at once instead of after its expiry.
    pub async fn release_lease(&self, fence: &Fence) -> StoreResult<()> {
        let fence = fence.clone();
        self.bookkeeping(move |conn, _| {
            conn.execute(
                "UPDATE cluster_leases SET holder = NULL, expires_at = NULL WHERE name = ?1 AND holder = ?2 AND token = ?3",
                args![fence.lease.as_str(), fence.holder.as_str(), fence.token],
            )?;
            Ok(())
        })
        .await
    }

    /// The leases whose name does not start with `skip_prefix` (per-user
    /// leases are many and short), by name.
    pub async fn leases(&self, skip_prefix: &str) -> StoreResult<Vec<LeaseRow>> {
        let pattern = format!("{skip_prefix}%");
        self.read(move |c| {
            c.query_map(
                "SELECT name, holder, token, acquired_at, expires_at FROM cluster_leases WHERE name NOT LIKE ?1 ORDER BY name",
                args![pattern],
                |r| Ok(LeaseRow { name: r.get(0)?, holder: r.get(1)?, token: r.get(2)?, acquired_at: r.get(3)?, expires_at: r.get(4)? }),
            )
        })
        .await
    }

    /// Register this node, or refresh its row (same id started again).
    pub async fn register_node(&self, node: NodeRow) -> StoreResult<()> {
        self.bookkeeping(move |conn, _| {
            conn.execute(
                "INSERT INTO cluster_nodes (id, address, version, started_at, heartbeat_at, published_seq, settings_fingerprint)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (id) DO UPDATE SET address = excluded.address, version = excluded.version,
                         started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at,
                         published_seq = excluded.published_seq, settings_fingerprint = excluded.settings_fingerprint",
                args![
                    node.id,
                    node.address,
                    node.version,
                    node.started_at,
                    node.heartbeat_at,
                    node.published_seq,
                    node.settings_fingerprint
                ],
            )?;
            Ok(())
        })
        .await
    }

    /// This node is alive and has published up to `published`; nodes silent
    /// for longer than `forget_after` are dropped from the registry.
    pub async fn heartbeat(&self, id: &str, published: i64, forget_after: std::time::Duration) -> StoreResult<()> {
        let id = id.to_string();
        self.bookkeeping(move |conn, now| {
            let forget_before = timefmt::format(
                timefmt::parse(now).unwrap_or_else(timefmt::now) - time::Duration::try_from(forget_after).unwrap_or(time::Duration::DAY),
            );
            conn.execute(
                "UPDATE cluster_nodes SET heartbeat_at = ?2, published_seq = ?3 WHERE id = ?1",
                args![id.as_str(), now, published],
            )?;
            conn.execute("DELETE FROM cluster_nodes WHERE heartbeat_at < ?1", args![forget_before])?;
            Ok(())
        })
        .await
    }

    /// This node stopped cleanly: its row goes.
    pub async fn deregister_node(&self, id: &str) -> StoreResult<()> {
        let id = id.to_string();
        self.bookkeeping(move |conn, _| {
            conn.execute("DELETE FROM cluster_nodes WHERE id = ?1", args![id])?;
            Ok(())
        })
        .await
    }

    /// Every registered node, by id.
    pub async fn nodes(&self) -> StoreResult<Vec<NodeRow>> {
        self.read(|c| {
            c.query_map(
                "SELECT id, address, version, started_at, heartbeat_at, published_seq, settings_fingerprint FROM cluster_nodes ORDER BY id",
                args![],
                node_from_row,
            )
        })
        .await
    }

    /// The head of the change log as the database has it now (every node's
    /// commits, not only this node's).
    pub async fn read_log_head(&self) -> StoreResult<i64> {
        self.read(changes::head).await
    }
}

/// Syncs asked for and finished, per user and provider (its
/// `*_sync_status` table): how a request made on a node that could not
/// take the user's sync lease reaches the node that holds it.
impl Store {
    /// Count one more sync asked for this user.
    pub async fn want_pass(&self, provider: Provider, user_id: i64) -> StoreResult<()> {
        let table = provider_sql(provider).status_table;
        self.bookkeeping(move |conn, _| {
            conn.execute(
                &format!(
                    "INSERT INTO {table} (user_id, passes_wanted) VALUES (?1, 1)
                     ON CONFLICT (user_id) DO UPDATE SET passes_wanted = {table}.passes_wanted + 1"
                ),
                args![user_id],
            )?;
            Ok(())
        })
        .await
    }

    /// Syncs asked for so far, and finished, for this user.
    pub async fn passes(&self, provider: Provider, user_id: i64) -> StoreResult<(i64, i64)> {
        let table = provider_sql(provider).status_table;
        self.read(move |c| {
            Ok(c.query_opt(&format!("SELECT passes_wanted, passes_done FROM {table} WHERE user_id = ?1"), args![user_id])?
                .map(|r| Ok::<_, StoreError>((r.get::<i64>(0)?, r.get::<i64>(1)?)))
                .transpose()?
                .unwrap_or((0, 0)))
        })
        .await
    }

    /// Users with a sync asked for and not served, whose sync lease nobody
    /// holds: the node that counted the request or held the lease died.
    pub async fn unserved_passes(&self, provider: Provider, lease_prefix: &str) -> StoreResult<Vec<i64>> {
        let table = provider_sql(provider).status_table;
        let prefix = lease_prefix.to_string();
        let now = timefmt::format(timefmt::now());
        self.read(move |c| {
            c.query_map(
                &format!(
                    "SELECT s.user_id FROM {table} s WHERE s.passes_wanted > s.passes_done
                     AND NOT EXISTS (SELECT 1 FROM cluster_leases l WHERE l.name = ?1 || CAST(s.user_id AS TEXT)
                                     AND l.holder IS NOT NULL AND l.expires_at > ?2)
                     ORDER BY s.user_id"
                ),
                args![prefix, now],
                |r| r.get::<i64>(0),
            )
        })
        .await
    }

    /// A pass that started when `wanted` syncs had been asked for has
    /// finished: every one of them is served.
    pub async fn passes_done(&self, provider: Provider, user_id: i64, wanted: i64) -> StoreResult<()> {
        let table = provider_sql(provider).status_table;
        self.bookkeeping(move |conn, _| {
            conn.execute(&format!("UPDATE {table} SET passes_done = ?2 WHERE user_id = ?1 AND passes_done < ?2"), args![user_id, wanted])?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::DatabaseConfig;

    fn open(dir: &tempfile::TempDir) -> Store {
        let db = DatabaseConfig { path: dir.path().join("t.db").to_string_lossy().into_owned(), ..Default::default() };
        Store::open(&db).unwrap().store
    }

    async fn rejections(store: &Store) -> i64 {
        store.read(|c| c.value("SELECT COALESCE(CAST(SUM(count) AS BIGINT), 0) FROM calendly_rejections", args![])).await.unwrap()
    }

    #[tokio::test]
    async fn a_write_under_a_lease_another_node_took_over_is_refused_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let ttl = Duration::from_millis(300);
        let a = store.acquire_lease("retention", "node-a", ttl).await.unwrap().expect("a free lease is taken");
        assert_eq!(store.acquire_lease("retention", "node-b", ttl).await.unwrap(), None, "a live lease is not taken");
        let held_by_a = Fence { lease: "retention".into(), holder: "node-a".into(), token: a };
        fenced(held_by_a.clone(), store.count_calendly_rejections(vec![("bad_signature", 1)])).await.expect("the holder writes");
        assert!(store.renew_lease(&held_by_a, ttl).await.unwrap(), "the holder renews");

        tokio::time::sleep(Duration::from_millis(450)).await;
        let b = store.acquire_lease("retention", "node-b", ttl).await.unwrap().expect("an expired lease is taken over");
        assert_eq!(b, a + 1, "every acquisition gets the next fencing token");
        let refused = fenced(held_by_a.clone(), store.count_calendly_rejections(vec![("bad_signature", 1)])).await;
        assert!(matches!(refused, Err(StoreError::Unavailable(_))), "{refused:?}");
        assert_eq!(rejections(&store).await, 1, "the refused write left nothing behind");
        assert!(!store.renew_lease(&held_by_a, ttl).await.unwrap(), "the old holder cannot renew what it lost");

        // Handed back, it is free at once, with the next token.
        let held_by_b = Fence { lease: "retention".into(), holder: "node-b".into(), token: b };
        store.release_lease(&held_by_b).await.unwrap();
        assert_eq!(store.acquire_lease("retention", "node-a", ttl).await.unwrap(), Some(b + 1));
        // Writes outside any lease are never checked.
        store.count_calendly_rejections(vec![("bad_signature", 1)]).await.unwrap();
        assert_eq!(rejections(&store).await, 2);
    }
}
