//! Parsing request input into checked values: ids, page limits and
//! cursors, JSON bodies with unknown fields refused, timestamps, and the
//! "absent vs null" distinction PATCH needs.

use base64::Engine;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::auth::identity::Identity;
pub use crate::http::error::clip;
use crate::http::error::{ApiError, ApiResult};
use crate::http::QueryParams;
use crate::store::records::SortValue;
use crate::store::timefmt;

pub fn parse_id(s: &str) -> ApiResult<i64> {
    match s.parse::<i64>() {
        Ok(id) if id > 0 => Ok(id),
        _ => Err(ApiError::BadRequest(format!("\"{}\" is not a valid id; ids are positive integers", clip(s)))),
    }
}

/// `limit` of a list: 1 to [`MAX_LIMIT`](super::MAX_LIMIT), [`DEFAULT_LIMIT`](super::DEFAULT_LIMIT) when absent.
pub fn limit(q: &QueryParams) -> ApiResult<usize> {
    match q.get("limit") {
        None => Ok(super::DEFAULT_LIMIT),
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=super::MAX_LIMIT).contains(&n) => Ok(n),
            _ => Err(ApiError::BadRequest(format!("limit must be a whole number from 1 to {}", super::MAX_LIMIT))),
        },
    }
}

/// The body must be a JSON object (before anything is queued).
pub fn check_json_object(body: &[u8]) -> ApiResult<()> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(_)) => Ok(()),
        Ok(_) => Err(ApiError::BadRequest("the body must be a JSON object".into())),
        Err(e) => Err(ApiError::BadRequest(format!("the body is not valid JSON: {e}"))),
    }
}

/// A body that sets a NOT NULL column to null is refused, never read as
/// "leave it as it is". (`user_id: null` means the caller, as when absent.)
pub fn refuse_nulls(table: crate::store::Table, body: &[u8]) -> ApiResult<()> {
    if let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) {
        if let Some((k, _)) = map.iter().find(|(k, v)| v.is_null() && k.as_str() != "user_id" && table.required(k)) {
            return Err(ApiError::Unprocessable(format!("{k} may not be null")));
        }
    }
    Ok(())
}

/// Deserialize a body into a struct that refuses unknown fields and wrong types.
pub fn parse_body<T: DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(body).map_err(|e| {
        let msg = e.to_string();
        ApiError::BadRequest(match msg.find(" at line ") {
            Some(i) => msg[..i].to_string(),
            None => msg,
        })
    })
}

/// `user_id` in a create body: admins may create rows for any user; others
/// may only name themselves.
pub fn owner_for_create(body: &[u8], who: Identity) -> ApiResult<i64> {
    let v: Value = serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    match v.get("user_id") {
        None | Some(Value::Null) => Ok(who.user_id),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(id) if id == who.user_id => Ok(id),
            Some(id) if who.admin => Ok(id),
            Some(_) => Err(ApiError::Unprocessable("user_id may only name yourself".into())),
            None => Err(ApiError::BadRequest("user_id must be an integer".into())),
        },
        Some(_) => Err(ApiError::BadRequest("user_id must be an integer".into())),
    }
}

/// For PATCH bodies: `Some(None)` is an explicit null, `None` is absent.
pub fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

pub fn timestamp(field: &str, s: &str) -> ApiResult<String> {
    match timefmt::parse_checked(s) {
        Ok(t) => Ok(timefmt::format(t)),
        Err(timefmt::TimeError::Malformed) => {
            Err(ApiError::BadRequest(format!("{field} must be an RFC 3339 timestamp such as 2026-11-23T10:00:00Z, not \"{}\"", clip(s))))
        }
        Err(timefmt::TimeError::OutOfRange) => {
            Err(ApiError::Unprocessable(format!("{field} is \"{}\", which is outside the years 0000 to 9999 in UTC", clip(s))))
        }
    }
}

pub fn date(field: &str, s: &str) -> ApiResult<String> {
    timefmt::parse_date(s)
        .map(timefmt::format_date)
        .ok_or_else(|| ApiError::BadRequest(format!("{field} must be a date like 2026-11-23, not \"{}\"", clip(s))))
}

/// A required, trimmed, bounded text field.
pub fn required_text(field: &str, s: &str, max: usize) -> ApiResult<String> {
    let t = s.trim();
    if t.is_empty() {
        return Err(ApiError::Unprocessable(format!("{field} may not be empty")));
    }
    bounded(field, t, max)?;
    Ok(t.to_string())
}

pub fn bounded(field: &str, s: &str, max: usize) -> ApiResult<()> {
    if s.chars().count() > max {
        return Err(ApiError::Unprocessable(format!("{field} is longer than {max} characters")));
    }
    Ok(())
}

pub fn opt_bounded(field: &str, s: &Option<String>, max: usize) -> ApiResult<()> {
    match s {
        Some(s) => bounded(field, s, max),
        None => Ok(()),
    }
}

/// An opaque cursor: the sort-key values of the last row, base64url JSON.
pub fn encode_cursor(row: &Value, order: &[&str]) -> String {
    let vals: Vec<Value> = order.iter().map(|c| row.get(*c).cloned().unwrap_or(Value::Null)).collect();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Value::Array(vals).to_string())
}

pub fn decode_cursor(c: &str, n: usize) -> ApiResult<Vec<SortValue>> {
    let bad = || ApiError::BadRequest("cursor is not one this server gave out; start again without it".into());
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(c.as_bytes()).map_err(|_| bad())?;
    let vals: Vec<Value> = serde_json::from_slice(&raw).map_err(|_| bad())?;
    if vals.len() != n {
        return Err(bad());
    }
    vals.into_iter()
        .map(|v| match v {
            Value::Number(n) => n.as_i64().map(SortValue::Int).ok_or_else(bad),
            Value::String(s) => Ok(SortValue::Text(s)),
            _ => Err(bad()),
        })
        .collect()
}
