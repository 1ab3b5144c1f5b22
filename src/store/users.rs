//! Users (advisers and admins). Their Google token columns are read only by
//! the Google sync and never leave the process.

use rusqlite::{Connection, OptionalExtension};
use serde::Serialize;

use super::timefmt;

/// A user as the API shows it: no secrets.
#[derive(Debug, Clone, Serialize)]
pub struct User {
    pub id: i64,
    pub email: String,
    pub name: Option<String>,
    pub role: String,
    pub timezone: String,
    pub calendly_user_uri: Option<String>,
    pub google_connected: bool,
    pub google_needs_reconnect: bool,
}

impl User {
    pub fn is_admin(&self) -> bool {
        self.role == "admin"
    }
}

const SELECT: &str = "SELECT id, email, name, role, timezone, calendly_user_uri,
    google_refresh_token IS NOT NULL, google_needs_reconnect FROM users";

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: r.get(0)?,
        email: r.get(1)?,
        name: r.get(2)?,
        role: r.get(3)?,
        timezone: r.get(4)?,
        calendly_user_uri: r.get(5)?,
        google_connected: r.get(6)?,
        google_needs_reconnect: r.get::<_, i64>(7)? != 0,
    })
}

pub fn get(conn: &Connection, id: i64) -> rusqlite::Result<Option<User>> {
    conn.query_row(&format!("{SELECT} WHERE id = ?1"), [id], from_row).optional()
}

pub fn by_email(conn: &Connection, email: &str) -> rusqlite::Result<Option<User>> {
    conn.query_row(&format!("{SELECT} WHERE email = ?1"), [email.trim()], from_row).optional()
}

pub fn list(conn: &Connection) -> rusqlite::Result<Vec<User>> {
    let mut stmt = conn.prepare(&format!("{SELECT} ORDER BY id"))?;
    let rows = stmt.query_map([], from_row)?;
    rows.collect()
}

/// A plausible email: one `@`, something on both sides, a dot in the domain.
pub fn valid_email(email: &str) -> bool {
    let e = email.trim();
    match e.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty() && domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.') && !domain.contains('@') && !e.contains(char::is_whitespace)
        }
        None => false,
    }
}

/// Create a user; returns its id. Errors are sentences for the CLI.
pub fn create(conn: &Connection, email: &str, name: Option<&str>, role: &str) -> Result<i64, String> {
    let email = email.trim();
    if !valid_email(email) {
        return Err(format!("\"{email}\" is not an email address"));
    }
    if role != "user" && role != "admin" {
        return Err(format!("role must be user or admin, not \"{role}\""));
    }
    if by_email(conn, email).map_err(|e| e.to_string())?.is_some() {
        return Err(format!("a user with email {email} already exists"));
    }
    let now = timefmt::format(timefmt::now());
    conn.execute(
        "INSERT INTO users (email, name, role, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?4)",
        rusqlite::params![email, name, role, now],
    )
    .map_err(|e| format!("cannot add the user: {e}"))?;
    Ok(conn.last_insert_rowid())
}
