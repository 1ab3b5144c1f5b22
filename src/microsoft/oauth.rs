//! Connect Outlook, and sign in with Microsoft: the identity platform's
//! authorization-code flow with PKCE (S256) and the shared signed,
//! single-use, cookie-bound state ([`crate::auth::oauth_state`]), the code
//! exchange and refresh at the token endpoint, who signed in (the
//! id_token's `tid` + `oid`; never its `email`, which any tenant's admin can
//! set to anyone's address), who may sign in or up with it, and the access
//! token the sync calls Graph with ([`MicrosoftSync::access_token`]).
//!
//! An existing user gets a Microsoft account only by connecting it while
//! signed in. Sign-in with an account nobody connected makes a new user
//! only for a verified identity: the configured tenant is one firm's and
//! the account is in it, or the address's domain is one the account's
//! tenant has verified; then `auth.allowed_emails` / `auth.allowed_domains`
//! apply as for Google. Tokens never reach a log line or an error.

use std::sync::Arc;

use base64::Engine;
use serde::Deserialize;

use super::MicrosoftSync;
use crate::auth::oauth_state::{self, OAuthStates, Purpose, StateError};
use crate::model::Provider;
use crate::provider::Secret;
use crate::store::microsoft_accounts::{MicrosoftAccount, MicrosoftLink, MicrosoftLinkTarget, MicrosoftSignUp};
use crate::store::users::User;
use crate::store::{timefmt, StoreError};

/// Delegated scopes: refresh tokens, reading calendars, who the user is.
pub const SCOPES: &str = "offline_access Calendars.Read User.Read openid profile";
/// Holds the state's nonce in the browser that started the sign-in.
pub const STATE_COOKIE: &str = "syncgate_microsoft_state";
const COOKIE_PATH: &str = "/api/auth/microsoft";
/// `microsoft.tenant` values that admit accounts of many tenants: none of
/// them vouches for an address.
const SHARED_TENANTS: [&str; 3] = ["common", "organizations", "consumers"];
/// An access token is used while it is valid for at least this long.
const ACCESS_MARGIN_SECS: i64 = 60;

/// The redirect to Microsoft's sign-in page and the cookie to set with it.
pub struct Started {
    pub location: String,
    pub set_cookie: String,
}

/// `GET /api/auth/microsoft/callback`'s query.
#[derive(Debug, Default)]
pub struct Callback {
    pub code: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
}

/// Why a call to the token endpoint (or Graph's organization) failed. Never
/// holds a token: the identity platform's `error` code at most.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The code, the PKCE verifier or the refresh token is invalid, expired
    /// or revoked: back to the sign-in page.
    #[error("Microsoft refused the grant (invalid_grant)")]
    InvalidGrant,
    #[error("Microsoft answered {status} ({error})")]
    Refused { status: u16, error: String },
    #[error("could not reach Microsoft: {0}")]
    Network(String),
    #[error("Microsoft's answer could not be read")]
    Unreadable,
}

impl TokenError {
    /// The label `outcome` of `syncgate_microsoft_api_calls_total`.
    fn outcome(&self) -> &'static str {
        match self {
            TokenError::InvalidGrant => "invalid_grant",
            TokenError::Refused { .. } => "refused",
            TokenError::Network(_) => "network",
            TokenError::Unreadable => "bad_response",
        }
    }
}

/// Why a sign-in or connect did not work. Each message is a sentence safe
/// to show; the HTTP edge picks the status.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    #[error("Microsoft sign-in was cancelled: syncgate was not given access")]
    Cancelled,
    /// Microsoft's `error` parameter, clipped.
    #[error("Microsoft sign-in failed ({0}); start again")]
    Failed(String),
    #[error("the sign-in answer from Microsoft lacks its code or state; start again")]
    Incomplete,
    #[error(transparent)]
    State(#[from] StateError),
    #[error("Microsoft refused the sign-in code (used, expired, or not from this sign-in); start again")]
    CodeRefused,
    #[error("could not finish the sign-in with Microsoft: {0}")]
    Exchange(TokenError),
    #[error("Microsoft did not say who signed in")]
    NoIdentity,
    #[error("this Microsoft account is already connected to another syncgate user")]
    TakenByAnotherUser,
    #[error("the user who started this no longer exists")]
    UserGone,
    #[error(
        "this Microsoft account is not connected to a syncgate user; sign in another way (a login link or Google), \
         then use \"Connect Outlook\" on the Integrations page"
    )]
    NotLinked,
    #[error(
        "{0} has no syncgate account, and this server does not let new addresses sign up; \
         ask an administrator to add you (or to allow your address or domain in auth.allowed_emails / auth.allowed_domains)"
    )]
    NoAccount(String),
    /// A new user could not be made of the account.
    #[error("{0}")]
    Refused(String),
    /// Ours, not the user's (a bad `microsoft.login_base_url`): logged, never shown.
    #[error("{0}")]
    Internal(&'static str),
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// Why [`MicrosoftSync::access_token`] has no token to give.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("the user has not connected Outlook")]
    NotConnected,
    #[error("Microsoft access was revoked or has expired; connect Outlook again")]
    NeedsReconnect,
    #[error("the account is disabled")]
    Disabled,
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("another refresh of this user's Microsoft token did not finish in time")]
    Busy,
    #[error("could not refresh the Microsoft access token: {0}")]
    Refresh(TokenError),
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// The token endpoint's answer.
#[derive(Deserialize)]
pub struct Tokens {
    pub access_token: Secret,
    #[serde(default)]
    pub refresh_token: Option<Secret>,
    #[serde(default)]
    pub expires_in: Option<i64>,
    /// Read for its claims only (see [`id_token_claims`]).
    #[serde(default)]
    pub id_token: Option<Secret>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tokens(***)")
    }
}

/// Who signed in, as the id_token says. Only what syncgate uses is read;
/// `email` deliberately is not a field.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct IdClaims {
    /// The tenant.
    pub tid: String,
    /// The user within the tenant: with `tid`, the account's key.
    pub oid: String,
    /// Shown, and the address a verified sign-up uses.
    #[serde(default)]
    pub preferred_username: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

/// The claims of an id_token, from its payload segment. No signature
/// check: the token came straight from the token endpoint over TLS in
/// answer to our own code (with its PKCE verifier and client secret), which
/// is what vouches for it; the identity platform documents the refresh
/// answer's id_token as unsigned anyway. Never use one from anywhere else.
pub fn id_token_claims(id_token: &str) -> Option<IdClaims> {
    let payload = id_token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: IdClaims = serde_json::from_slice(&bytes).ok()?;
    let ok = |s: &str| !s.trim().is_empty() && s.len() <= 100;
    (ok(&claims.tid) && ok(&claims.oid)).then_some(claims)
}

/// Does `microsoft.tenant` name one firm's tenant (not a shared endpoint)?
pub fn is_specific_tenant(tenant: &str) -> bool {
    let t = tenant.trim();
    !t.is_empty() && !SHARED_TENANTS.iter().any(|s| s.eq_ignore_ascii_case(t))
}

/// `error` of a token-endpoint error body, clipped (descriptions change and
/// are not shown).
#[derive(Deserialize)]
struct OAuthErrorBody {
    #[serde(default)]
    error: String,
}

#[derive(Deserialize)]
struct Organizations {
    #[serde(default)]
    value: Vec<Organization>,
}

#[derive(Deserialize)]
struct Organization {
    #[serde(default, rename = "verifiedDomains")]
    verified_domains: Vec<VerifiedDomain>,
}

#[derive(Deserialize)]
struct VerifiedDomain {
    #[serde(default)]
    name: String,
}

fn expires_at(expires_in: Option<i64>) -> String {
    timefmt::format(timefmt::now() + time::Duration::seconds(expires_in.unwrap_or(3600).clamp(0, 86_400)))
}

impl MicrosoftSync {
    /// Microsoft's states: its key, its cookie.
    fn states(&self) -> OAuthStates<'_> {
        OAuthStates { key: &self.state_key, cookie_name: STATE_COOKIE, cookie_path: COOKIE_PATH, secure: self.secure_cookies }
    }

    /// A `Set-Cookie` value that removes the state cookie.
    pub fn clear_state_cookie(&self) -> String {
        self.states().clear_cookie()
    }

    /// The nonce in Microsoft's state cookie, from a `Cookie` header.
    pub fn cookie_nonce(&self, header: Option<&str>) -> Option<String> {
        self.states().cookie_nonce(header)
    }

    fn endpoint(&self, what: &str) -> String {
        format!("{}/{}/oauth2/v2.0/{what}", self.cfg.login_base_url.trim_end_matches('/'), self.cfg.tenant.trim())
    }

    /// The sign-in page's URL with a fresh state and PKCE challenge, and the
    /// cookie that ties it to this browser. Writes nothing.
    pub fn start_sign_in(&self, purpose: Purpose) -> Result<Started, SignInError> {
        let started = self.states().start(purpose);
        let challenge = oauth_state::code_challenge(&self.states().code_verifier(&started.nonce));
        let mut url = reqwest::Url::parse(&self.endpoint("authorize"))
            .map_err(|_| SignInError::Internal("microsoft.login_base_url or microsoft.tenant does not make a URL"))?;
        url.query_pairs_mut()
            .append_pair("client_id", &self.cfg.client_id)
            .append_pair("response_type", "code")
            .append_pair("redirect_uri", &self.redirect_url)
            .append_pair("response_mode", "query")
            .append_pair("scope", SCOPES)
            .append_pair("state", &started.state)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        Ok(Started { location: url.to_string(), set_cookie: started.set_cookie })
    }

    /// Count a call to Microsoft in `syncgate_microsoft_api_calls_total`
    /// (the identity platform's are `token` and `organization`).
    fn count<T>(&self, call: &'static str, result: &Result<T, TokenError>) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(e) => e.outcome(),
        };
        self.metrics.microsoft_api_calls.with_label_values(&[call, outcome]).inc();
    }

    /// POST a form to the token endpoint.
    async fn token_call(&self, form: &[(&str, &str)]) -> Result<Tokens, TokenError> {
        let result = self.token_call_uncounted(form).await;
        self.count("token", &result);
        result
    }

    async fn token_call_uncounted(&self, form: &[(&str, &str)]) -> Result<Tokens, TokenError> {
        let secret = secrecy::ExposeSecret::expose_secret(&self.cfg.client_secret);
        let mut form = form.to_vec();
        form.extend([("client_id", self.cfg.client_id.as_str()), ("client_secret", secret), ("scope", SCOPES)]);
        // The URL holds no secret; the form (which does) is never in an error.
        let res = self
            .http()?
            .post(self.endpoint("token"))
            .form(&form)
            .send()
            .await
            .map_err(|e| TokenError::Network(e.without_url().to_string()))?;
        let status = res.status().as_u16();
        let bytes = res.bytes().await.map_err(|e| TokenError::Network(e.without_url().to_string()))?;
        if (200..300).contains(&status) {
            return serde_json::from_slice(&bytes).map_err(|_| TokenError::Unreadable);
        }
        let error = serde_json::from_slice::<OAuthErrorBody>(&bytes).map(|b| b.error).unwrap_or_default();
        if error == "invalid_grant" {
            return Err(TokenError::InvalidGrant);
        }
        Err(TokenError::Refused { status, error: crate::http::clip(&error) })
    }

    /// Redeem a sign-in code with its PKCE verifier.
    async fn exchange_code(&self, code: &str, verifier: &str) -> Result<Tokens, TokenError> {
        self.token_call(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", &self.redirect_url),
            ("code_verifier", verifier),
        ])
        .await
    }

    /// The domains the signed-in account's tenant has verified
    /// (`GET /organization?$select=verifiedDomains`, with its new token).
    /// A refusal (a personal account has no organization) is no domains.
    async fn verified_domains(&self, access: &Secret) -> Result<Vec<String>, TokenError> {
        let result = self.verified_domains_uncounted(access).await;
        self.count("organization", &result);
        result
    }

    async fn verified_domains_uncounted(&self, access: &Secret) -> Result<Vec<String>, TokenError> {
        let url = format!("{}/organization?$select=verifiedDomains", self.cfg.graph_base_url.trim_end_matches('/'));
        let res = self
            .http()?
            .get(url)
            .bearer_auth(access.expose())
            .send()
            .await
            .map_err(|e| TokenError::Network(e.without_url().to_string()))?;
        let status = res.status().as_u16();
        if (400..500).contains(&status) {
            return Ok(vec![]);
        }
        if !(200..300).contains(&status) {
            return Err(TokenError::Refused { status, error: "organization".into() });
        }
        let orgs: Organizations = res.json().await.map_err(|_| TokenError::Unreadable)?;
        Ok(orgs.value.into_iter().flat_map(|o| o.verified_domains).map(|d| d.name.trim().to_ascii_lowercase()).collect())
    }

    /// The address a sign-up of this account would use, when the identity
    /// is verified: in the one tenant configured, or its domain verified by
    /// its own tenant. `email` is never consulted.
    async fn verified_address(&self, claims: &IdClaims, access: &Secret) -> Result<Option<String>, SignInError> {
        let Some(address) = claims.preferred_username.as_deref().map(str::trim).filter(|a| crate::store::users::valid_email(a)) else {
            return Ok(None);
        };
        if is_specific_tenant(&self.cfg.tenant) && claims.tid.eq_ignore_ascii_case(self.cfg.tenant.trim()) {
            return Ok(Some(address.to_string()));
        }
        let domain = address.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase()).unwrap_or_default();
        let domains = self.verified_domains(access).await.map_err(SignInError::Exchange)?;
        Ok(domains.contains(&domain).then(|| address.to_string()))
    }

    /// Finish a sign-in or connect: check the state (signature, expiry,
    /// this browser, first use), redeem the code with the state's PKCE
    /// verifier, read who signed in, and link the account (see the module doc).
    pub async fn finish_sign_in(self: &Arc<Self>, q: Callback, cookie: Option<String>) -> Result<User, SignInError> {
        if let Some(err) = q.error.as_deref() {
            let err = crate::http::clip(err);
            return Err(if err == "access_denied" { SignInError::Cancelled } else { SignInError::Failed(err) });
        }
        let (Some(code), Some(state)) = (q.code.filter(|c| !c.is_empty() && c.len() <= 4096), q.state) else {
            return Err(SignInError::Incomplete);
        };
        let claims = self.states().accept(&self.store, &state, cookie.as_deref()).await?;
        let verifier = self.states().code_verifier(&claims.nonce);
        let tokens = self.exchange_code(&code, &verifier).await.map_err(|e| match e {
            TokenError::InvalidGrant => SignInError::CodeRefused,
            other => SignInError::Exchange(other),
        })?;
        let who = tokens.id_token.as_ref().and_then(|t| id_token_claims(t.expose())).ok_or(SignInError::NoIdentity)?;
        if tokens.refresh_token.is_none() {
            tracing::warn!(tenant = %who.tid, "Microsoft gave no refresh token (offline_access not granted?); Outlook sync needs the user to connect again");
        }
        let target = match claims.purpose {
            Purpose::Connect(id) => MicrosoftLinkTarget::User(id),
            Purpose::SignIn => {
                let sign_up = match self.store.microsoft_user(who.tid.clone(), who.oid.clone()).await? {
                    Some(_) => None,
                    None => match self.verified_address(&who, &tokens.access_token).await? {
                        None => return Err(SignInError::NotLinked),
                        Some(address) if !oauth_state::may_sign_up(&self.sign_up, &address) => return Err(SignInError::NoAccount(address)),
                        Some(address) => Some(MicrosoftSignUp { email: address, name: who.name.clone() }),
                    },
                };
                MicrosoftLinkTarget::SignIn { sign_up }
            }
        };
        let account = MicrosoftAccount {
            tenant_id: who.tid.clone(),
            object_id: who.oid.clone(),
            username: who.preferred_username.clone().map(|u| u.chars().take(320).collect()),
            access_token: tokens.access_token.expose().to_string(),
            refresh_token: tokens.refresh_token.as_ref().map(|r| r.expose().to_string()),
            access_expires_at: expires_at(tokens.expires_in),
        };
        let (user, created) = match self.store.link_microsoft_account(account, target).await? {
            MicrosoftLink::Linked { user, created } => (user, created),
            MicrosoftLink::TakenByAnotherUser => return Err(SignInError::TakenByAnotherUser),
            MicrosoftLink::UserGone => return Err(SignInError::UserGone),
            MicrosoftLink::NotLinked | MicrosoftLink::AddressTaken => return Err(SignInError::NotLinked),
            MicrosoftLink::Refused(why) => return Err(SignInError::Refused(why)),
        };
        tracing::info!(user = user.id, created, connect = matches!(claims.purpose, Purpose::Connect(_)), tenant = %who.tid, "signed in with Microsoft");
        self.connected(user.id);
        Ok(user)
    }

    /// The lock that makes one refresh per user at a time.
    fn refresh_lock(&self, user_id: i64) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.refresh_locks.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(user_id).or_default().clone()
    }

    /// An access token to call Graph for the user: the stored one while it
    /// is valid for another minute, else a refreshed one (the new refresh
    /// token replaces the old: they rotate). One refresh per user at a time,
    /// in this process (a lock) and across nodes (the short lease
    /// `microsoft_token:<id>`); whoever waited finds the fresh token stored.
    /// `invalid_grant` marks the account "needs reconnect" (logged once).
    pub async fn access_token(self: &Arc<Self>, user_id: i64) -> Result<Secret, AccessError> {
        self.token_for(user_id, false).await
    }

    /// An access token to delete the user's subscriptions at Graph, even
    /// when their account was just disabled: the deletion is what the
    /// disable asks for, and without it Graph keeps notifying for days.
    pub(crate) async fn access_token_to_clean_up(self: &Arc<Self>, user_id: i64) -> Result<Secret, AccessError> {
        self.token_for(user_id, true).await
    }

    async fn token_for(self: &Arc<Self>, user_id: i64, even_if_disabled: bool) -> Result<Secret, AccessError> {
        let lock = self.refresh_lock(user_id);
        let _one_here = lock.lock().await;
        let lease = format!("microsoft_token:{user_id}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if let Stored::Fresh(token) = self.stored_token(user_id, even_if_disabled).await? {
                return Ok(token);
            }
            if self.shutting_down() {
                return Err(AccessError::ShuttingDown);
            }
            if let Some(fence) = self.leases.try_take(&lease).await {
                // Another node may have refreshed between the read and the lease.
                let result = match self.stored_token(user_id, even_if_disabled).await {
                    Ok(Stored::Fresh(token)) => Ok(token),
                    Ok(Stored::Refresh(refresh)) => self.refresh(user_id, refresh).await,
                    Err(e) => Err(e),
                };
                self.leases.give_back(&fence).await;
                return result;
            }
            if std::time::Instant::now() > deadline {
                return Err(AccessError::Busy);
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }

    /// The stored access token if it is good for another minute, else the refresh token.
    async fn stored_token(&self, user_id: i64, even_if_disabled: bool) -> Result<Stored, AccessError> {
        let creds = self.store.credentials(Provider::Microsoft, user_id).await?.ok_or(AccessError::NotConnected)?;
        if creds.disabled && !even_if_disabled {
            return Err(AccessError::Disabled);
        }
        if creds.needs_reconnect {
            return Err(AccessError::NeedsReconnect);
        }
        let fresh_until = timefmt::now() + time::Duration::seconds(ACCESS_MARGIN_SECS);
        if let (Some(token), Some(exp)) = (creds.access_token, creds.access_expires_at.as_deref().and_then(timefmt::parse)) {
            if exp > fresh_until {
                return Ok(Stored::Fresh(Secret::new(token)));
            }
        }
        creds.refresh_token.map(|r| Stored::Refresh(Secret::new(r))).ok_or(AccessError::NeedsReconnect)
    }

    /// Redeem the refresh token and store what comes back. Runs as a task
    /// shutdown waits for: cut off between Microsoft's answer and the
    /// store, the rotated refresh token would be lost.
    async fn refresh(self: &Arc<Self>, user_id: i64, refresh: Secret) -> Result<Secret, AccessError> {
        let me = self.clone();
        let task = self.tasks.spawn(async move {
            let store = &me.store;
            match me.token_call(&[("grant_type", "refresh_token"), ("refresh_token", refresh.expose())]).await {
                Ok(tokens) => {
                    store
                        .save_tokens(
                            Provider::Microsoft,
                            user_id,
                            tokens.access_token.expose().to_string(),
                            expires_at(tokens.expires_in),
                            tokens.refresh_token.as_ref().map(|r| r.expose().to_string()),
                        )
                        .await?;
                    Ok(tokens.access_token)
                }
                Err(TokenError::InvalidGrant) => {
                    if store.mark_needs_reconnect(Provider::Microsoft, user_id).await? {
                        tracing::warn!(
                            user = user_id,
                            "Microsoft refused the refresh token (invalid_grant): Outlook sync stops until the user connects Outlook again"
                        );
                    }
                    Err(AccessError::NeedsReconnect)
                }
                Err(e) => Err(AccessError::Refresh(e)),
            }
        });
        task.await.map_err(|_| AccessError::ShuttingDown)?
    }
}

/// What the store holds for a user's access.
enum Stored {
    Fresh(Secret),
    Refresh(Secret),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(claims: serde_json::Value) -> String {
        let e = |v: &serde_json::Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!("{}.{}.", e(&serde_json::json!({"alg": "none"})), e(&claims))
    }

    #[test]
    fn id_token_gives_tid_and_oid_never_email() {
        let c = id_token_claims(&token(serde_json::json!({
            "tid": "t1", "oid": "o1", "preferred_username": "ada@firm.example", "name": "Ada", "email": "boss@example.com"
        })))
        .unwrap();
        assert_eq!(
            c,
            IdClaims { tid: "t1".into(), oid: "o1".into(), preferred_username: Some("ada@firm.example".into()), name: Some("Ada".into()) }
        );
        assert_eq!(id_token_claims(&token(serde_json::json!({"oid": "o1", "email": "a@b.c"}))), None, "no tenant");
        assert_eq!(id_token_claims(&token(serde_json::json!({"tid": "", "oid": "o1"}))), None);
        assert_eq!(id_token_claims("garbage"), None);
        assert_eq!(id_token_claims("a.!!!.c"), None);
    }

    #[test]
    fn shared_tenants_vouch_for_nobody() {
        for t in ["organizations", "common", "Consumers", " ", ""] {
            assert!(!is_specific_tenant(t), "{t}");
        }
        assert!(is_specific_tenant("72f988bf-86f1-41af-91ab-2d7cd011db47"));
    }
}
