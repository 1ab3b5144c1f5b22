//! The identity filter every authenticated route shares: `Authorization:
//! Bearer <jwt>` → the caller (token valid, user exists and is active, not
//! signed out), through the shared, cached identity check.

use crate::auth::Tokens;
use crate::http::error::{ApiError, ApiResult};
use crate::identity::{Identities, Identity};

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
pub async fn authenticate(tokens: &Tokens, identities: &Identities, header: Option<String>) -> ApiResult<Identity> {
    let token = bearer(header.as_deref())?;
    let claims = tokens.verify(token).map_err(|e| ApiError::Unauthorized(e.to_string()))?;
    if claims.is_anon() {
        return Err(ApiError::Unauthorized("the anon key cannot call the REST API; sign in as a user".into()));
    }
    Ok(identities.check(&claims).await?.identity)
}

/// The `Authorization` header, if any (checked by [`authenticate`] after the path matched).
pub fn auth_header() -> impl warp::Filter<Extract = (Option<String>,), Error = warp::Rejection> + Clone {
    warp::header::optional::<String>("authorization")
}
