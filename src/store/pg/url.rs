//! A PostgreSQL connection URL that never shows its password: `Display` and
//! `Debug` print `postgres://user:***@host:port/db`, so the URL can go into
//! any log line or error sentence.
//!
//! The URL also says how the connection is encrypted, in libpq's words:
//! `sslmode=disable|prefer|require|verify-ca|verify-full` and
//! `sslrootcert=<PEM file>|system`. tokio-postgres's own parser knows only
//! disable, prefer and require and no `sslrootcert`, so [`PgUrl::parse`]
//! takes both out of the URL, remembers them, and gives tokio-postgres the
//! rest (with the mode it can act on: verification is ours, in `tls`).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use tokio_postgres::config::Host;

/// A parsed `postgres://` (or `postgresql://`) URL.
#[derive(Clone)]
pub struct PgUrl {
    config: tokio_postgres::Config,
    ssl_mode: SslMode,
    root_cert: Option<RootCert>,
}

/// How the connection is encrypted and what is checked, as libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Never encrypted.
    Disable,
    /// Encrypted when the server offers TLS, else plain (the default, as in libpq).
    Prefer,
    /// Always encrypted; the certificate is not checked (unless `sslrootcert`
    /// is given: then its chain is, as in libpq).
    Require,
    /// Encrypted, the certificate chain checked against `sslrootcert` (which
    /// it needs), not the host name.
    VerifyCa,
    /// Encrypted, the chain and the server's host name checked.
    VerifyFull,
}

impl SslMode {
    /// libpq's name of the mode.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The root certificates the server's chain is checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCert {
    /// `sslrootcert=<path>`: the PEM certificates in this file.
    File(PathBuf),
    /// `sslrootcert=system`, or no `sslrootcert` with verify-full: the
    /// operating system's trusted roots.
    System,
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
        let invalid = |reason: &str| PgUrlError::Invalid { reason: reason.to_string() };
        let (rest, ssl) = take_ssl_params(text)?;
        let mut config =
            tokio_postgres::Config::from_str(&rest).map_err(|e| PgUrlError::Invalid { reason: redact(&e.to_string(), text) })?;
        let ssl_mode = ssl.mode.unwrap_or(SslMode::Prefer);
        let root_cert = match (ssl.root_cert.as_deref(), ssl_mode) {
            (Some(""), _) => return Err(invalid("sslrootcert is empty: give the path of a PEM file, or system")),
            // As libpq: the system's roots trust every public CA, so they mean
            // something only when the host name is checked too.
            (Some("system"), SslMode::VerifyFull) | (None, SslMode::VerifyFull) => Some(RootCert::System),
            (Some("system"), mode) => {
                return Err(PgUrlError::Invalid { reason: format!("sslrootcert=system needs sslmode=verify-full, not sslmode={mode}") })
            }
            (None, SslMode::VerifyCa) => {
                return Err(invalid(
                    "sslmode=verify-ca needs sslrootcert=<PEM file of the CA that signed the server's certificate>: \
                     without a host name check the system's roots would accept any certificate a public CA signed",
                ))
            }
            // With sslmode=disable no certificate is ever looked at (as libpq).
            (Some(_), SslMode::Disable) => None,
            (Some(path), _) => Some(RootCert::File(PathBuf::from(path))),
            (None, _) => None,
        };
        config.ssl_mode(match ssl_mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => tokio_postgres::config::SslMode::Require,
        });
        Ok(PgUrl { config, ssl_mode, root_cert })
    }

    /// The settings to connect with (the password included).
    pub(super) fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// How connections are encrypted and checked.
    pub fn ssl_mode(&self) -> SslMode {
        self.ssl_mode
    }

    /// The roots the server's certificate chain is checked against, if it is
    /// checked: always with verify-ca and verify-full; with prefer and require
    /// only when `sslrootcert` names a file (as libpq).
    pub fn root_cert(&self) -> Option<&RootCert> {
        self.root_cert.as_ref()
    }
}

/// The `sslmode` and `sslrootcert` a URL asked for (the last of each wins, as
/// in tokio-postgres), both percent-decoded.
struct SslParams {
    mode: Option<SslMode>,
    root_cert: Option<String>,
}

/// `text` without its `sslmode` and `sslrootcert` parameters, and their values.
/// The query starts at the first `?` after the credentials (the first `@`),
/// where tokio-postgres's parser starts it too. Errors quote no value.
fn take_ssl_params(text: &str) -> Result<(String, SslParams), PgUrlError> {
    let mut ssl = SslParams { mode: None, root_cert: None };
    let after_scheme = text.find("://").map_or(0, |i| i + 3);
    let after_credentials = text[after_scheme..].find('@').map_or(after_scheme, |i| after_scheme + i + 1);
    let Some(q) = text[after_credentials..].find('?').map(|i| after_credentials + i) else {
        return Ok((text.to_string(), ssl));
    };
    let invalid = |reason: String| PgUrlError::Invalid { reason };
    let decode = |name: &str, value: &str| {
        percent_encoding::percent_decode_str(value)
            .decode_utf8()
            .map(|v| v.into_owned())
            .map_err(|_| invalid(format!("the value of {name} is not UTF-8 once percent-decoded")))
    };
    let mut kept = Vec::new();
    for pair in text[q + 1..].split('&') {
        let key = pair.split_once('=').map_or(pair, |(k, _)| k);
        let value = pair.split_once('=').map(|(_, v)| v);
        match (percent_encoding::percent_decode_str(key).decode_utf8_lossy().as_ref(), value) {
            ("sslmode", Some(value)) => {
                ssl.mode = Some(match decode("sslmode", value)?.as_str() {
                    "disable" => SslMode::Disable,
                    "prefer" => SslMode::Prefer,
                    "require" => SslMode::Require,
                    "verify-ca" => SslMode::VerifyCa,
                    "verify-full" => SslMode::VerifyFull,
                    "allow" => {
                        return Err(invalid(
                            "sslmode=allow is not supported: use disable, prefer, require, verify-ca or verify-full".into(),
                        ))
                    }
                    _ => return Err(invalid("sslmode must be disable, prefer, require, verify-ca or verify-full".into())),
                });
            }
            ("sslrootcert", Some(value)) => ssl.root_cert = Some(decode("sslrootcert", value)?),
            _ => kept.push(pair),
        }
    }
    let mut rest = text[..q].to_string();
    if !kept.is_empty() {
        rest.push('?');
        rest.push_str(&kept.join("&"));
    }
    Ok((rest, ssl))
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

    fn tokio_mode(url: &PgUrl) -> tokio_postgres::config::SslMode {
        url.config().get_ssl_mode()
    }

    #[test]
    fn without_sslmode_tls_is_preferred() {
        let url = PgUrl::parse("postgres://sg:hunter2@db:5432/x").unwrap();
        assert_eq!((url.ssl_mode(), url.root_cert()), (SslMode::Prefer, None));
        assert_eq!(tokio_mode(&url), tokio_postgres::config::SslMode::Prefer);
    }

    #[test]
    fn every_sslmode_is_understood() {
        use tokio_postgres::config::SslMode as T;
        for (text, mode, tokio) in [
            ("disable", SslMode::Disable, T::Disable),
            ("prefer", SslMode::Prefer, T::Prefer),
            ("require", SslMode::Require, T::Require),
            ("verify-full", SslMode::VerifyFull, T::Require),
        ] {
            let url = PgUrl::parse(&format!("postgres://sg:hunter2@db:5432/x?application_name=sg&sslmode={text}")).unwrap();
            assert_eq!(url.ssl_mode(), mode, "{text}");
            assert_eq!(tokio_mode(&url), tokio, "{text}");
            assert_eq!(url.config().get_application_name(), Some("sg"), "{text}");
            assert_eq!(url.to_string(), "postgres://sg:***@db:5432/x", "{text}");
        }
        let url = PgUrl::parse("postgres://sg@db/x?sslmode=verify-ca&sslrootcert=/etc/ca%20files/root.pem").unwrap();
        assert_eq!(url.ssl_mode(), SslMode::VerifyCa);
        assert_eq!(tokio_mode(&url), T::Require);
        assert_eq!(url.root_cert(), Some(&RootCert::File("/etc/ca files/root.pem".into())));
    }

    #[test]
    fn the_roots_follow_libpq() {
        let roots = |q: &str| PgUrl::parse(&format!("postgres://sg@db/x?{q}")).map(|u| u.root_cert().cloned());
        assert_eq!(roots("sslmode=verify-full").unwrap(), Some(RootCert::System));
        assert_eq!(roots("sslmode=verify-full&sslrootcert=system").unwrap(), Some(RootCert::System));
        assert_eq!(roots("sslrootcert=/ca.pem&sslmode=verify-full").unwrap(), Some(RootCert::File("/ca.pem".into())));
        assert_eq!(roots("sslmode=require&sslrootcert=/ca.pem").unwrap(), Some(RootCert::File("/ca.pem".into())));
        assert_eq!(roots("sslmode=require").unwrap(), None);
        assert_eq!(roots("sslmode=disable&sslrootcert=/ca.pem").unwrap(), None);
        for (q, says) in [
            ("sslmode=verify-ca", "sslmode=verify-ca needs sslrootcert"),
            ("sslmode=require&sslrootcert=system", "sslrootcert=system needs sslmode=verify-full, not sslmode=require"),
            ("sslmode=verify-full&sslrootcert=", "sslrootcert is empty"),
            ("sslmode=allow", "sslmode=allow is not supported"),
            ("sslmode=verify_full", "sslmode must be disable, prefer, require, verify-ca or verify-full"),
        ] {
            let e = roots(q).unwrap_err().to_string();
            assert!(e.contains(says), "{q}: {e}");
        }
    }

    #[test]
    fn a_password_with_a_question_mark_is_not_a_query() {
        let url = PgUrl::parse("postgres://sg:pa?ss@db:5432/x?sslmode=verify-full&sslrootcert=/ca.pem").unwrap();
        assert_eq!(url.config().get_password(), Some(&b"pa?ss"[..]));
        assert_eq!(url.ssl_mode(), SslMode::VerifyFull);
        assert_eq!(url.to_string(), "postgres://sg:***@db:5432/x");
    }

    #[test]
    fn a_refused_tls_setting_does_not_quote_the_password() {
        for text in [
            "postgres://sg:hunter2@db/x?sslmode=verify-ca",
            "postgres://sg:hunter2@db/x?sslrootcert=%FF&sslmode=verify-full",
            "postgres://sg:hunter2@db/x?sslmode=verify-full&sslcert=hunter2",
        ] {
            let e = PgUrl::parse(text).unwrap_err().to_string();
            assert!(!e.contains("hunter2"), "{e}");
        }
    }
}
