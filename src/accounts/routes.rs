//! Accounts over REST. For admins: `GET|POST /api/admin/users`,
//! `PATCH|DELETE /api/admin/users/:id`, `POST /api/admin/users/:id/signout`,
//! `GET /api/admin/audit`; for everyone: `POST /api/me/signout`. The command
//! line reaches the same routes with a short-lived operator token (no user,
//! `role: operator`) it mints with the secret, so its changes go through this
//! server's writer and reach open sockets.

use std::collections::HashMap;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use crate::api::{auth_header, bearer, body, input, json_response, query, respond, with_app};
use crate::http::error::{ApiError, ApiResult};
use crate::startup::App;
use crate::store::accounts::Actor;
use crate::store::users;

/// The role an operator token carries; the CLI mints one per command.
pub const OPERATOR_ROLE: &str = "operator";
/// Operator tokens live at most this long (the CLI asks for one minute).
pub const OPERATOR_MAX_TTL_SECS: i64 = 300;

/// The admin (or the CLI's operator token) calling an admin route; 401/403 otherwise.
pub async fn admin_actor(app: &App, header: Option<String>) -> ApiResult<Actor> {
    let token = bearer(header.as_deref())?;
    let claims = app.tokens.verify(token).map_err(|e| ApiError::Unauthorized(e.to_string()))?;
    if claims.is_anon() && claims.role.as_deref() == Some(OPERATOR_ROLE) {
        if claims.exp - crate::auth::unix_now() > OPERATOR_MAX_TTL_SECS {
            return Err(ApiError::Unauthorized(format!("operator tokens may live at most {OPERATOR_MAX_TTL_SECS} seconds")));
        }
        return Ok(Actor::cli());
    }
    if claims.is_anon() {
        return Err(ApiError::Unauthorized("the anon key cannot call the REST API; sign in as a user".into()));
    }
    let who = app.identities.check(&claims).await?.identity;
    if !who.admin {
        return Err(ApiError::Forbidden("only admins may manage users".into()));
    }
    let id = who.user_id;
    let email = app.store.read(move |c| Ok(users::get(c, id)?.map(|u| u.email))).await?.unwrap_or_default();
    Ok(Actor { user_id: Some(id), label: email })
}

/// The public view of a user, read after a change.
async fn user_json(app: &App, id: i64) -> ApiResult<Value> {
    let user = app.store.read(move |c| Ok(users::get(c, id)?)).await?;
    let user = user.ok_or_else(|| ApiError::NotFound(format!("user {id} does not exist")))?;
    Ok(serde_json::to_value(user).unwrap_or(Value::Null))
}

/// `GET /api/admin/users`: every user, with role, status, connections and last seen.
async fn list(app: App, auth: Option<String>) -> ApiResult<Response> {
    admin_actor(&app, auth).await?;
    let all = app.store.read(|c| Ok(users::list(c)?)).await?;
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
async fn invite(app: App, auth: Option<String>, body: Bytes) -> ApiResult<Response> {
    let actor = admin_actor(&app, auth).await?;
    input::check_json_object(&body)?;
    let b: InviteBody = input::parse_body(&body)?;
    input::bounded("name", b.name.as_deref().unwrap_or_default(), 200)?;
    input::bounded("email", &b.email, 320)?;
    let role = b.role.unwrap_or_else(|| "user".into());
    let (row, link) = crate::accounts::invite(&app, actor, b.email, b.name, role, b.link.unwrap_or(true)).await?;
    let id = row.get("id").and_then(Value::as_i64).unwrap_or(0);
    let user = user_json(&app, id).await?;
    Ok(json_response(StatusCode::CREATED, &json!({"user": user, "link": link})))
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
async fn patch(app: App, id: i64, auth: Option<String>, body: Bytes) -> ApiResult<Response> {
    let actor = admin_actor(&app, auth).await?;
    input::check_json_object(&body)?;
    let b: PatchBody = input::parse_body(&body)?;
    if b.role.is_none() && b.status.is_none() {
        return Err(ApiError::BadRequest("send role and/or status".into()));
    }
    crate::accounts::update(&app, actor, id, b.role, b.status).await?;
    Ok(json_response(StatusCode::OK, &user_json(&app, id).await?))
}

/// `DELETE /api/admin/users/:id`: the account and all its rows.
async fn remove(app: App, id: i64, auth: Option<String>) -> ApiResult<Response> {
    let actor = admin_actor(&app, auth).await?;
    let removed = crate::accounts::remove(&app, actor, id).await?;
    Ok(json_response(StatusCode::OK, &json!({"id": id, "rows_deleted": removed.rows})))
}

/// `POST /api/admin/users/:id/signout`: every token of the user issued until now is refused.
async fn sign_out_user(app: App, id: i64, auth: Option<String>) -> ApiResult<Response> {
    let actor = admin_actor(&app, auth).await?;
    crate::accounts::sign_out(&app, actor, id).await?;
    Ok(warp::reply::with_status(warp::reply(), StatusCode::NO_CONTENT).into_response())
}

/// `POST /api/me/signout`: sign out everywhere, this token included.
async fn sign_out_me(app: App, auth: Option<String>) -> ApiResult<Response> {
    let who = crate::api::authenticate(&app, auth).await?;
    let id = who.user_id;
    let email = app.store.read(move |c| Ok(users::get(c, id)?.map(|u| u.email))).await?.unwrap_or_default();
    crate::accounts::sign_out(&app, Actor { user_id: Some(id), label: email }, id).await?;
    Ok(warp::reply::with_status(warp::reply(), StatusCode::NO_CONTENT).into_response())
}

/// `GET /api/admin/audit?limit=&cursor=`: account changes, newest first.
async fn audit(app: App, auth: Option<String>, q: HashMap<String, String>) -> ApiResult<Response> {
    admin_actor(&app, auth).await?;
    for k in q.keys() {
        if k != "limit" && k != "cursor" {
            return Err(ApiError::BadRequest(format!("unknown query parameter {}", input::clip(k))));
        }
    }
    let limit = match q.get("limit") {
        None => crate::api::DEFAULT_LIMIT,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=crate::api::MAX_LIMIT).contains(&n) => n,
            _ => return Err(ApiError::BadRequest(format!("limit must be a whole number from 1 to {}", crate::api::MAX_LIMIT))),
        },
    };
    let before = match q.get("cursor") {
        None => None,
        Some(c) => Some(
            c.parse::<i64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| ApiError::BadRequest("cursor is not one this server gave out; start again without it".into()))?,
        ),
    };
    let mut items = app.store.read(move |c| Ok(crate::store::accounts::audit_page(c, limit + 1, before)?)).await?;
    let next = if items.len() > limit {
        items.truncate(limit);
        items.last().and_then(|e| e.get("id")).and_then(Value::as_i64).map(|id| id.to_string())
    } else {
        None
    };
    Ok(json_response(StatusCode::OK, &json!({"items": items, "next_cursor": next})))
}

pub fn routes(app: App) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let users = warp::path!("api" / "admin" / "users");
    let one = warp::path!("api" / "admin" / "users" / String);
    let list_r = users
        .and(warp::get())
        .and(with_app(app.clone()))
        .and(auth_header())
        .and_then(|app, auth| async move { respond(list(app, auth).await) });
    let invite_r = users
        .and(warp::post())
        .and(with_app(app.clone()))
        .and(auth_header())
        .and(body(app.config.server.max_body_bytes))
        .and_then(|app, auth, b| async move { respond(invite(app, auth, b).await) });
    let patch_r = one
        .and(warp::patch())
        .and(with_app(app.clone()))
        .and(auth_header())
        .and(body(app.config.server.max_body_bytes))
        .and_then(|id: String, app, auth, b| async move { respond(async { patch(app, input::parse_id(&id)?, auth, b).await }.await) });
    let delete_r = one
        .and(warp::delete())
        .and(with_app(app.clone()))
        .and(auth_header())
        .and_then(|id: String, app, auth| async move { respond(async { remove(app, input::parse_id(&id)?, auth).await }.await) });
    let signout_r = warp::path!("api" / "admin" / "users" / String / "signout")
        .and(warp::post())
        .and(with_app(app.clone()))
        .and(auth_header())
        .and_then(|id: String, app, auth| async move { respond(async { sign_out_user(app, input::parse_id(&id)?, auth).await }.await) });
    let me_r = warp::path!("api" / "me" / "signout")
        .and(warp::post())
        .and(with_app(app.clone()))
        .and(auth_header())
        .and_then(|app, auth| async move { respond(sign_out_me(app, auth).await) });
    let audit_r = warp::path!("api" / "admin" / "audit")
        .and(warp::get())
        .and(with_app(app))
        .and(auth_header())
        .and(query())
        .and_then(|app, auth, q| async move { respond(audit(app, auth, q).await) });
    list_r.or(invite_r).unify().or(patch_r).unify().or(delete_r).unify().or(signout_r).unify().or(me_r).unify().or(audit_r).unify()
}
