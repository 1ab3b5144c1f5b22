//! syncgate keeps financial advisers' meetings in sync with Google Calendar and
//! Calendly by webhooks, stores them with clients and a sales pipeline in an
//! embedded SQLite file (or a PostgreSQL database), and pushes every
//! committed change to the browsers allowed to see it over a
//! Supabase-Realtime-compatible WebSocket.
//!
//! # Layout
//! One folder (or file) per part. An import only goes down this list, never
//! back up (`tests/api/layout.rs` checks it, with the other seams below).
//! - [`duration`], [`backoff`], [`model`]: `15m`-style durations; the one
//!   retry wait; the closed value sets (meeting status, delivery outcome,
//!   sync kind, role) with their text forms.
//! - [`config`]: the settings, their defaults, `config.toml` and `SYNCGATE_*`
//!   overrides, validation, the JWT secret file and the data folder's private files.
//! - [`store`]: every SQL statement, behind domain operations on [`store::Store`]
//!   (nothing outside it sees a connection): migrations, the read pool, the one
//!   group-commit writer and the `changes` log it keeps in the same transaction
//!   as each write; `StoreError`. The SQL is written once over `store::sql`
//!   for both engines; `store/pg/` holds what only PostgreSQL needs (its
//!   connections and TLS, its numbered migrations and runner, the URL that
//!   hides its password); `store::move_to_pg` moves a SQLite team across.
//! - [`cluster`]: several nodes on one PostgreSQL: the change-log tail that
//!   feeds the hub every node's commits in seq order, leases (with fencing)
//!   for work that must run on one node, the node registry and heartbeat.
//! - [`counters`]: the Prometheus handles the webhook and sync code count into.
//! - [`auth`]: HS256 tokens, login links, and the identity check REST and
//!   realtime share (user exists, active, role, not signed out), cached per user.
//! - [`http`]: the HTTP edge the routes share: `ApiError` (the one JSON error
//!   shape, mapped from the parts' typed errors), the identity filter, body and
//!   query limits, replies, recover, CORS, the log throttle.
//! - [`realtime`]: the Supabase-Realtime socket: protocol, sessions, the hub
//!   and the fanout step.
//! - [`calendly`]: the Calendly webhook (signature, payload, booking) and the
//!   Calendly API client behind `syncgate calendly`.
//! - [`provider`]: what the calendar providers share: credentials that
//!   never print, the handles their background work runs with.
//! - [`google`]: Google sign-in, the calendars a user ticks, push channels and
//!   their renewal, the incremental sync, and their routes.
//! - [`microsoft`]: Microsoft 365 / Outlook: connect, Graph subscriptions,
//!   the delta sync, and their routes.
//! - [`api`]: REST for clients, meetings and pipeline, `/api/me`, login links.
//! - [`web`]: the embedded browser UI under `static/`.
//! - [`accounts`]: account changes (invite, role, disable, remove, sign out
//!   everywhere) and what they set off in realtime and Google.
//! - [`ops`]: health, `/metrics`, admin health, alerts, retention, backup and
//!   check, the running-server file.
//! - [`startup`]: the wiring: builds each part with the handles it needs,
//!   combines the route table, serves, shuts down in order (every task told to
//!   stop and awaited, before the writer is drained). Only [`cli`] imports it.
//! - [`cli`]: the `syncgate` command line.
//!
//! # The path of one Calendly delivery to a browser
//! 1. `startup.rs` accepts the connection and hands the request to the route table.
//! 2. `calendly/mod.rs` reads the body within its limit, checks it with
//!    `calendly/signature.rs`, parses it with `calendly/payload.rs`.
//! 3. `calendly/booking.rs` decides what the delivery means, step by step, through
//!    `store/calendly.rs`'s `BookingStore`, inside one request of
//!    `store/writer.rs`, which writes each row and its `changes` row together
//!    and answers after COMMIT (then the webhook answers 200).
//! 4. `cluster/tail.rs` passes the committed batch on in seq order (after
//!    reading the log for any seqs another node committed before it), and
//!    `realtime/hub.rs` appends each change to the feeds of the users
//!    allowed to see it. Another node's commits take the same step: its
//!    NOTIFY (or the poll) wakes the tail, which reads them from the log.
//! 5. `realtime/fanout.rs` turns what is new for one socket into frames, each
//!    encoded once (`realtime/protocol.rs`).
//! 6. `realtime/session.rs` writes them to the socket.
//!
//! A Google notification takes the same path from step 3: `google/routes.rs`
//! checks the channel (`store/watch_channels.rs`) and queues a sync;
//! `google/sync.rs` lists the changed events with `google/client.rs`, decides
//! what each one means, and applies the page with `store/google_sync.rs`
//! through the writer.

pub mod accounts;
pub mod api;
pub mod auth;
pub mod backoff;
pub mod calendly;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod counters;
pub mod duration;
pub mod google;
pub mod http;
pub mod microsoft;
pub mod model;
pub mod ops;
pub mod provider;
pub mod realtime;
pub mod startup;
pub mod store;
pub mod web;
