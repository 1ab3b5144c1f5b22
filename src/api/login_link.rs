//! The login-link landing: `GET /auth/link?code=…` shows a page whose
//! button signs in, `POST /auth/link` uses the code up once and lands on `/`
//! signed in. Browsers get a page saying why a link did not work; programs
//! the JSON error.

use bytes::Bytes;
use warp::http::{header, HeaderMap, StatusCode};
use warp::reply::Response;
use warp::Filter;

use super::RestState;
use crate::auth::login_links;
use crate::http::reply::{html_escape, html_page, redirect_with_token, wants_html};
use crate::http::{body, origin_allowed, query, with_state, ApiError, ApiResult, QueryParams};
use crate::store::login_links::Redemption;

/// What the landing needs besides the store and the tokens.
#[derive(Clone, Debug)]
pub struct LoginSettings {
    /// `server.cors_origins`: sites whose forms may sign a browser in.
    pub cors_origins: Vec<String>,
    /// `server.public_url`, or `http://<bound address>`.
    pub public_url: String,
    /// `auth.token_ttl` in seconds: the lifetime of the token a link gives.
    pub token_ttl_secs: i64,
}

const UNUSABLE: &str = "this sign-in link is unknown, already used or expired; ask for a new one";

/// The code of a request, or 400.
fn code_of(raw: Option<&String>) -> ApiResult<String> {
    login_links::parse_code(raw.map(String::as_str)).ok_or_else(|| ApiError::BadRequest("the link has no valid code".into()))
}

/// Browsers get a page saying why; programs the JSON error.
fn link_error(e: ApiError, html: bool) -> Response {
    if !html {
        return e.into_response();
    }
    if let ApiError::Internal(cause) = &e {
        tracing::error!(error = %cause, "internal error");
    }
    let body = format!("<p>{}</p><p><a href=\"/\">Back to syncgate</a></p>", html_escape(&e.public_message()));
    html_page(e.status(), "This sign-in link did not work", &body)
}

/// `GET /auth/link?code=…`: a page whose button signs in. GET never uses the
/// code up: mail security scanners fetch every link they see, and would
/// otherwise spend it before the person clicks.
async fn page(state: RestState, q: QueryParams, headers: HeaderMap) -> Response {
    let html = wants_html(&headers);
    let checked = async {
        let code = code_of(q.get("code"))?;
        if !login_links::usable(&state.store, &code).await? {
            return Err(ApiError::Unauthorized(UNUSABLE.into()));
        }
        Ok(code)
    }
    .await;
    let code = match checked {
        Ok(code) => code,
        Err(e) => return link_error(e, html),
    };
    // A plain form POST: no script or inline style, so it works under `default-src 'self'`.
    let body = format!(
        "<p>This link signs you in to syncgate once.</p>\
         <form method=\"post\" action=\"link\">\
         <input type=\"hidden\" name=\"code\" value=\"{}\">\
         <button type=\"submit\" id=\"sign-in\">Sign in</button></form>",
        html_escape(&code)
    );
    html_page(StatusCode::OK, "Sign in to syncgate", &body)
}

/// `POST /auth/link` (form `code=…`): use a single-use login link, land on
/// `/` signed in with the token in the URL fragment.
async fn sign_in(state: RestState, headers: HeaderMap, body: Bytes) -> Response {
    let html = wants_html(&headers);
    let result = async {
        // A form from another site must not sign this browser in (login CSRF).
        if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
            let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
            if origin != "null" && !origin_allowed(&state.login.cors_origins, &state.login.public_url, origin, host) {
                return Err(ApiError::Forbidden("this sign-in form was sent from another site".into()));
            }
        }
        let form: QueryParams = url::form_urlencoded::parse(&body).into_owned().collect();
        let code = code_of(form.get("code"))?;
        let user = match login_links::redeem(&state.store, &code).await? {
            Redemption::SignedIn(user) => user,
            Redemption::Unusable => return Err(ApiError::Unauthorized(UNUSABLE.into())),
            Redemption::NoUser => return Err(ApiError::Unauthorized("the link's user no longer exists".into())),
            // Not used up: the link works again once the account is enabled.
            Redemption::Disabled => return Err(ApiError::Unauthorized("this account is disabled; ask an admin to enable it".into())),
        };
        let token = state.auth.tokens().user_token(user.id, &user.role, state.login.token_ttl_secs);
        tracing::info!(user = user.id, "signed in with a login link");
        Ok(redirect_with_token(&token))
    }
    .await;
    result.unwrap_or_else(|e| link_error(e, html))
}

/// `GET` and `POST /auth/link`.
pub fn routes(state: RestState) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let limit = state.max_body_bytes;
    let page_r = warp::path!("auth" / "link")
        .and(warp::get())
        .and(with_state(state.clone()))
        .and(query())
        .and(warp::header::headers_cloned())
        .then(page);
    let sign_in_r = warp::path!("auth" / "link")
        .and(warp::post())
        .and(with_state(state))
        .and(warp::header::headers_cloned())
        .and(body(limit))
        .then(sign_in);
    page_r.or(sign_in_r).unify()
}
