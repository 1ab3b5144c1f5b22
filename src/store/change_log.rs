//! How much of the `changes` log is kept, for the operator's health page.

use serde::Serialize;

use super::error::StoreResult;
use super::sql::args;
use super::Store;

/// The retained part of the change log.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ChangeLogExtent {
    /// Changes kept (retention deletes older ones).
    pub retained: i64,
    /// The oldest kept seq, if any.
    pub oldest_seq: Option<i64>,
}

impl Store {
    pub async fn change_log_extent(&self) -> StoreResult<ChangeLogExtent> {
        self.read(|c| {
            let retained: i64 = c.value("SELECT COUNT(*) FROM changes", args![])?;
            Ok(ChangeLogExtent { retained, oldest_seq: super::changes::oldest(c)? })
        })
        .await
    }
}
