//! Sign in with Google, and connect a signed-in user's calendar: the consent
//! redirect with a signed, expiring, single-use `state` (also bound to the
//! browser by a cookie, so nobody can finish a sign-in someone else started),
//! the code exchange, and who may sign in (`auth.allowed_emails` /
//! `auth.allowed_domains`; by default only existing users).
//!
//! The state itself (signed, expiring, cookie-bound, single-use) and the
//! sign-up policy are shared with Microsoft in [`crate::auth::oauth_state`];
//! this module names Google's cookie and does Google's part.

use std::sync::Arc;

use super::client::CallError;
use super::sync::SyncError;
use super::GoogleSync;
use crate::auth::oauth_state::{OAuthStates, StateError};
use crate::store::google_accounts::{GoogleAccount, GoogleLink, GoogleLinkTarget};
use crate::store::users::User;
use crate::store::{timefmt, StoreError};

pub use crate::auth::oauth_state::{may_sign_up, Purpose, SignUpPolicy, STATE_TTL_SECS};

/// Scopes: who the user is, plus read-only calendar access.
pub const SCOPES: &str = "openid email profile https://www.googleapis.com/auth/calendar.readonly";
/// Holds the state's nonce in the browser that started the sign-in.
pub const STATE_COOKIE: &str = "syncgate_google_state";
const COOKIE_PATH: &str = "/api/auth/google";

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

/// `GET /api/auth/google/callback`'s query.
#[derive(Debug, Default)]
pub struct Callback {
    pub code: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
}

/// The value of our state cookie in a `Cookie` header.
pub fn cookie_nonce(header: Option<&str>) -> Option<String> {
    crate::auth::oauth_state::cookie_value(header, STATE_COOKIE)
}

impl From<StateError> for SignInError {
    fn from(e: StateError) -> SignInError {
        match e {
            StateError::BadState => SignInError::BadState,
            StateError::OtherBrowser => SignInError::OtherBrowser,
            StateError::StateUsed => SignInError::StateUsed,
            StateError::Internal(why) => SignInError::Internal(why),
            StateError::Store(e) => SignInError::Store(e),
        }
    }
}

impl GoogleSync {
    /// Google's states: its key, its cookie.
    fn states(&self) -> OAuthStates<'_> {
        OAuthStates { key: &self.state_key, cookie_name: STATE_COOKIE, cookie_path: COOKIE_PATH, secure: self.secure_cookies }
    }

    /// A `Set-Cookie` value that removes the state cookie.
    pub fn clear_state_cookie(&self) -> String {
        self.states().clear_cookie()
    }

    /// Build the consent redirect with a fresh state, and the cookie that ties
    /// it to this browser. Writes nothing.
    pub fn start_sign_in(&self, purpose: Purpose) -> Result<Started, SignInError> {
        let started = self.states().start(purpose);
        let mut url = reqwest::Url::parse(&self.api.auth_url).map_err(|_| SignInError::Internal("google.auth_url is not a URL"))?;
        url.query_pairs_mut()
            .append_pair("client_id", &self.api.client_id)
            .append_pair("redirect_uri", &self.api.redirect_url)
            .append_pair("response_type", "code")
            .append_pair("scope", SCOPES)
            .append_pair("access_type", "offline")
            .append_pair("prompt", "consent")
            .append_pair("include_granted_scopes", "true")
            .append_pair("state", &started.state);
        Ok(Started { location: url.to_string(), set_cookie: started.set_cookie })
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
        // Google is not sent a PKCE challenge; the state alone guards the round trip.
        let purpose = self.states().accept(&self.store, &state, cookie.as_deref()).await?.purpose;

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
    fn cookie_is_found_among_others() {
        assert_eq!(cookie_nonce(Some("a=1; syncgate_google_state=xyz; b=2")).as_deref(), Some("xyz"));
        assert_eq!(cookie_nonce(Some("a=1")), None);
        assert_eq!(cookie_nonce(None), None);
    }
}
