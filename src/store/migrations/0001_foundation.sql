-- users: advisers and admins. Google token columns are never returned by any API.
CREATE TABLE users (
    id                      INTEGER PRIMARY KEY,
    email                   TEXT NOT NULL UNIQUE COLLATE NOCASE,
    name                    TEXT,
    role                    TEXT NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'admin')),
    calendly_user_uri       TEXT UNIQUE,
    timezone                TEXT NOT NULL DEFAULT 'UTC',
    google_sub              TEXT,
    google_refresh_token    TEXT,
    google_access_token     TEXT,
    google_token_expires_at TEXT,
    google_sync_token       TEXT,
    google_needs_reconnect  INTEGER NOT NULL DEFAULT 0,
    created_at              TEXT NOT NULL,
    updated_at              TEXT NOT NULL
);

-- Single-use sign-in links made by `syncgate login-link`; only a hash of the code is kept.
CREATE TABLE login_links (
    code_hash  TEXT PRIMARY KEY,
    user_id    INTEGER NOT NULL REFERENCES users (id),
    expires_at TEXT NOT NULL,
    used_at    TEXT
);

-- Synced tables: written only by the writer, every change logged in `changes`.
-- No ON DELETE actions and no triggers: the writer makes and logs dependent changes itself.
CREATE TABLE clients (
    id         INTEGER PRIMARY KEY,
    user_id    INTEGER NOT NULL REFERENCES users (id),
    name       TEXT NOT NULL,
    email      TEXT COLLATE NOCASE,
    phone      TEXT,
    notes      TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (user_id, email)
);

CREATE TABLE meetings (
    id          INTEGER PRIMARY KEY,
    user_id     INTEGER NOT NULL REFERENCES users (id),
    source      TEXT NOT NULL CHECK (source IN ('google', 'calendly', 'manual')),
    external_id TEXT,
    title       TEXT NOT NULL,
    description TEXT,
    location    TEXT,
    meeting_url TEXT,
    starts_at   TEXT NOT NULL,
    ends_at     TEXT NOT NULL,
    all_day     INTEGER NOT NULL DEFAULT 0,
    timezone    TEXT,
    status      TEXT NOT NULL DEFAULT 'scheduled' CHECK (status IN ('scheduled', 'canceled', 'no_show')),
    client_id   INTEGER REFERENCES clients (id),
    attendees   TEXT NOT NULL DEFAULT '[]',
    notes       TEXT,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    UNIQUE (user_id, source, external_id)
);
CREATE INDEX meetings_user_starts ON meetings (user_id, starts_at);
CREATE INDEX meetings_client ON meetings (client_id);

CREATE TABLE pipeline (
    id             INTEGER PRIMARY KEY,
    user_id        INTEGER NOT NULL REFERENCES users (id),
    client_id      INTEGER REFERENCES clients (id),
    title          TEXT NOT NULL,
    stage          TEXT NOT NULL DEFAULT 'lead' CHECK (stage IN ('lead', 'qualified', 'proposal', 'won', 'lost')),
    value          REAL NOT NULL DEFAULT 0,
    expected_close TEXT,
    notes          TEXT,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);
CREATE INDEX pipeline_user ON pipeline (user_id);
CREATE INDEX pipeline_client ON pipeline (client_id);

-- Google push channels. A renewal overlaps an `active` and a `retiring` channel.
CREATE TABLE calendar_watch_channels (
    id          INTEGER PRIMARY KEY,
    user_id     INTEGER NOT NULL REFERENCES users (id),
    calendar_id TEXT NOT NULL DEFAULT 'primary',
    channel_id  TEXT NOT NULL UNIQUE,
    resource_id TEXT,
    token       TEXT NOT NULL,
    expiration  TEXT,
    webhook_url TEXT NOT NULL,
    state       TEXT NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'retiring')),
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE UNIQUE INDEX calendar_watch_channels_one_active
    ON calendar_watch_channels (user_id, calendar_id) WHERE state = 'active';

-- Every Calendly delivery, accepted or not.
CREATE TABLE calendly_webhook_events (
    id          INTEGER PRIMARY KEY,
    event       TEXT,
    invitee_uri TEXT,
    dedupe_key  TEXT UNIQUE,
    received_at TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    error       TEXT,
    payload     TEXT,
    user_id     INTEGER,
    meeting_id  INTEGER
);
CREATE INDEX calendly_webhook_events_received ON calendly_webhook_events (received_at);

-- The durable change log: one row per committed change, in commit order.
CREATE TABLE changes (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    table_name   TEXT NOT NULL,
    op           TEXT NOT NULL CHECK (op IN ('INSERT', 'UPDATE', 'DELETE')),
    row_id       INTEGER NOT NULL,
    user_id      INTEGER NOT NULL,
    record       TEXT,
    old_record   TEXT,
    committed_at TEXT NOT NULL
);
CREATE INDEX changes_committed_at ON changes (committed_at);
