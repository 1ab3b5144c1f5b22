//! Supabase's data API at `/rest/v1` (PostgREST's dialect), so a frontend
//! written against `supabase.from(…)` moves by changing one URL:
//! `GET`/`HEAD` read a page of `clients`, `meetings` or `pipeline` with
//! filters, order, range and count; `POST` inserts one row or many;
//! `PATCH` and `DELETE` change the rows their filters pick. The rows, the
//! rules and who may see what are `/api`'s: the same checks build the
//! columns ([`Resource`](super::Resource)), the same store operations write
//! them through the writer and the change log (so realtime subscribers see
//! every change), and errors are answered in PostgREST's shape
//! ([`error`]). [`query`] parses the query string, [`translate`] makes it
//! the store's terms for one table, [`headers`] reads `Prefer`, `Accept`,
//! the schema profiles and `Range`.

pub mod error;
pub mod headers;
pub mod query;
pub mod translate;

use bytes::Bytes;
use serde_json::{Map, Value};
use warp::filters::BoxedFilter;
use warp::http::{HeaderMap, HeaderValue, Method, StatusCode};
use warp::reply::Response;
use warp::{Filter, Rejection};

use self::error::{RestError, RestResult};
use self::headers::{Accept, Prefer};
use self::query::{Limits, Query};
use super::{clients::Clients, meetings::Meetings, pipeline::Pipeline, visibility, Columns, Resource};
use crate::auth::identity::Identity;
use crate::config::RestConfig;
use crate::http::{body, with_state, ApiError, Authenticator};
use crate::store::matching::{Affected, Condition, RowsQuery};
use crate::store::records::{NewRecord, RecordChange};
use crate::store::{Store, Table};

/// What the `/rest/v1` routes use. Cheap to clone.
#[derive(Clone)]
pub struct RestV1State {
    pub store: Store,
    pub auth: Authenticator,
    pub limits: RestConfig,
    /// `server.max_body_bytes`.
    pub max_body_bytes: usize,
}

/// Who calls: a signed-in user, or only the anon key (reads see no rows,
/// as under Supabase's row-level security; writes are refused).
#[derive(Debug, Clone, Copy)]
enum Caller {
    Anon,
    User(Identity),
}

/// One request, read and checked.
struct Request {
    table: Table,
    query: Query,
    prefer: Prefer,
    accept: Accept,
    caller: Caller,
}

/// The three data tables; `users` and everything else are not here.
fn exposed(name: &str) -> RestResult<Table> {
    match Table::parse(name) {
        Some(t @ (Table::Clients | Table::Meetings | Table::Pipeline)) => Ok(t),
        _ => Err(RestError::new(
            StatusCode::NOT_FOUND,
            "PGRST205",
            format!("Could not find the table 'public.{}' in the schema cache", crate::http::clip(name)),
        )
        .hint("the tables here are clients, meetings and pipeline")),
    }
}

/// `apikey` (when sent) must be a key this server signed; the caller is
/// `Authorization: Bearer`, or the `apikey` itself when that is absent (as
/// Supabase's gateway does).
async fn caller(auth: &Authenticator, headers: &HeaderMap) -> RestResult<Caller> {
    let unauthorized = |code: &'static str, message: String| RestError::new(StatusCode::UNAUTHORIZED, code, message);
    let apikey = headers.get("apikey").map(|v| v.to_str().unwrap_or(""));
    if let Some(key) = apikey {
        auth.tokens().verify(key).map_err(|e| unauthorized("PGRST301", format!("Invalid API key: {e}")))?;
    }
    let token = match headers.get("authorization").map(|v| v.to_str().unwrap_or("")) {
        Some(h) => crate::http::bearer(Some(h)).map_err(|e| unauthorized("PGRST301", e.to_string()))?,
        None => apikey.ok_or_else(|| {
            unauthorized("PGRST302", "No API key found in request".into())
                .hint("send the apikey header (the anon key) and Authorization: Bearer <the user's token>")
        })?,
    };
    let claims = auth.tokens().verify(token).map_err(|e| unauthorized("PGRST301", e.to_string()))?;
    if claims.is_anon() {
        return Ok(Caller::Anon);
    }
    let checked = auth.identities().check(&claims).await.map_err(ApiError::from)?;
    Ok(Caller::User(checked.identity))
}

async fn serve(state: RestV1State, name: String, method: Method, raw: String, headers: HeaderMap, body: Bytes) -> RestResult<Response> {
    let table = exposed(&name)?;
    let write = !matches!(method, Method::GET | Method::HEAD);
    if raw.len() > state.limits.max_query_bytes {
        return Err(RestError::new(
            StatusCode::URI_TOO_LONG,
            "PGRST100",
            format!("the query string is longer than {} bytes (rest.max_query_bytes)", state.limits.max_query_bytes),
        ));
    }
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(raw.as_bytes()).into_owned().collect();
    let limits = Limits {
        max_conditions: state.limits.max_conditions,
        max_depth: state.limits.max_depth,
        max_in_values: state.limits.max_in_values,
    };
    let query = query::parse(&pairs, limits)?;
    headers::check_profile(&headers, write)?;
    let req = Request {
        table,
        query,
        prefer: Prefer::read(&headers)?,
        accept: Accept::read(&headers)?,
        caller: caller(&state.auth, &headers).await?,
    };
    match method {
        Method::GET | Method::HEAD => read(&state, req, &headers, method == Method::HEAD).await,
        Method::POST => insert(&state, req, &body).await,
        Method::PATCH => update(&state, req, &body).await,
        Method::DELETE => delete(&state, req).await,
        other => Err(RestError::new(StatusCode::METHOD_NOT_ALLOWED, "PGRST117", format!("Unsupported HTTP method: {other}"))),
    }
}

/// `GET` / `HEAD`: a page of the visible rows the filters match.
async fn read(state: &RestV1State, req: Request, headers: &HeaderMap, head: bool) -> RestResult<Response> {
    let table = req.table;
    let condition = translate::condition(table, &req.query.filters)?;
    let order = translate::order(table, &req.query.order)?;
    let columns = translate::projection(table, req.query.select.as_deref())?;
    let (offset, asked) = match headers::range(headers)? {
        // Query parameters win over the header, as in PostgREST.
        Some((first, count)) if req.query.offset.is_none() && req.query.limit.is_none() => (first, count),
        _ => (req.query.offset.unwrap_or(0), req.query.limit),
    };
    let max = state.limits.max_rows;
    let limit = asked.map_or(max, |l| usize::try_from(l).unwrap_or(max).min(max));
    let page = match req.caller {
        Caller::Anon => crate::store::matching::Rows { rows: Vec::new(), total: req.prefer.count.then_some(0) },
        Caller::User(who) => {
            let q = RowsQuery { table, visible: visibility(who), condition, order, limit, offset, count: req.prefer.count };
            state.store.matching_rows(q).await?
        }
    };
    let n = page.rows.len() as u64;
    if let Some(total) = page.total {
        if n == 0 && offset > 0 && offset >= total {
            return Err(RestError::new(StatusCode::RANGE_NOT_SATISFIABLE, "PGRST103", "Requested range not satisfiable")
                .details(format!("An offset of {offset} was requested, but there are only {total} rows.")));
        }
    }
    if req.accept.single && page.rows.len() != 1 {
        return Err(RestError::not_one(page.rows.len()));
    }
    let partial = page.total.is_some_and(|t| offset > 0 || offset + n < t);
    let status = if partial { StatusCode::PARTIAL_CONTENT } else { StatusCode::OK };
    let range = content_range(offset, n, page.total);
    let rows: Vec<Value> = page.rows.into_iter().map(|r| translate::shape(r, columns.as_deref(), req.accept.strip_nulls)).collect();
    let body = if head { None } else { Some(body_of(rows, req.accept.single)) };
    Ok(answer(status, body, req.accept.single, Some(range)))
}

/// `Content-Range: first-last/total` (`*` for an empty page or an uncounted total).
fn content_range(offset: u64, n: u64, total: Option<u64>) -> String {
    let total = total.map_or("*".to_string(), |t| t.to_string());
    if n == 0 {
        format!("*/{total}")
    } else {
        format!("{offset}-{}/{total}", offset + n - 1)
    }
}

fn body_of(mut rows: Vec<Value>, single: bool) -> Value {
    if single {
        rows.pop().unwrap_or(Value::Null)
    } else {
        Value::Array(rows)
    }
}

fn answer(status: StatusCode, body: Option<Value>, single: bool, range: Option<String>) -> Response {
    let mut res = Response::new(body.map(|b| b.to_string()).unwrap_or_default().into());
    *res.status_mut() = status;
    let kind = if single { "application/vnd.pgrst.object+json; charset=utf-8" } else { "application/json; charset=utf-8" };
    res.headers_mut().insert(warp::http::header::CONTENT_TYPE, HeaderValue::from_static(kind));
    if let Some(r) = range.and_then(|r| HeaderValue::from_str(&r).ok()) {
        res.headers_mut().insert(warp::http::header::CONTENT_RANGE, r);
    }
    res
}

/// A write's answer: its rows with `return=representation`, else nothing.
fn written(req: &Request, status_with_rows: StatusCode, status_without: StatusCode, rows: Vec<Value>) -> RestResult<Response> {
    let columns = translate::projection(req.table, req.query.select.as_deref())?;
    let n = rows.len() as u64;
    let range = req.prefer.count.then(|| content_range(0, n, Some(n))).or_else(|| Some("*/*".into()));
    if !req.prefer.representation {
        return Ok(answer(status_without, None, false, range));
    }
    let rows: Vec<Value> = rows.into_iter().map(|r| translate::shape(r, columns.as_deref(), req.accept.strip_nulls)).collect();
    Ok(answer(status_with_rows, Some(body_of(rows, req.accept.single)), req.accept.single, range))
}

fn signed_in(req: &Request) -> RestResult<Identity> {
    match req.caller {
        Caller::User(who) => Ok(who),
        Caller::Anon => Err(RestError::anon_write(req.table.name())),
    }
}

/// A `/api` check's refusal of a body: a field it does not take is a
/// column the server sets (`428C9`, as PostgreSQL says of a generated
/// column); the rest keep their meaning.
fn body_refusal(table: Table, e: ApiError) -> RestError {
    if let ApiError::BadRequest(m) = &e {
        if let Some(field) = m.strip_prefix("unknown field `").and_then(|r| r.split('`').next()) {
            return RestError::new(StatusCode::BAD_REQUEST, "428C9", format!("cannot set column \"{field}\""))
                .details(format!("{}.{field} is set by the server", table.name()));
        }
    }
    e.into()
}

fn create_columns(table: Table, body: &[u8]) -> Result<Columns, ApiError> {
    match table {
        Table::Clients => Clients::create(body),
        Table::Meetings => Meetings::create(body),
        _ => Pipeline::create(body),
    }
}

fn patch_columns(table: Table, existing: &Value, body: &[u8]) -> Result<Columns, ApiError> {
    match table {
        Table::Clients => Clients::patch(existing, body),
        Table::Meetings => Meetings::patch(existing, body),
        _ => Pipeline::patch(existing, body),
    }
}

/// Every key must be a column of the table (`PGRST204`), and a NOT NULL
/// column cannot be set to null (`23502`; `user_id: null` means the caller).
fn check_keys(table: Table, object: &Map<String, Value>) -> RestResult<()> {
    if let Some(k) = object.keys().find(|k| table.column_type(k).is_none()) {
        return Err(RestError::no_body_column(table.name(), k));
    }
    match object.iter().find(|(k, v)| v.is_null() && k.as_str() != "user_id" && table.required(k)) {
        Some((k, _)) => Err(RestError::new(
            StatusCode::BAD_REQUEST,
            "23502",
            format!("null value in column \"{k}\" of relation \"{}\" violates not-null constraint", table.name()),
        )),
        None => Ok(()),
    }
}

/// The owner a body's `user_id` names: the caller, or anyone for an admin.
fn owner(who: Identity, object: &Map<String, Value>) -> RestResult<i64> {
    match object.get("user_id") {
        None | Some(Value::Null) => Ok(who.user_id),
        Some(v) => match v.as_i64() {
            Some(id) if id == who.user_id || who.admin => Ok(id),
            Some(_) => Err(RestError::new(StatusCode::FORBIDDEN, "42501", "permission denied: user_id may only name yourself")
                .hint("an admin may create rows for another user")),
            None => Err(RestError::bad_value("bigint", &v.to_string())),
        },
    }
}

/// `POST`: one object or an array of them, all inserted or none.
async fn insert(state: &RestV1State, req: Request, body: &[u8]) -> RestResult<Response> {
    let who = signed_in(&req)?;
    let table = req.table;
    if req.prefer.upsert || req.query.on_conflict.is_some() {
        return Err(RestError::new(StatusCode::BAD_REQUEST, "PGRST100", "upserts are not supported here")
            .hint("insert new rows with POST and change existing ones with PATCH"));
    }
    let objects = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(o)) => vec![o],
        Ok(Value::Array(items)) => items
            .into_iter()
            .map(|i| match i {
                Value::Object(o) => Ok(o),
                _ => Err(RestError::bad_body("Empty or invalid json").details("an array to insert holds objects only")),
            })
            .collect::<RestResult<_>>()?,
        _ => return Err(RestError::bad_body("Empty or invalid json").details("send a JSON object or an array of objects")),
    };
    let objects: Vec<Map<String, Value>> = match &req.query.columns {
        Some(cols) => {
            for c in cols {
                if table.column_type(c).is_none() {
                    return Err(RestError::no_body_column(table.name(), c));
                }
            }
            objects
                .into_iter()
                .map(|mut o| {
                    o.retain(|k, _| cols.contains(k));
                    o
                })
                .collect()
        }
        None => {
            if let Some(first) = objects.first() {
                if objects.iter().any(|o| o.len() != first.len() || o.keys().any(|k| !first.contains_key(k))) {
                    return Err(RestError::bad_body("All object keys must match"));
                }
            }
            objects
        }
    };
    if req.accept.single && objects.len() != 1 {
        return Err(RestError::not_one(objects.len()));
    }
    let mut news = Vec::with_capacity(objects.len());
    for object in &objects {
        check_keys(table, object)?;
        let owner = owner(who, object)?;
        let bytes = serde_json::to_vec(object).map_err(ApiError::internal)?;
        let cols = create_columns(table, &bytes).map_err(|e| body_refusal(table, e))?;
        news.push(NewRecord { table, owner, columns: cols.values, client_id: cols.client_id.flatten() });
    }
    let rows = if news.is_empty() { Vec::new() } else { state.store.create_records(news).await? };
    written(&req, StatusCode::CREATED, StatusCode::CREATED, rows)
}

/// PATCH and DELETE change only rows their filters pick; none means every
/// row, which Supabase's projects refuse (`safeupdate`), and so do we.
fn require_filters(req: &Request, verb: &str) -> RestResult<Condition> {
    if req.query.filters.is_empty() {
        return Err(RestError::new(StatusCode::BAD_REQUEST, "21000", format!("{verb} requires a WHERE clause"))
            .hint("add a filter, such as id=eq.<id>"));
    }
    translate::condition(req.table, &req.query.filters)
}

/// The most rows a write may change, and the refusal when more match.
fn write_cap(state: &RestV1State, req: &Request) -> (usize, impl Fn(u64) -> RestError) {
    let max_rows = state.limits.max_rows;
    let strict = req.prefer.max_affected;
    let cap = strict.map_or(max_rows, |m| m.min(max_rows));
    let refusal = move |matched: u64| match strict {
        Some(m) if m < max_rows => {
            RestError::new(StatusCode::BAD_REQUEST, "PGRST124", "Query result exceeds max-affected preference constraint")
                .details(format!("The query affects {matched} rows"))
        }
        _ => RestError::new(
            StatusCode::BAD_REQUEST,
            "PGRST124",
            format!("the request would change more than {max_rows} rows (rest.max_rows)"),
        )
        .hint("narrow the filters; nothing was changed"),
    };
    (cap, refusal)
}

/// `PATCH`: the body's columns set on every visible row the filters pick.
async fn update(state: &RestV1State, req: Request, body: &[u8]) -> RestResult<Response> {
    let who = signed_in(&req)?;
    let table = req.table;
    let condition = require_filters(&req, "UPDATE")?;
    let Ok(Value::Object(mut patch)) = serde_json::from_slice::<Value>(body) else {
        return Err(RestError::bad_body("Empty or invalid json").details("send the columns to change as one JSON object"));
    };
    check_keys(table, &patch)?;
    // A row keeps its owner: `user_id` may only repeat it.
    let owner_named = patch.remove("user_id");
    let (cap, too_many) = write_cap(state, &req);
    let visible = visibility(who);
    let q = RowsQuery { table, visible, condition: condition.clone(), order: Vec::new(), limit: cap + 1, offset: 0, count: false };
    let rows = state.store.matching_rows(q.clone()).await?.rows;
    if rows.len() > cap {
        let all = state.store.matching_rows(RowsQuery { limit: 0, count: true, ..q }).await?;
        return Err(too_many(all.total.unwrap_or(rows.len() as u64)));
    }
    if req.accept.single && rows.len() != 1 {
        return Err(RestError::not_one(rows.len()));
    }
    let bytes = serde_json::to_vec(&patch).map_err(ApiError::internal)?;
    let mut changes = Vec::with_capacity(rows.len());
    for row in &rows {
        if let Some(named) = &owner_named {
            if named.as_i64() != Some(crate::store::rows::owner_of(row)) {
                return Err(RestError::new(StatusCode::FORBIDDEN, "42501", "permission denied: a row's user_id cannot change")
                    .hint("create the row for the other user instead"));
            }
        }
        let cols = patch_columns(table, row, &bytes).map_err(|e| body_refusal(table, e))?;
        let id = row.get("id").and_then(Value::as_i64).unwrap_or(0);
        changes.push(RecordChange { table, id, visible, columns: cols.values, client_id: cols.client_id });
    }
    let rows = if changes.is_empty() { Vec::new() } else { state.store.change_matching(condition, changes).await? };
    written(&req, StatusCode::OK, StatusCode::NO_CONTENT, rows)
}

/// `DELETE`: every visible row the filters pick, as `/api`'s delete does each.
async fn delete(state: &RestV1State, req: Request) -> RestResult<Response> {
    let who = signed_in(&req)?;
    let condition = require_filters(&req, "DELETE")?;
    let (cap, too_many) = write_cap(state, &req);
    match state.store.delete_matching(req.table, visibility(who), condition, cap, req.accept.single).await? {
        Affected::Rows(rows) => written(&req, StatusCode::OK, StatusCode::NO_CONTENT, rows),
        Affected::TooMany(matched) => Err(too_many(matched)),
        Affected::NotOne(n) => Err(RestError::not_one(n)),
    }
}

/// A refusal from the shared filters (a body over `server.max_body_bytes`,
/// an unreadable body) in PostgREST's shape; other rejections pass on.
async fn in_postgrest_shape(r: Rejection) -> Result<Response, Rejection> {
    match r.find::<ApiError>() {
        Some(e) => Ok(RestError::from(e.clone()).into_response()),
        None => Err(r),
    }
}

/// `/rest/v1/<table>` for every method, and `/rest/v1/rpc/<fn>` answered
/// as a function that does not exist (there are none here).
pub fn routes(state: RestV1State) -> BoxedFilter<(Response,)> {
    let limit = state.max_body_bytes;
    let tables = warp::path!("rest" / "v1" / String)
        .and(with_state(state))
        .and(warp::method())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::header::headers_cloned())
        .and(body(limit))
        .then(|name, state, method, raw, headers, body| async move {
            serve(state, name, method, raw, headers, body).await.unwrap_or_else(RestError::into_response)
        });
    let rpc = warp::path!("rest" / "v1" / "rpc" / String).map(|name: String| {
        RestError::new(
            StatusCode::NOT_FOUND,
            "PGRST202",
            format!("Could not find the function public.{}() in the schema cache", crate::http::clip(&name)),
        )
        .hint("syncgate offers its tables, not functions")
        .into_response()
    });
    rpc.or(tables).unify().recover(in_postgrest_shape).unify().boxed()
}
