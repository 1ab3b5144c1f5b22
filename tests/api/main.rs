//! The integration suite: one test binary, one module per feature. Every test
//! starts the real server on 127.0.0.1:0 with a fresh SQLite file, or with
//! `SYNCGATE_TEST_ENGINE=postgres` a fresh schema of its own on the
//! PostgreSQL server `SYNCGATE_TEST_DATABASE_URL` names (`helpers`); the
//! tests reach the database through `helpers::TestDb`, whichever the engine.
//! The PostgreSQL-specific tests (`pg_*`, `move_to_pg`) each make a database
//! (or a whole cluster, `pg_private`) of their own. The cluster tests
//! (`cluster`, PostgreSQL pass only) run several `syncgate serve` processes
//! on one schema (`cluster_nodes`).

mod accounts;
mod accounts_cli;
mod accounts_google;
mod alerts;
mod bad_input;
mod calendly;
mod changelog;
mod cli;
mod cluster;
mod cluster_nodes;
mod cors;
mod crud;
mod engine_rules;
mod fake_calendly;
mod fake_google;
mod fake_graph;
mod fake_service;
mod google;
mod google_calendars;
mod google_renewal;
mod graph_fake_checks;
mod hardening_browser;
mod hardening_calendly;
mod hardening_config;
mod hardening_connections;
mod hardening_files;
mod hardening_google;
mod hardening_input;
mod hardening_snapshot;
mod helpers;
mod isolation;
mod join_checks;
mod layout;
mod logs;
mod metrics;
mod microsoft_account_changes;
mod microsoft_client;
mod microsoft_connect;
mod microsoft_e2e;
mod microsoft_recurring;
mod microsoft_sync;
mod microsoft_team;
mod microsoft_throttling;
mod move_to_pg;
mod nodes;
mod ops;
mod pg_database;
mod pg_ops;
mod pg_private;
mod pg_schema;
mod pg_tls;
mod pg_writer;
mod realtime;
mod rest_v1;
mod restart;
mod resume;
mod schema_shape;
mod shutdown_tasks;
mod tail;
mod test_db;
