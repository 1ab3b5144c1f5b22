//! Facts of the moment that `/metrics` reports from the database: how much
//! of the change log is kept, and the Google push channels held.

use super::error::StoreResult;
use super::sql::args;
use super::{timefmt, Store};

/// What `/metrics` reads from the database at each scrape.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreFacts {
    /// Rows kept in the change log.
    pub retained_changes: i64,
    /// Google push channels (active and retiring).
    pub watch_channels: i64,
    /// When the soonest-expiring Google channel expires, if any has an expiry.
    pub soonest_channel_expiry: Option<time::OffsetDateTime>,
}

impl Store {
    /// Read the facts `/metrics` reports, in one go.
    pub async fn metrics_facts(&self) -> StoreResult<StoreFacts> {
        self.read(|c| {
            let retained_changes: i64 = c.value("SELECT COUNT(*) FROM changes", args![])?;
            let watch_channels: i64 = c.value("SELECT COUNT(*) FROM calendar_watch_channels", args![])?;
            let soonest: Option<String> =
                c.value("SELECT MIN(expiration) FROM calendar_watch_channels WHERE expiration IS NOT NULL", args![])?;
            Ok(StoreFacts { retained_changes, watch_channels, soonest_channel_expiry: soonest.as_deref().and_then(timefmt::parse) })
        })
        .await
    }
}
