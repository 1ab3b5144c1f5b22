//! Account lifecycle writes: invite, change role, disable/enable, sign out
//! everywhere, remove; and the audit log they write. Each runs inside one
//! writer transaction, so the last-admin rule is checked where the write
//! happens (two concurrent demotions cannot both pass), and every change of
//! a user or of their synced rows goes through `WriteTx` and is logged
//! (a `users` change carries only the public columns).

use rusqlite::types::Value as SqlValue;
use serde::Serialize;
use serde_json::{json, Value};

use super::error::{StoreError, StoreResult};
use super::login_links::{self, NewLoginLink};
use super::sql::{args, Conn, Engine, Row};
use super::tables::Table;
use super::users::{self, User};
use super::writer::WriteTx;
use super::Store;
use crate::model::{AccountStatus, Role};

/// Who made an account change, for the audit log.
#[derive(Debug, Clone)]
pub struct Actor {
    /// The acting user, or None for the command line.
    pub user_id: Option<i64>,
    /// How the audit log names them: an email, or `cli`.
    pub label: String,
}

impl Actor {
    pub fn cli() -> Actor {
        Actor { user_id: None, label: "cli".into() }
    }
}

fn user_row(tx: &WriteTx<'_, '_>, id: i64) -> StoreResult<Value> {
    tx.get(Table::Users, id)?.ok_or_else(|| StoreError::NotFound(format!("user {id} does not exist")))
}

fn field<'a>(row: &'a Value, name: &str) -> &'a str {
    row.get(name).and_then(Value::as_str).unwrap_or_default()
}

/// Refuse when `id` is the only active admin left.
fn ensure_another_admin(conn: &Conn<'_>, id: i64, what: &str) -> StoreResult<()> {
    let others: i64 = conn.value("SELECT COUNT(*) FROM users WHERE role = 'admin' AND status = 'active' AND id <> ?1", args![id])?;
    if others == 0 {
        return Err(StoreError::Conflict(format!(
            "user {id} is the last active admin and cannot be {what}; make another user admin first"
        )));
    }
    Ok(())
}

/// What [`remove`] refuses, checked on a read connection: a user that does
/// not exist, or the last active admin (callers check before doing anything
/// outside the database; `remove` checks again in its transaction).
fn check_removable(conn: &Conn<'_>, id: i64) -> StoreResult<()> {
    let account = users::account(conn, id)?.ok_or_else(|| StoreError::NotFound(format!("user {id} does not exist")))?;
    if account.admin && account.active {
        ensure_another_admin(conn, id, "removed")?;
    }
    Ok(())
}

fn is_active_admin(row: &Value) -> bool {
    field(row, "role") == Role::Admin.as_str() && field(row, "status") == AccountStatus::Active.as_str()
}

fn audit(tx: &WriteTx<'_, '_>, actor: &Actor, action: &str, target: &Value, detail: Value) -> StoreResult<()> {
    tx.conn().execute(
        "INSERT INTO audit_log (at, actor_id, actor, action, target_id, target, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        args![
            tx.now(),
            actor.user_id,
            actor.label,
            action,
            target.get("id").and_then(Value::as_i64),
            target.get("email").and_then(Value::as_str),
            detail,
        ],
    )?;
    Ok(())
}

/// Create a user (active); returns the public row.
fn invite(tx: &mut WriteTx<'_, '_>, actor: &Actor, email: &str, name: Option<&str>, role: Role) -> StoreResult<Value> {
    let email = email.trim();
    if !users::valid_email(email) {
        return Err(StoreError::Invalid(format!("\"{email}\" is not an email address")));
    }
    if users::by_email(tx.conn(), email)?.is_some() {
        return Err(StoreError::Conflict(format!("a user with email {email} already exists")));
    }
    let name = name.map(str::trim).filter(|n| !n.is_empty());
    let row = tx.insert(
        Table::Users,
        &[
            ("email", SqlValue::Text(email.to_string())),
            ("name", name.map_or(SqlValue::Null, |n| SqlValue::Text(n.to_string()))),
            ("role", SqlValue::Text(role.as_str().to_string())),
        ],
    )?;
    audit(tx, actor, "invite", &row, json!({"role": role}))?;
    Ok(row)
}

/// `admin` or `user`. Demoting the last active admin is refused.
fn set_role(tx: &mut WriteTx<'_, '_>, actor: &Actor, id: i64, role: Role) -> StoreResult<Value> {
    let row = user_row(tx, id)?;
    let before = field(&row, "role").to_string();
    if before == role.as_str() {
        return Ok(row);
    }
    if is_active_admin(&row) {
        ensure_another_admin(tx.conn(), id, "demoted")?;
    }
    let after = tx
        .update(Table::Users, id, &[("role", SqlValue::Text(role.as_str().into()))])?
        .ok_or_else(|| StoreError::NotFound(format!("user {id} does not exist")))?;
    audit(tx, actor, "role", &after, json!({"from": before, "to": role}))?;
    Ok(after)
}

/// `active` or `disabled`. Disabling the last active admin is refused.
fn set_status(tx: &mut WriteTx<'_, '_>, actor: &Actor, id: i64, status: AccountStatus) -> StoreResult<Value> {
    let row = user_row(tx, id)?;
    if field(&row, "status") == status.as_str() {
        return Ok(row);
    }
    if is_active_admin(&row) {
        ensure_another_admin(tx.conn(), id, "disabled")?;
    }
    let after = tx
        .update(Table::Users, id, &[("status", SqlValue::Text(status.as_str().into()))])?
        .ok_or_else(|| StoreError::NotFound(format!("user {id} does not exist")))?;
    let action = match status {
        AccountStatus::Disabled => "disable",
        AccountStatus::Active => "enable",
    };
    audit(tx, actor, action, &after, json!({}))?;
    Ok(after)
}

/// Sign out everywhere: every token issued until now is refused.
fn sign_out(tx: &mut WriteTx<'_, '_>, actor: &Actor, id: i64) -> StoreResult<Value> {
    user_row(tx, id)?;
    let now = tx.now().to_string();
    let after = tx
        .update(Table::Users, id, &[("tokens_valid_after", SqlValue::Text(now))])?
        .ok_or_else(|| StoreError::NotFound(format!("user {id} does not exist")))?;
    audit(tx, actor, "signout", &after, json!({}))?;
    Ok(after)
}

/// What a removal deleted.
#[derive(Debug, Clone)]
pub struct Removed {
    pub user: Value,
    /// Synced rows deleted (each logged as a DELETE change).
    pub rows: usize,
}

/// Delete the account and everything of theirs: meetings, pipeline and
/// clients one by one through the writer (each a logged DELETE; rows of
/// others that pointed at their clients lose the link, logged too), their
/// sign-in links, channels and sync state. Their Calendly signing keys stay
/// (other hosts' deliveries may be signed with them), unassigned.
fn remove(tx: &mut WriteTx<'_, '_>, actor: &Actor, id: i64) -> StoreResult<Removed> {
    let row = user_row(tx, id)?;
    if is_active_admin(&row) {
        ensure_another_admin(tx.conn(), id, "removed")?;
    }
    // The account goes first in the log: its open sockets see it before
    // any DELETE of their rows, and stop there (see `realtime::session`).
    if field(&row, "status") == AccountStatus::Active.as_str() {
        tx.update(Table::Users, id, &[("status", SqlValue::Text(AccountStatus::Disabled.as_str().into()))])?;
    }
    let ids_where = |tx: &WriteTx<'_, '_>, sql: &str| -> StoreResult<Vec<i64>> { tx.conn().query_map(sql, args![id], |r| r.get(0)) };
    for table in [Table::Meetings, Table::Pipeline] {
        let linked = ids_where(
            tx,
            &format!(
                "SELECT id FROM {} WHERE user_id <> ?1 AND client_id IN (SELECT id FROM clients WHERE user_id = ?1) ORDER BY id",
                table.name()
            ),
        )?;
        for rid in linked {
            tx.update(table, rid, &[("client_id", SqlValue::Null)])?;
        }
    }
    let mut deleted = 0;
    for table in [Table::Meetings, Table::Pipeline, Table::Clients] {
        for rid in ids_where(tx, &format!("SELECT id FROM {} WHERE user_id = ?1 ORDER BY id", table.name()))? {
            if tx.delete(table, rid)?.is_some() {
                deleted += 1;
            }
        }
    }
    let conn = tx.conn();
    conn.execute("UPDATE calendly_signing_keys SET user_id = NULL WHERE user_id = ?1", args![id])?;
    conn.execute("UPDATE calendly_webhook_events SET user_id = NULL, meeting_id = NULL WHERE user_id = ?1", args![id])?;
    // Every other table that refers to users (sign-in links, channels, sync
    // state, and whatever later migrations add) loses this user's rows.
    // Each engine lists its foreign keys its own way.
    let refs_sql = match conn.engine() {
        Engine::Sqlite => {
            "SELECT m.name, f.\"from\" FROM sqlite_master m, pragma_foreign_key_list(m.name) f
             WHERE m.type = 'table' AND f.\"table\" = 'users' ORDER BY m.name"
        }
        Engine::Postgres => {
            "SELECT t.relname::text, a.attname::text FROM pg_constraint c
             JOIN pg_class t ON t.oid = c.conrelid
             JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey)
             WHERE c.contype = 'f' AND c.confrelid = 'users'::regclass ORDER BY t.relname, a.attname"
        }
    };
    let refs: Vec<(String, String)> = conn.query_map(refs_sql, args![], |r| Ok((r.get(0)?, r.get(1)?)))?;
    for (table, column) in refs {
        if Table::parse(&table).is_some() {
            continue;
        }
        conn.execute(&format!("DELETE FROM \"{table}\" WHERE \"{column}\" = ?1"), args![id])?;
    }
    tx.delete(Table::Users, id)?;
    audit(tx, actor, "remove", &row, json!({"rows_deleted": deleted}))?;
    Ok(Removed { user: row, rows: deleted })
}

/// One entry of the audit log.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    pub id: i64,
    pub at: String,
    pub actor_id: Option<i64>,
    pub actor: String,
    pub action: String,
    pub target_id: Option<i64>,
    pub target: Option<String>,
    pub detail: Value,
}

/// Audit entries, newest first, before `before_id` (paging).
fn audit_page(conn: &Conn<'_>, limit: usize, before_id: Option<i64>) -> StoreResult<Vec<AuditEntry>> {
    conn.query_map(
        "SELECT id, at, actor_id, actor, action, target_id, target, detail FROM audit_log
         WHERE id < ?1 ORDER BY id DESC LIMIT ?2",
        args![before_id.unwrap_or(i64::MAX), limit as i64],
        audit_entry,
    )
}

fn audit_entry(r: &Row) -> StoreResult<AuditEntry> {
    let detail: Option<String> = r.get(7)?;
    Ok(AuditEntry {
        id: r.get(0)?,
        at: r.get(1)?,
        actor_id: r.get(2)?,
        actor: r.get(3)?,
        action: r.get(4)?,
        target_id: r.get(5)?,
        target: r.get(6)?,
        detail: detail.and_then(|d| serde_json::from_str::<Value>(&d).ok()).unwrap_or(Value::Null),
    })
}

/// A role and/or status change: the status before, and the user after.
#[derive(Debug, Clone)]
pub struct AccountChange {
    pub status_before: Option<AccountStatus>,
    pub user: User,
}

fn public_user(tx: &WriteTx<'_, '_>, id: i64) -> StoreResult<User> {
    users::get(tx.conn(), id)?.ok_or_else(|| StoreError::NotFound(format!("user {id} does not exist")))
}

impl Store {
    /// Create an active user and, with `link`, a single-use sign-in link for them, in one transaction.
    pub async fn invite(
        &self,
        actor: Actor,
        email: String,
        name: Option<String>,
        role: Role,
        link: Option<NewLoginLink>,
    ) -> StoreResult<User> {
        self.writer
            .write(move |tx| {
                let row = invite(tx, &actor, &email, name.as_deref(), role)?;
                let id = row.get("id").and_then(Value::as_i64).unwrap_or(0);
                if let Some(link) = &link {
                    login_links::add(tx.conn(), id, link)?;
                }
                public_user(tx, id)
            })
            .await
    }

    /// Change the role and/or the status in one transaction (both or neither).
    pub async fn change_account(
        &self,
        actor: Actor,
        id: i64,
        role: Option<Role>,
        status: Option<AccountStatus>,
    ) -> StoreResult<AccountChange> {
        self.writer
            .write(move |tx| {
                let before = user_row(tx, id)?;
                let status_before = AccountStatus::parse(field(&before, "status"));
                if let Some(role) = role {
                    set_role(tx, &actor, id, role)?;
                }
                if let Some(status) = status {
                    set_status(tx, &actor, id, status)?;
                }
                Ok(AccountChange { status_before, user: public_user(tx, id)? })
            })
            .await
    }

    /// Sign out everywhere: every token issued until now is refused.
    pub async fn sign_out_everywhere(&self, actor: Actor, id: i64) -> StoreResult<()> {
        self.writer.write(move |tx| sign_out(tx, &actor, id).map(|_| ())).await
    }

    /// What [`Store::remove_account`] refuses, checked before anything is
    /// done outside the database (a user that does not exist, the last
    /// active admin); the removal checks again in its transaction.
    pub async fn check_removable(&self, id: i64) -> StoreResult<()> {
        self.read(move |c| check_removable(c, id)).await
    }

    /// Delete the account and everything of theirs (see `remove`).
    pub async fn remove_account(&self, actor: Actor, id: i64) -> StoreResult<Removed> {
        self.writer.write(move |tx| remove(tx, &actor, id)).await
    }

    /// Up to `limit` audit entries, newest first, before the entry `before_id`.
    pub async fn audit_page(&self, limit: usize, before_id: Option<i64>) -> StoreResult<Vec<AuditEntry>> {
        self.read(move |c| audit_page(c, limit, before_id)).await
    }
}
