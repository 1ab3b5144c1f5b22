//! A user's Google account as syncgate keeps it: the token columns of
//! `users` (read only by the Google sync, never shown), connecting a Google
//! account to a user at sign-in, and the used sign-in states
//! (`google_oauth_states`) that make each state single-use.

use super::sql::args;

use super::users::{self, User};
use super::{google, Store, StoreError, StoreResult};
use crate::model::Role;

/// Who signed in with Google, and the tokens Google gave.
#[derive(Debug, Clone)]
pub struct GoogleAccount {
    /// Google's stable id of the account (`sub`).
    pub sub: String,
    /// Verified by Google.
    pub email: String,
    pub name: Option<String>,
    pub access_token: String,
    /// Google sends one only when consent was given (again); None keeps the stored one.
    pub refresh_token: Option<String>,
    pub access_expires_at: String,
}

/// Which user a Google account is attached to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoogleLinkTarget {
    /// This signed-in user connects their calendar.
    User(i64),
    /// Sign in: the user with this Google account, else with its email, else
    /// a new user when the sign-up policy allows the email.
    FindOrCreate { may_sign_up: bool },
}

/// How attaching a Google account ended. Every outcome but `Linked` wrote nothing.
#[derive(Debug, Clone)]
pub enum GoogleLink {
    Linked {
        user: User,
        created: bool,
    },
    /// The Google account is already connected to another user.
    TakenByAnotherUser,
    /// The user who started the connect no longer exists.
    UserGone,
    /// Nobody has this email and the policy lets no new address sign up.
    NoAccount,
    /// A new user could not be made of it (why, in a sentence).
    Refused(String),
}

impl Store {
    /// Attach a Google account and its tokens to a user (see [`GoogleLinkTarget`]).
    /// Another Google account than the user had before starts their calendar
    /// list afresh. A user created here is logged as an insert, so admins see
    /// it live.
    pub async fn link_google_account(&self, account: GoogleAccount, target: GoogleLinkTarget) -> StoreResult<GoogleLink> {
        self.writer
            .write(move |tx| {
                let conn = tx.conn();
                let by_sub: Option<i64> = conn.value_opt("SELECT id FROM users WHERE google_sub = ?1", args![account.sub])?;
                let (user_id, created) = match target {
                    GoogleLinkTarget::User(id) => {
                        if by_sub.is_some_and(|other| other != id) {
                            return Ok(GoogleLink::TakenByAnotherUser);
                        }
                        if users::get(conn, id)?.is_none() {
                            return Ok(GoogleLink::UserGone);
                        }
                        (id, false)
                    }
                    GoogleLinkTarget::FindOrCreate { may_sign_up } => match by_sub {
                        Some(id) => (id, false),
                        None => match users::by_email(conn, &account.email)? {
                            Some(u) => (u.id, false),
                            None if may_sign_up => {
                                match users::create(conn, &account.email, account.name.as_deref(), Role::User.as_str()) {
                                    Ok(id) => (id, true),
                                    Err(StoreError::Invalid(why)) => return Ok(GoogleLink::Refused(why)),
                                    Err(e) => return Err(e),
                                }
                            }
                            None => return Ok(GoogleLink::NoAccount),
                        },
                    },
                };
                let previous_sub: Option<String> =
                    conn.value_opt::<Option<String>>("SELECT google_sub FROM users WHERE id = ?1", args![user_id])?.flatten();
                if previous_sub.as_deref() != Some(account.sub.as_str()) {
                    google::forget_calendars(conn, user_id)?;
                }
                conn.execute(
                    "UPDATE users SET
                        google_sub = ?1,
                        google_refresh_token = COALESCE(CAST(?2 AS TEXT), google_refresh_token),
                        google_access_token = ?3,
                        google_token_expires_at = ?4,
                        google_needs_reconnect = FALSE
                     WHERE id = ?5",
                    args![account.sub, account.refresh_token, account.access_token, account.access_expires_at, user_id],
                )?;
                let user = users::account_linked(tx, user_id, created)?;
                Ok(GoogleLink::Linked { user, created })
            })
            .await
    }

    /// Record the use of a sign-in state (by the hash of its nonce). True the
    /// first time; a replay finds it and gets false.
    pub async fn use_google_oauth_state(&self, nonce_hash: String, expires_at: String) -> StoreResult<bool> {
        self.writer
            .write(move |tx| {
                let n = tx.conn().execute(
                    "INSERT INTO google_oauth_states (nonce_hash, expires_at, used_at) VALUES (?1, ?2, ?3) ON CONFLICT (nonce_hash) DO NOTHING",
                    args![nonce_hash, expires_at, tx.now()],
                )?;
                Ok(n == 1)
            })
            .await
    }

    /// Drop used sign-in states that have expired (a replay of one fails its
    /// expiry check anyway). Returns how many went.
    pub async fn prune_google_oauth_states(&self) -> StoreResult<usize> {
        self.writer
            .write(|tx| {
                let now = tx.now().to_string();
                tx.conn().execute("DELETE FROM google_oauth_states WHERE expires_at <= ?1", args![now])
            })
            .await
    }
}
