//! Timestamps: accepted as RFC 3339 with any offset, stored and returned as
//! UTC with millisecond precision and a `Z`, fixed width so that text order is
//! time order in SQL.

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Date, OffsetDateTime, UtcOffset};

pub fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// `2026-11-23T10:00:00.123Z`
pub fn format(t: OffsetDateTime) -> String {
    let t = t.to_offset(UtcOffset::UTC);
    let fmt = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    t.format(&fmt).unwrap_or_else(|_| t.unix_timestamp().to_string())
}

pub fn parse(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s.trim(), &Rfc3339).ok()
}

/// Parse any RFC 3339 timestamp and return its canonical stored form.
pub fn normalize(s: &str) -> Option<String> {
    parse(s).map(format)
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
}
