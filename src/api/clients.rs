//! `/api/clients`: an adviser's clients. Deleting one clears it from the
//! adviser's meetings and deletes its pipeline entries, each change logged.

use std::collections::HashMap;

use rusqlite::types::Value as SqlValue;
use serde::Deserialize;
use serde_json::Value;

use super::input::{self, nullable, opt_bounded, required_text, text};
use super::{paging, ListQuery, Resource};
use crate::http::error::{ApiError, ApiResult};
use crate::store::{Table, WriteTx};

pub struct Clients;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewClient {
    name: String,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    phone: Option<String>,
    #[serde(default)]
    notes: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    user_id: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientPatch {
    #[serde(default)]
    name: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    email: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    phone: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    notes: Option<Option<String>>,
}

fn email(e: Option<String>) -> ApiResult<Option<String>> {
    match e.map(|s| s.trim().to_string()).filter(|s| !s.is_empty()) {
        Some(s) if !crate::store::users::valid_email(&s) => {
            Err(ApiError::Unprocessable(format!("email \"{}\" is not an email address", input::clip(&s))))
        }
        other => Ok(other),
    }
}

impl Resource for Clients {
    const TABLE: Table = Table::Clients;

    fn list_query(q: &HashMap<String, String>) -> ApiResult<ListQuery> {
        let mut lq = paging(q, &["q"], &["id"])?;
        if let Some(s) = q.get("q").filter(|s| !s.trim().is_empty()) {
            let like = format!("%{}%", s.trim().replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
            lq.conditions
                .push(("(name LIKE $ ESCAPE '\\' OR email LIKE $ ESCAPE '\\' OR phone LIKE $ ESCAPE '\\')".into(), SqlValue::Text(like)));
        }
        Ok(lq)
    }

    fn create(_tx: &mut WriteTx<'_>, _owner: i64, body: &[u8]) -> ApiResult<Vec<(&'static str, SqlValue)>> {
        let c: NewClient = input::parse_body(body)?;
        let name = required_text("name", &c.name, 200)?;
        opt_bounded("phone", &c.phone, 50)?;
        opt_bounded("notes", &c.notes, 10_000)?;
        Ok(vec![("name", SqlValue::Text(name)), ("email", text(email(c.email)?)), ("phone", text(c.phone)), ("notes", text(c.notes))])
    }

    fn patch(_tx: &mut WriteTx<'_>, _existing: &Value, body: &[u8]) -> ApiResult<Vec<(&'static str, SqlValue)>> {
        let p: ClientPatch = input::parse_body(body)?;
        let mut cols = Vec::new();
        if let Some(n) = p.name {
            cols.push(("name", SqlValue::Text(required_text("name", &n, 200)?)));
        }
        if let Some(e) = p.email {
            cols.push(("email", text(email(e)?)));
        }
        if let Some(ph) = p.phone {
            opt_bounded("phone", &ph, 50)?;
            cols.push(("phone", text(ph)));
        }
        if let Some(n) = p.notes {
            opt_bounded("notes", &n, 10_000)?;
            cols.push(("notes", text(n)));
        }
        Ok(cols)
    }

    fn before_delete(tx: &mut WriteTx<'_>, existing: &Value) -> ApiResult<()> {
        let id = existing.get("id").and_then(Value::as_i64).unwrap_or(0);
        let meetings: Vec<i64> = ids(tx, "SELECT id FROM meetings WHERE client_id = ?1 ORDER BY id", id)?;
        for m in meetings {
            tx.update(Table::Meetings, m, &[("client_id", SqlValue::Null)])?;
        }
        let deals: Vec<i64> = ids(tx, "SELECT id FROM pipeline WHERE client_id = ?1 ORDER BY id", id)?;
        for d in deals {
            tx.delete(Table::Pipeline, d)?;
        }
        Ok(())
    }
}

fn ids(tx: &WriteTx<'_>, sql: &str, id: i64) -> ApiResult<Vec<i64>> {
    let mut stmt = tx.conn().prepare(sql)?;
    let rows = stmt.query_map([id], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}
