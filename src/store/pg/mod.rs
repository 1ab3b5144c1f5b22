//! What only PostgreSQL needs: the URL that never shows its password, TLS
//! from `sslmode`, pooled connections with a blocking face for the store's
//! shared code (`conn`), and the schema by numbered migrations with the
//! version check.

pub(crate) mod conn;
pub mod listen;
pub mod migrations;
pub mod tls;
pub mod url;

pub use migrations::{BinaryVersion, IncompatibleDatabase, PgMigrationError};
pub use url::{PgUrl, PgUrlError};
