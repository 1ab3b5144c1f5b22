//! `syncgate user …`, `syncgate token` and `syncgate login-link`. Reads
//! (`user list`) come straight from the database. Changes go through the
//! running server when there is one (found by [`running`](super::running)),
//! called on loopback with a one-minute operator token minted with the
//! secret, so they are committed by its writer and reach open sockets; with
//! no server running they are made here, by the same store operations on this
//! process's own writer, and browsers pick them up from the change log when
//! the server starts.

use serde_json::{json, Value};

use crate::auth::{login_links, Tokens};
use crate::config::{Config, ExposeSecret};
use crate::http::ApiError;
use crate::model::{AccountStatus, Role};
use crate::store::accounts::Actor;
use crate::store::users::User;
use crate::store::{Store, StoreError};

/// Why a user command failed, as the sentence printed on stderr.
#[derive(Debug, thiserror::Error)]
pub enum UserCommandError {
    /// The configuration, the database or the runtime could not be set up.
    #[error("{0}")]
    Setup(String),
    /// The request was refused (by this command, the store or the server).
    #[error("{0}")]
    Refused(String),
}

impl From<StoreError> for UserCommandError {
    fn from(e: StoreError) -> Self {
        // The same sentence the server would answer with.
        UserCommandError::Refused(ApiError::from(e).public_message())
    }
}

type CommandResult<T> = Result<T, UserCommandError>;

/// What a user command asks for.
pub enum Change {
    Add { email: String, name: Option<String>, role: Role },
    Invite { email: String, name: Option<String>, role: Role },
    Role { id: i64, role: Role },
    Status { id: i64, status: AccountStatus },
    Remove { id: i64 },
    SignOut { id: i64 },
}

/// A role as typed on the command line.
pub fn role(s: &str) -> CommandResult<Role> {
    Role::parse(s).ok_or_else(|| UserCommandError::Refused(format!("role must be user or admin, not \"{}\"", crate::http::clip(s))))
}

fn runtime() -> CommandResult<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| UserCommandError::Setup(e.to_string()))
}

/// The database opened by this process, for one command; its writer is
/// drained and stopped after `f`.
async fn with_store<T, F, Fut>(config: &Config, f: F) -> CommandResult<T>
where
    F: FnOnce(Store) -> Fut,
    Fut: std::future::Future<Output = CommandResult<T>>,
{
    let opened = Store::open(&config.database).map_err(|e| UserCommandError::Setup(e.to_string()))?;
    let store = opened.store;
    let result = f(store.clone()).await;
    store.shutdown_writer().await;
    let thread = opened.writer_thread;
    let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    result
}

/// A connection's state as a `user list` column: `reconnect`, `yes` or `no`.
fn connection(connected: bool, needs_reconnect: bool) -> &'static str {
    if needs_reconnect {
        "reconnect"
    } else if connected {
        "yes"
    } else {
        "no"
    }
}

/// One user as a `user list` line: id, email, name, role, status, last seen,
/// Google (yes, no, reconnect), Calendly (yes, no), Outlook (yes, no,
/// reconnect); tab-separated, `-` for none. New columns go at the end, so
/// scripts that cut the earlier ones keep working.
pub fn line(u: &User) -> String {
    let clean = |s: &str| s.replace(['\t', '\n', '\r'], " ");
    let google = connection(u.google_connected, u.google_needs_reconnect);
    let outlook = connection(u.microsoft_connected, u.microsoft_needs_reconnect);
    [
        u.id.to_string(),
        clean(&u.email),
        u.name.as_deref().map(clean).filter(|n| !n.is_empty()).unwrap_or_else(|| "-".into()),
        u.role.clone(),
        u.status.clone(),
        u.last_seen.clone().unwrap_or_else(|| "-".into()),
        google.into(),
        if u.calendly_connected { "yes" } else { "no" }.into(),
        outlook.into(),
    ]
    .join("\t")
}

/// `syncgate user list`
pub fn list(config: &Config) -> CommandResult<()> {
    runtime()?.block_on(with_store(config, |store| async move {
        for u in store.users().await? {
            println!("{}", line(&u));
        }
        Ok(())
    }))
}

/// Run a change through the server, or here when none runs; prints the result.
pub fn change(config: &Config, change: Change) -> CommandResult<()> {
    runtime()?.block_on(async move {
        let out = match crate::ops::running::locate(config).await.map_err(|e| UserCommandError::Setup(e.to_string()))? {
            Some(url) => through_server(config, &url, change).await?,
            None => directly(config, change).await?,
        };
        println!("{out}");
        Ok(())
    })
}

fn user_line_from(v: &Value) -> CommandResult<String> {
    let u: UserView =
        serde_json::from_value(v.clone()).map_err(|e| UserCommandError::Refused(format!("unexpected answer from the server: {e}")))?;
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
    #[serde(default)]
    microsoft_connected: bool,
    #[serde(default)]
    microsoft_needs_reconnect: bool,
}

impl From<UserView> for User {
    fn from(v: UserView) -> User {
        User {
            id: v.id,
            email: v.email,
            name: v.name,
            role: v.role,
            timezone: String::new(),
            calendly_user_uri: None,
            google_connected: v.google_connected,
            google_needs_reconnect: v.google_needs_reconnect,
            microsoft_connected: v.microsoft_connected,
            microsoft_needs_reconnect: v.microsoft_needs_reconnect,
            status: v.status,
            last_seen: v.last_seen,
            calendly_connected: v.calendly_connected,
        }
    }
}

async fn through_server(config: &Config, url: &str, change: Change) -> Result<String, UserCommandError> {
    let (secret, _) = crate::config::secret::resolve_secret(config).map_err(|e| UserCommandError::Setup(e.to_string()))?;
    let token = crate::auth::Tokens::new(secret.expose_secret()).operator_token(60);
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .map_err(|e| UserCommandError::Setup(e.to_string()))?;
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
    let res =
        req.bearer_auth(token).send().await.map_err(|e| UserCommandError::Refused(format!("the server at {url} did not answer: {e}")))?;
    let status = res.status();
    let body: Value = res.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let msg = body.get("message").and_then(Value::as_str).unwrap_or("no reason given");
        return Err(UserCommandError::Refused(format!("the server refused ({}): {msg}", status.as_u16())));
    }
    match change {
        Change::Add { .. } => Ok(body["user"]["id"].as_i64().unwrap_or(0).to_string()),
        Change::Invite { .. } => {
            body["link"].as_str().map(str::to_string).ok_or_else(|| UserCommandError::Refused("the server returned no link".into()))
        }
        Change::Role { .. } | Change::Status { .. } => user_line_from(&body),
        Change::Remove { id } | Change::SignOut { id } => Ok(id.to_string()),
    }
}

/// No server runs: the same store operations, on a writer of our own.
async fn directly(config: &Config, change: Change) -> CommandResult<String> {
    let public_url = config.public_url(config.bind_addr().map_err(|e| UserCommandError::Setup(e.to_string()))?);
    with_store(config, |store| async move {
        let actor = Actor::cli();
        match change {
            Change::Add { email, name, role } => Ok(store.invite(actor, email, name, role, None).await?.id.to_string()),
            Change::Invite { email, name, role } => {
                let (code, link) = login_links::new_code();
                store.invite(actor, email, name, role, Some(link)).await?;
                warn_if_port_zero(config);
                Ok(login_links::url(&public_url, &code))
            }
            Change::Role { id, role } => Ok(line(&store.change_account(actor, id, Some(role), None).await?.user)),
            Change::Status { id, status } => Ok(line(&store.change_account(actor, id, None, Some(status)).await?.user)),
            Change::Remove { id } => store.remove_account(actor, id).await.map(|_| id.to_string()).map_err(Into::into),
            Change::SignOut { id } => store.sign_out_everywhere(actor, id).await.map(|_| id.to_string()).map_err(Into::into),
        }
    })
    .await
}

/// The CLI cannot know which port a `serve` on port 0 picked.
fn warn_if_port_zero(config: &Config) {
    if config.bind_addr().is_ok_and(|b| b.port() == 0) && config.server.public_url.trim().is_empty() {
        eprintln!("syncgate: server.bind uses port 0, so this link has no real port; set server.public_url to the server's address");
    }
}

/// An active user, or why not.
async fn active_user(store: &Store, id: i64) -> CommandResult<User> {
    let user = store.user(id).await?.ok_or_else(|| UserCommandError::Refused(format!("there is no user {id}")))?;
    if !user.is_active() {
        return Err(UserCommandError::Refused(format!("user {id} is disabled; enable them first (syncgate user enable {id})")));
    }
    Ok(user)
}

/// `syncgate token --user ID [--ttl 24h]` or `--anon`: prints the token.
pub fn token(config: &Config, tokens: &Tokens, user: Option<i64>, ttl_secs: i64) -> CommandResult<()> {
    let Some(id) = user else {
        println!("{}", tokens.anon_key());
        return Ok(());
    };
    let user = runtime()?.block_on(with_store(config, |store| async move { active_user(&store, id).await }))?;
    println!("{}", tokens.user_token(user.id, &user.role, ttl_secs));
    Ok(())
}

/// `syncgate login-link --user ID`: prints a single-use sign-in URL.
pub fn login_link(config: &Config, user_id: i64) -> CommandResult<()> {
    let bind = config.bind_addr().map_err(|e| UserCommandError::Setup(e.to_string()))?;
    let code = runtime()?.block_on(with_store(config, |store| async move {
        active_user(&store, user_id).await?;
        Ok(login_links::create(&store, user_id).await?)
    }))?;
    warn_if_port_zero(config);
    println!("{}", login_links::url(&config.public_url(bind), &code));
    Ok(())
}
