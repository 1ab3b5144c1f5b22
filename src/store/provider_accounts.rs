//! Where each calendar provider keeps a user's connection: Google's token
//! columns on `users`, Microsoft's `microsoft_accounts` row. [`ProviderSql`]
//! names those columns and the provider's calendar and status tables, so
//! the provider-neutral queries — credentials and refreshed tokens here,
//! alerts, the health report, channel upkeep — are written once for both.
//! The pieces are constants: no request text reaches them.

use super::sql::{args, ToSqlValue};
use super::{Store, StoreResult, Table};
use crate::model::{AccountStatus, Provider};

/// One provider's tables and account columns, as SQL pieces.
pub(super) struct ProviderSql {
    pub provider: Provider,
    /// Joined after `users u` to reach the account columns ("" when they are
    /// on `users`). A LEFT JOIN: users without an account still read.
    pub join: &'static str,
    /// A condition: the user has an account at this provider (connected or
    /// needing to reconnect).
    pub linked: &'static str,
    /// The table the account's token columns are written in, its name in
    /// reads (`u` for `users`, else the join's alias), and its user key.
    pub account_table: &'static str,
    pub alias: &'static str,
    pub account_user_key: &'static str,
    /// The token columns of `account_table`, unqualified.
    pub columns: TokenColumns,
    /// `account_table` has an `updated_at` of its own to move with the
    /// tokens. `users.updated_at` is not one: it is a logged column, moved
    /// only with a logged change.
    pub stamped: bool,
    /// The provider's calendar list (`user_id`, `calendar_id`, `selected`).
    pub calendars: &'static str,
    /// The calendar column with the incremental sync state (sync token, delta link).
    pub sync_state: &'static str,
    /// Per-user sync bookkeeping (the same columns for each provider).
    pub status_table: &'static str,
    /// A condition on a channel `c`: the provider confirmed it (Google
    /// answers a watch with its resource id; a Graph subscription exists
    /// once its create answered).
    pub channel_registered: &'static str,
}

/// The token columns of an account table.
pub(super) struct TokenColumns {
    pub refresh_token: &'static str,
    pub access_token: &'static str,
    pub token_expires_at: &'static str,
    pub needs_reconnect: &'static str,
}

const GOOGLE: ProviderSql = ProviderSql {
    provider: Provider::Google,
    join: "",
    linked: "(u.google_sub IS NOT NULL OR u.google_refresh_token IS NOT NULL)",
    account_table: "users",
    alias: "u",
    account_user_key: "id",
    columns: TokenColumns {
        refresh_token: "google_refresh_token",
        access_token: "google_access_token",
        token_expires_at: "google_token_expires_at",
        needs_reconnect: "google_needs_reconnect",
    },
    stamped: false,
    calendars: "google_calendars",
    sync_state: "sync_token",
    status_table: "google_sync_status",
    channel_registered: "c.resource_id IS NOT NULL",
};

const MICROSOFT: ProviderSql = ProviderSql {
    provider: Provider::Microsoft,
    join: "LEFT JOIN microsoft_accounts a ON a.user_id = u.id",
    linked: "a.user_id IS NOT NULL",
    account_table: "microsoft_accounts",
    alias: "a",
    account_user_key: "user_id",
    columns: TokenColumns {
        refresh_token: "refresh_token",
        access_token: "access_token",
        token_expires_at: "token_expires_at",
        needs_reconnect: "needs_reconnect",
    },
    stamped: true,
    calendars: "microsoft_calendars",
    sync_state: "delta_link",
    status_table: "microsoft_sync_status",
    channel_registered: "TRUE",
};

/// The SQL pieces of a provider.
pub(super) fn provider_sql(provider: Provider) -> &'static ProviderSql {
    match provider {
        Provider::Google => &GOOGLE,
        Provider::Microsoft => &MICROSOFT,
    }
}

impl ProviderSql {
    /// An account column as a read after `users u` and [`Self::join`] names it.
    pub fn column(&self, name: &str) -> String {
        format!("{}.{name}", self.alias)
    }

    /// A boolean: the provider refused the refresh token (false without an account).
    pub fn needs_reconnect(&self) -> String {
        format!("COALESCE({}, FALSE)", self.column(self.columns.needs_reconnect))
    }

    /// A condition on `users u` (after [`Self::join`]): the provider's
    /// calendars sync for this user — a refresh token, access not revoked.
    pub fn connected(&self) -> String {
        format!("({} IS NOT NULL AND NOT {})", self.column(self.columns.refresh_token), self.needs_reconnect())
    }

    /// `, updated_at = ?n` when the account table keeps its own (see
    /// [`Self::stamped`]), else nothing.
    fn stamp(&self, n: usize) -> String {
        if self.stamped {
            format!(", updated_at = ?{n}")
        } else {
            String::new()
        }
    }

    /// The arguments of a statement with [`Self::stamp`], `now` the last:
    /// left out without a stamp (PostgreSQL refuses a parameter the
    /// statement does not use).
    fn stamped_args<'a>(&self, args: &'a [&'a dyn ToSqlValue]) -> &'a [&'a dyn ToSqlValue] {
        if self.stamped {
            args
        } else {
            &args[..args.len() - 1]
        }
    }
}

/// A user's credentials at a provider, as stored. Read only to call the
/// provider; never shown.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub refresh_token: Option<String>,
    pub access_token: Option<String>,
    /// When the access token expires (stored form).
    pub access_expires_at: Option<String>,
    /// `invalid_grant`: the user must connect again, and is not synced until then.
    pub needs_reconnect: bool,
    /// The account is disabled: no sync and no channel until it is enabled.
    pub disabled: bool,
}

impl Store {
    /// The user's credentials at the provider; None when the user does not
    /// exist or has no account there.
    pub async fn credentials(&self, provider: Provider, user_id: i64) -> StoreResult<Option<Credentials>> {
        let p = provider_sql(provider);
        let sql = format!(
            "SELECT {}, {}, {}, {}, u.status FROM users u {} WHERE u.id = ?1 AND {}",
            p.column(p.columns.refresh_token),
            p.column(p.columns.access_token),
            p.column(p.columns.token_expires_at),
            p.needs_reconnect(),
            p.join,
            p.linked
        );
        self.read(move |conn| {
            conn.query_opt(&sql, args![user_id])?
                .map(|r| {
                    Ok(Credentials {
                        refresh_token: r.get(0)?,
                        access_token: r.get(1)?,
                        access_expires_at: r.get(2)?,
                        needs_reconnect: r.get(3)?,
                        disabled: AccountStatus::parse(&r.get::<String>(4)?) != Some(AccountStatus::Active),
                    })
                })
                .transpose()
        })
        .await
    }

    /// A refreshed access token, and the refresh token that came with it
    /// when the provider rotated it (None keeps the stored one). Nobody sees
    /// it: nothing is logged.
    pub async fn save_tokens(
        &self,
        provider: Provider,
        user_id: i64,
        access_token: String,
        access_expires_at: String,
        refresh_token: Option<String>,
    ) -> StoreResult<()> {
        let p = provider_sql(provider);
        let c = &p.columns;
        let sql = format!(
            "UPDATE {table} SET {access} = ?2, {expires} = ?3, {refresh} = COALESCE(CAST(?4 AS TEXT), {refresh}){stamp}
             WHERE {key} = ?1",
            table = p.account_table,
            key = p.account_user_key,
            access = c.access_token,
            expires = c.token_expires_at,
            refresh = c.refresh_token,
            stamp = p.stamp(5),
        );
        self.bookkeeping(move |conn, now| {
            conn.execute(&sql, p.stamped_args(args![user_id, access_token, access_expires_at, refresh_token, now]))?;
            Ok(())
        })
        .await
    }

    /// The provider said `invalid_grant`: the user must connect again, and is
    /// not synced until they do. True when this changed it (so the caller
    /// says so once); admins following `users` see it at once.
    pub async fn mark_needs_reconnect(&self, provider: Provider, user_id: i64) -> StoreResult<bool> {
        let p = provider_sql(provider);
        let c = &p.columns;
        let sql = format!(
            "UPDATE {table} SET {needs} = TRUE, {access} = NULL, {expires} = NULL{stamp}
             WHERE {key} = ?1 AND NOT {needs}",
            table = p.account_table,
            key = p.account_user_key,
            needs = c.needs_reconnect,
            access = c.access_token,
            expires = c.token_expires_at,
            stamp = p.stamp(2),
        );
        self.writer
            .write(move |tx| {
                let now = tx.now().to_string();
                let changed = tx.conn().execute(&sql, p.stamped_args(args![user_id, now]))? == 1;
                if changed {
                    tx.log_updated(Table::Users, user_id)?;
                }
                Ok(changed)
            })
            .await
    }

    /// Users whose calendars at the provider sync: connected, access not
    /// revoked, account active.
    pub async fn connected_users(&self, provider: Provider) -> StoreResult<Vec<i64>> {
        let p = provider_sql(provider);
        let sql = format!("SELECT u.id FROM users u {} WHERE {} AND u.status = ?1 ORDER BY u.id", p.join, p.connected());
        self.read(move |conn| conn.query_map(&sql, args![AccountStatus::Active.as_str()], |r| r.get(0))).await
    }
}
