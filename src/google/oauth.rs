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
use sha2::Sha256;

use super::client::CallError;
use super::sync::SyncError;
use super::GoogleSync;
use crate::config::AuthConfig;
use crate::store::google_accounts::{GoogleAccount, GoogleLink, GoogleLinkTarget};
use crate::store::users::User;
use crate::store::{timefmt, StoreError};

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

/// Why a sign-in did not work. Each message is a sentence safe to show;
/// the HTTP edge picks the status.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    #[error("Google sign-in was cancelled: syncgate was not given access")]
    Cancelled,
    /// Google's `error` parameter, clipped.
    #[error("Google sign-in failed ({0}); start again")]
    Failed(String),
    #[error("the sign-in answer from Google lacks its code or state; start again")]
    Incomplete,
    #[error("this sign-in request is invalid or has expired; start again")]
    BadState,
    #[error("this sign-in was started in another browser or its cookie is gone; start again from the sign-in page")]
    OtherBrowser,
    #[error("this sign-in request was already used; start again")]
    StateUsed,
    #[error("Google refused the sign-in code (used or expired); start again")]
    CodeRefused,
    #[error("could not finish the sign-in with Google: {0}")]
    Exchange(CallError),
    #[error("could not ask Google who signed in: {0}")]
    UserInfo(CallError),
    #[error("Google did not say who signed in")]
    NoSubject,
    #[error("your Google account has no verified email address, so syncgate cannot sign you in")]
    NoVerifiedEmail,
    #[error("the Google account {0} is already connected to another syncgate user")]
    TakenByAnotherUser(String),
    #[error("the user who started this no longer exists")]
    UserGone,
    #[error(
        "{0} has no syncgate account, and this server does not let new addresses sign up; \
         ask an administrator to add you (or to allow your address or domain in auth.allowed_emails / auth.allowed_domains)"
    )]
    NoAccount(String),
    /// A new user could not be made of the Google account.
    #[error("{0}")]
    Refused(String),
    /// Ours, not the user's (a bad `google.auth_url`, a state expiry out of
    /// range): logged, never shown.
    #[error("{0}")]
    Internal(&'static str),
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// Who may sign up by signing in with Google (`auth.allowed_emails`,
/// `auth.allowed_domains`); by default only existing users sign in.
#[derive(Debug, Clone, Default)]
pub struct SignUpPolicy {
    pub allowed_emails: Vec<String>,
    pub allowed_domains: Vec<String>,
}

impl From<&AuthConfig> for SignUpPolicy {
    fn from(auth: &AuthConfig) -> SignUpPolicy {
        SignUpPolicy { allowed_emails: auth.allowed_emails.clone(), allowed_domains: auth.allowed_domains.clone() }
    }
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
pub fn may_sign_up(auth: &SignUpPolicy, email: &str) -> bool {
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
    pub fn start_sign_in(&self, purpose: Purpose) -> Result<Started, SignInError> {
        let nonce = crate::auth::random_token(24);
        let exp = crate::auth::unix_now() + STATE_TTL_SECS;
        let state = sign_state(&self.state_key, &nonce, exp, purpose);
        let mut url = reqwest::Url::parse(&self.api.auth_url).map_err(|_| SignInError::Internal("google.auth_url is not a URL"))?;
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
    /// background.
    pub async fn finish_sign_in(self: &Arc<Self>, q: Callback, cookie: Option<String>) -> Result<User, SignInError> {
        if let Some(err) = q.error.as_deref() {
            // Google's `error` parameter, as it goes into a message.
            let err = crate::http::clip(err);
            return Err(if err == "access_denied" { SignInError::Cancelled } else { SignInError::Failed(err) });
        }
        let (Some(code), Some(state)) = (q.code.filter(|c| !c.is_empty() && c.len() <= 2048), q.state) else {
            return Err(SignInError::Incomplete);
        };
        let claims = verify_state(&self.state_key, &state, crate::auth::unix_now()).ok_or(SignInError::BadState)?;
        if cookie.as_deref() != Some(claims.nonce.as_str()) {
            return Err(SignInError::OtherBrowser);
        }
        // Single use: the first use records the nonce; a replay finds it.
        let hash = crate::auth::sha256_hex(&claims.nonce);
        let expires_at = time::OffsetDateTime::from_unix_timestamp(claims.exp)
            .map(timefmt::format)
            .map_err(|_| SignInError::Internal("the sign-in state's expiry is out of range"))?;
        let purpose = claims.purpose;
        if !self.store.use_google_oauth_state(hash, expires_at).await? {
            return Err(SignInError::StateUsed);
        }

        let tokens = self.api.exchange_code(&code).await.map_err(|e| match e {
            CallError::InvalidGrant => SignInError::CodeRefused,
            other => SignInError::Exchange(other),
        })?;
        let info = self.api.userinfo(&tokens.access_token).await.map_err(SignInError::UserInfo)?;
        let email = info.email.clone().unwrap_or_default().trim().to_string();
        if email.is_empty() || info.email_verified == Some(false) {
            return Err(SignInError::NoVerifiedEmail);
        }
        if info.sub.is_empty() || info.sub.len() > 255 {
            return Err(SignInError::NoSubject);
        }
        if tokens.refresh_token.is_none() {
            tracing::warn!(%email, "Google gave no refresh token; calendar sync needs the user to grant offline access again");
        }
        let expires_at = time::OffsetDateTime::now_utc() + time::Duration::seconds(tokens.expires_in.unwrap_or(3600).clamp(0, 86_400 * 30));
        let target = match purpose {
            Purpose::Connect(id) => GoogleLinkTarget::User(id),
            Purpose::SignIn => GoogleLinkTarget::FindOrCreate { may_sign_up: may_sign_up(&self.sign_up, &email) },
        };
        let account = GoogleAccount {
            sub: info.sub.clone(),
            email: email.clone(),
            name: info.name.clone(),
            access_token: tokens.access_token.expose().to_string(),
            refresh_token: tokens.refresh_token.as_ref().map(|r| r.expose().to_string()),
            access_expires_at: timefmt::format(expires_at),
        };
        let (user, created) = match self.store.link_google_account(account, target).await? {
            GoogleLink::Linked { user, created } => (user, created),
            GoogleLink::TakenByAnotherUser => return Err(SignInError::TakenByAnotherUser(email)),
            GoogleLink::UserGone => return Err(SignInError::UserGone),
            GoogleLink::NoAccount => return Err(SignInError::NoAccount(email)),
            GoogleLink::Refused(why) => return Err(SignInError::Refused(why)),
        };
        tracing::info!(user = user.id, created, connect = matches!(purpose, Purpose::Connect(_)), "signed in with Google");
        if user.google_connected {
            let me = self.clone();
            let user_id = user.id;
            // Channel first, then the full sync: a change after the watch is
            // pushed, one before the sync's list is in it, so none falls between.
            self.tasks.spawn(async move {
                let mut creds = match me.credentials(user_id).await {
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
        assert!(!may_sign_up(&(&auth).into(), "a@example.com"), "by default only existing users");
        auth.allowed_emails = vec!["A@Example.com".into()];
        auth.allowed_domains = vec!["@firm.example".into()];
        let auth = SignUpPolicy::from(&auth);
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
