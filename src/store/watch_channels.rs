//! Push channels of both providers (`calendar_watch_channels`): a Google
//! channel, or a Graph subscription (its id as `channel_id`, its
//! `clientState` as `token`). One lookup by the unique `channel_id` index per
//! notification, and the steps of registering, replacing and stopping a
//! channel, each for one provider's channels only. When to renew is decided
//! by each provider's upkeep; the calls are the provider's.
//!
//! A channel is `active`, or `retiring` while the channel replacing it is
//! being registered (notifications on both are accepted meanwhile).

use super::google::ticked;
use super::provider_accounts::provider_sql;
use super::sql::{args, Conn, ToSqlValue};
use super::{Store, StoreResult};
use crate::model::Provider;

const ACTIVE: &str = "active";
const RETIRING: &str = "retiring";

/// What a notification is checked against.
#[derive(Debug)]
pub struct NotifiedChannel {
    pub provider: Provider,
    pub user_id: i64,
    pub calendar_id: String,
    pub token: String,
    pub resource_id: Option<String>,
    /// `active`, or `retiring` during a renewal's overlap (both still live).
    pub state: String,
    /// When Google stops sending on it (stored form), if known.
    pub expiration: Option<String>,
}

/// A channel as stopping it at Google needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelHandle {
    pub channel_id: String,
    /// Unknown until Google answered the watch.
    pub resource_id: Option<String>,
}

/// A channel about to be registered at its provider.
#[derive(Debug, Clone)]
pub struct NewChannel {
    pub provider: Provider,
    pub user_id: i64,
    pub calendar_id: String,
    pub channel_id: String,
    pub token: String,
    pub webhook_url: String,
}

/// A ticked calendar of a connected user, with its active, fully registered
/// channel if it has one, for the renewal plan.
#[derive(Debug, Clone)]
pub struct TickedCalendarChannel {
    pub user_id: i64,
    pub calendar_id: String,
    /// None: no active channel, or its registration never finished.
    pub expiration: Option<String>,
    /// When the channel row was last written (its registration).
    pub registered_at: Option<String>,
    pub webhook_url: Option<String>,
}

fn find_for_notification(conn: &Conn<'_>, channel_id: &str) -> StoreResult<Option<NotifiedChannel>> {
    conn.query_opt(
        "SELECT user_id, token, resource_id, state, expiration, provider, calendar_id FROM calendar_watch_channels WHERE channel_id = ?1",
        args![channel_id],
    )?
    .map(|r| {
        let provider: String = r.get(5)?;
        Ok(NotifiedChannel {
            provider: Provider::parse(&provider).unwrap_or(Provider::Google),
            user_id: r.get(0)?,
            calendar_id: r.get(6)?,
            token: r.get(1)?,
            resource_id: r.get(2)?,
            state: r.get(3)?,
            expiration: r.get(4)?,
        })
    })
    .transpose()
}

fn handles(conn: &Conn<'_>, sql: &str, args: &[&dyn ToSqlValue]) -> StoreResult<Vec<ChannelHandle>> {
    conn.query_map(sql, args, |r| Ok(ChannelHandle { channel_id: r.get(0)?, resource_id: r.get(1)? }))
}

impl Store {
    /// The channel a notification names (a stopped channel's row is gone).
    pub async fn channel_for_notification(&self, channel_id: &str) -> StoreResult<Option<NotifiedChannel>> {
        let channel_id = channel_id.to_string();
        self.read(move |c| find_for_notification(c, &channel_id)).await
    }

    /// Write a new `active` channel for a calendar before asking Google for
    /// it (Google's first notification can come before the watch answer).
    /// The calendar's previous active channels become `retiring` and are
    /// returned, to be stopped once the new one is registered.
    pub async fn open_channel(&self, new: NewChannel) -> StoreResult<Vec<ChannelHandle>> {
        self.writer
            .write(move |tx| {
                let conn = tx.conn();
                let provider = new.provider.as_str();
                let old = handles(
                    conn,
                    "SELECT channel_id, resource_id FROM calendar_watch_channels
                     WHERE provider = ?4 AND user_id = ?1 AND calendar_id = ?2 AND state = ?3",
                    args![new.user_id, new.calendar_id, ACTIVE, provider],
                )?;
                conn.execute(
                    "UPDATE calendar_watch_channels SET state = ?4, updated_at = ?3
                     WHERE provider = ?6 AND user_id = ?1 AND calendar_id = ?2 AND state = ?5",
                    args![new.user_id, new.calendar_id, tx.now(), RETIRING, ACTIVE, provider],
                )?;
                conn.execute(
                    "INSERT INTO calendar_watch_channels (provider, user_id, calendar_id, channel_id, token, webhook_url, state, created_at, updated_at)
                     VALUES (?8, ?1, ?2, ?3, ?4, ?5, ?7, ?6, ?6)",
                    args![new.user_id, new.calendar_id, new.channel_id, new.token, new.webhook_url, tx.now(), ACTIVE, provider],
                )?;
                Ok(old)
            })
            .await
    }

    /// Google refused the new channel: drop its row, and the channel it was
    /// to replace (the latest `retiring` one) stays in charge.
    pub async fn abandon_channel(&self, provider: Provider, user_id: i64, calendar_id: &str, channel_id: &str) -> StoreResult<()> {
        let (calendar_id, channel_id) = (calendar_id.to_string(), channel_id.to_string());
        self.writer
            .write(move |tx| {
                tx.conn().execute("DELETE FROM calendar_watch_channels WHERE channel_id = ?1", args![channel_id])?;
                tx.conn().execute(
                    "UPDATE calendar_watch_channels SET state = ?4, updated_at = ?3
                     WHERE provider = ?6 AND user_id = ?1 AND calendar_id = ?2 AND state = ?5
                       AND NOT EXISTS (SELECT 1 FROM calendar_watch_channels
                                       WHERE provider = ?6 AND user_id = ?1 AND calendar_id = ?2 AND state = ?4)
                       AND id = (SELECT MAX(id) FROM calendar_watch_channels
                                 WHERE provider = ?6 AND user_id = ?1 AND calendar_id = ?2 AND state = ?5)",
                    args![user_id, calendar_id, tx.now(), ACTIVE, RETIRING, provider.as_str()],
                )?;
                Ok(())
            })
            .await
    }

    /// Google registered the channel: what it answered.
    pub async fn confirm_channel(&self, channel_id: &str, resource_id: Option<String>, expiration: Option<String>) -> StoreResult<()> {
        let channel_id = channel_id.to_string();
        self.writer
            .write(move |tx| {
                tx.conn().execute(
                    "UPDATE calendar_watch_channels SET resource_id = ?2, expiration = ?3, updated_at = ?4 WHERE channel_id = ?1",
                    args![channel_id, resource_id, expiration, tx.now()],
                )?;
                Ok(())
            })
            .await
    }

    /// The channel was stopped (or given up on): its row goes.
    pub async fn delete_channel(&self, channel_id: &str) -> StoreResult<()> {
        let channel_id = channel_id.to_string();
        self.writer
            .write(move |tx| {
                tx.conn().execute("DELETE FROM calendar_watch_channels WHERE channel_id = ?1", args![channel_id])?;
                Ok(())
            })
            .await
    }

    /// Every channel of the user at this provider, or of one of their calendars.
    pub async fn user_channels(&self, provider: Provider, user_id: i64, calendar_id: Option<&str>) -> StoreResult<Vec<ChannelHandle>> {
        let calendar_id = calendar_id.map(str::to_string);
        self.read(move |c| {
            handles(
                c,
                "SELECT channel_id, resource_id FROM calendar_watch_channels
                 WHERE provider = ?3 AND user_id = ?1 AND (CAST(?2 AS TEXT) IS NULL OR calendar_id = ?2)",
                args![user_id, calendar_id, provider.as_str()],
            )
        })
        .await
    }

    /// Channels a previous run left behind: `retiring` ones (a renewal
    /// interrupted between registering the new channel and stopping the old
    /// one) and channels of a calendar that is not ticked.
    pub async fn leftover_google_channels(&self, user_id: i64) -> StoreResult<Vec<ChannelHandle>> {
        self.read(move |c| {
            let ticked: Vec<String> = ticked(c, user_id)?.into_iter().map(|t| t.calendar_id).collect();
            let all: Vec<(String, Option<String>, String, String)> = c.query_map(
                "SELECT channel_id, resource_id, calendar_id, state FROM calendar_watch_channels
                 WHERE provider = ?2 AND user_id = ?1 ORDER BY id",
                args![user_id, Provider::Google.as_str()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )?;
            Ok(all
                .into_iter()
                .filter(|(_, _, cal, state)| state == RETIRING || !ticked.contains(cal))
                .map(|(channel_id, resource_id, _, _)| ChannelHandle { channel_id, resource_id })
                .collect())
        })
        .await
    }

    /// Disabled users who still have channels at the provider: disabled
    /// while no server ran (`syncgate user disable` writes the database
    /// itself), so nobody told the provider. Their channels go at startup.
    pub async fn disabled_users_with_channels(&self, provider: Provider) -> StoreResult<Vec<i64>> {
        self.read(move |c| {
            c.query_map(
                "SELECT DISTINCT c.user_id FROM calendar_watch_channels c JOIN users u ON u.id = c.user_id
                 WHERE c.provider = ?1 AND u.status <> ?2 ORDER BY c.user_id",
                args![provider.as_str(), crate::model::AccountStatus::Active.as_str()],
                |r| r.get(0),
            )
        })
        .await
    }

    /// Each ticked calendar of each connected user of the provider, with its
    /// active channel once the provider confirmed it (one row per channel,
    /// by expiration, so the last row of a calendar is the channel expiring
    /// last; a calendar without one has a single row of NULLs).
    pub async fn ticked_calendar_channels(&self, provider: Provider) -> StoreResult<Vec<TickedCalendarChannel>> {
        let p = provider_sql(provider);
        // NULLS FIRST is SQLite's own order, spelled out for PostgreSQL (which puts NULLs last).
        let sql = format!(
            "SELECT u.id, g.calendar_id, c.expiration, c.updated_at, c.webhook_url
             FROM users u {join} JOIN {calendars} g ON g.user_id = u.id AND g.selected
             LEFT JOIN calendar_watch_channels c
               ON c.provider = ?3 AND c.user_id = u.id AND c.state = ?1 AND c.calendar_id = g.calendar_id AND {registered}
             WHERE {connected} AND u.status = ?2
             ORDER BY u.id, g.calendar_id, c.expiration NULLS FIRST",
            join = p.join,
            calendars = p.calendars,
            registered = p.channel_registered,
            connected = p.connected(),
        );
        self.read(move |c| {
            c.query_map(&sql, args![ACTIVE, crate::model::AccountStatus::Active.as_str(), provider.as_str()], |r| {
                Ok(TickedCalendarChannel {
                    user_id: r.get(0)?,
                    calendar_id: r.get(1)?,
                    expiration: r.get(2)?,
                    registered_at: r.get(3)?,
                    webhook_url: r.get(4)?,
                })
            })
        })
        .await
    }

    /// The active channel of one of the user's calendars at a provider, if any.
    pub async fn active_channel(&self, provider: Provider, user_id: i64, calendar_id: &str) -> StoreResult<Option<ChannelHandle>> {
        let calendar_id = calendar_id.to_string();
        self.read(move |c| {
            Ok(handles(
                c,
                "SELECT channel_id, resource_id FROM calendar_watch_channels
                 WHERE provider = ?3 AND user_id = ?1 AND calendar_id = ?2 AND state = ?4 ORDER BY id DESC",
                args![user_id, calendar_id, provider.as_str(), ACTIVE],
            )?
            .into_iter()
            .next())
        })
        .await
    }
}
