//! How connections to PostgreSQL are encrypted, from the URL's `sslmode`.
//! (First step: plain connections; TLS modes follow.)

use super::url::PgUrl;
use crate::store::error::StoreResult;

/// The TLS connector every PostgreSQL connection is made with.
pub(crate) type Tls = tokio_postgres::NoTls;

pub(crate) fn connector(_url: &PgUrl) -> StoreResult<Tls> {
    Ok(tokio_postgres::NoTls)
}
