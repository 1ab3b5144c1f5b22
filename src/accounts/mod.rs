//! Account changes as the server makes them (from the admin REST API, and so
//! from the CLI while a server runs): the write itself (one store operation,
//! see [`store::accounts`](crate::store::accounts)), then what
//! it sets off — the user's cached identity is dropped and their open sockets
//! check it again at once, and Google channels are stopped (disable, remove)
//! or re-created with a catch-up sync (enable).

pub mod routes;

use std::sync::Arc;
use std::time::Duration;

use crate::google::sync::SyncError;
use crate::google::GoogleSync;
use crate::http::{ApiResult, Authenticator};
use crate::model::{AccountStatus, Role};
use crate::provider::scheduler::SyncTrigger;
use crate::realtime::Hub;
use crate::store::accounts::{Actor, Removed};
use crate::store::users::User;
use crate::store::Store;

/// How long a change waits for Google to stop a channel before going ahead
/// (the channel is deleted here either way; Google's own expiry ends it).
const GOOGLE_WAIT: Duration = Duration::from_secs(10);

/// What account changes use. Cheap to clone.
#[derive(Clone)]
pub struct AccountsState {
    pub store: Store,
    /// Tokens to check, and the identity cache a change empties.
    pub auth: Authenticator,
    /// The open sockets, told to check a changed account again.
    pub sockets: Arc<Hub>,
    /// Google channels, stopped or re-created with the account.
    pub google: Arc<GoogleSync>,
    /// Outlook subscriptions go and come back with the account too.
    pub microsoft: Arc<crate::microsoft::MicrosoftSync>,
    /// Where login links point.
    pub public_url: String,
    /// `server.max_body_bytes`.
    pub max_body_bytes: usize,
}

/// The account changed: nothing cached about it may be trusted, and every
/// open socket of the user checks again before it delivers anything more.
fn changed(state: &AccountsState, user_id: i64) {
    state.auth.identities().forget(user_id);
    state.sockets.recheck_user(user_id);
}

/// Create a user; with `with_link`, also a single-use sign-in link (as
/// `syncgate login-link` makes), in the same transaction. Returns the user and the link.
pub async fn invite(
    state: &AccountsState,
    actor: Actor,
    email: String,
    name: Option<String>,
    role: Role,
    with_link: bool,
) -> ApiResult<(User, Option<String>)> {
    let (code, link) = if with_link {
        let (code, link) = crate::auth::login_links::new_code();
        (Some(code), Some(link))
    } else {
        (None, None)
    };
    let user = state.store.invite(actor, email, name, role, link).await?;
    tracing::info!(user = user.id, "user invited");
    let link = code.map(|c| crate::auth::login_links::url(&state.public_url, &c));
    Ok((user, link))
}

/// Change the role and/or the status in one transaction (both or neither).
/// Disabling stops the user's Google sync and channels (data and Calendly
/// deliveries stay); enabling re-creates the channel and runs a catch-up sync.
pub async fn update(state: &AccountsState, actor: Actor, id: i64, role: Option<Role>, status: Option<AccountStatus>) -> ApiResult<User> {
    let change = state.store.change_account(actor, id, role, status).await?;
    changed(state, id);
    let now = AccountStatus::parse(&change.user.status);
    if now.is_some() && change.status_before != now && state.microsoft.enabled() {
        let microsoft = state.microsoft.clone();
        if now == Some(AccountStatus::Disabled) {
            state.microsoft.tasks.spawn(async move {
                let n = microsoft.unsubscribe_all(id).await;
                if n > 0 {
                    tracing::info!(user = id, subscriptions = n, "account disabled: Outlook subscriptions deleted");
                }
            });
        } else {
            microsoft.connected(id);
        }
    }
    if now.is_some() && change.status_before != now && state.google.enabled() {
        let google = state.google.clone();
        if now == Some(AccountStatus::Disabled) {
            state.google.tasks.spawn(async move {
                match google.stop_channels(id).await {
                    Ok(n) if n > 0 => tracing::info!(user = id, channels = n, "account disabled: Google channels stopped"),
                    Ok(_) | Err(SyncError::NotConnected) => {}
                    Err(e) => tracing::warn!(user = id, error = %e, "account disabled, but its Google channels could not be stopped"),
                }
            });
        } else {
            state.google.tasks.spawn(async move {
                match google.replace_channels(id).await {
                    Ok(_) => google.enqueue_for(id, SyncTrigger::CatchUp),
                    Err(SyncError::NotConnected) => {}
                    Err(e) => {
                        tracing::warn!(user = id, error = %e, "account enabled, but its Google channel could not be re-created; the renewal will retry");
                        google.enqueue_for(id, SyncTrigger::CatchUp);
                    }
                }
            });
        }
    }
    Ok(change.user)
}

/// Sign out everywhere: every token issued until now is refused.
pub async fn sign_out(state: &AccountsState, actor: Actor, id: i64) -> ApiResult<()> {
    state.store.sign_out_everywhere(actor, id).await?;
    changed(state, id);
    Ok(())
}

/// Remove the account and all its rows (each a logged DELETE). Google
/// channels are stopped first, while the credentials to do so still exist.
pub async fn remove(state: &AccountsState, actor: Actor, id: i64) -> ApiResult<Removed> {
    // Refuse the obvious cases before touching Google; the write checks again.
    state.store.check_removable(id).await?;
    if state.google.enabled() {
        match tokio::time::timeout(GOOGLE_WAIT, state.google.stop_channels(id)).await {
            Ok(Ok(_)) | Ok(Err(SyncError::NotConnected)) => {}
            Ok(Err(e)) => tracing::warn!(user = id, error = %e, "removing a user: their Google channels could not be stopped"),
            Err(_) => tracing::warn!(
                user = id,
                "removing a user: Google did not answer in time; their channels are deleted here and lapse at Google"
            ),
        }
    }
    if state.microsoft.enabled() && tokio::time::timeout(GOOGLE_WAIT, state.microsoft.unsubscribe_all(id)).await.is_err() {
        tracing::warn!(user = id, "removing a user: Microsoft Graph did not answer in time; their subscriptions lapse there on their own");
    }
    let removed = state.store.remove_account(actor, id).await?;
    changed(state, id);
    tracing::info!(user = id, rows = removed.rows, "user removed");
    Ok(removed)
}
