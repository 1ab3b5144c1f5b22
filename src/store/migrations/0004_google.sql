-- Google Calendar: sign-in states and per-user sync bookkeeping.

-- Sign-in states already used (only a hash of each state's nonce). The state
-- itself is signed and expires; this table is what makes it single-use. Rows
-- past expires_at are useless and pruned.
CREATE TABLE google_oauth_states (
    nonce_hash TEXT PRIMARY KEY,
    expires_at TEXT NOT NULL,
    used_at    TEXT NOT NULL
);
CREATE INDEX google_oauth_states_expires ON google_oauth_states (expires_at);

-- What operations need to see per connected user: when Google last pushed,
-- how the last sync went, and running totals.
CREATE TABLE google_sync_status (
    user_id              INTEGER PRIMARY KEY REFERENCES users (id),
    last_notification_at TEXT,
    notifications        INTEGER NOT NULL DEFAULT 0,
    last_sync_at         TEXT,
    last_sync_kind       TEXT,
    last_sync_outcome    TEXT,
    last_error           TEXT,
    last_full_sync_at    TEXT,
    syncs                INTEGER NOT NULL DEFAULT 0,
    failed_syncs         INTEGER NOT NULL DEFAULT 0,
    created              INTEGER NOT NULL DEFAULT 0,
    updated              INTEGER NOT NULL DEFAULT 0,
    canceled             INTEGER NOT NULL DEFAULT 0
);
