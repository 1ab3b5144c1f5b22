//! `/api/me/calendars`: which of the signed-in user's Google calendars
//! sync. `GET` lists them fresh from Google's calendar list (id, name,
//! colour, primary, selected); `PUT {"selected": [ids]}` sets the ticks. The
//! work is in [`crate::google::calendars`].

use bytes::Bytes;
use serde::Deserialize;
use warp::http::StatusCode;
use warp::reply::Response;

use super::calendars::{CalendarView, SelectionError};
use super::routes::GoogleRoutesState;
use super::sync::SyncError;
use crate::http::error::{ApiError, ApiResult};
use crate::http::json_response;

/// The body of `PUT /api/me/calendars`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Selection {
    selected: Vec<String>,
}

fn not_configured() -> ApiError {
    ApiError::Unavailable("Google is not configured on this server (google.client_id and google.client_secret are empty)".into())
}

fn answer(calendars: Vec<CalendarView>) -> Response {
    json_response(StatusCode::OK, &serde_json::json!({ "items": calendars }))
}

/// `GET /api/me/calendars`
pub async fn list(app: GoogleRoutesState, auth: Option<String>) -> ApiResult<Response> {
    let who = app.caller(auth).await?;
    if !app.google.enabled() {
        return Err(not_configured());
    }
    let calendars = app.google.list_calendars(who.user_id).await.map_err(|e| match e {
        SyncError::NotConnected => ApiError::Conflict("connect Google Calendar first: sign in with Google".into()),
        SyncError::NeedsReconnect => ApiError::Conflict("Google access was revoked or has expired; sign in with Google again".into()),
        SyncError::Api(e) => ApiError::Unavailable(format!("Google did not list your calendars: {e}")),
        SyncError::Store(e) => e.into(),
        SyncError::ShuttingDown => ApiError::Unavailable("the server is shutting down".into()),
    })?;
    Ok(answer(calendars))
}

/// `PUT /api/me/calendars` with `{"selected": ["<calendar id>", ...]}`
pub async fn set(app: GoogleRoutesState, auth: Option<String>, body: Bytes) -> ApiResult<Response> {
    let who = app.caller(auth).await?;
    if !app.google.enabled() {
        return Err(not_configured());
    }
    let selection: Selection =
        serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("send {{\"selected\": [calendar ids]}}: {e}")))?;
    if selection.selected.iter().any(|id| id.trim().is_empty() || id.len() > 1024) {
        return Err(ApiError::Unprocessable("a calendar id is empty or longer than 1024 characters".into()));
    }
    let calendars = app.google.set_calendars(who.user_id, selection.selected).await.map_err(|e| {
        let message = e.to_string();
        match e {
            SelectionError::NotConnected | SelectionError::NeedsReconnect => ApiError::Conflict(message),
            SelectionError::TooMany(_) | SelectionError::NotYours(_) => ApiError::Unprocessable(message),
            SelectionError::Store(e) => e.into(),
        }
    })?;
    Ok(answer(calendars))
}
