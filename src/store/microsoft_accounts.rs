//! A user's Microsoft account as syncgate keeps it (`microsoft_accounts`):
//! who it is (tenant id + object id, never an email), its tokens (read only
//! to call Microsoft, never shown), linking it at connect or sign-in,
//! refreshed tokens, "needs reconnect", and disconnecting. What `/api/me`
//! shows of it is [`MicrosoftStatus`].

use serde::Serialize;

use super::sql::{args, Conn};
use super::users::{self, User};
use super::{Store, StoreError, StoreResult, Table};
use crate::model::Role;

/// Who signed in with Microsoft, and the tokens the identity platform gave.
#[derive(Debug, Clone)]
pub struct MicrosoftAccount {
    /// `tid`: the account's tenant.
    pub tenant_id: String,
    /// `oid`: the account within its tenant, immutable.
    pub object_id: String,
    /// `preferred_username`: shown, never used to decide anything.
    pub username: Option<String>,
    pub access_token: String,
    /// None keeps the stored one.
    pub refresh_token: Option<String>,
    pub access_expires_at: String,
}

/// A new user made at sign-in, from a verified identity the policy allows.
#[derive(Debug, Clone)]
pub struct MicrosoftSignUp {
    pub email: String,
    pub name: Option<String>,
}

/// Which user a Microsoft account is attached to.
#[derive(Debug, Clone)]
pub enum MicrosoftLinkTarget {
    /// This signed-in user connects Outlook (the only way an existing user
    /// gets a Microsoft account).
    User(i64),
    /// Sign in: the user already linked to this tid+oid; else, with
    /// `sign_up`, a new user of that address (never an existing one).
    SignIn { sign_up: Option<MicrosoftSignUp> },
}

/// How attaching a Microsoft account ended. Every outcome but `Linked` wrote nothing.
#[derive(Debug, Clone)]
pub enum MicrosoftLink {
    Linked {
        user: User,
        created: bool,
    },
    /// The tid+oid is already another user's.
    TakenByAnotherUser,
    /// The user who started the connect no longer exists.
    UserGone,
    /// Sign-in with an account nobody connected, and no sign-up allowed.
    NotLinked,
    /// Sign-up refused: a user already has this address (they connect
    /// Outlook while signed in instead).
    AddressTaken,
    /// A new user could not be made of it (why, in a sentence).
    Refused(String),
}

/// What `GET /api/me` shows of a user's Microsoft account: never a token.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct MicrosoftStatus {
    pub connected: bool,
    pub username: Option<String>,
    pub needs_reconnect: bool,
}

pub(super) fn status(conn: &Conn<'_>, user_id: i64) -> StoreResult<MicrosoftStatus> {
    Ok(conn
        .query_opt("SELECT username, needs_reconnect FROM microsoft_accounts WHERE user_id = ?1", args![user_id])?
        .map(|r| Ok::<_, StoreError>(MicrosoftStatus { connected: true, username: r.get(0)?, needs_reconnect: r.get(1)? }))
        .transpose()?
        .unwrap_or_default())
}

impl Store {
    /// The user a Microsoft account (tid + oid) is linked to.
    pub async fn microsoft_user(&self, tenant_id: String, object_id: String) -> StoreResult<Option<i64>> {
        self.read(move |conn| {
            conn.value_opt("SELECT user_id FROM microsoft_accounts WHERE tenant_id = ?1 AND object_id = ?2", args![tenant_id, object_id])
        })
        .await
    }

    /// Attach a Microsoft account and its tokens to a user (see
    /// [`MicrosoftLinkTarget`]). Another account than the user had before
    /// starts their Outlook calendar list afresh. A user created here is
    /// logged as an insert, so admins see it live.
    pub async fn link_microsoft_account(&self, account: MicrosoftAccount, target: MicrosoftLinkTarget) -> StoreResult<MicrosoftLink> {
        self.writer
            .write(move |tx| {
                let conn = tx.conn();
                let linked: Option<i64> = conn.value_opt(
                    "SELECT user_id FROM microsoft_accounts WHERE tenant_id = ?1 AND object_id = ?2",
                    args![account.tenant_id, account.object_id],
                )?;
                let (user_id, created) = match target {
                    MicrosoftLinkTarget::User(id) => {
                        if linked.is_some_and(|other| other != id) {
                            return Ok(MicrosoftLink::TakenByAnotherUser);
                        }
                        if users::get(conn, id)?.is_none() {
                            return Ok(MicrosoftLink::UserGone);
                        }
                        (id, false)
                    }
                    MicrosoftLinkTarget::SignIn { sign_up } => match (linked, sign_up) {
                        (Some(id), _) => (id, false),
                        (None, None) => return Ok(MicrosoftLink::NotLinked),
                        (None, Some(new)) => {
                            if users::by_email(conn, &new.email)?.is_some() {
                                return Ok(MicrosoftLink::AddressTaken);
                            }
                            match users::create(conn, &new.email, new.name.as_deref(), Role::User.as_str()) {
                                Ok(id) => (id, true),
                                Err(StoreError::Invalid(why)) => return Ok(MicrosoftLink::Refused(why)),
                                Err(e) => return Err(e),
                            }
                        }
                    },
                };
                let now = tx.now().to_string();
                let previous: Option<(String, String)> = conn
                    .query_opt("SELECT tenant_id, object_id FROM microsoft_accounts WHERE user_id = ?1", args![user_id])?
                    .map(|r| Ok::<_, StoreError>((r.get(0)?, r.get(1)?)))
                    .transpose()?;
                match previous {
                    Some((t, o)) if t == account.tenant_id && o == account.object_id => {
                        conn.execute(
                            "UPDATE microsoft_accounts SET
                                username = ?1,
                                refresh_token = COALESCE(CAST(?2 AS TEXT), refresh_token),
                                access_token = ?3,
                                token_expires_at = ?4,
                                needs_reconnect = FALSE,
                                updated_at = ?5
                             WHERE user_id = ?6",
                            args![account.username, account.refresh_token, account.access_token, account.access_expires_at, now, user_id],
                        )?;
                    }
                    other => {
                        if other.is_some() {
                            // Another Microsoft account: its calendars and delta links are not this one's.
                            forget(conn, user_id)?;
                            conn.execute("DELETE FROM microsoft_accounts WHERE user_id = ?1", args![user_id])?;
                        }
                        conn.execute(
                            "INSERT INTO microsoft_accounts (user_id, tenant_id, object_id, username, refresh_token, access_token,
                                token_expires_at, needs_reconnect, connected_at, updated_at)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, FALSE, ?8, ?8)",
                            args![
                                user_id,
                                account.tenant_id,
                                account.object_id,
                                account.username,
                                account.refresh_token,
                                account.access_token,
                                account.access_expires_at,
                                now
                            ],
                        )?;
                    }
                }
                let user = users::account_linked(tx, user_id, created)?;
                Ok(MicrosoftLink::Linked { user, created })
            })
            .await
    }

    /// Forget the user's Microsoft account: its tokens, the account row and
    /// its calendar list. False when there was none.
    pub async fn disconnect_microsoft(&self, user_id: i64) -> StoreResult<bool> {
        self.writer
            .write(move |tx| {
                let conn = tx.conn();
                forget(conn, user_id)?;
                let gone = conn.execute("DELETE FROM microsoft_accounts WHERE user_id = ?1", args![user_id])? == 1;
                if gone {
                    tx.log_updated(Table::Users, user_id)?;
                }
                Ok(gone)
            })
            .await
    }
}

/// Drop what belonged to the user's previous Microsoft account: the
/// calendar list with its delta links (made with that account's tokens).
fn forget(conn: &Conn<'_>, user_id: i64) -> StoreResult<()> {
    conn.execute("DELETE FROM microsoft_calendars WHERE user_id = ?1", args![user_id])?;
    Ok(())
}
