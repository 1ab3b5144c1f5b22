//! `syncgate user …`. Reads (`list`) come straight from the database.
//! Changes go through the running server when there is one (found by
//! [`running`](super::running)), called on loopback with a one-minute operator
//! token minted with the secret, so they are committed by its writer and
//! reach open sockets; with no server running they are made here, by the
//! same writer code on this process's own connection, and browsers pick them
//! up from the change log when the server starts.

use serde_json::{json, Value};

use crate::config::{Config, ExposeSecret};
use crate::http::error::ApiError;
use crate::store::accounts::{self as sql, Actor};
use crate::store::{self, users, StoreError};

/// What a user command asks for.
pub enum Change {
    Add { email: String, name: Option<String>, role: String },
    Invite { email: String, name: Option<String>, role: String },
    Role { id: i64, role: String },
    Status { id: i64, status: String },
    Remove { id: i64 },
    SignOut { id: i64 },
}

/// One user as a `user list` line: id, email, name, role, status, last seen,
/// Google (yes, no, reconnect), Calendly (yes, no); tab-separated, `-` for none.
pub fn line(u: &users::User) -> String {
    let clean = |s: &str| s.replace(['\t', '\n', '\r'], " ");
    let google = if u.google_needs_reconnect {
        "reconnect"
    } else if u.google_connected {
        "yes"
    } else {
        "no"
    };
    [
        u.id.to_string(),
        clean(&u.email),
        u.name.as_deref().map(clean).filter(|n| !n.is_empty()).unwrap_or_else(|| "-".into()),
        u.role.clone(),
        u.status.clone(),
        u.last_seen.clone().unwrap_or_else(|| "-".into()),
        google.into(),
        if u.calendly_connected { "yes" } else { "no" }.into(),
    ]
    .join("\t")
}

pub fn list(config: &Config) -> Result<(), String> {
    let conn = store::open_connection(&config.database).map_err(|e| e.to_string())?;
    for u in users::list(&conn).map_err(|e| e.to_string())? {
        println!("{}", line(&u));
    }
    Ok(())
}

/// Run a change through the server, or here when none runs; prints the result.
pub fn change(config: &Config, change: Change) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let out = match super::running::locate(config).await? {
            Some(url) => through_server(config, &url, change).await?,
            None => directly(config, change).await?,
        };
        println!("{out}");
        Ok(())
    })
}

fn user_line_from(v: &Value) -> Result<String, String> {
    let u: UserView = serde_json::from_value(v.clone()).map_err(|e| format!("unexpected answer from the server: {e}"))?;
    Ok(line(&u.into()))
}

/// The fields of the API's user the list line needs.
#[derive(serde::Deserialize)]
struct UserView {
    id: i64,
    email: String,
    name: Option<String>,
    role: String,
    status: String,
    last_seen: Option<String>,
    google_connected: bool,
    google_needs_reconnect: bool,
    calendly_connected: bool,
}

impl From<UserView> for users::User {
    fn from(v: UserView) -> users::User {
        users::User {
            id: v.id,
            email: v.email,
            name: v.name,
            role: v.role,
            timezone: String::new(),
            calendly_user_uri: None,
            google_connected: v.google_connected,
            google_needs_reconnect: v.google_needs_reconnect,
            status: v.status,
            last_seen: v.last_seen,
            calendly_connected: v.calendly_connected,
        }
    }
}

async fn through_server(config: &Config, url: &str, change: Change) -> Result<String, String> {
    let (secret, _) = crate::config::secret::resolve_secret(config).map_err(|e| e.to_string())?;
    let token = crate::auth::Tokens::new(secret.expose_secret()).operator_token(60);
    let http = reqwest::Client::builder().timeout(std::time::Duration::from_secs(60)).build().map_err(|e| e.to_string())?;
    let users_url = format!("{url}/api/admin/users");
    let req = match &change {
        Change::Add { email, name, role } => {
            http.post(&users_url).json(&json!({"email": email, "name": name, "role": role, "link": false}))
        }
        Change::Invite { email, name, role } => http.post(&users_url).json(&json!({"email": email, "name": name, "role": role})),
        Change::Role { id, role } => http.patch(format!("{users_url}/{id}")).json(&json!({"role": role})),
        Change::Status { id, status } => http.patch(format!("{users_url}/{id}")).json(&json!({"status": status})),
        Change::Remove { id } => http.delete(format!("{users_url}/{id}")),
        Change::SignOut { id } => http.post(format!("{users_url}/{id}/signout")),
    };
    let res = req.bearer_auth(token).send().await.map_err(|e| format!("the server at {url} did not answer: {e}"))?;
    let status = res.status();
    let body: Value = res.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let msg = body.get("message").and_then(Value::as_str).unwrap_or("no reason given");
        return Err(format!("the server refused ({}): {msg}", status.as_u16()));
    }
    match change {
        Change::Add { .. } => Ok(body["user"]["id"].as_i64().unwrap_or(0).to_string()),
        Change::Invite { .. } => body["link"].as_str().map(str::to_string).ok_or_else(|| "the server returned no link".into()),
        Change::Role { .. } | Change::Status { .. } => user_line_from(&body),
        Change::Remove { id } | Change::SignOut { id } => Ok(id.to_string()),
    }
}

/// No server runs: the same writer code, on a writer of our own.
async fn directly(config: &Config, change: Change) -> Result<String, String> {
    let conn = store::open_connection(&config.database).map_err(|e| e.to_string())?;
    let (feed_tx, _feed) = tokio::sync::mpsc::unbounded_channel();
    let (writer, thread) = store::writer::spawn(conn, 1, feed_tx);
    let actor = Actor::cli();
    let public_url = config.public_url(config.bind_addr().map_err(|e| e.to_string())?);
    let id_of = |v: &Value| v.get("id").and_then(Value::as_i64).unwrap_or(0);
    let result: Result<String, ApiError> = match change {
        Change::Add { email, name, role } => writer
            .write(move |tx| sql::invite(tx, &actor, &email, name.as_deref(), &role))
            .await
            .map(|row| id_of(&row).to_string())
            .map_err(ApiError::from),
        Change::Invite { email, name, role } => writer
            .write(move |tx| {
                let row = sql::invite(tx, &actor, &email, name.as_deref(), &role)?;
                crate::auth::create_login_link(tx.conn(), id_of(&row)).map_err(StoreError::internal)
            })
            .await
            .map_err(ApiError::from)
            .map(|code| {
                if config.bind_addr().is_ok_and(|b| b.port() == 0) && config.server.public_url.trim().is_empty() {
                    eprintln!(
                        "syncgate: server.bind uses port 0, so this link has no real port; set server.public_url to the server's address"
                    );
                }
                format!("{public_url}/auth/link?code={code}")
            }),
        Change::Role { id, role } => {
            writer.write(move |tx| sql::set_role(tx, &actor, id, &role)).await.map_err(ApiError::from).and_then(|_| user_line(config, id))
        }
        Change::Status { id, status } => writer
            .write(move |tx| sql::set_status(tx, &actor, id, &status))
            .await
            .map_err(ApiError::from)
            .and_then(|_| user_line(config, id)),
        Change::Remove { id } => writer.write(move |tx| sql::remove(tx, &actor, id)).await.map_err(ApiError::from).map(|_| id.to_string()),
        Change::SignOut { id } => {
            writer.write(move |tx| sql::sign_out(tx, &actor, id)).await.map_err(ApiError::from).map(|_| id.to_string())
        }
    };
    writer.shutdown().await;
    let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    result.map_err(|e| e.public_message())
}

/// The `user list` line of one user, read now.
fn user_line(config: &Config, id: i64) -> Result<String, ApiError> {
    let conn = store::open_connection(&config.database).map_err(ApiError::internal)?;
    let u = users::get(&conn, id)?.ok_or_else(|| ApiError::NotFound(format!("user {id} does not exist")))?;
    Ok(line(&u))
}
