//! Who a token is *now*: the one identity check REST and realtime share.
//!
//! A verified token is not enough: its user must still exist and be active,
//! the token must be newer than the user's `tokens_valid_after` (sign out
//! everywhere), and an admin token counts as admin only while the stored role
//! is admin (else it is narrowed to an ordinary user, not refused). The stored
//! state is cached per user for at most `auth.user_cache`, so a request or a
//! join costs no database read while the entry is fresh; realtime sessions
//! check again when the entry they used runs out, and account changes made
//! through this server drop the entry at once ([`Identities::forget`]).
//! `last_seen` is written from here, at most once a minute per user.

use std::time::Duration;

use dashmap::DashMap;
use tokio::time::Instant;

use super::{Claims, TokenError, Tokens};
use crate::store::{users, Store};

/// Who is calling: a real, active user (anon keys never get this far).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub user_id: i64,
    pub admin: bool,
}

impl Identity {
    pub fn may_see(&self, owner: i64) -> bool {
        self.admin || self.user_id == owner
    }
}

/// A passed check, and until when its answer may be trusted without asking again.
#[derive(Debug, Clone, Copy)]
pub struct Checked {
    pub identity: Identity,
    pub valid_until: Instant,
}

/// Why a token does not identify anyone (a sentence safe to send).
#[derive(Debug, Clone, PartialEq)]
pub enum Refused {
    Token(TokenError),
    Anon,
    NoUser,
    Disabled,
    SignedOut,
    /// The account could not be read; try again.
    Unavailable,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Token(e) => write!(f, "{e}"),
            Refused::Anon => write!(f, "the anon key names no user; sign in as a user"),
            Refused::NoUser => write!(f, "the token's user does not exist (the account was removed)"),
            Refused::Disabled => write!(f, "this account is disabled; ask an admin to enable it"),
            Refused::SignedOut => write!(f, "this token was signed out (sign out everywhere); sign in again"),
            Refused::Unavailable => write!(f, "the account could not be checked just now; try again"),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Cached {
    account: users::Account,
    fetched: Instant,
}

/// The shared check with its per-user cache. One per server.
pub struct Identities {
    store: Store,
    ttl: Duration,
    cache: DashMap<i64, Cached>,
    /// When each user's entry was last dropped: a read that started before
    /// then may have seen the account as it was, and is not cached.
    forgotten: DashMap<i64, Instant>,
    /// When `last_seen` was last written per user (at most once a minute).
    seen_written: DashMap<i64, Instant>,
}

impl std::fmt::Debug for Identities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identities").field("ttl", &self.ttl).field("cached", &self.cache.len()).finish()
    }
}

/// Entries kept at most; past it the maps are emptied (they refill on demand).
const MAX_CACHED: usize = 100_000;
const LAST_SEEN_EVERY: Duration = Duration::from_secs(60);

impl Identities {
    pub fn new(store: Store, ttl: Duration) -> Identities {
        Identities {
            store,
            ttl: ttl.max(Duration::from_millis(1)),
            cache: DashMap::new(),
            forgotten: DashMap::new(),
            seen_written: DashMap::new(),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Verify a token string and check its user.
    pub async fn authenticate(&self, tokens: &Tokens, token: &str) -> Result<Checked, Refused> {
        let claims = tokens.verify(token).map_err(Refused::Token)?;
        self.check(&claims).await
    }

    /// Check verified claims against the stored user, now (the token's times
    /// are checked again too: claims may have been verified a while ago).
    pub async fn check(&self, claims: &Claims) -> Result<Checked, Refused> {
        claims.check_times().map_err(Refused::Token)?;
        if claims.is_anon() {
            return Err(Refused::Anon);
        }
        let user_id = claims.user_id().ok_or(Refused::NoUser)?;
        let cached = self.cache.get(&user_id).map(|e| *e).filter(|c| c.fetched.elapsed() < self.ttl);
        let cached = match cached {
            Some(c) => c,
            None => {
                let fetched = Instant::now();
                let account = self.store.account(user_id).await.map_err(|_| Refused::Unavailable)?;
                let account = account.ok_or(Refused::NoUser)?;
                if self.cache.len() >= MAX_CACHED {
                    self.cache.clear();
                }
                let entry = Cached { account, fetched };
                // A read older than the last change (or than another read) is not kept.
                let stale = self.forgotten.get(&user_id).is_some_and(|f| *f >= fetched);
                if !stale {
                    self.cache
                        .entry(user_id)
                        .and_modify(|e| {
                            if e.fetched < fetched {
                                *e = entry
                            }
                        })
                        .or_insert(entry);
                }
                entry
            }
        };
        let account = cached.account;
        if !account.active {
            return Err(Refused::Disabled);
        }
        if let Some(after) = account.tokens_valid_after_ms {
            // A token without iat is older than any sign-out.
            if claims.issued_at_ms().is_none_or(|iat| iat <= after) {
                return Err(Refused::SignedOut);
            }
        }
        self.saw(user_id);
        Ok(Checked { identity: Identity { user_id, admin: claims.is_admin() && account.admin }, valid_until: cached.fetched + self.ttl })
    }

    /// Drop what is cached about a user (their account just changed here).
    pub fn forget(&self, user_id: i64) {
        if self.forgotten.len() >= MAX_CACHED {
            self.forgotten.clear();
        }
        self.forgotten.insert(user_id, Instant::now());
        self.cache.remove(&user_id);
    }

    /// Note the user was active: `last_seen` at most once a minute, through
    /// the writer, never logged as a change, never awaited by the caller.
    fn saw(&self, user_id: i64) {
        let now = Instant::now();
        let due = self.seen_written.get(&user_id).is_none_or(|t| now.duration_since(*t) >= LAST_SEEN_EVERY);
        if !due {
            return;
        }
        if self.seen_written.len() >= MAX_CACHED {
            self.seen_written.clear();
        }
        self.seen_written.insert(user_id, now);
        let store = self.store.clone();
        tokio::spawn(async move {
            let done = store.touch_last_seen(user_id).await;
            if let Err(e) = done {
                tracing::debug!(user = user_id, error = %e, "could not record last_seen");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DatabaseConfig;
    use crate::model::{AccountStatus, Role};
    use crate::store::accounts::Actor;

    #[tokio::test]
    async fn the_stored_account_decides_and_is_read_again_only_after_it_is_dropped_or_stale() {
        let dir = tempfile::tempdir().unwrap();
        let db = DatabaseConfig { path: dir.path().join("t.db").to_string_lossy().into_owned(), ..Default::default() };
        let store = crate::store::Store::open(&db).unwrap().store;
        let _admin = store.invite(Actor::cli(), "root@example.com".into(), None, Role::Admin, None).await.unwrap();
        let id = store.invite(Actor::cli(), "ann@example.com".into(), None, Role::User, None).await.unwrap().id;
        let tokens = Tokens::new("identity-test-secret-identity-test-0123");
        let ids = Identities::new(store.clone(), Duration::from_secs(60));

        let admin_token = tokens.verify(&tokens.user_token(id, "admin", 60)).unwrap();
        let checked = ids.check(&admin_token).await.unwrap();
        assert_eq!(checked.identity, Identity { user_id: id, admin: false }, "an admin token of a user who is not admin is narrowed");

        store.change_account(Actor::cli(), id, None, Some(AccountStatus::Disabled)).await.unwrap();
        assert!(ids.check(&admin_token).await.is_ok(), "cached for the ttl: no read per request");
        ids.forget(id);
        assert_eq!(ids.check(&admin_token).await.unwrap_err(), Refused::Disabled);

        store.change_account(Actor::cli(), id, None, Some(AccountStatus::Active)).await.unwrap();
        store.sign_out_everywhere(Actor::cli(), id).await.unwrap();
        ids.forget(id);
        assert_eq!(ids.check(&admin_token).await.unwrap_err(), Refused::SignedOut, "issued before the sign-out");
        tokio::time::sleep(Duration::from_millis(5)).await;
        let fresh = tokens.verify(&tokens.user_token(id, "user", 60)).unwrap();
        assert!(ids.check(&fresh).await.is_ok(), "issued after it");

        store.remove_account(Actor::cli(), id).await.unwrap();
        ids.forget(id);
        assert_eq!(ids.check(&fresh).await.unwrap_err(), Refused::NoUser);
        let anon = tokens.verify(&tokens.anon_key()).unwrap();
        assert_eq!(ids.check(&anon).await.unwrap_err(), Refused::Anon);
    }
}
