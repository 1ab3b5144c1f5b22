//! The store's answers to "are you there?": a read through the pool and a
//! no-op request through the writer, for readiness.

use super::error::{StoreError, StoreResult};
use super::sql::args;
use super::Store;

impl Store {
    /// A trivial read on a pooled connection: the database file answers.
    pub async fn ping(&self) -> StoreResult<()> {
        let one: i64 = self.read(|c| c.value("SELECT 1", args![])).await?;
        if one == 1 {
            Ok(())
        } else {
            Err(StoreError::internal("SELECT 1 gave an unexpected answer"))
        }
    }

    /// An empty request through the writer: its thread takes work and commits.
    pub async fn writer_ping(&self) -> StoreResult<()> {
        self.writer.write(|_| Ok(())).await
    }
}
