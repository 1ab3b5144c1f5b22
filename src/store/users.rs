//! Users (advisers and admins). Their Google token columns are read only by
//! the Google sync and never leave the process. Account lifecycle writes
//! (invite, role, disable, remove, sign out everywhere) are in
//! [`accounts`](super::accounts).

use serde::Serialize;

use super::error::{StoreError, StoreResult};
use super::sql::{args, Conn, Engine, Row};
use super::{timefmt, Store};
use crate::model::{AccountStatus, Role};

/// A user as the API shows it: no secrets.
#[derive(Debug, Clone, Serialize)]
pub struct User {
    pub id: i64,
    pub email: String,
    pub name: Option<String>,
    pub role: String,
    pub timezone: String,
    pub calendly_user_uri: Option<String>,
    pub google_connected: bool,
    pub google_needs_reconnect: bool,
    /// The user has connected a Microsoft account (Outlook calendars).
    pub microsoft_connected: bool,
    /// Microsoft answered `invalid_grant`: the user must connect Outlook again.
    pub microsoft_needs_reconnect: bool,
    /// `active` or `disabled`.
    pub status: String,
    /// Last time a token of this user was accepted (at most a minute stale).
    pub last_seen: Option<String>,
    /// Whether Calendly bookings are matched to this user.
    pub calendly_connected: bool,
}

impl User {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin.as_str()
    }
    pub fn is_active(&self) -> bool {
        self.status == AccountStatus::Active.as_str()
    }
}

/// `IS NOT NULL` and `EXISTS` are 0/1 on SQLite and booleans on
/// PostgreSQL; `Row::get::<bool>` reads either. The Outlook state comes
/// from `microsoft_accounts` (at most one row per user) in the same
/// statement, so a row never mixes two moments.
const SELECT: &str = "SELECT id, email, name, role, timezone, calendly_user_uri,
    google_refresh_token IS NOT NULL, google_needs_reconnect, status, last_seen,
    calendly_user_uri IS NOT NULL OR EXISTS (SELECT 1 FROM calendly_signing_keys k WHERE k.user_id = users.id),
    EXISTS (SELECT 1 FROM microsoft_accounts m WHERE m.user_id = users.id),
    EXISTS (SELECT 1 FROM microsoft_accounts m WHERE m.user_id = users.id AND m.needs_reconnect)
    FROM users";

fn from_row(r: &Row) -> StoreResult<User> {
    Ok(User {
        id: r.get(0)?,
        email: r.get(1)?,
        name: r.get(2)?,
        role: r.get(3)?,
        timezone: r.get(4)?,
        calendly_user_uri: r.get(5)?,
        google_connected: r.get(6)?,
        google_needs_reconnect: r.get(7)?,
        status: r.get(8)?,
        last_seen: r.get(9)?,
        calendly_connected: r.get(10)?,
        microsoft_connected: r.get(11)?,
        microsoft_needs_reconnect: r.get(12)?,
    })
}

/// What the identity check needs to know about a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Account {
    pub admin: bool,
    pub active: bool,
    /// Sign out everywhere: tokens issued at or before this (ms since the epoch) are refused.
    pub tokens_valid_after_ms: Option<i64>,
}

pub(super) fn account(conn: &Conn<'_>, id: i64) -> StoreResult<Option<Account>> {
    let Some(r) = conn.query_opt("SELECT role, status, tokens_valid_after FROM users WHERE id = ?1", args![id])? else {
        return Ok(None);
    };
    let after: Option<String> = r.get(2)?;
    Ok(Some(Account {
        admin: r.get::<String>(0)? == Role::Admin.as_str(),
        active: r.get::<String>(1)? == AccountStatus::Active.as_str(),
        // An unreadable stamp signs out every token rather than none.
        tokens_valid_after_ms: after.map(|a| timefmt::parse(&a).map_or(i64::MAX, |t| (t.unix_timestamp_nanos() / 1_000_000) as i64)),
    }))
}

/// Record that the user was seen (not a synced change: never logged).
fn touch_last_seen(conn: &Conn<'_>, id: i64, now: &str) -> StoreResult<()> {
    let sql = match conn.engine() {
        Engine::Sqlite => "UPDATE users SET last_seen = ?2 WHERE id = ?1",
        // Never waits for a writer that holds the row (another node's
        // batch changing the account): the stamp is approximate anyway.
        Engine::Postgres => "UPDATE users SET last_seen = ?2 WHERE id = (SELECT id FROM users WHERE id = ?1 FOR UPDATE SKIP LOCKED)",
    };
    conn.execute(sql, args![id, now])?;
    Ok(())
}

/// A calendar provider's account was attached to the user (`created`: the
/// user was made for it), in the writer transaction that did it: logged as
/// admins see it live — a new user's INSERT, else an UPDATE (their
/// connections changed) — and the user as they are now.
pub(super) fn account_linked(tx: &mut super::WriteTx<'_, '_>, user_id: i64, created: bool) -> StoreResult<User> {
    if created {
        tx.log_inserted(super::Table::Users, user_id)?;
    } else {
        tx.log_updated(super::Table::Users, user_id)?;
    }
    get(tx.conn(), user_id)?.ok_or_else(|| StoreError::internal("signed-in user vanished"))
}

pub(super) fn get(conn: &Conn<'_>, id: i64) -> StoreResult<Option<User>> {
    conn.query_opt(&format!("{SELECT} WHERE id = ?1"), args![id])?.as_ref().map(from_row).transpose()
}

/// Emails match without regard to case on both engines (SQLite's column is
/// `COLLATE NOCASE`, PostgreSQL's unique index is on `lower(email)`).
pub(super) fn by_email(conn: &Conn<'_>, email: &str) -> StoreResult<Option<User>> {
    conn.query_opt(&format!("{SELECT} WHERE lower(email) = lower(?1)"), args![email.trim()])?.as_ref().map(from_row).transpose()
}

fn list(conn: &Conn<'_>) -> StoreResult<Vec<User>> {
    conn.query_map(&format!("{SELECT} ORDER BY id"), args![], from_row)
}

/// A plausible email: one `@`, something on both sides, a dot in the domain.
pub fn valid_email(email: &str) -> bool {
    let e = email.trim();
    match e.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains('@')
                && !e.contains(char::is_whitespace)
        }
        None => false,
    }
}

/// Create a user (`role` is `user` or `admin`); returns its id.
pub(super) fn create(conn: &Conn<'_>, email: &str, name: Option<&str>, role: &str) -> StoreResult<i64> {
    let email = email.trim();
    if !valid_email(email) {
        return Err(StoreError::Invalid(format!("\"{email}\" is not an email address")));
    }
    let role = Role::parse(role).ok_or_else(|| StoreError::Invalid(format!("role must be user or admin, not \"{role}\"")))?;
    if by_email(conn, email)?.is_some() {
        return Err(StoreError::Conflict(format!("a user with email {email} already exists")));
    }
    let now = timefmt::format(timefmt::now());
    conn.value(
        "INSERT INTO users (email, name, role, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?4) RETURNING id",
        args![email, name, role.as_str(), now],
    )
}

/// A user as `GET /api/me` shows them.
#[derive(Debug, Clone, Serialize)]
pub struct Profile {
    #[serde(flatten)]
    pub user: User,
    /// When the user's first Google push channel runs out (one per ticked
    /// calendar; each is renewed automatically before then).
    pub google_channel_expires_at: Option<String>,
    /// When the user's first Graph subscription runs out (one per connected
    /// calendar; each is renewed in place before then).
    pub microsoft_subscription_expires_at: Option<String>,
    /// The Outlook connection: whether, as whom, and whether it must be redone.
    pub microsoft: super::microsoft_accounts::MicrosoftStatus,
}

impl Store {
    /// One user, without secrets.
    pub async fn user(&self, id: i64) -> StoreResult<Option<User>> {
        self.read(move |c| get(c, id)).await
    }

    /// Every user, by id.
    pub async fn users(&self) -> StoreResult<Vec<User>> {
        self.read(list).await
    }

    /// What the identity check needs to know about a user.
    pub async fn account(&self, id: i64) -> StoreResult<Option<Account>> {
        self.read(move |c| account(c, id)).await
    }

    /// Record that the user was seen now (not a synced change: never logged).
    pub async fn touch_last_seen(&self, id: i64) -> StoreResult<()> {
        self.bookkeeping(move |c, now| touch_last_seen(c, id, now)).await
    }

    /// The user, when their first Google channel and first Graph
    /// subscription expire, and their Outlook connection.
    pub async fn profile(&self, id: i64) -> StoreResult<Option<Profile>> {
        self.read(move |c| {
            let first_expiry = |provider: &str| -> StoreResult<Option<String>> {
                c.value(
                    "SELECT MIN(expiration) FROM calendar_watch_channels WHERE provider = ?1 AND user_id = ?2 AND state = 'active'",
                    args![provider, id],
                )
            };
            let google_channel_expires_at = first_expiry("google")?;
            let microsoft_subscription_expires_at = first_expiry("microsoft")?;
            let Some(user) = get(c, id)? else { return Ok(None) };
            let microsoft = super::microsoft_accounts::status(c, id)?;
            Ok(Some(Profile { user, google_channel_expires_at, microsoft_subscription_expires_at, microsoft }))
        })
        .await
    }
}
