-- PostgreSQL twin of src/store/migrations/0004_google.sql.
-- Google Calendar: sign-in states and per-user sync bookkeeping.

-- Sign-in states already used (only a hash of each state's nonce); what makes
-- a signed state single-use. Rows past expires_at are pruned.
CREATE TABLE google_oauth_states (
    nonce_hash text PRIMARY KEY,
    expires_at timestamptz(3) NOT NULL,
    used_at    timestamptz(3) NOT NULL
);
CREATE INDEX google_oauth_states_expires ON google_oauth_states (expires_at);

-- What operations need to see per connected user: when Google last pushed,
-- how the last sync went, and running totals.
CREATE TABLE google_sync_status (
    user_id              bigint PRIMARY KEY REFERENCES users (id),
    last_notification_at timestamptz(3),
    notifications        bigint NOT NULL DEFAULT 0,
    last_sync_at         timestamptz(3),
    last_sync_kind       text,
    last_sync_outcome    text,
    last_error           text,
    last_full_sync_at    timestamptz(3),
    syncs                bigint NOT NULL DEFAULT 0,
    failed_syncs         bigint NOT NULL DEFAULT 0,
    created              bigint NOT NULL DEFAULT 0,
    updated              bigint NOT NULL DEFAULT 0,
    canceled             bigint NOT NULL DEFAULT 0
);
