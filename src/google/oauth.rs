//! Sign in with Google, and connect a signed-in user's calendar: the consent
//! redirect with a signed, expiring, single-use `state` (also bound to the
//! browser by a cookie, so nobody can finish a sign-in someone else started),
//! the code exchange, and who may sign in (`auth.allowed_emails` /
//! `auth.allowed_domains`; by default only existing users).
//!
//! The state carries everything it needs under its signature (nonce,
//! expiry, the user a `connect` is for), so starting a sign-in writes
//! nothing; a state's nonce is recorded in `google_oauth_states` when it is
//! used, which is what makes it single-use.

use std::sync::Arc;

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use rusqlite::OptionalExtension;
use sha2::Sha256;

use super::sync::SyncError;
use super::{GoogleSync, Secret};
use crate::config::AuthConfig;
use crate::http::error::{ApiError, ApiResult};
use crate::store::{timefmt, users};

/// Scopes: who the user is, plus read-only calendar access.
pub const SCOPES: &str = "openid email profile https://www.googleapis.com/auth/calendar.readonly";
/// How long a consent round trip may take.
pub const STATE_TTL_SECS: i64 = 600;
/// Holds the state's nonce in the browser that started the sign-in.
pub const STATE_COOKIE: &str = "syncgate_google_state";
const COOKIE_PATH: &str = "/api/auth/google";

/// What the sign-in is for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Purpose {
    /// Sign in (or sign up, if the policy allows) by Google account.
    SignIn,
    /// Attach Google to this already signed-in user.
    Connect(i64),
}

/// The redirect to Google's consent page and the cookie to set with it.
pub struct Started {
    pub location: String,
    pub set_cookie: String,
}

/// `GET /api/auth/google/callback`'s query.
#[derive(Debug, Default)]
pub struct Callback {
    pub code: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// What a verified state says.
#[derive(Debug, Clone, PartialEq)]
pub struct StateClaims {
    pub nonce: String,
    pub exp: i64,
    pub purpose: Purpose,
}

fn state_mac(key: &[u8; 32], payload: &str) -> Option<Hmac<Sha256>> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).ok()?;
    mac.update(payload.as_bytes());
    Some(mac)
}

/// `<nonce>.<expiry unix seconds>.<connecting user id or 0>.<HMAC-SHA256 of the rest>`.
pub fn sign_state(key: &[u8; 32], nonce: &str, exp: i64, purpose: Purpose) -> String {
    let uid = match purpose {
        Purpose::SignIn => 0,
        Purpose::Connect(id) => id,
    };
    let payload = format!("{nonce}.{exp}.{uid}");
    let sig = state_mac(key, &payload).map(|m| b64(&m.finalize().into_bytes())).unwrap_or_default();
    format!("{payload}.{sig}")
}

/// A state this server signed and that has not expired.
pub fn verify_state(key: &[u8; 32], state: &str, now_unix: i64) -> Option<StateClaims> {
    let (payload, sig) = state.rsplit_once('.')?;
    let mut parts = payload.split('.');
    let (nonce, exp, uid) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || nonce.is_empty() || nonce.len() > 100 {
        return None;
    }
    let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(sig).ok()?;
    state_mac(key, payload)?.verify_slice(&sig).ok()?;
    let exp: i64 = exp.parse().ok()?;
    let purpose = match uid.parse::<i64>().ok()? {
        0 => Purpose::SignIn,
        id if id > 0 => Purpose::Connect(id),
        _ => return None,
    };
    (exp > now_unix).then(|| StateClaims { nonce: nonce.to_string(), exp, purpose })
}

/// May someone without an account sign up with this (verified) email?
pub fn may_sign_up(auth: &AuthConfig, email: &str) -> bool {
    let email = email.trim();
    if auth.allowed_emails.iter().any(|a| a.trim().eq_ignore_ascii_case(email)) {
        return true;
    }
    match email.rsplit_once('@') {
        Some((_, domain)) => auth.allowed_domains.iter().any(|d| d.trim().trim_start_matches('@').eq_ignore_ascii_case(domain)),
        None => false,
    }
}

/// The value of our state cookie in a `Cookie` header.
pub fn cookie_nonce(header: Option<&str>) -> Option<String> {
    header?.split(';').filter_map(|c| c.trim().split_once('=')).find(|(k, _)| *k == STATE_COOKIE).map(|(_, v)| v.trim().to_string())
}

impl GoogleSync {
    /// A `Set-Cookie` value that removes the state cookie.
    pub fn clear_state_cookie(&self) -> String {
        format!(
            "{STATE_COOKIE}=; Path={COOKIE_PATH}; Max-Age=0; HttpOnly; SameSite=Lax{}",
            if self.secure_cookies { "; Secure" } else { "" }
        )
    }

    /// Build the consent redirect with a fresh state, and the cookie that ties
    /// it to this browser. Writes nothing.
    pub fn start_sign_in(&self, purpose: Purpose) -> ApiResult<Started> {
        let nonce = crate::auth::random_token(24);
        let exp = crate::auth::unix_now() + STATE_TTL_SECS;
        let state = sign_state(&self.state_key, &nonce, exp, purpose);
        let mut url = reqwest::Url::parse(&self.api.auth_url).map_err(|_| ApiError::internal("google.auth_url is not a URL"))?;
        url.query_pairs_mut()
            .append_pair("client_id", &self.api.client_id)
            .append_pair("redirect_uri", &self.api.redirect_url)
            .append_pair("response_type", "code")
            .append_pair("scope", SCOPES)
            .append_pair("access_type", "offline")
            .append_pair("prompt", "consent")
            .append_pair("include_granted_scopes", "true")
            .append_pair("state", &state);
        let set_cookie = format!(
            "{STATE_COOKIE}={nonce}; Path={COOKIE_PATH}; Max-Age={STATE_TTL_SECS}; HttpOnly; SameSite=Lax{}",
            if self.secure_cookies { "; Secure" } else { "" }
        );
        Ok(Started { location: url.to_string(), set_cookie })
    }

    /// Finish a sign-in: check the state (signature, expiry, this browser,
    /// first use), exchange the code, find or create the user, store the
    /// tokens, then start the first full sync and the push channel in the
    /// background. Errors are sentences safe to show.
    pub async fn finish_sign_in(self: &Arc<Self>, q: Callback, cookie: Option<String>) -> ApiResult<users::User> {
        if let Some(err) = q.error.as_deref() {
            let err = crate::http::clip(err);
            return Err(if err == "access_denied" {
                ApiError::Forbidden("Google sign-in was cancelled: syncgate was not given access".into())
            } else {
                ApiError::BadRequest(format!("Google sign-in failed ({err}); start again"))
            });
        }
        let (Some(code), Some(state)) = (q.code.filter(|c| !c.is_empty() && c.len() <= 2048), q.state) else {
            return Err(ApiError::BadRequest("the sign-in answer from Google lacks its code or state; start again".into()));
        };
        let claims = verify_state(&self.state_key, &state, crate::auth::unix_now())
            .ok_or_else(|| ApiError::BadRequest("this sign-in request is invalid or has expired; start again".into()))?;
        if cookie.as_deref() != Some(claims.nonce.as_str()) {
            return Err(ApiError::BadRequest(
                "this sign-in was started in another browser or its cookie is gone; start again from the sign-in page".into(),
            ));
        }
        // Single use: the first use records the nonce; a replay finds it.
        let hash = crate::auth::sha256_hex(&claims.nonce);
        let expires_at = time::OffsetDateTime::from_unix_timestamp(claims.exp).map(timefmt::format).map_err(ApiError::internal)?;
        let purpose = claims.purpose;
        let first_use = self
            .store
            .writer
            .write(move |tx| {
                let n = tx.conn().execute(
                    "INSERT INTO google_oauth_states (nonce_hash, expires_at, used_at) VALUES (?1, ?2, ?3) ON CONFLICT (nonce_hash) DO NOTHING",
                    rusqlite::params![hash, expires_at, tx.now()],
                )?;
                Ok(n == 1)
            })
            .await?;
        if !first_use {
            return Err(ApiError::BadRequest("this sign-in request was already used; start again".into()));
        }

        let tokens = self.api.exchange_code(&code).await.map_err(|e| match e {
            super::client::CallError::InvalidGrant => {
                ApiError::BadRequest("Google refused the sign-in code (used or expired); start again".into())
            }
            other => ApiError::Unavailable(format!("could not finish the sign-in with Google: {other}")),
        })?;
        let info = self
            .api
            .userinfo(&tokens.access_token)
            .await
            .map_err(|e| ApiError::Unavailable(format!("could not ask Google who signed in: {e}")))?;
        let email = info.email.clone().unwrap_or_default().trim().to_string();
        if email.is_empty() || info.email_verified == Some(false) {
            return Err(ApiError::Forbidden("your Google account has no verified email address, so syncgate cannot sign you in".into()));
        }
        if info.sub.is_empty() || info.sub.len() > 255 {
            return Err(ApiError::Unavailable("Google did not say who signed in".into()));
        }
        if tokens.refresh_token.is_none() {
            tracing::warn!(%email, "Google gave no refresh token; calendar sync needs the user to grant offline access again");
        }
        let expires_at = time::OffsetDateTime::now_utc() + time::Duration::seconds(tokens.expires_in.unwrap_or(3600).clamp(0, 86_400 * 30));
        let expires_at = timefmt::format(expires_at);
        let auth = self.auth.clone();
        let sub = info.sub.clone();
        let name = info.name.clone();
        let access: Secret = tokens.access_token;
        let refresh: Option<Secret> = tokens.refresh_token;
        let (user, created) = self
            .store
            .writer
            .write(move |tx| {
                let conn = tx.conn();
                let by_sub: Option<i64> = conn.query_row("SELECT id FROM users WHERE google_sub = ?1", [&sub], |r| r.get(0)).optional()?;
                let (user_id, created) = match purpose {
                    Purpose::Connect(id) => {
                        if by_sub.is_some_and(|other| other != id) {
                            return Err(ApiError::Conflict(format!(
                                "the Google account {email} is already connected to another syncgate user"
                            )).into());
                        }
                        users::get(conn, id)?.ok_or_else(|| ApiError::Unauthorized("the user who started this no longer exists".into()))?;
                        (id, false)
                    }
                    Purpose::SignIn => match by_sub {
                        Some(id) => (id, false),
                        None => match users::by_email(conn, &email)? {
                            Some(u) => (u.id, false),
                            None if may_sign_up(&auth, &email) => {
                                let id = users::create(conn, &email, name.as_deref(), "user")?;
                                (id, true)
                            }
                            None => {
                                return Err(ApiError::Forbidden(format!(
                                    "{email} has no syncgate account, and this server does not let new addresses sign up; \
                                     ask an administrator to add you (or to allow your address or domain in auth.allowed_emails / auth.allowed_domains)"
                                )).into())
                            }
                        },
                    },
                };
                // A different Google account than before: its calendars are listed afresh.
                let previous_sub: Option<String> =
                    conn.query_row("SELECT google_sub FROM users WHERE id = ?1", [user_id], |r| r.get(0)).optional()?.flatten();
                if previous_sub.as_deref() != Some(sub.as_str()) {
                    crate::store::google::forget_calendars(conn, user_id)?;
                }
                conn.execute(
                    "UPDATE users SET
                        google_sub = ?1,
                        google_refresh_token = COALESCE(?2, google_refresh_token),
                        google_access_token = ?3,
                        google_token_expires_at = ?4,
                        google_needs_reconnect = 0,
                        updated_at = ?5
                     WHERE id = ?6",
                    rusqlite::params![sub, refresh.as_ref().map(Secret::expose), access.expose(), expires_at, tx.now(), user_id],
                )?;
                let user = users::get(conn, user_id)?.ok_or_else(|| ApiError::internal("signed-in user vanished"))?;
                if created {
                    // A new account, as admins see it live (public columns only).
                    tx.log_inserted(crate::store::Table::Users, user_id)?;
                }
                Ok((user, created))
            })
            .await?;
        tracing::info!(user = user.id, created, connect = matches!(purpose, Purpose::Connect(_)), "signed in with Google");
        if user.google_connected {
            let me = self.clone();
            let user_id = user.id;
            // Channel first, then the full sync: a change after the watch is
            // pushed, one before the sync's list is in it, so none falls between.
            self.tasks.spawn(async move {
                let mut creds = match me.store.read(move |c| Ok(super::sync::load_creds(c, user_id)?)).await {
                    Ok(Some(c)) => c,
                    _ => return,
                };
                match me.ticked_calendars(user_id, &mut creds, &mut false).await {
                    Ok(calendars) => {
                        for c in calendars {
                            match me.replace_channel(user_id, &c.calendar_id).await {
                                Ok(_) => {}
                                Err(e @ (SyncError::NeedsReconnect | SyncError::NotConnected | SyncError::ShuttingDown)) => {
                                    tracing::warn!(user = user_id, error = %e, "could not register the Google push channel after sign-in");
                                }
                                // The renewal scheduler tries again with backoff.
                                Err(e) => me.channel_failed(user_id, &c.calendar_id, &e.to_string()).await,
                            }
                        }
                    }
                    Err(e) => tracing::warn!(user = user_id, error = %e, "could not read the Google calendar list after sign-in"),
                }
                me.enqueue(user_id);
            });
        }
        Ok(user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_are_signed_and_expire() {
        let key = [7u8; 32];
        let s = sign_state(&key, "abc", 1000, Purpose::SignIn);
        let c = verify_state(&key, &s, 999).unwrap();
        assert_eq!((c.nonce.as_str(), c.exp, c.purpose), ("abc", 1000, Purpose::SignIn));
        assert_eq!(verify_state(&key, &s, 1000), None, "expired");
        assert_eq!(verify_state(&[8u8; 32], &s, 999), None, "other key");
        assert_eq!(verify_state(&key, &s.replace("abc", "abd"), 999), None, "tampered nonce");
        assert_eq!(verify_state(&key, &s.replace(".1000.", ".2000."), 999), None, "tampered expiry");
        let c = sign_state(&key, "abc", 1000, Purpose::Connect(7));
        assert_eq!(verify_state(&key, &c, 0).unwrap().purpose, Purpose::Connect(7));
        assert_eq!(verify_state(&key, &c.replace(".1000.7.", ".1000.8."), 0), None, "tampered user");
        assert_eq!(verify_state(&key, "garbage", 0), None);
        assert_eq!(verify_state(&key, "a.b.c.d.e", 0), None);
    }

    #[test]
    fn sign_up_policy() {
        let mut auth = AuthConfig::default();
        assert!(!may_sign_up(&auth, "a@example.com"), "by default only existing users");
        auth.allowed_emails = vec!["A@Example.com".into()];
        auth.allowed_domains = vec!["@firm.example".into()];
        assert!(may_sign_up(&auth, "a@example.com"));
        assert!(may_sign_up(&auth, "b@FIRM.example"));
        assert!(!may_sign_up(&auth, "b@example.com"));
        assert!(!may_sign_up(&auth, "b@sub.firm.example"));
    }

    #[test]
    fn cookie_is_found_among_others() {
        assert_eq!(cookie_nonce(Some("a=1; syncgate_google_state=xyz; b=2")).as_deref(), Some("xyz"));
        assert_eq!(cookie_nonce(Some("a=1")), None);
        assert_eq!(cookie_nonce(None), None);
    }
}
