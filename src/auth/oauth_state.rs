//! The provider-neutral half of "sign in with X / connect X" (Google,
//! Microsoft): the OAuth `state` (signed, expiring, naming its purpose),
//! the cookie that binds it to the browser that started it, its single use
//! (recorded in `google_oauth_states`, which both providers share), the
//! PKCE verifier derived from it, and who may sign up. It knows nothing of
//! a provider's endpoints or accounts; each provider passes its own key,
//! cookie name and cookie path.
//!
//! The state carries everything it needs under its signature, so starting a
//! sign-in writes nothing; the PKCE `code_verifier` is an HMAC of the
//! state's nonce under the provider's key, so it is not stored either, and
//! only this server can compute it.

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use crate::config::AuthConfig;
use crate::store::{timefmt, Store, StoreError};

/// How long a consent round trip may take.
pub const STATE_TTL_SECS: i64 = 600;

/// A provider's key for its states, derived from the JWT secret and the
/// provider's name: one provider's state is never accepted by another.
pub fn state_key(provider: &str, jwt_secret: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(format!("syncgate {provider} oauth state\0").as_bytes());
    h.update(jwt_secret.as_bytes());
    h.finalize().into()
}

/// What the sign-in is for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Purpose {
    /// Sign in (or sign up, if the policy allows) with the provider's account.
    SignIn,
    /// Attach the provider's account to this already signed-in user.
    Connect(i64),
}

/// What a verified state says.
#[derive(Debug, Clone, PartialEq)]
pub struct StateClaims {
    pub nonce: String,
    pub exp: i64,
    pub purpose: Purpose,
}

/// A fresh state, the cookie to set with it, and its nonce (for PKCE).
pub struct StartedState {
    pub state: String,
    pub nonce: String,
    pub set_cookie: String,
}

/// Why a state was refused.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("this sign-in request is invalid or has expired; start again")]
    BadState,
    #[error("this sign-in was started in another browser or its cookie is gone; start again from the sign-in page")]
    OtherBrowser,
    #[error("this sign-in request was already used; start again")]
    StateUsed,
    /// Ours, not the user's: logged, never shown.
    #[error("{0}")]
    Internal(&'static str),
    #[error("{0}")]
    Store(#[from] StoreError),
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn mac(key: &[u8; 32], parts: &[&[u8]]) -> Option<Hmac<Sha256>> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).ok()?;
    for p in parts {
        mac.update(p);
    }
    Some(mac)
}

/// `<nonce>.<expiry unix seconds>.<connecting user id or 0>.<HMAC-SHA256 of the rest>`.
pub fn sign_state(key: &[u8; 32], nonce: &str, exp: i64, purpose: Purpose) -> String {
    let uid = match purpose {
        Purpose::SignIn => 0,
        Purpose::Connect(id) => id,
    };
    let payload = format!("{nonce}.{exp}.{uid}");
    let sig = mac(key, &[payload.as_bytes()]).map(|m| b64(&m.finalize().into_bytes())).unwrap_or_default();
    format!("{payload}.{sig}")
}

/// A state this key signed and that has not expired.
pub fn verify_state(key: &[u8; 32], state: &str, now_unix: i64) -> Option<StateClaims> {
    let (payload, sig) = state.rsplit_once('.')?;
    let mut parts = payload.split('.');
    let (nonce, exp, uid) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || nonce.is_empty() || nonce.len() > 100 {
        return None;
    }
    let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(sig).ok()?;
    mac(key, &[payload.as_bytes()])?.verify_slice(&sig).ok()?;
    let exp: i64 = exp.parse().ok()?;
    let purpose = match uid.parse::<i64>().ok()? {
        0 => Purpose::SignIn,
        id if id > 0 => Purpose::Connect(id),
        _ => return None,
    };
    (exp > now_unix).then(|| StateClaims { nonce: nonce.to_string(), exp, purpose })
}

/// The PKCE `code_verifier` of a state (RFC 7636): 43 characters of
/// base64url, an HMAC of the nonce under the provider's key, kept apart
/// from the state's own signature by its label. The nonce travels in the
/// URL; the key does not, so nobody else can compute the verifier.
pub fn code_verifier(key: &[u8; 32], nonce: &str) -> String {
    mac(key, &[b"pkce code_verifier\0", nonce.as_bytes()]).map(|m| b64(&m.finalize().into_bytes())).unwrap_or_default()
}

/// The S256 `code_challenge` of a verifier: BASE64URL(SHA256(verifier)).
pub fn code_challenge(verifier: &str) -> String {
    b64(&Sha256::digest(verifier.as_bytes()))
}

/// The value of the cookie `name` in a `Cookie` header.
pub fn cookie_value(header: Option<&str>, name: &str) -> Option<String> {
    header?.split(';').filter_map(|c| c.trim().split_once('=')).find(|(k, _)| *k == name).map(|(_, v)| v.trim().to_string())
}

/// One provider's states: its key and the cookie that binds a state to the
/// browser (name and path differ per provider, so two sign-ins in one
/// browser do not overwrite each other's cookie).
#[derive(Clone, Copy)]
pub struct OAuthStates<'a> {
    pub key: &'a [u8; 32],
    pub cookie_name: &'static str,
    pub cookie_path: &'static str,
    /// `Secure` cookies when the public URL is https.
    pub secure: bool,
}

impl OAuthStates<'_> {
    /// A fresh state for `purpose` and the cookie that ties it to this browser. Writes nothing.
    pub fn start(&self, purpose: Purpose) -> StartedState {
        let nonce = crate::auth::random_token(24);
        let exp = crate::auth::unix_now() + STATE_TTL_SECS;
        let state = sign_state(self.key, &nonce, exp, purpose);
        let set_cookie = format!(
            "{}={nonce}; Path={}; Max-Age={STATE_TTL_SECS}; HttpOnly; SameSite=Lax{}",
            self.cookie_name,
            self.cookie_path,
            if self.secure { "; Secure" } else { "" }
        );
        StartedState { state, nonce, set_cookie }
    }

    /// A `Set-Cookie` value that removes the state cookie.
    pub fn clear_cookie(&self) -> String {
        format!(
            "{}=; Path={}; Max-Age=0; HttpOnly; SameSite=Lax{}",
            self.cookie_name,
            self.cookie_path,
            if self.secure { "; Secure" } else { "" }
        )
    }

    /// The nonce in this provider's state cookie, from a `Cookie` header.
    pub fn cookie_nonce(&self, header: Option<&str>) -> Option<String> {
        cookie_value(header, self.cookie_name)
    }

    /// The PKCE verifier of a state with this nonce.
    pub fn code_verifier(&self, nonce: &str) -> String {
        code_verifier(self.key, nonce)
    }

    /// Accept a state once: signed by this key, not expired, started in
    /// this browser (`cookie` is its nonce), and not used before (the first
    /// use records the nonce's hash; a replay finds it).
    pub async fn accept(&self, store: &Store, state: &str, cookie: Option<&str>) -> Result<StateClaims, StateError> {
        let claims = verify_state(self.key, state, crate::auth::unix_now()).ok_or(StateError::BadState)?;
        if cookie != Some(claims.nonce.as_str()) {
            return Err(StateError::OtherBrowser);
        }
        let hash = crate::auth::sha256_hex(&claims.nonce);
        let expires_at = time::OffsetDateTime::from_unix_timestamp(claims.exp)
            .map(timefmt::format)
            .map_err(|_| StateError::Internal("the sign-in state's expiry is out of range"))?;
        if !store.use_google_oauth_state(hash, expires_at).await? {
            return Err(StateError::StateUsed);
        }
        Ok(claims)
    }
}

/// Who may sign up by signing in with a provider (`auth.allowed_emails`,
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

/// May someone without an account sign up with this address? The caller
/// vouches that the provider verified it.
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
    fn pkce_verifier_is_per_nonce_and_key_and_rfc_shaped() {
        let key = [7u8; 32];
        let v = code_verifier(&key, "abc");
        assert_eq!(v.len(), 43, "RFC 7636: 43 to 128 characters");
        assert!(v.chars().all(|c| c.is_ascii_alphanumeric() || "-._~".contains(c)));
        assert_eq!(v, code_verifier(&key, "abc"), "derived, not stored");
        assert_ne!(v, code_verifier(&key, "abd"));
        assert_ne!(v, code_verifier(&[8u8; 32], "abc"));
        // RFC 7636 appendix B.
        assert_eq!(code_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"), "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
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
        assert_eq!(cookie_value(Some("a=1; syncgate_google_state=xyz; b=2"), "syncgate_google_state").as_deref(), Some("xyz"));
        assert_eq!(cookie_value(Some("a=1"), "syncgate_google_state"), None);
        assert_eq!(cookie_value(None, "x"), None);
    }
}
