//! Single-use sign-in links, stored by the hash of their code only (the
//! code itself is shown once and never kept): add one, look whether one
//! could still be used, and redeem one.

use super::error::StoreResult;
use super::sql::{args, Conn};
use super::users::{self, User};
use super::Store;

/// A link to store: the hash of its code and when it runs out (RFC 3339, UTC).
#[derive(Debug, Clone)]
pub struct NewLoginLink {
    pub code_hash: String,
    pub expires_at: String,
}

/// What redeeming a code found. Only `SignedIn` uses the link up.
#[derive(Debug, Clone)]
pub enum Redemption {
    SignedIn(User),
    /// Unknown, already used or expired.
    Unusable,
    /// The link's user no longer exists.
    NoUser,
    /// The user is disabled; the link keeps working once they are enabled again.
    Disabled,
}

pub(super) fn add(conn: &Conn<'_>, user_id: i64, link: &NewLoginLink) -> StoreResult<()> {
    conn.execute(
        "INSERT INTO login_links (code_hash, user_id, expires_at) VALUES (?1, ?2, ?3)",
        args![link.code_hash, user_id, link.expires_at],
    )?;
    Ok(())
}

/// The user of a link that is neither used nor expired at `now`.
/// Times come back as our fixed-width UTC text on both engines, so text
/// order is time order.
fn usable(conn: &Conn<'_>, code_hash: &str, now: &str) -> StoreResult<Option<i64>> {
    let row: Option<(i64, String, Option<String>)> = conn
        .query_opt("SELECT user_id, expires_at, used_at FROM login_links WHERE code_hash = ?1", args![code_hash])?
        .map(|r| Ok::<_, super::error::StoreError>((r.get(0)?, r.get(1)?, r.get(2)?)))
        .transpose()?;
    Ok(match row {
        Some((user_id, expires_at, None)) if expires_at.as_str() > now => Some(user_id),
        _ => None,
    })
}

impl Store {
    /// Store a new link for a user.
    pub async fn add_login_link(&self, user_id: i64, link: NewLoginLink) -> StoreResult<()> {
        self.writer.write(move |tx| add(tx.conn(), user_id, &link)).await
    }

    /// Whether a link could still be used (looking does not use it up).
    pub async fn login_link_usable(&self, code_hash: String) -> StoreResult<bool> {
        let now = super::timefmt::format(super::timefmt::now());
        self.read(move |c| Ok(usable(c, &code_hash, &now)?.is_some())).await
    }

    /// Use a link: marks it used only when its user exists and is active.
    pub async fn redeem_login_link(&self, code_hash: String) -> StoreResult<Redemption> {
        self.writer
            .write(move |tx| {
                let now = tx.now().to_string();
                let Some(user_id) = usable(tx.conn(), &code_hash, &now)? else { return Ok(Redemption::Unusable) };
                let Some(user) = users::get(tx.conn(), user_id)? else { return Ok(Redemption::NoUser) };
                if !user.is_active() {
                    return Ok(Redemption::Disabled);
                }
                tx.conn().execute("UPDATE login_links SET used_at = ?1 WHERE code_hash = ?2", args![now, code_hash])?;
                Ok(Redemption::SignedIn(user))
            })
            .await
    }
}
