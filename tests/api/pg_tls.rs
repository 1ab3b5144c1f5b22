//! TLS to PostgreSQL, on real sockets to 127.0.0.1: each `sslmode` of
//! `database.url` encrypts and verifies as libpq's does, through the code the
//! server runs (the migration runner's connection, `store::pg::tls::connect`,
//! and the store's pool).
//!
//! The server is the one `SYNCGATE_TEST_DATABASE_URL` names. The throwaway
//! cluster of `scripts/throwaway-postgres.sh` offers TLS with a certificate
//! for `localhost` signed by a CA of its own, and exports that CA
//! (`SYNCGATE_TEST_PG_CA`), an unrelated one (`SYNCGATE_TEST_PG_OTHER_CA`) and
//! the certificate's names (`SYNCGATE_TEST_PG_HOST_NAMES`). A test that needs
//! what the server does not offer prints a skip line and passes, except in CI,
//! where it fails. The host name is checked on the same socket: `hostaddr=
//! 127.0.0.1` connects, `host` is the name the certificate must carry.

use std::time::Duration;

use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use syncgate::config::DatabaseConfig;
use syncgate::store::pg::migrations::check_compatible;
use syncgate::store::pg::{tls, PgMigrationError, PgUrl};
use syncgate::store::Store;

use crate::pg_database::{self, PgDatabase, URL_VARIABLE};

/// Put into every URL: the cluster trusts 127.0.0.1 and never asks for it,
/// so it must show up in no sentence.
const PASSWORD: &str = "pw-never-shown-7f3a";

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty())
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// What the test server offers.
struct Server {
    /// The maintenance URL, as exported.
    url: url::Url,
    port: u16,
    offers_tls: bool,
    /// From the throwaway cluster: its CA, an unrelated CA, a name its certificate is valid for.
    ca: Option<String>,
    other_ca: Option<String>,
    host_name: Option<String>,
}

impl Server {
    async fn find(test: &str) -> Option<Server> {
        let Some(text) = var(URL_VARIABLE) else {
            assert!(!in_ci(), "{test}: {URL_VARIABLE} is not set, and CI requires the PostgreSQL TLS tests to run");
            eprintln!("skipped {test}: set {URL_VARIABLE} to a PostgreSQL superuser URL to run it (scripts/test.sh does)");
            return None;
        };
        let url = url::Url::parse(&text).expect("SYNCGATE_TEST_DATABASE_URL is not a URL");
        let port = url.port().unwrap_or(5432);
        let plain = pg_database::connect(&text).await;
        let ssl: String = plain.query_one("SHOW ssl", &[]).await.unwrap().get(0);
        let server = Server {
            url,
            port,
            offers_tls: ssl == "on",
            ca: var("SYNCGATE_TEST_PG_CA"),
            other_ca: var("SYNCGATE_TEST_PG_OTHER_CA"),
            host_name: var("SYNCGATE_TEST_PG_HOST_NAMES").and_then(|n| n.split([',', ' ']).find(|n| !n.is_empty()).map(String::from)),
        };
        assert!(
            server.offers_tls || server.ca.is_none(),
            "{test}: SYNCGATE_TEST_PG_CA is set, but the server at {URL_VARIABLE} does not offer TLS (SHOW ssl is {ssl})"
        );
        Some(server)
    }

    /// Whether the server speaks TLS; a skip line when not.
    fn tls(&self, test: &str) -> bool {
        assert!(self.offers_tls || !in_ci(), "{test}: the test server does not offer TLS (ssl = off), and CI requires it");
        if !self.offers_tls {
            eprintln!("skipped {test}: the PostgreSQL server does not offer TLS (scripts/throwaway-postgres.sh starts one that does)");
        }
        self.offers_tls
    }

    /// The throwaway cluster's CA, unrelated CA and certificate name; a skip line when not there.
    fn certificates(&self, test: &str) -> Option<(&str, &str, &str)> {
        match (&self.ca, &self.other_ca, &self.host_name) {
            (Some(ca), Some(other), Some(name)) if self.tls(test) => Some((ca, other, name)),
            _ => {
                assert!(!in_ci(), "{test}: SYNCGATE_TEST_PG_CA, _OTHER_CA and _HOST_NAMES are not all set, and CI requires them");
                eprintln!("skipped {test}: needs SYNCGATE_TEST_PG_CA, SYNCGATE_TEST_PG_OTHER_CA and SYNCGATE_TEST_PG_HOST_NAMES (scripts/throwaway-postgres.sh exports them)");
                None
            }
        }
    }

    /// The server's URL with our password, host `host` (reached at 127.0.0.1)
    /// and the query `params` (values percent-encoded).
    fn url(&self, host: &str, params: &[(&str, &str)]) -> PgUrl {
        let user = if self.url.username().is_empty() { "postgres" } else { self.url.username() };
        let db = self.url.path().trim_start_matches('/');
        let mut text = format!("postgres://{user}:{PASSWORD}@{host}:{}/{db}?hostaddr=127.0.0.1", self.port);
        for (k, v) in params {
            text.push_str(&format!("&{k}={}", utf8_percent_encode(v, NON_ALPHANUMERIC)));
        }
        PgUrl::parse(&text).unwrap_or_else(|e| panic!("{e}"))
    }
}

/// Whether the connection `tls::connect` makes for `url` is encrypted, by the
/// server's own account of it.
async fn encrypted(url: &PgUrl) -> bool {
    let client = tls::connect(url).await.unwrap_or_else(|e| panic!("{url}: {e}"));
    client.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]).await.unwrap().get(0)
}

/// The sentence the migration runner refuses `url` with.
async fn refused(url: &PgUrl) -> String {
    let e = check_compatible(url).await.expect_err("connected, but should have been refused");
    let sentence = e.to_string();
    assert!(!sentence.contains(PASSWORD), "the password shows: {sentence}");
    assert!(!format!("{e:?}").contains(PASSWORD), "the password shows: {e:?}");
    sentence
}

#[tokio::test]
async fn require_encrypts_and_does_not_check_the_certificate() {
    let test = "require_encrypts_and_does_not_check_the_certificate";
    let Some(server) = Server::find(test).await else { return };
    if !server.tls(test) {
        return;
    }
    let url = server.url("127.0.0.1", &[("sslmode", "require")]);
    assert!(encrypted(&url).await, "sslmode=require connected without TLS");
    check_compatible(&url).await.unwrap_or_else(|e| panic!("{e}"));
    // The certificate is one the client cannot verify (the throwaway
    // cluster's is signed by its own CA; nothing here names it), yet require took it.
    if server.ca.is_some() {
        let sentence = refused(&server.url("localhost", &[("sslmode", "verify-full")])).await;
        assert!(sentence.contains("certificate") || sentence.contains("root"), "{sentence}");
    }
}

#[tokio::test]
async fn prefer_is_the_default_and_encrypts_when_offered() {
    let test = "prefer_is_the_default_and_encrypts_when_offered";
    let Some(server) = Server::find(test).await else { return };
    let default = server.url("127.0.0.1", &[]);
    assert_eq!(encrypted(&default).await, server.offers_tls);
    let prefer = server.url("127.0.0.1", &[("sslmode", "prefer")]);
    assert_eq!(encrypted(&prefer).await, server.offers_tls);
    check_compatible(&prefer).await.unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test]
async fn disable_connects_unencrypted() {
    let Some(server) = Server::find("disable_connects_unencrypted").await else { return };
    let url = server.url("127.0.0.1", &[("sslmode", "disable")]);
    assert!(!encrypted(&url).await, "sslmode=disable connected with TLS");
    check_compatible(&url).await.unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test]
async fn verify_full_checks_the_chain_and_the_host_name() {
    let test = "verify_full_checks_the_chain_and_the_host_name";
    let Some(server) = Server::find(test).await else { return };
    let Some((ca, other_ca, name)) = server.certificates(test) else { return };

    let right = server.url(name, &[("sslmode", "verify-full"), ("sslrootcert", ca)]);
    assert!(encrypted(&right).await);
    check_compatible(&right).await.unwrap_or_else(|e| panic!("{e}"));

    // The right CA, but a name the certificate does not carry.
    let wrong_name = server.url("wrong-name.invalid", &[("sslmode", "verify-full"), ("sslrootcert", ca)]);
    let sentence = refused(&wrong_name).await;
    assert!(sentence.starts_with("cannot connect to the database postgres://postgres:***@wrong-name.invalid:"), "{sentence}");
    assert!(sentence.contains("not valid for name") && sentence.contains("wrong-name.invalid"), "{sentence}");
    assert!(matches!(tls::connect(&wrong_name).await, Err(tls::ConnectError::Connect(_))));
    // An IP address is a name too, and this certificate has none.
    let sentence = refused(&server.url("127.0.0.1", &[("sslmode", "verify-full"), ("sslrootcert", ca)])).await;
    assert!(sentence.contains("not valid for name"), "{sentence}");

    // The right name, but the chain does not lead to the CA given.
    let sentence = refused(&server.url(name, &[("sslmode", "verify-full"), ("sslrootcert", other_ca)])).await;
    assert!(sentence.contains("UnknownIssuer") || sentence.contains("unknown issuer"), "{sentence}");
}

#[tokio::test]
async fn verify_ca_checks_the_chain_not_the_host_name() {
    let test = "verify_ca_checks_the_chain_not_the_host_name";
    let Some(server) = Server::find(test).await else { return };
    let Some((ca, other_ca, _)) = server.certificates(test) else { return };
    let any_name = server.url("wrong-name.invalid", &[("sslmode", "verify-ca"), ("sslrootcert", ca)]);
    assert!(encrypted(&any_name).await);
    check_compatible(&any_name).await.unwrap_or_else(|e| panic!("{e}"));
    let sentence = refused(&server.url("localhost", &[("sslmode", "verify-ca"), ("sslrootcert", other_ca)])).await;
    assert!(sentence.contains("UnknownIssuer") || sentence.contains("unknown issuer"), "{sentence}");
    // As libpq: require with a sslrootcert checks the chain as verify-ca does.
    let sentence = refused(&server.url("localhost", &[("sslmode", "require"), ("sslrootcert", other_ca)])).await;
    assert!(sentence.contains("UnknownIssuer") || sentence.contains("unknown issuer"), "{sentence}");
    assert!(encrypted(&server.url("wrong-name.invalid", &[("sslmode", "require"), ("sslrootcert", ca)])).await);
}

/// The store's pool (and its migration connection before it) connects with
/// the same TLS: a store opened with verify-full runs on encrypted connections.
#[tokio::test]
async fn the_store_opens_on_verified_connections() {
    let test = "the_store_opens_on_verified_connections";
    let Some(server) = Server::find(test).await else { return };
    let Some((ca, _, name)) = server.certificates(test) else { return };
    let Some(db) = PgDatabase::create(test).await else { return };
    let db_name = url::Url::parse(&db.url).unwrap().path().trim_start_matches('/').to_string();
    let app = format!("sg_tls_{}", &db_name[db_name.len() - 8..]);
    let user = if server.url.username().is_empty() { "postgres" } else { server.url.username() };
    let text = format!(
        "postgres://{user}:{PASSWORD}@{name}:{}/{db_name}?hostaddr=127.0.0.1&application_name={app}&sslmode=verify-full&sslrootcert={}",
        server.port,
        utf8_percent_encode(ca, NON_ALPHANUMERIC)
    );
    let cfg =
        DatabaseConfig { url: text.into(), connect_timeout: syncgate::duration::Dur::secs(10), read_pool_size: 2, ..Default::default() };
    let opened = tokio::task::spawn_blocking(move || Store::open(&cfg)).await.unwrap().unwrap_or_else(|e| panic!("{e}"));

    // The writer holds a pooled connection from the start.
    let plain = db.connect().await;
    let sessions: Vec<(bool, String)> = plain
        .query(
            "SELECT s.ssl, coalesce(s.version, '') FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.application_name = $1",
            &[&app],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(!sessions.is_empty(), "no session of the store's pool");
    assert!(sessions.iter().all(|(ssl, version)| *ssl && version.starts_with("TLS")), "{sessions:?}");

    let syncgate::store::Opened { store, feed, writer_thread } = opened;
    drop((store, feed));
    tokio::time::timeout(Duration::from_secs(10), tokio::task::spawn_blocking(move || writer_thread.join()))
        .await
        .expect("the writer did not stop")
        .unwrap()
        .unwrap();
}

/// A `sslrootcert` that cannot be used stops startup with a sentence naming
/// the file (before any connection is tried: no server needed).
#[tokio::test]
async fn a_bad_sslrootcert_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-ca.pem");
    let not_pem = dir.path().join("not-a-ca.pem");
    std::fs::write(&not_pem, "this is not a certificate\n").unwrap();
    let broken = dir.path().join("broken-ca.pem");
    std::fs::write(&broken, "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n").unwrap();
    for (file, says) in [(&missing, "cannot read"), (&not_pem, "holds no PEM certificate"), (&broken, "is not a usable CA certificate")] {
        for mode in ["verify-full", "verify-ca", "require"] {
            let text = format!(
                "postgres://postgres:{PASSWORD}@127.0.0.1:1/postgres?sslmode={mode}&sslrootcert={}",
                utf8_percent_encode(file.to_str().unwrap(), NON_ALPHANUMERIC)
            );
            let url = PgUrl::parse(&text).unwrap();
            let e = check_compatible(&url).await.expect_err("a bad sslrootcert was taken");
            assert!(matches!(e, PgMigrationError::Tls { .. }), "{e:?}");
            let sentence = e.to_string();
            assert!(sentence.contains(file.to_str().unwrap()) && sentence.contains(says), "{mode}: {sentence}");
            assert!(!sentence.contains(PASSWORD), "{sentence}");

            let cfg = DatabaseConfig { url: text.into(), ..Default::default() };
            let e = tokio::task::spawn_blocking(move || Store::open(&cfg).err().expect("a bad sslrootcert was taken")).await.unwrap();
            assert!(e.to_string().contains(file.to_str().unwrap()), "{e}");
        }
    }
}
