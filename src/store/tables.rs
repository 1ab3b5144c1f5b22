//! The synced tables, their columns and the Postgres type names the realtime
//! protocol reports for them. One list serves REST rows, the change log and
//! realtime filters, so a record looks the same everywhere.

use serde::Serialize;

/// A column type as the realtime protocol names it (Postgres type names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum PgType {
    Int8,
    Float8,
    Text,
    Bool,
    Timestamptz,
    Date,
    Jsonb,
}

impl PgType {
    pub fn name(self) -> &'static str {
        match self {
            PgType::Int8 => "int8",
            PgType::Float8 => "float8",
            PgType::Text => "text",
            PgType::Bool => "bool",
            PgType::Timestamptz => "timestamptz",
            PgType::Date => "date",
            PgType::Jsonb => "jsonb",
        }
    }
}

/// One of the tables whose every change is logged and broadcast.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    Clients,
    Meetings,
    Pipeline,
    /// Accounts, as admins see them (never a secret column). Changes are
    /// delivered only to admins and only to bindings that name the table.
    Users,
}

/// The synced data tables: what a realtime binding without a table means.
pub const ALL_TABLES: [Table; 3] = [Table::Clients, Table::Meetings, Table::Pipeline];

use PgType::*;

const CLIENT_COLUMNS: &[(&str, PgType)] = &[
    ("id", Int8),
    ("user_id", Int8),
    ("name", Text),
    ("email", Text),
    ("phone", Text),
    ("notes", Text),
    ("created_at", Timestamptz),
    ("updated_at", Timestamptz),
];

const MEETING_COLUMNS: &[(&str, PgType)] = &[
    ("id", Int8),
    ("user_id", Int8),
    ("source", Text),
    ("external_id", Text),
    ("title", Text),
    ("description", Text),
    ("location", Text),
    ("meeting_url", Text),
    ("starts_at", Timestamptz),
    ("ends_at", Timestamptz),
    ("all_day", Bool),
    ("timezone", Text),
    ("status", Text),
    ("client_id", Int8),
    ("attendees", Jsonb),
    ("notes", Text),
    ("invitees", Jsonb),
    ("cancel_url", Text),
    ("reschedule_url", Text),
    ("cancel_reason", Text),
    ("canceled_by", Text),
    ("previous_starts_at", Timestamptz),
    ("google_event_id", Text),
    ("calendar_id", Text),
    ("calendar_name", Text),
    ("microsoft_event_id", Text),
    ("created_at", Timestamptz),
    ("updated_at", Timestamptz),
];

const PIPELINE_COLUMNS: &[(&str, PgType)] = &[
    ("id", Int8),
    ("user_id", Int8),
    ("client_id", Int8),
    ("title", Text),
    ("stage", Text),
    ("value", Float8),
    ("expected_close", Date),
    ("notes", Text),
    ("created_at", Timestamptz),
    ("updated_at", Timestamptz),
];

/// The public columns of `users`: no Google or Calendly credential, no
/// `last_seen` (written without a change, so a record would show it stale).
const USER_COLUMNS: &[(&str, PgType)] = &[
    ("id", Int8),
    ("email", Text),
    ("name", Text),
    ("role", Text),
    ("status", Text),
    ("timezone", Text),
    ("calendly_user_uri", Text),
    ("tokens_valid_after", Timestamptz),
    ("created_at", Timestamptz),
    ("updated_at", Timestamptz),
];

impl Table {
    pub fn name(self) -> &'static str {
        match self {
            Table::Clients => "clients",
            Table::Meetings => "meetings",
            Table::Pipeline => "pipeline",
            Table::Users => "users",
        }
    }

    pub fn parse(name: &str) -> Option<Table> {
        match name {
            "clients" => Some(Table::Clients),
            "meetings" => Some(Table::Meetings),
            "pipeline" => Some(Table::Pipeline),
            "users" => Some(Table::Users),
            _ => None,
        }
    }

    /// Columns in the order the REST row and the realtime record list them.
    pub fn columns(self) -> &'static [(&'static str, PgType)] {
        match self {
            Table::Clients => CLIENT_COLUMNS,
            Table::Meetings => MEETING_COLUMNS,
            Table::Pipeline => PIPELINE_COLUMNS,
            Table::Users => USER_COLUMNS,
        }
    }

    /// The user a row belongs to: `user_id`, or the id itself for a user.
    /// `record` with its keys in the table's column order (a JSON object
    /// read back from PostgreSQL's jsonb has them in jsonb's own order).
    pub fn in_column_order(self, record: serde_json::Value) -> serde_json::Value {
        let serde_json::Value::Object(mut map) = record else { return record };
        let mut ordered = serde_json::Map::with_capacity(map.len());
        for (name, _) in self.columns() {
            if let Some(v) = map.remove(*name) {
                ordered.insert((*name).to_string(), v);
            }
        }
        ordered.extend(map);
        serde_json::Value::Object(ordered)
    }

    pub fn owner_of(self, record: &serde_json::Value) -> i64 {
        let key = if self == Table::Users { "id" } else { "user_id" };
        record.get(key).and_then(serde_json::Value::as_i64).unwrap_or(0)
    }

    /// Does the schema declare the column NOT NULL? (For the data tables; a
    /// request that sets one to null is refused before it reaches the database.)
    pub fn required(self, column: &str) -> bool {
        let required: &[&str] = match self {
            Table::Clients => &["id", "user_id", "name", "created_at", "updated_at"],
            Table::Meetings => &[
                "id",
                "user_id",
                "source",
                "title",
                "starts_at",
                "ends_at",
                "all_day",
                "status",
                "attendees",
                "invitees",
                "created_at",
                "updated_at",
            ],
            Table::Pipeline => &["id", "user_id", "title", "stage", "value", "created_at", "updated_at"],
            Table::Users => &[],
        };
        required.contains(&column)
    }

    pub fn column_type(self, column: &str) -> Option<PgType> {
        self.columns().iter().find(|(n, _)| *n == column).map(|(_, t)| *t)
    }
}
