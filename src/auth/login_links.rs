//! Single-use sign-in links (`syncgate login-link`, an invite): a random
//! code shown once, of which only the hash is stored, good for
//! [`LOGIN_LINK_TTL_SECS`]; and the checks of a code as it arrives.

use crate::store::login_links::{NewLoginLink, Redemption};
use crate::store::{timefmt, Store, StoreResult};

pub const LOGIN_LINK_TTL_SECS: i64 = 15 * 60;

/// A new code and what the store keeps of it.
pub fn new_code() -> (String, NewLoginLink) {
    let code = super::random_token(32);
    let expires = timefmt::now() + time::Duration::seconds(LOGIN_LINK_TTL_SECS);
    let link = NewLoginLink { code_hash: super::sha256_hex(&code), expires_at: timefmt::format(expires) };
    (code, link)
}

/// Store a new code for a user; returns the code.
pub async fn create(store: &Store, user_id: i64) -> StoreResult<String> {
    let (code, link) = new_code();
    store.add_login_link(user_id, link).await?;
    Ok(code)
}

/// A code as it arrives: non-empty, bounded, URL-safe base64; None otherwise.
pub fn parse_code(raw: Option<&str>) -> Option<String> {
    let code = raw.map(str::trim).unwrap_or_default();
    let ok = !code.is_empty() && code.len() <= 200 && code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    ok.then(|| code.to_string())
}

/// Whether a code could still be used (looking does not use it up).
pub async fn usable(store: &Store, code: &str) -> StoreResult<bool> {
    store.login_link_usable(super::sha256_hex(code)).await
}

/// Use a code up, if its user may sign in.
pub async fn redeem(store: &Store, code: &str) -> StoreResult<Redemption> {
    store.redeem_login_link(super::sha256_hex(code)).await
}

/// The sign-in URL of a code on the server at `public_url`.
pub fn url(public_url: &str, code: &str) -> String {
    format!("{}/auth/link?code={code}", public_url.trim_end_matches('/'))
}
