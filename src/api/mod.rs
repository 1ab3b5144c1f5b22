//! REST: `/api/clients`, `/api/meetings`, `/api/pipeline` (list, get, create,
//! patch, delete), `/api/me`, and the login-link landing `/auth/link`.
//! Every handler answers with the row JSON or the one error shape; the auth
//! check runs after the path matched, so a wrong path is a 404, not a 401.

pub mod admin;
pub mod clients;
pub mod input;
pub mod meetings;
pub mod pipeline;

use std::collections::HashMap;
use std::convert::Infallible;

use bytes::Bytes;
use rusqlite::types::Value as SqlValue;
use serde_json::Value;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use crate::error::{ApiError, ApiResult};
use crate::server::App;
use crate::store::{rows, users, Table};

pub const MAX_BODY: u64 = 64 * 1024;

/// Who is calling: a real user (anon keys never get this far).
#[derive(Debug, Clone, Copy)]
pub struct Identity {
    pub user_id: i64,
    pub admin: bool,
}

impl Identity {
    pub fn may_see(&self, owner: i64) -> bool {
        self.admin || self.user_id == owner
    }
}

pub fn with_app(app: App) -> impl Filter<Extract = (App,), Error = Infallible> + Clone {
    warp::any().map(move || app.clone())
}

/// `Authorization: Bearer <jwt>` → the caller, or 401.
pub async fn authenticate(app: &App, header: Option<String>) -> ApiResult<Identity> {
    let header = header.ok_or_else(|| ApiError::Unauthorized("send Authorization: Bearer <token>".into()))?;
    let token = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .ok_or_else(|| ApiError::Unauthorized("the Authorization header must be Bearer <token>".into()))?;
    let claims = app.tokens.verify(token).map_err(|e| ApiError::Unauthorized(e.to_string()))?;
    if claims.is_anon() {
        return Err(ApiError::Unauthorized("the anon key cannot call the REST API; sign in as a user".into()));
    }
    let user_id = claims.user_id().ok_or_else(|| ApiError::Unauthorized("the token names no user".into()))?;
    let is_admin = match app.known_users.get(user_id) {
        Some(admin) => admin,
        None => {
            let user = app.store.read(move |c| Ok(users::get(c, user_id)?)).await?;
            let user = user.ok_or_else(|| ApiError::Unauthorized("the token's user does not exist".into()))?;
            app.known_users.remember(user_id, user.is_admin());
            user.is_admin()
        }
    };
    // Admin needs both: the token says so and the user still is one.
    Ok(Identity { user_id, admin: claims.is_admin() && is_admin })
}

/// Users recently seen to exist, with whether they are admins: a request
/// then needs no database read (and no hop to a blocking thread) before its
/// write. Entries expire, so a user removed or demoted by hand in the
/// database stops being trusted within the TTL (10 s).
#[derive(Debug)]
pub struct KnownUsers {
    map: dashmap::DashMap<i64, (bool, std::time::Instant)>,
    ttl: std::time::Duration,
}

impl Default for KnownUsers {
    fn default() -> Self {
        KnownUsers::new(std::time::Duration::from_secs(10))
    }
}

impl KnownUsers {
    /// Entries kept at most; past it the map is emptied (it refills on demand).
    const MAX: usize = 100_000;

    pub fn new(ttl: std::time::Duration) -> KnownUsers {
        KnownUsers { map: Default::default(), ttl }
    }

    pub fn get(&self, user_id: i64) -> Option<bool> {
        let hit = self.map.get(&user_id).map(|e| *e)?;
        if hit.1.elapsed() < self.ttl {
            Some(hit.0)
        } else {
            self.map.remove_if(&user_id, |_, v| v.1 == hit.1);
            None
        }
    }

    pub fn remember(&self, user_id: i64, admin: bool) {
        if self.map.len() >= Self::MAX {
            self.map.clear();
        }
        self.map.insert(user_id, (admin, std::time::Instant::now()));
    }
}

pub fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut res = warp::reply::json(body).into_response();
    *res.status_mut() = status;
    res
}

pub fn respond(result: ApiResult<Response>) -> Result<Response, Infallible> {
    Ok(result.unwrap_or_else(ApiError::into_response))
}

fn auth_header() -> impl Filter<Extract = (Option<String>,), Error = Rejection> + Clone {
    warp::header::optional::<String>("authorization")
}

fn body() -> impl Filter<Extract = (Bytes,), Error = Rejection> + Clone {
    warp::body::content_length_limit(MAX_BODY).and(warp::body::bytes())
}

fn query() -> impl Filter<Extract = (HashMap<String, String>,), Error = Infallible> + Clone {
    warp::query::raw()
        .map(|q: String| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect::<HashMap<String, String>>())
        .or(warp::any().map(HashMap::new))
        .unify()
}

/// One table's CRUD, written once: each resource module supplies its own
/// input parsing and rules through [`Resource`].
pub trait Resource: Send + Sync + 'static {
    const TABLE: Table;
    /// `GET` list: builds the WHERE clause and ORDER BY for this table.
    fn list_query(q: &HashMap<String, String>) -> ApiResult<ListQuery>;
    /// Validated columns for a new row owned by `owner`.
    fn create(tx: &mut crate::store::WriteTx<'_>, owner: i64, body: &[u8]) -> ApiResult<Vec<(&'static str, SqlValue)>>;
    /// Validated columns to change on `existing`.
    fn patch(tx: &mut crate::store::WriteTx<'_>, existing: &Value, body: &[u8]) -> ApiResult<Vec<(&'static str, SqlValue)>>;
    /// Dependent changes to make (and log) before the row is deleted.
    fn before_delete(_tx: &mut crate::store::WriteTx<'_>, _existing: &Value) -> ApiResult<()> {
        Ok(())
    }
}

/// A list request turned into SQL.
pub struct ListQuery {
    pub limit: usize,
    /// Extra conditions, `AND`ed, each with one parameter written `$`.
    pub conditions: Vec<(String, SqlValue)>,
    /// Sort key columns (the last must be `id`) and the cursor's values.
    pub order: &'static [&'static str],
    pub after: Option<Vec<SqlValue>>,
}

pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 500;

/// `limit` and `cursor` common to every list, plus a check that no other
/// parameter than `allowed` was sent.
pub fn paging(q: &HashMap<String, String>, allowed: &[&str], order: &'static [&'static str]) -> ApiResult<ListQuery> {
    for k in q.keys() {
        if k != "limit" && k != "cursor" && !allowed.contains(&k.as_str()) {
            return Err(ApiError::BadRequest(format!("unknown query parameter {k}")));
        }
    }
    let limit = match q.get("limit") {
        None => DEFAULT_LIMIT,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => return Err(ApiError::BadRequest(format!("limit must be a whole number from 1 to {MAX_LIMIT}"))),
        },
    };
    let after = match q.get("cursor") {
        None => None,
        Some(c) => Some(input::decode_cursor(c, order.len())?),
    };
    Ok(ListQuery { limit, conditions: vec![], order, after })
}

async fn list<R: Resource>(app: App, auth: Option<String>, q: HashMap<String, String>) -> ApiResult<Response> {
    let who = authenticate(&app, auth).await?;
    let lq = R::list_query(&q)?;
    let page = app
        .store
        .read(move |conn| {
            let mut sql = rows::select_sql(R::TABLE);
            let mut params: Vec<SqlValue> = Vec::new();
            let mut conds: Vec<String> = Vec::new();
            if !who.admin {
                params.push(SqlValue::Integer(who.user_id));
                conds.push(format!("user_id = ?{}", params.len()));
            }
            for (cond, v) in lq.conditions {
                params.push(v);
                conds.push(cond.replace('$', &format!("?{}", params.len())));
            }
            if let Some(after) = &lq.after {
                // (a, b, id) > (x, y, z) as a row-value comparison.
                let mut ph = Vec::new();
                for v in after {
                    params.push(v.clone());
                    ph.push(format!("?{}", params.len()));
                }
                conds.push(format!("({}) > ({})", lq.order.join(", "), ph.join(", ")));
            }
            if !conds.is_empty() {
                sql.push_str(" WHERE ");
                sql.push_str(&conds.join(" AND "));
            }
            sql.push_str(&format!(" ORDER BY {} LIMIT {}", lq.order.join(", "), lq.limit + 1));
            let mut stmt = conn.prepare(&sql)?;
            let mut items: Vec<Value> =
                stmt.query_map(rusqlite::params_from_iter(params.iter()), |r| rows::row_to_json(R::TABLE, r))?.collect::<Result<_, _>>()?;
            let next = if items.len() > lq.limit {
                items.truncate(lq.limit);
                items.last().map(|last| input::encode_cursor(last, lq.order))
            } else {
                None
            };
            Ok(serde_json::json!({"items": items, "next_cursor": next}))
        })
        .await?;
    Ok(json_response(StatusCode::OK, &page))
}

async fn get_one<R: Resource>(app: App, id: i64, auth: Option<String>) -> ApiResult<Response> {
    let who = authenticate(&app, auth).await?;
    let row = app.store.read(move |c| Ok(rows::get(c, R::TABLE, id)?)).await?;
    match row {
        Some(r) if who.may_see(rows::owner_of(&r)) => Ok(json_response(StatusCode::OK, &r)),
        _ => Err(not_found(R::TABLE, id)),
    }
}

pub fn not_found(table: Table, id: i64) -> ApiError {
    ApiError::NotFound(format!("{} {id} does not exist", singular(table)))
}

pub fn singular(table: Table) -> &'static str {
    match table {
        Table::Clients => "client",
        Table::Meetings => "meeting",
        Table::Pipeline => "pipeline entry",
    }
}

async fn create<R: Resource>(app: App, auth: Option<String>, body: Bytes) -> ApiResult<Response> {
    let who = authenticate(&app, auth).await?;
    input::check_json_object(&body)?;
    let row = app
        .store
        .writer
        .write(move |tx| {
            let owner = input::owner_for_create(&body, who)?;
            let cols = R::create(tx, owner, &body)?;
            let mut values: Vec<(&str, SqlValue)> = vec![("user_id", SqlValue::Integer(owner))];
            values.extend(cols);
            tx.insert(R::TABLE, &values)
        })
        .await?;
    Ok(json_response(StatusCode::CREATED, &row))
}

async fn patch<R: Resource>(app: App, id: i64, auth: Option<String>, body: Bytes) -> ApiResult<Response> {
    let who = authenticate(&app, auth).await?;
    input::check_json_object(&body)?;
    let row = app
        .store
        .writer
        .write(move |tx| {
            let existing = match tx.get(R::TABLE, id)? {
                Some(r) if who.may_see(rows::owner_of(&r)) => r,
                _ => return Err(not_found(R::TABLE, id)),
            };
            let cols = R::patch(tx, &existing, &body)?;
            tx.update(R::TABLE, id, &cols)?.ok_or_else(|| not_found(R::TABLE, id))
        })
        .await?;
    Ok(json_response(StatusCode::OK, &row))
}

async fn delete<R: Resource>(app: App, id: i64, auth: Option<String>) -> ApiResult<Response> {
    let who = authenticate(&app, auth).await?;
    app.store
        .writer
        .write(move |tx| {
            let existing = match tx.get(R::TABLE, id)? {
                Some(r) if who.may_see(rows::owner_of(&r)) => r,
                _ => return Err(not_found(R::TABLE, id)),
            };
            R::before_delete(tx, &existing)?;
            tx.delete(R::TABLE, id)?;
            Ok(())
        })
        .await?;
    Ok(warp::reply::with_status(warp::reply(), StatusCode::NO_CONTENT).into_response())
}

/// The five routes of one resource under `/api/<table>`.
fn resource<R: Resource>(app: App) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let name = R::TABLE.name();
    let base = warp::path("api").and(warp::path(name));
    let list_r = base
        .and(warp::path::end())
        .and(warp::get())
        .and(with_app(app.clone()))
        .and(auth_header())
        .and(query())
        .and_then(|app, auth, q| async move { respond(list::<R>(app, auth, q).await) });
    let create_r = base
        .and(warp::path::end())
        .and(warp::post())
        .and(with_app(app.clone()))
        .and(auth_header())
        .and(body())
        .and_then(|app, auth, b| async move { respond(create::<R>(app, auth, b).await) });
    let get_r = base
        .and(warp::path::param::<String>())
        .and(warp::path::end())
        .and(warp::get())
        .and(with_app(app.clone()))
        .and(auth_header())
        .and_then(|id: String, app, auth| async move {
            respond(async { get_one::<R>(app, input::parse_id(&id)?, auth).await }.await)
        });
    let patch_r = base
        .and(warp::path::param::<String>())
        .and(warp::path::end())
        .and(warp::patch())
        .and(with_app(app.clone()))
        .and(auth_header())
        .and(body())
        .and_then(|id: String, app, auth, b| async move {
            respond(async { patch::<R>(app, input::parse_id(&id)?, auth, b).await }.await)
        });
    let delete_r = base
        .and(warp::path::param::<String>())
        .and(warp::path::end())
        .and(warp::delete())
        .and(with_app(app))
        .and(auth_header())
        .and_then(|id: String, app, auth| async move {
            respond(async { delete::<R>(app, input::parse_id(&id)?, auth).await }.await)
        });
    list_r.or(create_r).unify().or(get_r).unify().or(patch_r).unify().or(delete_r).unify()
}

/// `GET /api/me`: the signed-in user, without secrets.
async fn me(app: App, auth: Option<String>) -> ApiResult<Response> {
    let who = authenticate(&app, auth).await?;
    let (user, expires) = app
        .store
        .read(move |c| {
            let expires: Option<String> = c.query_row(
                "SELECT MAX(expiration) FROM calendar_watch_channels WHERE user_id = ?1 AND state = 'active'",
                [who.user_id],
                |r| r.get(0),
            )?;
            Ok((users::get(c, who.user_id)?, expires))
        })
        .await?;
    let user = user.ok_or_else(|| ApiError::Unauthorized("the token's user does not exist".into()))?;
    let mut body = serde_json::to_value(user).unwrap_or(Value::Null);
    // When the user's Google push channel runs out (renewed automatically before then).
    body["google_channel_expires_at"] = expires.map(Value::String).unwrap_or(Value::Null);
    Ok(json_response(StatusCode::OK, &body))
}

/// `GET /auth/link?code=…`: use a single-use login link, land on `/` signed in.
async fn login_link(app: App, q: HashMap<String, String>) -> ApiResult<Response> {
    let code = q.get("code").cloned().unwrap_or_default();
    if code.is_empty() || code.len() > 200 {
        return Err(ApiError::BadRequest("the link has no valid code".into()));
    }
    let user = app
        .store
        .writer
        .write(move |tx| {
            let now = tx.now().to_string();
            let Some(user_id) = crate::auth::redeem_login_link(tx.conn(), &code, &now)? else {
                return Err(ApiError::Unauthorized("this sign-in link is unknown, already used or expired; ask for a new one".into()));
            };
            users::get(tx.conn(), user_id)?.ok_or_else(|| ApiError::Unauthorized("the link's user no longer exists".into()))
        })
        .await?;
    let token = app.tokens.user_token(user.id, &user.role, app.config.auth.token_ttl.as_secs() as i64);
    tracing::info!(user = user.id, "signed in with a login link");
    Ok(redirect_with_token(&token))
}

/// A 303 to `/` carrying the token in the URL fragment (never sent to servers or logs).
pub fn redirect_with_token(token: &str) -> Response {
    let mut res = Response::new(Default::default());
    *res.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = warp::http::HeaderValue::from_str(&format!("/#access_token={token}")) {
        res.headers_mut().insert(warp::http::header::LOCATION, v);
    }
    res.headers_mut().insert(warp::http::header::CACHE_CONTROL, warp::http::HeaderValue::from_static("no-store"));
    res
}

pub fn routes(app: App) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let me_r = warp::path!("api" / "me")
        .and(warp::get())
        .and(with_app(app.clone()))
        .and(auth_header())
        .and_then(|app, auth| async move { respond(me(app, auth).await) });
    let link_r = warp::path!("auth" / "link")
        .and(warp::get())
        .and(with_app(app.clone()))
        .and(query())
        .and_then(|app, q| async move { respond(login_link(app, q).await) });
    let admin_r = warp::path!("api" / "admin" / "health")
        .and(warp::get())
        .and(with_app(app.clone()))
        .and(auth_header())
        .and_then(|app, auth| async move { respond(admin::health(app, auth).await) });
    resource::<clients::Clients>(app.clone())
        .or(admin_r)
        .unify()
        .or(resource::<meetings::Meetings>(app.clone()))
        .unify()
        .or(resource::<pipeline::Pipeline>(app))
        .unify()
        .or(me_r)
        .unify()
        .or(link_r)
        .unify()
}

/// Turn warp's own rejections (no route, body too large, ...) into the JSON error shape.
pub async fn recover(err: Rejection) -> Result<Response, Infallible> {
    let e = if err.is_not_found() {
        ApiError::NotFound("no such endpoint".into())
    } else if let Some(api) = err.find::<ApiError>() {
        return Ok(api.clone().into_response());
    } else if err.find::<warp::reject::PayloadTooLarge>().is_some() {
        ApiError::PayloadTooLarge(format!("the body is larger than {} KiB", MAX_BODY / 1024))
    } else if err.find::<warp::reject::LengthRequired>().is_some() {
        ApiError::BadRequest("send a Content-Length header with the body".into())
    } else if err.find::<warp::reject::MethodNotAllowed>().is_some() {
        let mut res = ApiError::BadRequest("this method is not allowed on this path".into()).into_response();
        *res.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        return Ok(res);
    } else if err.find::<warp::reject::UnsupportedMediaType>().is_some() {
        ApiError::BadRequest("send the body as JSON".into())
    } else if err.find::<warp::reject::InvalidQuery>().is_some() {
        ApiError::BadRequest("the query string is malformed".into())
    } else if err.find::<warp::reject::MissingHeader>().is_some() || err.find::<warp::reject::InvalidHeader>().is_some() {
        ApiError::BadRequest("a required header is missing or malformed".into())
    } else {
        tracing::debug!(?err, "unhandled rejection");
        ApiError::BadRequest("the request could not be understood".into())
    };
    Ok(e.into_response())
}

#[cfg(test)]
mod known_users_tests {
    use super::KnownUsers;
    use std::time::Duration;

    #[test]
    fn entries_are_trusted_only_until_they_expire() {
        let known = KnownUsers::new(Duration::from_millis(50));
        assert_eq!(known.get(7), None, "unknown users are read from the database");
        known.remember(7, true);
        assert_eq!(known.get(7), Some(true));
        assert_eq!(known.get(8), None);
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(known.get(7), None, "an expired entry sends the next request to the database again");
    }
}
