//! A joined channel: its `postgres_changes` bindings (parsed once at join)
//! and the in-memory check of whether a change reaches it. Ownership is part
//! of the check, so a filter can narrow but never widen what a user sees.

use std::sync::Arc;

use serde_json::Value;

use super::filter::RowFilter;
use crate::store::{Change, Op, Table};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    All,
    Only(Op),
}

/// One `postgres_changes` entry of a join.
#[derive(Debug, Clone)]
pub struct Binding {
    pub id: u32,
    pub event: EventKind,
    pub table: Option<Table>,
    /// None when no filter was sent, or when the filter was refused (then `active` is false).
    pub filter: Option<RowFilter>,
    /// A binding whose filter was refused stays listed (so ids line up) but matches nothing.
    pub active: bool,
    /// The entry exactly as the client sent it, plus `id`: what the ok reply echoes.
    pub echo: Value,
}

/// Why a binding could not be accepted.
pub enum BindingError {
    /// The join is refused with this reason (unknown schema or table, bad shape).
    Refuse(String),
}

impl Binding {
    /// Parse one entry. A bad filter is not an error here: the binding comes
    /// back inactive with the sentence to send as a system error.
    pub fn parse(entry: &Value, id: u32) -> Result<(Binding, Option<String>), BindingError> {
        let obj = entry.as_object().ok_or_else(|| BindingError::Refuse("each postgres_changes entry must be an object".into()))?;
        let event = match obj.get("event") {
            None => EventKind::All,
            Some(Value::String(e)) => match e.to_ascii_uppercase().as_str() {
                "*" => EventKind::All,
                "INSERT" => EventKind::Only(Op::Insert),
                "UPDATE" => EventKind::Only(Op::Update),
                "DELETE" => EventKind::Only(Op::Delete),
                _ => return Err(BindingError::Refuse(format!("event must be *, INSERT, UPDATE or DELETE, not \"{e}\""))),
            },
            Some(_) => return Err(BindingError::Refuse("event must be a string".into())),
        };
        match obj.get("schema") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if s == "public" || s == "*" => {}
            Some(Value::String(s)) => return Err(BindingError::Refuse(format!("unknown schema \"{s}\"; syncgate has only public"))),
            Some(_) => return Err(BindingError::Refuse("schema must be a string".into())),
        }
        let table = match obj.get("table") {
            None | Some(Value::Null) => None,
            Some(Value::String(t)) if t == "*" => None,
            Some(Value::String(t)) => Some(Table::parse(t).ok_or_else(|| {
                BindingError::Refuse(format!("unknown table \"{t}\"; syncgate has meetings, clients, pipeline and (for admins) users"))
            })?),
            Some(_) => return Err(BindingError::Refuse("table must be a string".into())),
        };
        let (filter, active, problem) = match obj.get("filter") {
            None | Some(Value::Null) => (None, true, None),
            Some(Value::String(f)) if f.is_empty() => (None, true, None),
            Some(Value::String(f)) => match RowFilter::parse(f, table) {
                Ok(rf) => (Some(rf), true, None),
                Err(why) => (None, false, Some(format!("invalid filter \"{f}\": {why}"))),
            },
            Some(_) => (None, false, Some("filter must be a string such as client_id=eq.7".to_string())),
        };
        let mut echo = obj.clone();
        echo.insert("id".into(), Value::from(id));
        Ok((Binding { id, event, table, filter, active, echo: Value::Object(echo) }, problem))
    }

    /// The id a binding gets: derived from the entry as sent, so sockets
    /// joining with the same bindings get the same ids (and byte-identical
    /// frames the hub can share), unique within the channel (`taken`).
    pub fn id_for(entry: &Value, taken: &[u32]) -> u32 {
        // FNV-1a, 31 bits (ids stay positive and small enough for any client).
        let mut h: u32 = 0x811c_9dc5;
        for b in entry.to_string().bytes() {
            h ^= b as u32;
            h = h.wrapping_mul(0x0100_0193);
        }
        let mut id = h & 0x7fff_ffff;
        while taken.contains(&id) {
            id = (id + 1) & 0x7fff_ffff;
        }
        id
    }

    pub fn matches(&self, change: &Change) -> bool {
        if !self.active {
            return false;
        }
        match self.table {
            Some(t) if t != change.table => return false,
            // No table means the data tables: accounts only to bindings that name `users`.
            None if change.table == Table::Users => return false,
            _ => {}
        }
        if let EventKind::Only(op) = self.event {
            if op != change.op {
                return false;
            }
        }
        let Some(f) = &self.filter else { return true };
        // UPDATE and DELETE match on the old row too, so a row leaving a
        // filter still reaches the client that showed it.
        let new_ok = change.record.as_ref().is_some_and(|r| f.matches(change.table, r));
        let old_ok = change.old_record.as_ref().is_some_and(|r| f.matches(change.table, r));
        new_ok || old_ok
    }
}

/// A channel joined on one socket.
#[derive(Debug)]
pub struct Channel {
    /// Unique per join, so late frames of a channel that was left are dropped.
    pub gen: u64,
    pub topic: Arc<str>,
    pub join_ref: Option<String>,
    pub bindings: Vec<Binding>,
    /// Seq of the last change this channel was given (or decided not to
    /// need): resume, snapshot, log catch-up and live frames hand over at it
    /// with no gap and no duplicate.
    pub cursor: i64,
}
