//! PostgREST's error shape, `{"code","details","hint","message"}`, with the
//! status PostgREST gives each code — used only under `/rest/v1`, where
//! supabase-js reads `error.code` and `error.details`; `/api` keeps its own
//! shape. Every error here is answered before anything is written, or by a
//! write that rolled back.
//!
//! Which code a refusal gets is the one a Supabase project would send for
//! the same request: a column that does not exist is PostgreSQL's `42703`,
//! a value of the wrong type `22P02`, a rule of the data `23514` (a check
//! constraint), a client of another user `23503` (a foreign key), a taken
//! unique value `23505`, a forbidden owner `42501`, a column the server sets
//! `428C9` (PostgreSQL's "generated always"), a field that belongs to a
//! synced meeting's source `P0001` with status 409 (what a trigger raising
//! the refusal would send), and PostgREST's own `PGRST…` codes for the rest.

use serde::Serialize;
use warp::http::{HeaderValue, StatusCode};
use warp::reply::Response;

use super::query::QueryError;
use crate::http::ApiError;
use crate::store::StoreError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RestError {
    #[serde(skip)]
    pub status: StatusCode,
    pub code: &'static str,
    pub details: Option<String>,
    pub hint: Option<String>,
    pub message: String,
}

pub type RestResult<T> = Result<T, RestError>;

impl RestError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> RestError {
        RestError { status, code, details: None, hint: None, message: message.into() }
    }

    pub fn details(mut self, details: impl Into<String>) -> RestError {
        self.details = Some(details.into());
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> RestError {
        self.hint = Some(hint.into());
        self
    }

    /// `42703`: a column the table does not have.
    pub fn no_column(table: &str, column: &str) -> RestError {
        RestError::new(StatusCode::BAD_REQUEST, "42703", format!("column {table}.{column} does not exist"))
    }

    /// `PGRST204`: a body or `columns=` key that is not a column.
    pub fn no_body_column(table: &str, column: &str) -> RestError {
        RestError::new(
            StatusCode::BAD_REQUEST,
            "PGRST204",
            format!("Could not find the '{column}' column of '{table}' in the schema cache"),
        )
    }

    /// `22P02`: a value that is not of the column's type.
    pub fn bad_value(type_name: &str, value: &str) -> RestError {
        RestError::new(
            StatusCode::BAD_REQUEST,
            "22P02",
            format!("invalid input syntax for type {type_name}: \"{}\"", crate::http::clip(value)),
        )
    }

    /// `PGRST102`: a body that is not what the method takes.
    pub fn bad_body(why: impl Into<String>) -> RestError {
        RestError::new(StatusCode::BAD_REQUEST, "PGRST102", why)
    }

    /// `PGRST116`: `.single()` on zero or several rows, in PostgREST's words
    /// (supabase-js reads the `details`).
    pub fn not_one(rows: usize) -> RestError {
        RestError::new(StatusCode::NOT_ACCEPTABLE, "PGRST116", "Cannot coerce the result to a single JSON object")
            .details(format!("The result contains {rows} rows"))
    }

    /// Refused before a write: the anon key writes nothing (`42501`, 401 as
    /// PostgREST answers an unauthenticated role).
    pub fn anon_write(table: &str) -> RestError {
        RestError::new(StatusCode::UNAUTHORIZED, "42501", format!("permission denied for table {table}"))
            .hint("sign in: send Authorization: Bearer <the user's token>")
    }

    pub fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(code = self.code, status = self.status.as_u16(), "rest/v1 request failed");
        }
        let mut res = Response::new(serde_json::to_string(&self).unwrap_or_default().into());
        *res.status_mut() = self.status;
        res.headers_mut().insert(warp::http::header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
        res
    }
}

impl From<QueryError> for RestError {
    fn from(e: QueryError) -> RestError {
        RestError { status: StatusCode::BAD_REQUEST, code: e.code, details: e.details, hint: e.hint, message: e.message }
    }
}

/// What `/api`'s shared checks refuse, in PostgREST's codes (the checks
/// themselves are the same for both APIs).
impl From<ApiError> for RestError {
    fn from(e: ApiError) -> RestError {
        let status = e.status();
        let message = e.public_message();
        match e {
            ApiError::BadRequest(_) => RestError::new(status, "22P02", message),
            ApiError::Unprocessable(_) => RestError::new(StatusCode::BAD_REQUEST, "23514", message),
            ApiError::Conflict(_) => RestError::new(status, "P0001", message),
            ApiError::Unauthorized(_) => RestError::new(status, "PGRST301", message),
            ApiError::Forbidden(_) => RestError::new(status, "42501", message),
            ApiError::NotFound(_) => RestError::new(status, "PGRST205", message),
            ApiError::PayloadTooLarge(_) => RestError::new(status, "PGRST413", message),
            ApiError::RateLimited(_) => RestError::new(status, "PGRST429", message),
            ApiError::RequestTimeout(_) => RestError::new(status, "PGRST408", message),
            ApiError::Unavailable(_) => RestError::new(status, "PGRST000", message),
            ApiError::Internal(cause) => {
                tracing::error!(error = %cause, "internal error");
                RestError::new(status, "XX000", message)
            }
        }
    }
}

impl From<StoreError> for RestError {
    fn from(e: StoreError) -> RestError {
        match e {
            StoreError::Conflict(m) => RestError::new(StatusCode::CONFLICT, "23505", m),
            StoreError::Invalid(m) if m.contains("client_id") || m.contains("refers to") => {
                RestError::new(StatusCode::CONFLICT, "23503", m)
            }
            StoreError::Invalid(m) => RestError::new(StatusCode::BAD_REQUEST, "23514", m),
            other => ApiError::from(other).into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shape_is_postgrest_s_with_nulls_present() {
        let body = serde_json::to_value(RestError::no_column("meetings", "colour")).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"code": "42703", "details": null, "hint": null, "message": "column meetings.colour does not exist"})
        );
        let single = RestError::not_one(0);
        assert_eq!((single.status.as_u16(), single.details.as_deref()), (406, Some("The result contains 0 rows")));
    }

    #[test]
    fn store_refusals_keep_their_meaning() {
        let taken: RestError = StoreError::Conflict("taken".into()).into();
        assert_eq!((taken.status.as_u16(), taken.code), (409, "23505"));
        let foreign: RestError = StoreError::Invalid("client_id 4 is not one of this user's clients".into()).into();
        assert_eq!((foreign.status.as_u16(), foreign.code), (409, "23503"));
        let internal: RestError = StoreError::Internal("disk on fire".into()).into();
        assert_eq!(internal.status.as_u16(), 500);
        assert!(!internal.message.contains("disk"), "{}", internal.message);
    }
}
