//! A PostgreSQL connection URL that never shows its password: `Display` and
//! `Debug` print `postgres://user:***@host:port/db`, so the URL can go into
//! any log line or error sentence.

use std::fmt;
use std::str::FromStr;

use tokio_postgres::config::Host;

/// A parsed `postgres://` (or `postgresql://`) URL.
#[derive(Clone)]
pub struct PgUrl {
    config: tokio_postgres::Config,
}

/// Why a URL is not a PostgreSQL URL. Never quotes the URL: it may hold a password.
#[derive(Debug, thiserror::Error)]
pub enum PgUrlError {
    #[error("the database URL must start with postgres:// or postgresql://")]
    Scheme,
    #[error("the database URL is not a valid PostgreSQL URL ({reason})")]
    Invalid { reason: String },
}

impl PgUrl {
    pub fn parse(text: &str) -> Result<PgUrl, PgUrlError> {
        let text = text.trim();
        if !(text.starts_with("postgres://") || text.starts_with("postgresql://")) {
            return Err(PgUrlError::Scheme);
        }
        let config = tokio_postgres::Config::from_str(text).map_err(|e| PgUrlError::Invalid { reason: redact(&e.to_string(), text) })?;
        Ok(PgUrl { config })
    }

    /// The settings to connect with (the password included).
    pub(super) fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }
}

impl FromStr for PgUrl {
    type Err = PgUrlError;
    fn from_str(text: &str) -> Result<PgUrl, PgUrlError> {
        PgUrl::parse(text)
    }
}

/// `message` with every piece of the URL's password taken out: the parser's
/// own messages name the option they refused and may quote its value.
fn redact(message: &str, url: &str) -> String {
    let password = url.split_once("://").and_then(|(_, rest)| {
        let authority = rest.split(['/', '?']).next()?;
        let userinfo = authority.rsplit_once('@')?.0;
        Some(userinfo.split_once(':')?.1.to_string())
    });
    match password {
        Some(p) if !p.is_empty() => message.replace(&p, "***"),
        _ => message.to_string(),
    }
}

impl fmt::Display for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        f.write_str("postgres://")?;
        if let Some(user) = c.get_user() {
            f.write_str(user)?;
            if c.get_password().is_some() {
                f.write_str(":***")?;
            }
            f.write_str("@")?;
        }
        for (i, host) in c.get_hosts().iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match host {
                Host::Tcp(name) => f.write_str(name)?,
                #[cfg(unix)]
                Host::Unix(path) => write!(f, "{}", path.display())?,
            }
            if let Some(port) = c.get_ports().get(i).or(c.get_ports().first()) {
                write!(f, ":{port}")?;
            }
        }
        if let Some(db) = c.get_dbname() {
            write!(f, "/{db}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PgUrl({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_never_shows() {
        let url = PgUrl::parse("postgres://sg:hunter2@db.example:5433/syncgate").unwrap();
        assert_eq!(url.to_string(), "postgres://sg:***@db.example:5433/syncgate");
        assert_eq!(format!("{url:?}"), "PgUrl(postgres://sg:***@db.example:5433/syncgate)");
        assert_eq!(url.config().get_password(), Some(&b"hunter2"[..]));
    }

    #[test]
    fn a_url_without_password_shows_as_is() {
        let url = PgUrl::parse("postgresql://postgres@127.0.0.1:5432/postgres").unwrap();
        assert_eq!(url.to_string(), "postgres://postgres@127.0.0.1:5432/postgres");
    }

    #[test]
    fn a_refused_url_does_not_quote_its_password() {
        for text in ["postgres://sg:hunter2@db:notaport/x", "postgres://sg:hunter2@db/x?sslmode=hunter2", "mysql://sg:hunter2@db/x"] {
            let e = PgUrl::parse(text).unwrap_err().to_string();
            assert!(!e.contains("hunter2"), "{e}");
        }
    }
}
