//! A PostgreSQL database of its own for one test: created on the server that
//! `SYNCGATE_TEST_DATABASE_URL` names (a superuser URL to a maintenance
//! database, as `scripts/test.sh` exports for its throwaway cluster) and
//! dropped when the test ends, passed or failed.
//!
//! Without that variable a PostgreSQL test prints a skip line and passes —
//! except in CI (`CI` set) or with `SYNCGATE_REQUIRE_POSTGRES=1`, where a
//! skipped engine would hide a failure, so it fails instead.

#![allow(dead_code)]

use tokio_postgres::NoTls;

pub const URL_VARIABLE: &str = "SYNCGATE_TEST_DATABASE_URL";

pub struct PgDatabase {
    /// A URL to the new database.
    pub url: String,
    name: String,
    maintenance_url: String,
}

fn required() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty()) || std::env::var("SYNCGATE_REQUIRE_POSTGRES").is_ok_and(|v| v == "1")
}

impl PgDatabase {
    /// A fresh empty database, or None (after a skip line) when no server is
    /// configured and none is required.
    pub async fn create(test: &str) -> Option<PgDatabase> {
        let maintenance_url = match std::env::var(URL_VARIABLE) {
            Ok(url) if !url.trim().is_empty() => url,
            _ if required() => {
                panic!("{test}: {URL_VARIABLE} is not set, and CI or SYNCGATE_REQUIRE_POSTGRES=1 requires the PostgreSQL tests to run")
            }
            _ => {
                eprintln!("skipped {test}: set {URL_VARIABLE} to a PostgreSQL superuser URL to run it (scripts/test.sh does)");
                return None;
            }
        };
        let name = format!("sg_test_{}", uuid::Uuid::new_v4().simple());
        let admin = connect(&maintenance_url).await;
        admin.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        let mut url = url::Url::parse(&maintenance_url).expect("SYNCGATE_TEST_DATABASE_URL is not a URL");
        url.set_path(&format!("/{name}"));
        Some(PgDatabase { url: url.to_string(), name, maintenance_url })
    }

    /// A plain connection to the test's database, for reading what the code under test wrote.
    pub async fn connect(&self) -> tokio_postgres::Client {
        connect(&self.url).await
    }
}

/// Connect and drive the connection on a task of the current runtime.
pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap_or_else(|e| panic!("cannot connect to PostgreSQL: {e}"));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// Dropped on a thread of its own with its own runtime: `Drop` cannot await,
/// and the test's runtime may be shutting down (or the test panicking).
impl Drop for PgDatabase {
    fn drop(&mut self) {
        let (url, name) = (self.maintenance_url.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let admin = connect(&url).await;
                // WITH (FORCE) (PostgreSQL 13+) ends sessions the test left open.
                admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("could not drop the test database {}: {e}", self.name),
            Err(_) => eprintln!("could not drop the test database {}", self.name),
        }
    }
}
