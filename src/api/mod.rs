//! REST for the advisers' records: `/api/clients`, `/api/meetings`,
//! `/api/pipeline` (list, get, create, patch, delete), `/api/me`, and the
//! login-link landing `/auth/link` ([`login_link`]). Each handler turns the
//! request into checked values ([`input`] and the resource modules) and
//! calls one store operation; it answers with the row JSON or the one error
//! shape. The auth check runs after the path matched, so a wrong path is a
//! 404, not a 401.

pub mod clients;
pub mod input;
pub mod login_link;
pub mod meetings;
pub mod pipeline;
pub mod rest_v1;

use bytes::Bytes;
use serde_json::Value;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use crate::auth::identity::Identity;
use crate::http::{
    auth_header, authenticate, body, json_response, query, respond, with_state, ApiError, ApiResult, Authenticator, QueryParams,
};
use crate::store::records::{NewRecord, RecordChange, RecordFilter, RecordQuery, SortValue, Visibility};
use crate::store::{Store, Table};

/// What the REST routes use. Cheap to clone.
#[derive(Clone)]
pub struct RestState {
    pub store: Store,
    pub auth: Authenticator,
    /// `server.max_body_bytes`.
    pub max_body_bytes: usize,
    /// What the login-link routes need besides.
    pub login: login_link::LoginSettings,
}

/// Whose rows an identity may read and change.
pub fn visibility(who: Identity) -> Visibility {
    if who.admin {
        Visibility::Everyone
    } else {
        Visibility::OwnerOnly(who.user_id)
    }
}

/// One table's CRUD, written once: each resource module supplies its own
/// input parsing and rules through [`Resource`], producing checked values
/// the store operations take.
pub trait Resource: Send + Sync + 'static {
    const TABLE: Table;
    /// `GET` list: the filters and sort order of this table.
    fn list_query(q: &QueryParams) -> ApiResult<ListQuery>;
    /// The columns of a new record, from a create body.
    fn create(body: &[u8]) -> ApiResult<Columns>;
    /// The columns a patch body changes on `existing`.
    fn patch(existing: &Value, body: &[u8]) -> ApiResult<Columns>;
}

/// Checked column values for a create or a patch.
#[derive(Debug, Default)]
pub struct Columns {
    pub values: Vec<(&'static str, Value)>,
    /// The client the record links to (`Some(None)`: no client); the store
    /// checks it is one of the owner's.
    pub client_id: Option<Option<i64>>,
}

impl Columns {
    pub fn set(&mut self, column: &'static str, value: impl Into<Value>) {
        self.values.push((column, value.into()));
    }
}

/// A list request, checked.
pub struct ListQuery {
    pub limit: usize,
    pub filters: Vec<RecordFilter>,
    /// Sort key columns (the last must be `id`) and the cursor's values.
    pub order: &'static [&'static str],
    pub after: Option<Vec<SortValue>>,
}

pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 500;

/// `limit` and `cursor` common to every list, plus a check that no other
/// parameter than `allowed` was sent.
pub fn paging(q: &QueryParams, allowed: &[&str], order: &'static [&'static str]) -> ApiResult<ListQuery> {
    for k in q.keys() {
        if k != "limit" && k != "cursor" && !allowed.contains(&k.as_str()) {
            return Err(ApiError::BadRequest(format!("unknown query parameter {k}")));
        }
    }
    let limit = input::limit(q)?;
    let after = match q.get("cursor") {
        None => None,
        Some(c) => Some(input::decode_cursor(c, order.len())?),
    };
    Ok(ListQuery { limit, filters: vec![], order, after })
}

/// `GET /api/<table>?limit=&cursor=&…`
async fn list<R: Resource>(state: RestState, auth: Option<String>, q: QueryParams) -> ApiResult<Response> {
    let who = authenticate(&state.auth, auth).await?;
    let lq = R::list_query(&q)?;
    let query = RecordQuery {
        table: R::TABLE,
        visible: visibility(who),
        filters: lq.filters,
        order: lq.order,
        after: lq.after,
        limit: lq.limit + 1,
    };
    let mut items = state.store.records_page(query).await?;
    let next = if items.len() > lq.limit {
        items.truncate(lq.limit);
        items.last().map(|last| input::encode_cursor(last, lq.order))
    } else {
        None
    };
    Ok(json_response(StatusCode::OK, &serde_json::json!({"items": items, "next_cursor": next})))
}

/// The row, if the caller may see it; else 404 (another user's row is not told apart from a missing one).
async fn visible<R: Resource>(state: &RestState, who: Identity, id: i64) -> ApiResult<Value> {
    match state.store.record(R::TABLE, id).await? {
        Some(r) if who.may_see(crate::store::rows::owner_of(&r)) => Ok(r),
        _ => Err(not_found(R::TABLE, id)),
    }
}

/// `GET /api/<table>/:id`
async fn get_one<R: Resource>(state: RestState, id: i64, auth: Option<String>) -> ApiResult<Response> {
    let who = authenticate(&state.auth, auth).await?;
    Ok(json_response(StatusCode::OK, &visible::<R>(&state, who, id).await?))
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

/// `POST /api/<table>` (JSON body) → 201 and the row.
async fn create<R: Resource>(state: RestState, auth: Option<String>, body: Bytes) -> ApiResult<Response> {
    let who = authenticate(&state.auth, auth).await?;
    input::check_json_object(&body)?;
    input::refuse_nulls(R::TABLE, &body)?;
    let owner = input::owner_for_create(&body, who)?;
    let cols = R::create(&body)?;
    let new = NewRecord { table: R::TABLE, owner, columns: cols.values, client_id: cols.client_id.flatten() };
    let row = state.store.create_record(new).await?;
    Ok(json_response(StatusCode::CREATED, &row))
}

/// `PATCH /api/<table>/:id` (JSON body) → the row after.
async fn patch<R: Resource>(state: RestState, id: i64, auth: Option<String>, body: Bytes) -> ApiResult<Response> {
    let who = authenticate(&state.auth, auth).await?;
    input::check_json_object(&body)?;
    input::refuse_nulls(R::TABLE, &body)?;
    let existing = visible::<R>(&state, who, id).await?;
    let cols = R::patch(&existing, &body)?;
    let change = RecordChange { table: R::TABLE, id, visible: visibility(who), columns: cols.values, client_id: cols.client_id };
    let row = state.store.change_record(change).await?;
    Ok(json_response(StatusCode::OK, &row))
}

/// `DELETE /api/<table>/:id` → 204.
async fn delete<R: Resource>(state: RestState, id: i64, auth: Option<String>) -> ApiResult<Response> {
    let who = authenticate(&state.auth, auth).await?;
    state.store.delete_record(R::TABLE, id, visibility(who)).await?;
    Ok(warp::reply::with_status(warp::reply(), StatusCode::NO_CONTENT).into_response())
}

/// The five routes of one resource under `/api/<table>`.
fn resource<R: Resource>(state: RestState) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let name = R::TABLE.name();
    let base = warp::path("api").and(warp::path(name));
    let limit = state.max_body_bytes;
    let list_r = base
        .and(warp::path::end())
        .and(warp::get())
        .and(with_state(state.clone()))
        .and(auth_header())
        .and(query())
        .and_then(|state, auth, q| async move { respond(list::<R>(state, auth, q).await) });
    let create_r = base
        .and(warp::path::end())
        .and(warp::post())
        .and(with_state(state.clone()))
        .and(auth_header())
        .and(body(limit))
        .and_then(|state, auth, b| async move { respond(create::<R>(state, auth, b).await) });
    let get_r = base
        .and(warp::path::param::<String>())
        .and(warp::path::end())
        .and(warp::get())
        .and(with_state(state.clone()))
        .and(auth_header())
        .and_then(|id: String, state, auth| async move { respond(async { get_one::<R>(state, input::parse_id(&id)?, auth).await }.await) });
    let patch_r = base
        .and(warp::path::param::<String>())
        .and(warp::path::end())
        .and(warp::patch())
        .and(with_state(state.clone()))
        .and(auth_header())
        .and(body(limit))
        .and_then(
            |id: String, state, auth, b| async move { respond(async { patch::<R>(state, input::parse_id(&id)?, auth, b).await }.await) },
        );
    let delete_r = base
        .and(warp::path::param::<String>())
        .and(warp::path::end())
        .and(warp::delete())
        .and(with_state(state))
        .and(auth_header())
        .and_then(|id: String, state, auth| async move { respond(async { delete::<R>(state, input::parse_id(&id)?, auth).await }.await) });
    list_r.or(create_r).unify().or(get_r).unify().or(patch_r).unify().or(delete_r).unify()
}

/// `GET /api/me`: the signed-in user, without secrets, and when their first
/// Google push channel runs out.
async fn me(state: RestState, auth: Option<String>) -> ApiResult<Response> {
    let who = authenticate(&state.auth, auth).await?;
    let profile = state.store.profile(who.user_id).await?;
    let profile = profile.ok_or_else(|| ApiError::Unauthorized("the token's user does not exist".into()))?;
    Ok(json_response(StatusCode::OK, &serde_json::to_value(profile).unwrap_or(Value::Null)))
}

/// The records' routes, `/api/me` and the login-link landing.
pub fn routes(state: RestState) -> BoxedFilter<(Response,)> {
    let me_r = warp::path!("api" / "me")
        .and(warp::get())
        .and(with_state(state.clone()))
        .and(auth_header())
        .and_then(|state, auth| async move { respond(me(state, auth).await) });
    resource::<clients::Clients>(state.clone())
        .or(resource::<meetings::Meetings>(state.clone()))
        .unify()
        .or(resource::<pipeline::Pipeline>(state.clone()))
        .unify()
        .or(me_r)
        .unify()
        .or(login_link::routes(state))
        .unify()
        .boxed()
}
