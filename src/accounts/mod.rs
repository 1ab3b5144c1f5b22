//! Account changes as the server makes them (from the admin REST API, and so
//! from the CLI while a server runs): the write itself (one writer
//! transaction, see [`store::accounts`](crate::store::accounts)), then what
//! it sets off — the user's cached identity is dropped and their open sockets
//! check it again at once, and Google channels are stopped (disable, remove)
//! or re-created with a catch-up sync (enable).

pub mod routes;

use std::time::Duration;

use serde_json::Value;

use crate::http::error::{ApiError, ApiResult};
use crate::startup::App;
use crate::store::accounts::{self as sql, Actor, Removed};

/// How long a change waits for Google to stop a channel before going ahead
/// (the channel is deleted here either way; Google's own expiry ends it).
const GOOGLE_WAIT: Duration = Duration::from_secs(10);

/// The account changed: nothing cached about it may be trusted, and every
/// open socket of the user checks again before it delivers anything more.
fn changed(app: &App, user_id: i64) {
    app.identities.forget(user_id);
    app.hub.recheck_user(user_id);
}

/// Create a user; with `with_link`, also a single-use sign-in link (as
/// `syncgate login-link` makes). Returns the public row and the link.
pub async fn invite(
    app: &App,
    actor: Actor,
    email: String,
    name: Option<String>,
    role: String,
    with_link: bool,
) -> ApiResult<(Value, Option<String>)> {
    let (row, code) = app
        .store
        .writer
        .write(move |tx| {
            let row = sql::invite(tx, &actor, &email, name.as_deref(), &role)?;
            let id = row.get("id").and_then(Value::as_i64).unwrap_or(0);
            let code = if with_link { Some(crate::auth::create_login_link(tx.conn(), id).map_err(ApiError::internal)?) } else { None };
            Ok((row, code))
        })
        .await?;
    let id = row.get("id").and_then(Value::as_i64).unwrap_or(0);
    tracing::info!(user = id, "user invited");
    let link = code.map(|c| login_url(app, &c));
    Ok((row, link))
}

/// The sign-in URL for a login code.
pub fn login_url(app: &App, code: &str) -> String {
    format!("{}/auth/link?code={code}", app.public_url.trim_end_matches('/'))
}

/// Change the role and/or the status in one transaction (both or neither).
/// Disabling stops the user's Google sync and channels (data and Calendly
/// deliveries stay); enabling re-creates the channel and runs a catch-up sync.
pub async fn update(app: &App, actor: Actor, id: i64, role: Option<String>, status: Option<String>) -> ApiResult<Value> {
    let (was, row) = app
        .store
        .writer
        .write(move |tx| {
            let was = tx.get(crate::store::Table::Users, id)?.and_then(|r| r.get("status").and_then(Value::as_str).map(str::to_string));
            let mut row = Value::Null;
            if let Some(role) = role {
                row = sql::set_role(tx, &actor, id, &role)?;
            }
            if let Some(status) = status {
                row = sql::set_status(tx, &actor, id, &status)?;
            }
            Ok((was.unwrap_or_default(), row))
        })
        .await?;
    changed(app, id);
    let now = row.get("status").and_then(Value::as_str).unwrap_or_default().to_string();
    if !now.is_empty() && was != now && app.google.enabled() {
        let google = app.google.clone();
        if now == "disabled" {
            app.google.tasks.spawn(async move {
                match google.stop_channels(id).await {
                    Ok(n) if n > 0 => tracing::info!(user = id, channels = n, "account disabled: Google channels stopped"),
                    Ok(_) | Err(crate::google::sync::SyncError::NotConnected) => {}
                    Err(e) => tracing::warn!(user = id, error = %e, "account disabled, but its Google channels could not be stopped"),
                }
            });
        } else {
            app.google.tasks.spawn(async move {
                match google.replace_channels(id).await {
                    Ok(_) => google.enqueue_for(id, crate::google::SyncTrigger::CatchUp),
                    Err(crate::google::sync::SyncError::NotConnected) => {}
                    Err(e) => {
                        tracing::warn!(user = id, error = %e, "account enabled, but its Google channel could not be re-created; the renewal will retry");
                        google.enqueue_for(id, crate::google::SyncTrigger::CatchUp);
                    }
                }
            });
        }
    }
    Ok(row)
}

/// Sign out everywhere: every token issued until now is refused.
pub async fn sign_out(app: &App, actor: Actor, id: i64) -> ApiResult<Value> {
    let row = app.store.writer.write(move |tx| sql::sign_out(tx, &actor, id)).await?;
    changed(app, id);
    Ok(row)
}

/// Remove the account and all its rows (each a logged DELETE). Google
/// channels are stopped first, while the credentials to do so still exist.
pub async fn remove(app: &App, actor: Actor, id: i64) -> ApiResult<Removed> {
    // Refuse the obvious cases before touching Google; the write checks again.
    app.store.read(move |c| crate::store::accounts::check_removable(c, id)).await?;
    if app.google.enabled() {
        match tokio::time::timeout(GOOGLE_WAIT, app.google.stop_channels(id)).await {
            Ok(Ok(_)) | Ok(Err(crate::google::sync::SyncError::NotConnected)) => {}
            Ok(Err(e)) => tracing::warn!(user = id, error = %e, "removing a user: their Google channels could not be stopped"),
            Err(_) => tracing::warn!(
                user = id,
                "removing a user: Google did not answer in time; their channels are deleted here and lapse at Google"
            ),
        }
    }
    let removed = app.store.writer.write(move |tx| sql::remove(tx, &actor, id)).await?;
    changed(app, id);
    tracing::info!(user = id, rows = removed.rows, "user removed");
    Ok(removed)
}
