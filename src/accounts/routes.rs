//! Accounts over REST. For admins: `GET|POST /api/admin/users`,
//! `PATCH|DELETE /api/admin/users/:id`, `POST /api/admin/users/:id/signout`,
//! `GET /api/admin/audit`; for everyone: `POST /api/me/signout`. The command
//! line reaches the same routes with a short-lived operator token (no user,
//! `role: operator`) it mints with the secret, so its changes go through this
//! server's writer and reach open sockets.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Reply};

use super::AccountsState;
use crate::api::input;
use crate::http::{auth_header, authenticate, bearer, body, json_response, query, respond, with_state, ApiError, ApiResult, QueryParams};
use crate::model::{AccountStatus, Role};
use crate::store::accounts::Actor;

/// The role an operator token carries; the CLI mints one per command.
pub const OPERATOR_ROLE: &str = "operator";
/// Operator tokens live at most this long (the CLI asks for one minute).
pub const OPERATOR_MAX_TTL_SECS: i64 = 300;

/// The admin (or the CLI's operator token) calling an admin route; 401/403 otherwise.
pub async fn admin_actor(state: &AccountsState, header: Option<String>) -> ApiResult<Actor> {
    let token = bearer(header.as_deref())?;
    let claims = state.auth.tokens().verify(token).map_err(|e| ApiError::Unauthorized(e.to_string()))?;
    if claims.is_anon() && claims.role.as_deref() == Some(OPERATOR_ROLE) {
        if claims.exp - crate::auth::unix_now() > OPERATOR_MAX_TTL_SECS {
            return Err(ApiError::Unauthorized(format!("operator tokens may live at most {OPERATOR_MAX_TTL_SECS} seconds")));
        }
        return Ok(Actor::cli());
    }
    if claims.is_anon() {
        return Err(ApiError::Unauthorized("the anon key cannot call the REST API; sign in as a user".into()));
    }
    let who = state.auth.identities().check(&claims).await?.identity;
    if !who.admin {
        return Err(ApiError::Forbidden("only admins may manage users".into()));
    }
    actor(state, who.user_id).await
}

/// A user acting on accounts, named by their email in the audit log.
async fn actor(state: &AccountsState, id: i64) -> ApiResult<Actor> {
    let email = state.store.user(id).await?.map(|u| u.email).unwrap_or_default();
    Ok(Actor { user_id: Some(id), label: email })
}

/// `GET /api/admin/users`: every user, with role, status, connections and last seen.
async fn list(state: AccountsState, auth: Option<String>) -> ApiResult<Response> {
    admin_actor(&state, auth).await?;
    let all = state.store.users().await?;
    Ok(json_response(StatusCode::OK, &json!({"items": all, "next_cursor": null})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InviteBody {
    email: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    role: Option<String>,
    /// Also make a single-use sign-in link (default: yes).
    #[serde(default)]
    link: Option<bool>,
}

/// `POST /api/admin/users` `{"email", "name"?, "role"?, "link"?}` → 201
/// `{"user": …, "link": "<single-use sign-in URL>"}`.
async fn invite(state: AccountsState, auth: Option<String>, body: Bytes) -> ApiResult<Response> {
    let actor = admin_actor(&state, auth).await?;
    input::check_json_object(&body)?;
    let b: InviteBody = input::parse_body(&body)?;
    input::bounded("name", b.name.as_deref().unwrap_or_default(), 200)?;
    input::bounded("email", &b.email, 320)?;
    if !crate::store::users::valid_email(&b.email) {
        return Err(ApiError::Unprocessable(format!("\"{}\" is not an email address", input::clip(b.email.trim()))));
    }
    let role = role(b.role.as_deref().unwrap_or(Role::User.as_str()))?;
    let (user, link) = super::invite(&state, actor, b.email, b.name, role, b.link.unwrap_or(true)).await?;
    Ok(json_response(StatusCode::CREATED, &json!({"user": user, "link": link})))
}

fn role(s: &str) -> ApiResult<Role> {
    Role::parse(s).ok_or_else(|| ApiError::Unprocessable(format!("role must be user or admin, not \"{}\"", input::clip(s))))
}

fn status(s: &str) -> ApiResult<AccountStatus> {
    AccountStatus::parse(s).ok_or_else(|| ApiError::Unprocessable(format!("status must be active or disabled, not \"{}\"", input::clip(s))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchBody {
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    status: Option<String>,
}

/// `PATCH /api/admin/users/:id` `{"role"?: "admin"|"user", "status"?: "active"|"disabled"}`.
async fn patch(state: AccountsState, id: i64, auth: Option<String>, body: Bytes) -> ApiResult<Response> {
    let actor = admin_actor(&state, auth).await?;
    input::check_json_object(&body)?;
    let b: PatchBody = input::parse_body(&body)?;
    if b.role.is_none() && b.status.is_none() {
        return Err(ApiError::BadRequest("send role and/or status".into()));
    }
    let role = b.role.as_deref().map(role).transpose()?;
    let status = b.status.as_deref().map(status).transpose()?;
    let user = super::update(&state, actor, id, role, status).await?;
    Ok(json_response(StatusCode::OK, &serde_json::to_value(user).unwrap_or(Value::Null)))
}

/// `DELETE /api/admin/users/:id`: the account and all its rows.
async fn remove(state: AccountsState, id: i64, auth: Option<String>) -> ApiResult<Response> {
    let actor = admin_actor(&state, auth).await?;
    let removed = super::remove(&state, actor, id).await?;
    Ok(json_response(StatusCode::OK, &json!({"id": id, "rows_deleted": removed.rows})))
}

/// `POST /api/admin/users/:id/signout`: every token of the user issued until now is refused.
async fn sign_out_user(state: AccountsState, id: i64, auth: Option<String>) -> ApiResult<Response> {
    let actor = admin_actor(&state, auth).await?;
    super::sign_out(&state, actor, id).await?;
    Ok(warp::reply::with_status(warp::reply(), StatusCode::NO_CONTENT).into_response())
}

/// `POST /api/me/signout`: sign out everywhere, this token included.
async fn sign_out_me(state: AccountsState, auth: Option<String>) -> ApiResult<Response> {
    let who = authenticate(&state.auth, auth).await?;
    let me = actor(&state, who.user_id).await?;
    super::sign_out(&state, me, who.user_id).await?;
    Ok(warp::reply::with_status(warp::reply(), StatusCode::NO_CONTENT).into_response())
}

/// `GET /api/admin/audit?limit=&cursor=`: account changes, newest first.
async fn audit(state: AccountsState, auth: Option<String>, q: QueryParams) -> ApiResult<Response> {
    admin_actor(&state, auth).await?;
    for k in q.keys() {
        if k != "limit" && k != "cursor" {
            return Err(ApiError::BadRequest(format!("unknown query parameter {}", input::clip(k))));
        }
    }
    let limit = input::limit(&q)?;
    let before = match q.get("cursor") {
        None => None,
        Some(c) => Some(
            c.parse::<i64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| ApiError::BadRequest("cursor is not one this server gave out; start again without it".into()))?,
        ),
    };
    let mut items = state.store.audit_page(limit + 1, before).await?;
    let next = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|e| e.id.to_string())
    } else {
        None
    };
    Ok(json_response(StatusCode::OK, &json!({"items": items, "next_cursor": next})))
}

/// The account routes.
pub fn routes(state: AccountsState) -> BoxedFilter<(Response,)> {
    let limit = state.max_body_bytes;
    let users = warp::path!("api" / "admin" / "users");
    let one = warp::path!("api" / "admin" / "users" / String);
    let list_r = users
        .and(warp::get())
        .and(with_state(state.clone()))
        .and(auth_header())
        .and_then(|state, auth| async move { respond(list(state, auth).await) });
    let invite_r = users
        .and(warp::post())
        .and(with_state(state.clone()))
        .and(auth_header())
        .and(body(limit))
        .and_then(|state, auth, b| async move { respond(invite(state, auth, b).await) });
    let patch_r =
        one.and(warp::patch()).and(with_state(state.clone())).and(auth_header()).and(body(limit)).and_then(
            |id: String, state, auth, b| async move { respond(async { patch(state, input::parse_id(&id)?, auth, b).await }.await) },
        );
    let delete_r = one
        .and(warp::delete())
        .and(with_state(state.clone()))
        .and(auth_header())
        .and_then(|id: String, state, auth| async move { respond(async { remove(state, input::parse_id(&id)?, auth).await }.await) });
    let signout_r = warp::path!("api" / "admin" / "users" / String / "signout")
        .and(warp::post())
        .and(with_state(state.clone()))
        .and(auth_header())
        .and_then(
            |id: String, state, auth| async move { respond(async { sign_out_user(state, input::parse_id(&id)?, auth).await }.await) },
        );
    let me_r = warp::path!("api" / "me" / "signout")
        .and(warp::post())
        .and(with_state(state.clone()))
        .and(auth_header())
        .and_then(|state, auth| async move { respond(sign_out_me(state, auth).await) });
    let audit_r = warp::path!("api" / "admin" / "audit")
        .and(warp::get())
        .and(with_state(state))
        .and(auth_header())
        .and(query())
        .and_then(|state, auth, q| async move { respond(audit(state, auth, q).await) });
    list_r.or(invite_r).unify().or(patch_r).unify().or(delete_r).unify().or(signout_r).unify().or(me_r).unify().or(audit_r).unify().boxed()
}
