//! Microsoft's HTTP surface for connecting: sign in with Microsoft
//! (`GET /api/auth/microsoft/start`), "Connect Outlook" for a signed-in page
//! (`POST /api/auth/microsoft/connect`), the identity platform's redirect
//! back (`GET /api/auth/microsoft/callback`) and disconnecting
//! (`DELETE /api/me/microsoft`). Handlers are thin; the work is in
//! [`super::oauth`]. Every route answers 503 while Microsoft is not
//! configured. No answer carries a Microsoft token.

use std::sync::Arc;

use warp::filters::BoxedFilter;
use warp::http::{header, HeaderMap, StatusCode};
use warp::reply::Response;
use warp::{Filter, Reply};

use super::oauth::{Callback, SignInError};
use super::MicrosoftSync;
use crate::auth::identity::Identity;
use crate::auth::oauth_state::Purpose;
use crate::http::error::{ApiError, ApiResult};
use crate::http::sign_in::{consent_json, to_consent, Consent, Landing};
use crate::http::Authenticator;
use crate::http::{auth_header, query, respond, with_state, QueryParams};

/// What Microsoft's routes need: the Microsoft part, and the identity check.
#[derive(Clone)]
pub struct MicrosoftRoutesState {
    pub microsoft: Arc<MicrosoftSync>,
    /// The identity check, and the tokens a sign-in ends with.
    pub auth: Authenticator,
    /// Lifetime of the token a Microsoft sign-in ends with (`auth.token_ttl`).
    pub token_ttl_secs: i64,
}

impl MicrosoftRoutesState {
    async fn caller(&self, auth: Option<String>) -> ApiResult<Identity> {
        crate::http::authenticate(&self.auth, auth).await
    }

    fn configured(&self) -> ApiResult<()> {
        if self.microsoft.enabled() {
            Ok(())
        } else {
            Err(ApiError::Unavailable(
                "Microsoft 365 is not configured on this server (microsoft.client_id and microsoft.client_secret are empty)".into(),
            ))
        }
    }
}

/// Every Microsoft connect route.
pub fn routes(app: MicrosoftRoutesState) -> BoxedFilter<(Response,)> {
    let start = warp::path!("api" / "auth" / "microsoft" / "start")
        .and(warp::get())
        .and(with_state(app.clone()))
        .and_then(|app| async move { respond(start_sign_in(app).await) });
    let connect = warp::path!("api" / "auth" / "microsoft" / "connect")
        .and(warp::post())
        .and(with_state(app.clone()))
        .and(auth_header())
        .and_then(|app, auth| async move { respond(start_connect(app, auth).await) });
    let callback = warp::path!("api" / "auth" / "microsoft" / "callback")
        .and(warp::get())
        .and(with_state(app.clone()))
        .and(query())
        .and(warp::header::headers_cloned())
        .then(callback);
    let disconnect = warp::path!("api" / "me" / "microsoft")
        .and(warp::delete())
        .and(with_state(app))
        .and(auth_header())
        .and_then(|app, auth| async move { respond(disconnect(app, auth).await) });
    start.or(connect).unify().or(callback).unify().or(disconnect).unify().boxed()
}

/// `GET /api/auth/microsoft/start`: redirect to Microsoft's sign-in page (sign in with Microsoft).
async fn start_sign_in(app: MicrosoftRoutesState) -> ApiResult<Response> {
    app.configured()?;
    let started = app.microsoft.start_sign_in(Purpose::SignIn).map_err(sign_in_error)?;
    to_consent(Consent { location: &started.location, set_cookie: &started.set_cookie })
}

/// `POST /api/auth/microsoft/connect` (JWT): "Connect Outlook" for a
/// signed-in page. Answers `{"location": <Microsoft's sign-in URL>}` (also
/// as `url`) and sets the state cookie; the page then navigates there
/// ([`consent_json`]).
async fn start_connect(app: MicrosoftRoutesState, auth: Option<String>) -> ApiResult<Response> {
    app.configured()?;
    let who = app.caller(auth).await?;
    let started = app.microsoft.start_sign_in(Purpose::Connect(who.user_id)).map_err(sign_in_error)?;
    Ok(consent_json(Consent { location: &started.location, set_cookie: &started.set_cookie }))
}

/// `GET /api/auth/microsoft/callback?code=…&state=…`: land signed in on `/`,
/// or a page (JSON for non-browsers) saying why not.
async fn callback(app: MicrosoftRoutesState, q: QueryParams, headers: HeaderMap) -> Response {
    let result = match app.configured() {
        Ok(()) => {
            let cookie = app.microsoft.cookie_nonce(headers.get(header::COOKIE).and_then(|v| v.to_str().ok()));
            let cb = Callback { code: q.get("code").cloned(), state: q.get("state").cloned(), error: q.get("error").cloned() };
            app.microsoft.finish_sign_in(cb, cookie).await.map_err(sign_in_error)
        }
        Err(e) => Err(e),
    };
    let clear_cookie = app.microsoft.clear_state_cookie();
    Landing { provider: "Microsoft", auth: &app.auth, token_ttl_secs: app.token_ttl_secs, clear_cookie: &clear_cookie }
        .answer(result, &headers)
}

/// `DELETE /api/me/microsoft` (JWT): forget the caller's Microsoft account
/// and tokens. 204 whether or not one was connected.
async fn disconnect(app: MicrosoftRoutesState, auth: Option<String>) -> ApiResult<Response> {
    app.configured()?;
    let who = app.caller(auth).await?;
    // At Graph first, while the tokens to do so still exist.
    app.microsoft.unsubscribe_all(who.user_id).await;
    if app.microsoft.store.disconnect_microsoft(who.user_id).await? {
        tracing::info!(user = who.user_id, "Outlook disconnected");
    }
    Ok(warp::reply::with_status(warp::reply(), StatusCode::NO_CONTENT).into_response())
}

/// What a refused sign-in answers.
fn sign_in_error(e: SignInError) -> ApiError {
    let message = e.to_string();
    match e {
        SignInError::Cancelled | SignInError::NotLinked | SignInError::NoAccount(_) => ApiError::Forbidden(message),
        SignInError::Failed(_) | SignInError::Incomplete | SignInError::CodeRefused => ApiError::BadRequest(message),
        SignInError::State(crate::auth::oauth_state::StateError::Internal(_)) => ApiError::internal(message),
        SignInError::State(crate::auth::oauth_state::StateError::Store(e)) => e.into(),
        SignInError::State(_) => ApiError::BadRequest(message),
        SignInError::Exchange(_) | SignInError::NoIdentity => ApiError::Unavailable(message),
        SignInError::TakenByAnotherUser => ApiError::Conflict(message),
        SignInError::UserGone => ApiError::Unauthorized(message),
        SignInError::Refused(_) => ApiError::Unprocessable(message),
        SignInError::Internal(_) => ApiError::internal(message),
        SignInError::Store(e) => e.into(),
    }
}
