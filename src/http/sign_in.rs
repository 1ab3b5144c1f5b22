//! What every "sign in with / connect a provider" route answers, whichever
//! provider: the redirect to its consent page, the JSON a signed-in page
//! navigates by, and the landing after the provider's callback — signed in
//! on `/`, or a page (JSON for non-browsers) saying why not. The state
//! cookie travels with each; the provider's own part (its consent URL, the
//! code exchange) stays with the provider.

use serde_json::json;
use warp::http::{header, HeaderMap, HeaderValue, StatusCode};
use warp::reply::Response;

use super::error::{ApiError, ApiResult};
use super::identity::Authenticator;
use super::reply::{html_escape, html_page, json_response, redirect_with_token, wants_html};
use crate::store::users::User;

/// The consent page to go to, and the state cookie that must come back with the callback.
pub struct Consent<'a> {
    pub location: &'a str,
    pub set_cookie: &'a str,
}

fn with_cookie(mut res: Response, set_cookie: &str) -> Response {
    if let Ok(c) = HeaderValue::from_str(set_cookie) {
        res.headers_mut().insert(header::SET_COOKIE, c);
    }
    // The answer carries a one-time state: no cache may keep it.
    res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// A 303 to the provider's consent page (sign-in from a link).
pub fn to_consent(consent: Consent<'_>) -> ApiResult<Response> {
    let mut res = Response::new(Default::default());
    *res.status_mut() = StatusCode::SEE_OTHER;
    let location = HeaderValue::from_str(consent.location).map_err(|_| ApiError::internal("consent URL is not a header value"))?;
    res.headers_mut().insert(header::LOCATION, location);
    Ok(with_cookie(res, consent.set_cookie))
}

/// For a signed-in page that navigates itself: `{"location": …}` (and the
/// same as `url`), with the state cookie. The state names the user, so no
/// token travels in any URL.
pub fn consent_json(consent: Consent<'_>) -> Response {
    with_cookie(json_response(StatusCode::OK, &json!({"location": consent.location, "url": consent.location})), consent.set_cookie)
}

/// Where a provider's callback lands the browser.
pub struct Landing<'a> {
    /// The provider as people call it ("Google", "Microsoft").
    pub provider: &'a str,
    /// Issues the token the browser is handed.
    pub auth: &'a Authenticator,
    /// `auth.token_ttl`.
    pub token_ttl_secs: i64,
    /// The cookie that clears the sign-in state, whatever happened.
    pub clear_cookie: &'a str,
}

impl Landing<'_> {
    /// Signed in on `/` with a fresh token, or the reason it did not work:
    /// an HTML page for a browser, the JSON error for anyone else. A
    /// disabled account is refused here, once for every provider.
    pub fn answer(&self, result: ApiResult<User>, request: &HeaderMap) -> Response {
        let provider = self.provider;
        let result = result.and_then(|user| {
            if user.is_active() {
                Ok(user)
            } else {
                Err(ApiError::Unauthorized("this account is disabled; ask an admin to enable it".into()))
            }
        });
        let mut res = match result {
            Ok(user) => redirect_with_token(&self.auth.tokens().user_token(user.id, &user.role, self.token_ttl_secs)),
            Err(e) => {
                // An internal error is logged once, with its cause: here for
                // the page, by `into_response` for the JSON.
                match &e {
                    ApiError::Internal(cause) if wants_html(request) => tracing::error!(error = %cause, "{provider} sign-in failed"),
                    ApiError::Internal(_) => {}
                    other => tracing::warn!(status = other.status().as_u16(), reason = %other, "{provider} sign-in refused"),
                }
                if wants_html(request) {
                    html_page(
                        e.status(),
                        &format!("Sign-in with {provider} did not work"),
                        &format!("<p>{}</p><p><a href=\"/\">Back to syncgate</a></p>", html_escape(&e.public_message())),
                    )
                } else {
                    e.into_response()
                }
            }
        };
        if let Ok(c) = HeaderValue::from_str(self.clear_cookie) {
            res.headers_mut().append(header::SET_COOKIE, c);
        }
        res
    }
}
