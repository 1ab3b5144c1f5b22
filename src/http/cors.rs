//! Which browser origins may call: the origins of `server.cors_origins`, or
//! the page's own (the public URL, or the Host the request came to). Used
//! for the login form's CSRF check and the realtime socket's Origin check.

/// Is a browser origin allowed: listed in `cors_origins` (`*` allows every
/// origin), or the same origin as the page.
pub fn origin_allowed(cors_origins: &[String], public_url: &str, origin: &str, host: &str) -> bool {
    let origin = origin.trim_end_matches('/');
    if cors_origins.iter().any(|o| o == "*" || o.trim_end_matches('/') == origin) {
        return true;
    }
    if origin == public_url.trim_end_matches('/') {
        return true;
    }
    let bare = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://"));
    bare.is_some_and(|b| !host.is_empty() && b == host)
}
