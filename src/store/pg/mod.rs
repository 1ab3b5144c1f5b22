//! PostgreSQL, the second engine (#17), first step: the database URL that
//! never shows its password, and the schema by numbered migrations with the
//! version check. The running server still uses SQLite only; the store is
//! made engine-generic in a later step.

pub mod migrations;
pub mod url;

pub use migrations::{BinaryVersion, IncompatibleDatabase, PgMigrationError};
pub use url::{PgUrl, PgUrlError};
