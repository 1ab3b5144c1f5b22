//! REST: `/api/clients`, `/api/meetings`, `/api/pipeline` (list, get, create,
//! patch, delete), `/api/me`, the login-link landing `/auth/link`, and the
//! account routes of [`accounts`] (`/api/admin/users`, `/api/me/signout`, ...).
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

use crate::http::error::{ApiError, ApiResult};
use crate::startup::App;
use crate::store::{rows, users, Table};

pub use crate::identity::Identity;

pub fn with_app(app: App) -> impl Filter<Extract = (App,), Error = Infallible> + Clone {
    warp::any().map(move || app.clone())
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
pub async fn authenticate(app: &App, header: Option<String>) -> ApiResult<Identity> {
    let token = bearer(header.as_deref())?;
    let claims = app.tokens.verify(token).map_err(|e| ApiError::Unauthorized(e.to_string()))?;
    if claims.is_anon() {
        return Err(ApiError::Unauthorized("the anon key cannot call the REST API; sign in as a user".into()));
    }
    Ok(app.identities.check(&claims).await?.identity)
}

pub fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut res = warp::reply::json(body).into_response();
    *res.status_mut() = status;
    res
}

pub fn respond(result: ApiResult<Response>) -> Result<Response, Infallible> {
    Ok(result.unwrap_or_else(ApiError::into_response))
}

pub(crate) fn auth_header() -> impl Filter<Extract = (Option<String>,), Error = Rejection> + Clone {
    warp::header::optional::<String>("authorization")
}

/// The request body, at most `limit` bytes (`server.max_body_bytes`): a `Content-Length` over the
/// limit is refused before anything is read, and a body without one (chunked,
/// what `fetch` with a stream sends) is read until it passes the limit — 413
/// either way, never more than the limit buffered.
pub(crate) fn body(limit: usize) -> impl Filter<Extract = (Bytes,), Error = Rejection> + Clone {
    warp::header::optional::<String>("content-length").and(warp::body::stream()).and_then(
        move |announced: Option<String>, stream| async move {
            let too_large = || {
                warp::reject::custom(ApiError::PayloadTooLarge(format!("the body is larger than {limit} bytes (server.max_body_bytes)")))
            };
            if let Some(n) = announced {
                match n.trim().parse::<u64>() {
                    Ok(n) if n > limit as u64 => return Err(too_large()),
                    Ok(_) => {}
                    Err(_) => return Err(warp::reject::custom(ApiError::BadRequest("the Content-Length header is not a number".into()))),
                }
            }
            read_limited(stream, limit).await.map_err(|e| match e {
                None => too_large(),
                Some(why) => warp::reject::custom(ApiError::BadRequest(format!("the body could not be read: {why}"))),
            })
        },
    )
}

/// Collect a body stream, giving up (None) as soon as it passes `limit` bytes.
async fn read_limited<S, B>(stream: S, limit: usize) -> Result<Bytes, Option<String>>
where
    S: futures_util::Stream<Item = Result<B, warp::Error>>,
    B: bytes::Buf,
{
    use bytes::BufMut;
    use futures_util::StreamExt;
    let mut stream = std::pin::pin!(stream);
    let mut buf = bytes::BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| Some(e.to_string()))?;
        if buf.len() + chunk.remaining() > limit {
            return Err(None);
        }
        buf.put(chunk);
    }
    Ok(buf.freeze())
}

pub(crate) fn query() -> impl Filter<Extract = (HashMap<String, String>,), Error = Infallible> + Clone {
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
        Table::Users => "user",
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
                _ => return Err(not_found(R::TABLE, id).into()),
            };
            let cols = R::patch(tx, &existing, &body)?;
            tx.update(R::TABLE, id, &cols)?.ok_or_else(|| not_found(R::TABLE, id).into())
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
                _ => return Err(not_found(R::TABLE, id).into()),
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
        .and(body(app.config.server.max_body_bytes))
        .and_then(|app, auth, b| async move { respond(create::<R>(app, auth, b).await) });
    let get_r = base
        .and(warp::path::param::<String>())
        .and(warp::path::end())
        .and(warp::get())
        .and(with_app(app.clone()))
        .and(auth_header())
        .and_then(|id: String, app, auth| async move { respond(async { get_one::<R>(app, input::parse_id(&id)?, auth).await }.await) });
    let patch_r = base
        .and(warp::path::param::<String>())
        .and(warp::path::end())
        .and(warp::patch())
        .and(with_app(app.clone()))
        .and(auth_header())
        .and(body(app.config.server.max_body_bytes))
        .and_then(|id: String, app, auth, b| async move { respond(async { patch::<R>(app, input::parse_id(&id)?, auth, b).await }.await) });
    let delete_r = base
        .and(warp::path::param::<String>())
        .and(warp::path::end())
        .and(warp::delete())
        .and(with_app(app))
        .and(auth_header())
        .and_then(|id: String, app, auth| async move { respond(async { delete::<R>(app, input::parse_id(&id)?, auth).await }.await) });
    list_r.or(create_r).unify().or(get_r).unify().or(patch_r).unify().or(delete_r).unify()
}

/// `GET /api/me`: the signed-in user, without secrets.
async fn me(app: App, auth: Option<String>) -> ApiResult<Response> {
    let who = authenticate(&app, auth).await?;
    let (user, expires) = app
        .store
        .read(move |c| {
            let expires: Option<String> = c.query_row(
                "SELECT MIN(expiration) FROM calendar_watch_channels WHERE user_id = ?1 AND state = 'active'",
                [who.user_id],
                |r| r.get(0),
            )?;
            Ok((users::get(c, who.user_id)?, expires))
        })
        .await?;
    let user = user.ok_or_else(|| ApiError::Unauthorized("the token's user does not exist".into()))?;
    let mut body = serde_json::to_value(user).unwrap_or(Value::Null);
    // When the user's first Google push channel runs out (one per ticked
    // calendar; each is renewed automatically before then).
    body["google_channel_expires_at"] = expires.map(Value::String).unwrap_or(Value::Null);
    Ok(json_response(StatusCode::OK, &body))
}

/// A login code as it arrives: non-empty, bounded, URL-safe base64.
fn login_code(raw: Option<&String>) -> ApiResult<String> {
    let code = raw.map(|c| c.trim()).unwrap_or_default();
    if code.is_empty() || code.len() > 200 || !code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(ApiError::BadRequest("the link has no valid code".into()));
    }
    Ok(code.to_string())
}

fn wants_html(headers: &warp::http::HeaderMap) -> bool {
    headers.get(warp::http::header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("text/html"))
}

/// Browsers get a page saying why; programs the JSON error.
fn link_error(e: ApiError, html: bool) -> Response {
    if !html {
        return e.into_response();
    }
    if let ApiError::Internal(cause) = &e {
        tracing::error!(error = %cause, "internal error");
    }
    let body = format!("<p>{}</p><p><a href=\"/\">Back to syncgate</a></p>", crate::web::html_escape(&e.public_message()));
    crate::web::html_page(e.status(), "This sign-in link did not work", &body)
}

/// `GET /auth/link?code=…`: a page whose button signs in. GET never uses the
/// code up: mail security scanners fetch every link they see, and would
/// otherwise spend it before the person clicks.
async fn login_link_page(app: App, q: HashMap<String, String>, headers: warp::http::HeaderMap) -> Response {
    let html = wants_html(&headers);
    let checked = async {
        let code = login_code(q.get("code"))?;
        let c = code.clone();
        let usable = app
            .store
            .read(move |conn| Ok(crate::auth::login_link_usable(conn, &c, &crate::store::timefmt::format(crate::store::timefmt::now()))?))
            .await?;
        if !usable {
            return Err(ApiError::Unauthorized("this sign-in link is unknown, already used or expired; ask for a new one".into()).into());
        }
        Ok(code)
    }
    .await;
    let code = match checked {
        Ok(code) => code,
        Err(e) => return link_error(e, html),
    };
    // A plain form POST: no script or inline style, so it works under `default-src 'self'`.
    let body = format!(
        "<p>This link signs you in to syncgate once.</p>\
         <form method=\"post\" action=\"link\">\
         <input type=\"hidden\" name=\"code\" value=\"{}\">\
         <button type=\"submit\" id=\"sign-in\">Sign in</button></form>",
        crate::web::html_escape(&code)
    );
    crate::web::html_page(StatusCode::OK, "Sign in to syncgate", &body)
}

/// `POST /auth/link` (form `code=…`): use a single-use login link, land on
/// `/` signed in with the token in the URL fragment.
async fn login_link(app: App, headers: warp::http::HeaderMap, body: Bytes) -> Response {
    let html = wants_html(&headers);
    let result = async {
        // A form from another site must not sign this browser in (login CSRF).
        if let Some(origin) = headers.get(warp::http::header::ORIGIN).and_then(|v| v.to_str().ok()) {
            let host = headers.get(warp::http::header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
            if origin != "null" && !crate::startup::origin_allowed(&app.config, &app.public_url, origin, host) {
                return Err(ApiError::Forbidden("this sign-in form was sent from another site".into()));
            }
        }
        let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
        let code = login_code(form.get("code"))?;
        let user = app
            .store
            .writer
            .write(move |tx| {
                let now = tx.now().to_string();
                let Some(user_id) = crate::auth::redeem_login_link(tx.conn(), &code, &now)? else {
                    return Err(
                        ApiError::Unauthorized("this sign-in link is unknown, already used or expired; ask for a new one".into()).into()
                    );
                };
                let user =
                    users::get(tx.conn(), user_id)?.ok_or_else(|| ApiError::Unauthorized("the link's user no longer exists".into()))?;
                if !user.is_active() {
                    // The error rolls the redeem back: the link works again once the account is enabled.
                    return Err(ApiError::Unauthorized("this account is disabled; ask an admin to enable it".into()).into());
                }
                Ok(user)
            })
            .await?;
        let token = app.tokens.user_token(user.id, &user.role, app.config.auth.token_ttl.as_secs() as i64);
        tracing::info!(user = user.id, "signed in with a login link");
        Ok(redirect_with_token(&token))
    }
    .await;
    result.unwrap_or_else(|e| link_error(e, html))
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
    let link_page_r = warp::path!("auth" / "link")
        .and(warp::get())
        .and(with_app(app.clone()))
        .and(query())
        .and(warp::header::headers_cloned())
        .then(login_link_page);
    let link_r = warp::path!("auth" / "link")
        .and(warp::post())
        .and(with_app(app.clone()))
        .and(warp::header::headers_cloned())
        .and(body(app.config.server.max_body_bytes))
        .then(login_link);
    let admin_r = warp::path!("api" / "admin" / "health")
        .and(warp::get())
        .and(with_app(app.clone()))
        .and(auth_header())
        .and_then(|app, auth| async move { respond(admin::health(app, auth).await) });
    resource::<clients::Clients>(app.clone())
        .or(crate::accounts::routes::routes(app.clone()))
        .unify()
        .or(admin_r)
        .unify()
        .or(resource::<meetings::Meetings>(app.clone()))
        .unify()
        .or(resource::<pipeline::Pipeline>(app))
        .unify()
        .or(me_r)
        .unify()
        .or(link_page_r)
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
        ApiError::PayloadTooLarge("the body is larger than the limit".into())
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
