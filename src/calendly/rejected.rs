//! Deliveries refused before their signature verified (forged, stale,
//! unsigned, oversized). They are unauthenticated, so they must cost next to
//! nothing: no row of their own, only a count per minute and reason (the
//! store's `count_calendly_rejections`), a metric by reason, and at most one
//! log line per source address per minute.
//!
//! Counts from concurrent refusals are merged: whoever holds the flush lock
//! writes everything waiting in one writer request, so a flood of forged
//! POSTs becomes a few upserts, not one write each.

use std::collections::HashMap;
use std::sync::Mutex;

use super::CalendlyState;
use crate::model::DeliveryOutcome;

#[derive(Default)]
pub struct Rejections {
    /// Refusals not yet written, by reason.
    pending: Mutex<HashMap<&'static str, u64>>,
    /// Held while one request writes `pending` for everyone.
    flushing: tokio::sync::Mutex<()>,
}

impl Rejections {
    /// Count one refusal and return once it is committed (so the count
    /// survives a restart). Logs it unless `source` was logged this minute.
    pub async fn record(&self, state: &CalendlyState, reason: &'static str, sentence: &str, event: Option<&str>, source: &str) {
        state.metrics.webhook("calendly", DeliveryOutcome::Rejected.as_str());
        state.metrics.calendly_rejected.with_label_values(&[reason]).inc();
        log(state, reason, sentence, event, source);
        if let Ok(mut p) = self.pending.lock() {
            *p.entry(reason).or_default() += 1;
        }
        let _turn = self.flushing.lock().await;
        let batch: Vec<(&'static str, u64)> = match self.pending.lock() {
            Ok(mut p) => p.drain().collect(),
            Err(_) => return,
        };
        if batch.is_empty() {
            // An earlier holder of the lock wrote ours with its own.
            return;
        }
        if let Err(e) = state.store.count_calendly_rejections(batch).await {
            tracing::warn!(error = %e, "could not count rejected Calendly deliveries");
        }
    }
}

/// One log line per source address per minute (the server's shared
/// [`crate::http::log_throttle::LogThrottle`]); the rest at debug.
fn log(state: &CalendlyState, reason: &str, sentence: &str, event: Option<&str>, source: &str) {
    if state.log_throttle.should_log(&format!("calendly-source:{source}")) {
        tracing::info!(
            reason,
            source,
            "calendly webhook {}: rejected, {sentence} (further rejections from {source} this minute are counted, not logged)",
            event.unwrap_or("?")
        );
    } else {
        tracing::debug!(reason, source, "calendly webhook rejected");
    }
}
