//! The request headers PostgREST's dialect gives meaning to, read once:
//! `Prefer` (every header of that name, comma-separated values),
//! `Accept` (array, single object, nulls stripped), the schema profile
//! headers (only `public` exists here), and `Range` (`0-24`), which older
//! clients send instead of `limit`/`offset`.

use warp::http::{HeaderMap, StatusCode};

use super::error::{RestError, RestResult};

/// What `Prefer` asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Prefer {
    /// `return=representation`: answer a write with its rows (else nothing).
    pub representation: bool,
    /// `count=exact|planned|estimated`: all are answered exactly.
    pub count: bool,
    /// `resolution=…`: an upsert, which is not offered.
    pub upsert: bool,
    /// `handling=strict` with `max-affected=N`.
    pub max_affected: Option<usize>,
}

impl Prefer {
    pub fn read(headers: &HeaderMap) -> RestResult<Prefer> {
        let mut p = Prefer::default();
        let mut strict = false;
        let mut unknown = Vec::new();
        let mut max_affected = None;
        for value in headers.get_all("prefer").iter().filter_map(|v| v.to_str().ok()) {
            for item in value.split(',').map(str::trim).filter(|i| !i.is_empty()) {
                let (key, val) = item.split_once('=').unwrap_or((item, ""));
                match (key.trim(), val.trim()) {
                    ("return", "representation") => p.representation = true,
                    ("return", "minimal" | "headers-only") => p.representation = false,
                    ("count", "exact" | "planned" | "estimated") => p.count = true,
                    ("resolution", "merge-duplicates" | "ignore-duplicates") => p.upsert = true,
                    ("handling", "strict") => strict = true,
                    ("handling", "lenient") => strict = false,
                    ("max-affected", n) => max_affected = n.parse::<usize>().ok(),
                    ("missing", "default" | "null") | ("tx", "commit" | "rollback") | ("timezone", _) => {}
                    _ => unknown.push(item.to_string()),
                }
            }
        }
        if strict && !unknown.is_empty() {
            return Err(RestError::new(StatusCode::BAD_REQUEST, "PGRST122", "Invalid preferences given with handling=strict")
                .details(format!("Invalid preferences: {}", unknown.join(", "))));
        }
        p.max_affected = if strict { max_affected } else { None };
        Ok(p)
    }
}

/// How rows are answered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Accept {
    /// `application/vnd.pgrst.object+json`: exactly one row, as an object.
    pub single: bool,
    /// `;nulls=stripped`: leave out null fields.
    pub strip_nulls: bool,
}

impl Accept {
    pub fn read(headers: &HeaderMap) -> RestResult<Accept> {
        let Some(value) = headers.get("accept").and_then(|v| v.to_str().ok()) else { return Ok(Accept::default()) };
        let mut refused = Vec::new();
        for media in value.split(',').map(str::trim).filter(|m| !m.is_empty()) {
            let mut parts = media.split(';').map(str::trim);
            let kind = parts.next().unwrap_or("").to_ascii_lowercase();
            let strip_nulls = parts.any(|p| p.eq_ignore_ascii_case("nulls=stripped"));
            match kind.as_str() {
                "application/vnd.pgrst.object+json" | "application/vnd.pgrst.object" => return Ok(Accept { single: true, strip_nulls }),
                "application/json" | "application/vnd.pgrst.array+json" | "application/*" | "*/*" => {
                    return Ok(Accept { single: false, strip_nulls })
                }
                _ => refused.push(media.to_string()),
            }
        }
        Err(RestError::new(
            StatusCode::NOT_ACCEPTABLE,
            "PGRST107",
            format!("None of these media types are available: {}", refused.join(", ")),
        ))
    }
}

/// `Accept-Profile` (reads) or `Content-Profile` (writes): only `public`.
pub fn check_profile(headers: &HeaderMap, write: bool) -> RestResult<()> {
    let name = if write { "content-profile" } else { "accept-profile" };
    match headers.get(name).map(|v| v.to_str().unwrap_or("")) {
        None | Some("public") => Ok(()),
        Some(other) => Err(RestError::new(StatusCode::NOT_ACCEPTABLE, "PGRST106", "The schema must be one of the following: public")
            .details(format!("Invalid schema: {}", crate::http::clip(other)))),
    }
}

/// A `Range: first-last` header (items), as an offset and a row count.
pub fn range(headers: &HeaderMap) -> RestResult<Option<(u64, Option<u64>)>> {
    let Some(value) = headers.get("range").and_then(|v| v.to_str().ok()) else { return Ok(None) };
    let bad = || {
        RestError::new(StatusCode::RANGE_NOT_SATISFIABLE, "PGRST103", "Requested range not satisfiable").details(crate::http::clip(value))
    };
    let (first, last) = value.trim().split_once('-').ok_or_else(bad)?;
    let first: u64 = first.trim().parse().map_err(|_| bad())?;
    let last = match last.trim() {
        "" => None,
        l => {
            let l: u64 = l.parse().map_err(|_| bad())?;
            if l < first {
                return Err(bad());
            }
            Some(l - first + 1)
        }
    };
    Ok(Some((first, last)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use warp::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn prefer_values_combine_across_headers_and_commas() {
        let p = Prefer::read(&headers(&[("prefer", "count=exact, return=representation"), ("prefer", "missing=default")])).unwrap();
        assert!(p.count && p.representation && !p.upsert);
        let strict = Prefer::read(&headers(&[("prefer", "handling=strict,max-affected=3")])).unwrap();
        assert_eq!(strict.max_affected, Some(3));
        let e = Prefer::read(&headers(&[("prefer", "handling=strict, colour=blue")])).unwrap_err();
        assert_eq!((e.code, e.details.as_deref()), ("PGRST122", Some("Invalid preferences: colour=blue")));
        assert_eq!(Prefer::read(&headers(&[("prefer", "max-affected=3")])).unwrap().max_affected, None);
    }

    #[test]
    fn accept_picks_the_shape_or_refuses() {
        assert!(Accept::read(&headers(&[("accept", "application/vnd.pgrst.object+json")])).unwrap().single);
        let stripped = Accept::read(&headers(&[("accept", "application/vnd.pgrst.array+json;nulls=stripped")])).unwrap();
        assert!(!stripped.single && stripped.strip_nulls);
        assert_eq!(Accept::read(&headers(&[("accept", "text/csv")])).unwrap_err().code, "PGRST107");
        assert_eq!(Accept::read(&HeaderMap::new()).unwrap(), Accept::default());
    }

    #[test]
    fn ranges_and_profiles() {
        assert_eq!(range(&headers(&[("range", "0-24")])).unwrap(), Some((0, Some(25))));
        assert_eq!(range(&headers(&[("range", "10-")])).unwrap(), Some((10, None)));
        assert_eq!(range(&headers(&[("range", "9-3")])).unwrap_err().code, "PGRST103");
        assert!(check_profile(&headers(&[("accept-profile", "public")]), false).is_ok());
        assert_eq!(check_profile(&headers(&[("content-profile", "auth")]), true).unwrap_err().code, "PGRST106");
    }
}
