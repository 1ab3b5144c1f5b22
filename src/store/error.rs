//! What can go wrong in the store, in the store's words: the HTTP edge maps
//! each kind to a status (`http::error`), background tasks log it.

/// A failed store operation. `Internal` carries the cause for the log only.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The row (or user, or channel) asked for does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A unique value is taken, or the row changed under the request.
    #[error("{0}")]
    Conflict(String),
    /// The request breaks a rule of the data (a missing reference, the last admin, …).
    #[error("{0}")]
    Invalid(String),
    /// The store is shutting down or cannot take work now.
    #[error("{0}")]
    Unavailable(String),
    /// The database failed; the cause is logged, never shown to a client.
    #[error("database: {0}")]
    Internal(String),
}

impl StoreError {
    pub fn internal(e: impl std::fmt::Display) -> StoreError {
        StoreError::Internal(e.to_string())
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        StoreError::Internal(e.to_string())
    }
}

impl From<r2d2::Error> for StoreError {
    fn from(e: r2d2::Error) -> StoreError {
        StoreError::Internal(format!("pool: {e}"))
    }
}

pub type StoreResult<T> = Result<T, StoreError>;
