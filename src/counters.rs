//! The counters and histograms webhook and sync code record into, in a
//! per-server registry (so several servers in one test process do not mix).
//! `ops::metrics` renders them with the facts of the moment at `/metrics`.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

use crate::model::{DeliveryOutcome, SyncKind, SyncOutcome};

/// Every outcome a webhook delivery can be counted under, by source. Each
/// series is exported at 0 from startup, so `rate(...)` alerts and dashboards
/// see a series before the first event instead of "no data".
pub const WEBHOOK_OUTCOMES: &[(&str, &[DeliveryOutcome])] = {
    use DeliveryOutcome::*;
    &[
        ("calendly", &[Accepted, Duplicate, Unmatched, Ignored, Invalid, Failed, Rejected]),
        ("google", &[Accepted, UnknownChannel, Rejected, Invalid]),
        // One count per notification item (a Graph POST is a batch);
        // Rejected: a wrong clientState.
        ("microsoft", &[Accepted, UnknownChannel, Rejected, Invalid]),
    ]
};
/// Kinds and outcomes of a Google sync pass (also exported at 0 from startup).
pub const SYNC_KINDS: &[SyncKind] = SyncKind::ALL;
pub const SYNC_OUTCOMES: &[SyncOutcome] = SyncOutcome::ALL;

/// Counters and histograms the webhook and sync code record into.
pub struct Metrics {
    pub registry: Registry,
    /// `source` = calendly | google; `outcome` = accepted, duplicate, rejected, unmatched, ignored, ...
    pub webhooks: IntCounterVec,
    /// Calendly deliveries refused before their signature verified, by `reason`
    /// (missing, malformed, stale, future, mismatch, no_keys, too_large).
    pub calendly_rejected: IntCounterVec,
    /// `kind` = incremental | full | safety_net; `outcome` = ok | error | needs_reconnect.
    pub google_syncs: IntCounterVec,
    pub google_sync_seconds: HistogramVec,
    /// `endpoint` = token | userinfo | watch | stop | events_list; `status` = HTTP status or `error`.
    pub google_api_calls: IntCounterVec,
    /// Every try of a Microsoft Graph call: `call` = calendars | delta | subscribe |
    /// renew | reauthorize | unsubscribe; `outcome` = ok | unauthorized | state_gone |
    /// not_found | throttled | refused | network | bad_response.
    pub microsoft_api_calls: IntCounterVec,
    /// As `google_syncs`, for Outlook calendars.
    pub microsoft_syncs: IntCounterVec,
    pub microsoft_sync_seconds: HistogramVec,
}

impl Metrics {
    pub fn new(writer: &crate::store::WriterStats) -> Metrics {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            let _ = registry.register(Box::new(c.clone()));
            c
        };
        let webhooks =
            counter("syncgate_webhooks_received_total", "Webhook deliveries received, by source and outcome.", &["source", "outcome"]);
        let calendly_rejected = counter(
            "syncgate_calendly_rejected_total",
            "Calendly deliveries refused before their signature verified, by reason.",
            &["reason"],
        );
        for reason in ["missing", "malformed", "stale", "future", "mismatch", "no_keys", "too_large"] {
            calendly_rejected.with_label_values(&[reason]);
        }
        let google_syncs = counter("syncgate_google_syncs_total", "Google Calendar syncs, by kind and outcome.", &["kind", "outcome"]);
        let google_api_calls =
            counter("syncgate_google_api_calls_total", "Calls to Google's APIs, by endpoint and HTTP status.", &["endpoint", "status"]);
        let microsoft_api_calls = counter(
            "syncgate_microsoft_api_calls_total",
            "Tries of calls to Microsoft Graph, by call and outcome (a throttled try counts as one).",
            &["call", "outcome"],
        );
        let microsoft_syncs = counter(
            "syncgate_microsoft_syncs_total",
            "Outlook calendar syncs (Microsoft Graph), by kind and outcome.",
            &["kind", "outcome"],
        );
        let histogram = |name: &str, help: &str| {
            let h = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]),
                &["kind"],
            )
            .expect("valid metric");
            let _ = registry.register(Box::new(h.clone()));
            h
        };
        let google_sync_seconds = histogram("syncgate_google_sync_duration_seconds", "Duration of Google Calendar syncs, by kind.");
        let microsoft_sync_seconds =
            histogram("syncgate_microsoft_sync_duration_seconds", "Duration of Outlook calendar syncs (Microsoft Graph), by kind.");
        // Touching a label set creates its series at 0.
        for (source, outcomes) in WEBHOOK_OUTCOMES {
            for outcome in *outcomes {
                webhooks.with_label_values(&[source, outcome.as_str()]);
            }
        }
        for kind in SYNC_KINDS {
            for outcome in SYNC_OUTCOMES {
                google_syncs.with_label_values(&[kind.as_str(), outcome.as_str()]);
                microsoft_syncs.with_label_values(&[kind.as_str(), outcome.as_str()]);
            }
            google_sync_seconds.with_label_values(&[kind.as_str()]);
            microsoft_sync_seconds.with_label_values(&[kind.as_str()]);
        }
        let _ = registry.register(Box::new(writer.batch_size.clone()));
        let _ = registry.register(Box::new(writer.commit_seconds.clone()));
        Metrics {
            registry,
            webhooks,
            calendly_rejected,
            google_syncs,
            google_sync_seconds,
            google_api_calls,
            microsoft_api_calls,
            microsoft_syncs,
            microsoft_sync_seconds,
        }
    }

    pub fn webhook(&self, source: &str, outcome: &str) {
        self.webhooks.with_label_values(&[source, outcome]).inc();
    }
}
