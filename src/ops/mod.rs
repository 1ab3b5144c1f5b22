//! Running syncgate: health and readiness, metrics, the webhook health
//! alerts, retention, and the `backup` / `check` commands. Each part holds
//! only what it uses (`HealthState`, `MetricsState`, `AlertState`,
//! `Retention`), built by the wiring.

pub mod admin_health;
pub mod alerts;
pub mod backup;
pub mod health;
pub mod metrics;
pub mod retention;
pub mod running;
