//! Who is calling: tokens, login links and the identity check.
//!
//! Tokens are HS256 only, keyed by `auth.jwt_secret`; no leeway. User tokens
//! carry `sub` (the user id as a decimal string), `exp`, `iat` (compared with
//! the user's `tokens_valid_after`, see [`identity`]) and an optional `role`;
//! `nbf` is honoured when present. The anon key is `{"role":"anon"}` and is
//! good only as the realtime `apikey`. The single-use sign-in links of
//! `syncgate login-link` are in [`login_links`]. The OAuth `state`, PKCE and
//! sign-up policy the calendar providers share are in [`oauth_state`].

pub mod identity;
pub mod login_links;
pub mod oauth_state;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::Role;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Claims {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Issued at, seconds since the epoch. syncgate writes milliseconds as a
    /// fraction (JWT allows it), so a token issued right after a sign-out
    /// everywhere is told apart from one issued in the same second before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<f64>,
    /// Not before, seconds since the epoch (honoured when present).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<f64>,
}

impl Claims {
    pub fn is_anon(&self) -> bool {
        self.sub.is_none()
    }
    pub fn is_admin(&self) -> bool {
        self.role.as_deref() == Some(Role::Admin.as_str())
    }
    /// The user id `sub` names, if it is a decimal id.
    pub fn user_id(&self) -> Option<i64> {
        self.sub.as_deref().and_then(|s| s.parse::<i64>().ok()).filter(|id| *id > 0)
    }

    /// Is the token good at this moment: not expired (no leeway: a token
    /// *at* `exp` is expired) and past its `nbf`? Checked at verification and
    /// again whenever claims verified earlier are used (a realtime join that
    /// falls back to the socket's `apikey`).
    pub fn check_times(&self) -> Result<(), TokenError> {
        let now_ms = unix_now_ms();
        if self.exp.saturating_mul(1000) <= now_ms {
            return Err(TokenError::Expired);
        }
        if let Some(nbf) = self.nbf {
            if !nbf.is_finite() || nbf * 1000.0 > now_ms as f64 {
                return Err(TokenError::NotYetValid);
            }
        }
        Ok(())
    }

    /// `iat` in milliseconds since the epoch, when present and sane.
    pub fn issued_at_ms(&self) -> Option<i64> {
        self.iat.filter(|v| v.is_finite() && *v >= 0.0 && *v < 1e13).map(|v| (v * 1000.0).round() as i64)
    }
}

/// Why a token was refused, as a sentence safe to send.
#[derive(Debug, Clone, PartialEq)]
pub enum TokenError {
    Expired,
    NotYetValid,
    Invalid(String),
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenError::Expired => write!(f, "the token has expired"),
            TokenError::NotYetValid => write!(f, "the token is not valid yet (nbf is in the future)"),
            TokenError::Invalid(why) => write!(f, "the token is not valid: {why}"),
        }
    }
}

/// Signs and verifies this server's tokens.
#[derive(Clone)]
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tokens(..)")
    }
}

pub const ANON_TTL_SECS: i64 = 10 * 365 * 86_400;

impl Tokens {
    pub fn new(secret: &str) -> Tokens {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp"]);
        Tokens { encoding: EncodingKey::from_secret(secret.as_bytes()), decoding: DecodingKey::from_secret(secret.as_bytes()), validation }
    }

    pub fn sign(&self, claims: &Claims) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding).unwrap_or_default()
    }

    pub fn user_token(&self, user_id: i64, role: &str, ttl_secs: i64) -> String {
        let role = (role == Role::Admin.as_str()).then(|| Role::Admin.as_str().to_string());
        let iat = Some(unix_now_ms() as f64 / 1000.0);
        self.sign(&Claims { sub: Some(user_id.to_string()), exp: unix_now() + ttl_secs, role, iat, nbf: None })
    }

    pub fn anon_key(&self) -> String {
        let iat = Some(unix_now() as f64);
        self.sign(&Claims { sub: None, exp: unix_now() + ANON_TTL_SECS, role: Some("anon".into()), iat, nbf: None })
    }

    /// A short-lived token for the command line to call this server's admin
    /// routes: no user, `role: operator` (see `accounts::routes`).
    pub fn operator_token(&self, ttl_secs: i64) -> String {
        let iat = Some(unix_now_ms() as f64 / 1000.0);
        self.sign(&Claims { sub: None, exp: unix_now() + ttl_secs, role: Some("operator".into()), iat, nbf: None })
    }

    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        use jsonwebtoken::errors::ErrorKind;
        match jsonwebtoken::decode::<Claims>(token.trim(), &self.decoding, &self.validation) {
            Ok(data) => {
                // jsonwebtoken accepts exp == now; a token *at* exp is expired too.
                data.claims.check_times()?;
                if data.claims.sub.is_some() && data.claims.user_id().is_none() {
                    return Err(TokenError::Invalid("sub must be a user id written as a decimal string".into()));
                }
                Ok(data.claims)
            }
            Err(e) => Err(match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                    TokenError::Invalid("only HS256 tokens are accepted".into())
                }
                ErrorKind::InvalidSignature => TokenError::Invalid("bad signature".into()),
                ErrorKind::MissingRequiredClaim(c) => TokenError::Invalid(format!("the {c} claim is required")),
                ErrorKind::Json(_) => TokenError::Invalid("claims of the wrong type".into()),
                _ => TokenError::Invalid("malformed token".into()),
            }),
        }
    }
}

pub fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

pub fn unix_now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// A random URL-safe secret of `bytes` random bytes.
pub fn random_token(bytes: usize) -> String {
    use base64::Engine;
    let mut b = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// Compare secrets without leaking where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

pub fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let t = Tokens::new("0123456789abcdef0123456789abcdef");
        let tok = t.user_token(7, "admin", 60);
        let c = t.verify(&tok).unwrap();
        assert_eq!(c.user_id(), Some(7));
        assert!(c.is_admin());
        assert!(t.verify(&t.anon_key()).unwrap().is_anon());
        let expired = t.sign(&Claims { sub: Some("7".into()), exp: unix_now() - 1, role: None, iat: None, nbf: None });
        assert_eq!(t.verify(&expired), Err(TokenError::Expired));
        let early =
            t.sign(&Claims { sub: Some("7".into()), exp: unix_now() + 60, role: None, iat: None, nbf: Some((unix_now() + 30) as f64) });
        assert_eq!(t.verify(&early), Err(TokenError::NotYetValid));
        let iat = c.issued_at_ms().expect("minted tokens carry iat");
        assert!((iat - unix_now_ms()).abs() < 5_000);
        let other = Tokens::new("another-secret-another-secret-xx");
        assert!(matches!(other.verify(&tok), Err(TokenError::Invalid(_))));
        let numeric_sub = {
            use base64::Engine;
            let e = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
            format!("{}.{}.", e(r#"{"alg":"none","typ":"JWT"}"#), e(&format!(r#"{{"sub":"7","exp":{}}}"#, unix_now() + 60)))
        };
        assert!(matches!(t.verify(&numeric_sub), Err(TokenError::Invalid(_))));
    }
}
