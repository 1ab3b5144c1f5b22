//! syncgate keeps financial advisers' meetings in sync with Google Calendar and
//! Calendly by webhooks, stores them with clients and a sales pipeline in an
//! embedded SQLite file, and pushes every committed change to the browsers
//! allowed to see it over a Supabase-Realtime-compatible WebSocket.
//!
//! # Layout
//! - [`config`]: the settings, their defaults, `config.toml` and `SYNCGATE_*` overrides.
//! - [`duration`]: `180s` / `15m` / `24h` / `7d` durations used in config and flags.
//! - [`error`]: the one JSON error shape every 4xx/5xx answer uses.
//! - [`auth`]: HS256 tokens (user tokens, anon key), login links.
//! - [`identity`]: who a token is now (user exists, active, role, not signed
//!   out): the one check REST and realtime share, cached per user.
//! - [`accounts`]: account changes (invite, role, disable, remove, sign out
//!   everywhere) and what they set off: the audit log, open sockets checked
//!   again, Google channels stopped or restarted.
//! - [`store`]: the schema and migrations, the read pool, the single group-commit
//!   writer and the `changes` log it keeps in the same transaction as each write.
//! - [`api`]: REST routes for clients, meetings and pipeline.
//! - [`realtime`]: the WebSocket protocol, sessions and the in-memory fanout hub.
//! - [`webhooks`]: inbound Calendly deliveries and Google Calendar notifications.
//! - [`calendly_api`]: the client for Calendly's API behind `syncgate calendly subscribe|status`.
//! - [`google`]: Google sign-in, the calendars each user ticks, their push channels and the
//!   per-user incremental calendar sync.
//! - [`alerts`]: the webhook health monitor (expiring channels, revoked access, rejected or disabled Calendly hooks).
//! - [`metrics`]: Prometheus counters and histograms, rendered at `/metrics`.
//! - [`web`]: the embedded browser UI under `static/`.
//! - [`http_limits`]: the request-body idle timeout (408) hyper lacks.
//! - [`backoff`]: the one retry wait (exponential, jittered, capped, `Retry-After` honoured).
//! - [`server`]: wiring: binds the listener, runs background tasks, shuts down cleanly
//!   (every task told to stop and awaited, the writers before the writer is drained).
//! - [`cli`]: the `syncgate` command line (serve, user, token, login-link, ...).

pub mod accounts;
pub mod api;
pub mod auth;
pub mod backoff;
pub mod calendly;
pub mod cli;
pub mod config;
pub mod counters;
pub mod duration;
pub mod google;
pub mod http;
pub mod model;
pub mod ops;
pub mod realtime;
pub mod startup;
pub mod store;
pub mod web;
