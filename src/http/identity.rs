//! Who is calling, at the HTTP edge: `Authorization: Bearer <jwt>` turned
//! into an [`Identity`] by the shared identity check, or a 401. Handlers call
//! [`authenticate`] after their path matched, so a wrong path is a 404, not
//! a 401.

use std::sync::Arc;

use warp::{Filter, Rejection};

use super::error::{ApiError, ApiResult};
use crate::auth::identity::{Identities, Identity, Refused};
use crate::auth::Tokens;

/// The tokens this server signs and the identity check with its cache:
/// everything a route needs to know who calls. Cheap to clone.
#[derive(Clone)]
pub struct Authenticator {
    tokens: Tokens,
    identities: Arc<Identities>,
}

impl Authenticator {
    pub fn new(tokens: Tokens, identities: Arc<Identities>) -> Authenticator {
        Authenticator { tokens, identities }
    }

    pub fn tokens(&self) -> &Tokens {
        &self.tokens
    }

    pub fn identities(&self) -> &Identities {
        &self.identities
    }
}

impl From<Refused> for ApiError {
    fn from(r: Refused) -> Self {
        match r {
            Refused::Unavailable => ApiError::Unavailable(r.to_string()),
            other => ApiError::Unauthorized(other.to_string()),
        }
    }
}

/// The `Authorization` header, if sent.
pub fn auth_header() -> impl Filter<Extract = (Option<String>,), Error = Rejection> + Clone {
    warp::header::optional::<String>("authorization")
}

/// The token of `Authorization: Bearer <jwt>`, or 401.
pub fn bearer(header: Option<&str>) -> ApiResult<&str> {
    let header = header.ok_or_else(|| ApiError::Unauthorized("send Authorization: Bearer <token>".into()))?;
    header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .ok_or_else(|| ApiError::Unauthorized("the Authorization header must be Bearer <token>".into()))
}

/// `Authorization: Bearer <jwt>` → the caller, or 401: the shared identity
/// check (token valid, user exists and is active, not signed out; admin only
/// while the stored role is admin), cached per user for `auth.user_cache`.
pub async fn authenticate(auth: &Authenticator, header: Option<String>) -> ApiResult<Identity> {
    let token = bearer(header.as_deref())?;
    let claims = auth.tokens.verify(token).map_err(|e| ApiError::Unauthorized(e.to_string()))?;
    if claims.is_anon() {
        return Err(ApiError::Unauthorized("the anon key cannot call the REST API; sign in as a user".into()));
    }
    Ok(auth.identities.check(&claims).await?.identity)
}
