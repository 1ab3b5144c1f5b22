//! Timestamps: accepted as RFC 3339 with any offset, stored and returned as
//! UTC with millisecond precision and a `Z`, fixed width so that text order is
//! time order in SQL.

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Date, OffsetDateTime, UtcOffset};

pub fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// Why a timestamp was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeError {
    /// Not RFC 3339 at all.
    Malformed,
    /// Well-formed, but its UTC instant falls outside years 0000–9999 (the
    /// stored form is fixed width, so text order stays time order).
    OutOfRange,
}

/// `2026-11-23T10:00:00.123Z`. Never panics: an instant outside the stored
/// range (only reachable by arithmetic, never from [`parse`]) prints as its
/// unix time.
pub fn format(t: OffsetDateTime) -> String {
    let fmt = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    match t.checked_to_offset(UtcOffset::UTC).filter(|u| (0..=9999).contains(&u.year())) {
        Some(u) => u.format(&fmt).unwrap_or_else(|_| u.unix_timestamp().to_string()),
        None => t.unix_timestamp().to_string(),
    }
}

/// An RFC 3339 timestamp with any offset, as a UTC instant in the stored range.
pub fn parse_checked(s: &str) -> Result<OffsetDateTime, TimeError> {
    let t = OffsetDateTime::parse(s.trim(), &Rfc3339).map_err(|_| TimeError::Malformed)?;
    // `9999-12-31T23:59:59-23:59` is year 10000 in UTC: out of range, not a panic.
    t.checked_to_offset(UtcOffset::UTC).filter(|u| (0..=9999).contains(&u.year())).ok_or(TimeError::OutOfRange)
}

pub fn parse(s: &str) -> Option<OffsetDateTime> {
    parse_checked(s).ok()
}

/// Parse any RFC 3339 timestamp and return its canonical stored form.
pub fn normalize(s: &str) -> Option<String> {
    parse(s).map(format)
}

/// `t + d`, or None past the stored range (instead of the panic of `+`).
pub fn add(t: OffsetDateTime, d: time::Duration) -> Option<OffsetDateTime> {
    t.checked_add(d).filter(|u| (0..=9999).contains(&u.year()))
}

pub fn parse_date(s: &str) -> Option<Date> {
    Date::parse(s.trim(), format_description!("[year]-[month]-[day]")).ok()
}

pub fn format_date(d: Date) -> String {
    d.format(format_description!("[year]-[month]-[day]")).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn offsets_become_utc_with_z() {
        assert_eq!(super::normalize("2026-11-23T11:00:00+01:00").unwrap(), "2026-11-23T10:00:00.000Z");
        assert_eq!(super::normalize("2019-08-24T14:15:22.123456Z").unwrap(), "2019-08-24T14:15:22.123Z");
        assert!(super::normalize("yesterday").is_none());
        assert!(super::normalize("2026-13-01T00:00:00Z").is_none());
    }

    #[test]
    fn instants_outside_the_stored_range_are_refused_not_panicked_on() {
        use super::{parse_checked, TimeError};
        assert_eq!(parse_checked("9999-12-31T23:59:59-23:59"), Err(TimeError::OutOfRange));
        assert_eq!(parse_checked("0000-01-01T00:00:00+00:01"), Err(TimeError::OutOfRange));
        assert_eq!(parse_checked("not a time"), Err(TimeError::Malformed));
        assert_eq!(super::normalize("9999-12-31T23:59:59Z").unwrap(), "9999-12-31T23:59:59.000Z");
        let last = super::parse("9999-12-31T00:00:00Z").unwrap();
        assert!(super::add(last, time::Duration::days(1)).is_none());
    }
}
