//! Running syncgate: metrics, the webhook health alerts and retention.

pub mod admin_health;
pub mod alerts;
pub mod metrics;
pub mod retention;
