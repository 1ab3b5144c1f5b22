-- syncgate's current schema, for reading. The binary builds it from the numbered
-- migrations in src/store/migrations/ (a unit test checks the two agree).
-- Timestamps are TEXT in UTC, RFC 3339 with milliseconds and a Z.

PRAGMA user_version = 6;

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
    google_needs_reconnect  INTEGER NOT NULL DEFAULT 0,
    created_at              TEXT NOT NULL,
    updated_at              TEXT NOT NULL,
    -- active | disabled: a disabled user's tokens are refused; their data stays.
    status                  TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    -- Sign out everywhere: tokens issued (iat) at or before this are refused.
    tokens_valid_after      TEXT,
    -- Written at most once a minute per user; never in the change log.
    last_seen               TEXT
);

CREATE TABLE login_links (
    code_hash  TEXT PRIMARY KEY,
    user_id    INTEGER NOT NULL REFERENCES users (id),
    expires_at TEXT NOT NULL,
    used_at    TEXT
);

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
    id                 INTEGER PRIMARY KEY,
    user_id            INTEGER NOT NULL REFERENCES users (id),
    source             TEXT NOT NULL CHECK (source IN ('google', 'calendly', 'manual', 'microsoft')),
    external_id        TEXT,
    title              TEXT NOT NULL,
    description        TEXT,
    location           TEXT,
    meeting_url        TEXT,
    starts_at          TEXT NOT NULL,
    ends_at            TEXT NOT NULL,
    all_day            INTEGER NOT NULL DEFAULT 0,
    timezone           TEXT,
    status             TEXT NOT NULL DEFAULT 'scheduled' CHECK (status IN ('scheduled', 'canceled', 'no_show')),
    client_id          INTEGER REFERENCES clients (id),
    attendees          TEXT NOT NULL DEFAULT '[]',
    notes              TEXT,
    created_at         TEXT NOT NULL,
    updated_at         TEXT NOT NULL,
    invitees           TEXT NOT NULL DEFAULT '[]',
    cancel_url         TEXT,
    reschedule_url     TEXT,
    cancel_reason      TEXT,
    canceled_by        TEXT,
    previous_starts_at TEXT,
    google_event_id    TEXT,
    calendar_id        TEXT,
    calendar_name      TEXT,
    microsoft_event_id TEXT,
    UNIQUE (user_id, source, external_id)
);

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
    updated_at  TEXT NOT NULL,
    provider    TEXT NOT NULL DEFAULT 'google' CHECK (provider IN ('google', 'microsoft'))
);

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
, host TEXT, summary TEXT);

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

CREATE TABLE calendly_signing_keys (
    id               INTEGER PRIMARY KEY,
    signing_key      TEXT NOT NULL UNIQUE,
    user_id          INTEGER REFERENCES users (id),
    subscription_uri TEXT,
    callback_url     TEXT NOT NULL,
    scope            TEXT NOT NULL,
    created_at       TEXT NOT NULL
);

CREATE TABLE calendly_invitees (
    invitee_uri TEXT PRIMARY KEY,
    user_id     INTEGER NOT NULL REFERENCES users (id),
    meeting_id  INTEGER NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('expected', 'active', 'no_show', 'canceled', 'rescheduled')),
    old_invitee TEXT,
    new_invitee TEXT,
    updated_at  TEXT NOT NULL
);

CREATE TABLE google_oauth_states (
    nonce_hash TEXT PRIMARY KEY,
    expires_at TEXT NOT NULL,
    used_at    TEXT NOT NULL
);

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
, renewals INTEGER NOT NULL DEFAULT 0, last_renewal_at TEXT, renewal_failures INTEGER NOT NULL DEFAULT 0, last_renewal_error TEXT, last_renewal_error_at TEXT, next_renewal_attempt_at TEXT, safety_net_syncs INTEGER NOT NULL DEFAULT 0, safety_net_changes INTEGER NOT NULL DEFAULT 0, last_safety_net_at TEXT, last_safety_net_changes_at TEXT, passes_wanted INTEGER NOT NULL DEFAULT 0, passes_done INTEGER NOT NULL DEFAULT 0);

CREATE TABLE google_calendars (
    user_id     INTEGER NOT NULL REFERENCES users (id),
    calendar_id TEXT NOT NULL,
    name        TEXT NOT NULL,
    color       TEXT,
    is_primary  INTEGER NOT NULL DEFAULT 0,
    selected    INTEGER NOT NULL DEFAULT 0,
    sync_token  TEXT,
    window_end  TEXT,
    time_zone   TEXT,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (user_id, calendar_id)
);

CREATE TABLE google_event_links (
    user_id     INTEGER NOT NULL REFERENCES users (id),
    calendar_id TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    meeting_id  INTEGER NOT NULL,
    ical_uid    TEXT,
    occurrence  TEXT,
    series_id   TEXT,
    PRIMARY KEY (user_id, calendar_id, event_id)
);

-- Who changed which account, and how (kept auth.audit_retention).
CREATE TABLE audit_log (
    id        INTEGER PRIMARY KEY,
    at        TEXT NOT NULL,
    actor_id  INTEGER,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    target_id INTEGER,
    target    TEXT,
    detail    TEXT
);

CREATE INDEX meetings_user_starts ON meetings (user_id, starts_at);

CREATE INDEX meetings_client ON meetings (client_id);

CREATE INDEX pipeline_user ON pipeline (user_id);

CREATE INDEX pipeline_client ON pipeline (client_id);

CREATE UNIQUE INDEX calendar_watch_channels_one_active
    ON calendar_watch_channels (provider, user_id, calendar_id) WHERE state = 'active';

CREATE INDEX calendly_webhook_events_received ON calendly_webhook_events (received_at);

CREATE INDEX changes_committed_at ON changes (committed_at);

CREATE INDEX meetings_google_event ON meetings (user_id, google_event_id);

CREATE INDEX meetings_microsoft_event ON meetings (user_id, microsoft_event_id);

CREATE INDEX calendly_invitees_meeting ON calendly_invitees (meeting_id, state);

CREATE INDEX calendly_webhook_events_outcome ON calendly_webhook_events (outcome, received_at);

CREATE INDEX google_oauth_states_expires ON google_oauth_states (expires_at);

CREATE INDEX google_event_links_event ON google_event_links (user_id, event_id);

CREATE INDEX google_event_links_ical ON google_event_links (user_id, ical_uid, occurrence);

CREATE INDEX google_event_links_meeting ON google_event_links (meeting_id);

CREATE INDEX google_event_links_series ON google_event_links (user_id, series_id);

CREATE INDEX audit_log_at ON audit_log (at);

CREATE TABLE calendly_rejections (
    minute  TEXT NOT NULL,
    reason  TEXT NOT NULL,
    count   INTEGER NOT NULL,
    last_at TEXT NOT NULL,
    PRIMARY KEY (minute, reason)
);

CREATE INDEX calendly_rejections_last ON calendly_rejections (last_at);

CREATE INDEX changes_user_seq ON changes (user_id, seq);

-- The change log's head: the writer numbers each batch's changes from it.
CREATE TABLE seq_head (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL
);

-- Several nodes: who is serving (heartbeats) and who holds which lease.
CREATE TABLE cluster_nodes (
    id                   TEXT PRIMARY KEY,
    address              TEXT NOT NULL,
    version              TEXT NOT NULL,
    started_at           TEXT NOT NULL,
    heartbeat_at         TEXT NOT NULL,
    published_seq        INTEGER NOT NULL DEFAULT 0,
    settings_fingerprint TEXT NOT NULL
);

CREATE TABLE cluster_leases (
    name        TEXT PRIMARY KEY,
    holder      TEXT,
    token       INTEGER NOT NULL DEFAULT 0,
    acquired_at TEXT,
    expires_at  TEXT
);

-- A user's Microsoft account: the tenant (tid) and object id (oid) are who
-- it is; username (preferred_username) is only shown. Tokens never leave
-- the store except to call Microsoft.
CREATE TABLE microsoft_accounts (
    user_id          INTEGER PRIMARY KEY REFERENCES users (id),
    tenant_id        TEXT NOT NULL,
    object_id        TEXT NOT NULL,
    username         TEXT,
    refresh_token    TEXT,
    access_token     TEXT,
    token_expires_at TEXT,
    needs_reconnect  INTEGER NOT NULL DEFAULT 0,
    connected_at     TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    UNIQUE (tenant_id, object_id)
);

-- The user's Outlook calendars, which of them sync, and each one's delta
-- link (written in the transaction of the page it ends).
CREATE TABLE microsoft_calendars (
    user_id     INTEGER NOT NULL REFERENCES users (id),
    calendar_id TEXT NOT NULL,
    name        TEXT NOT NULL,
    color       TEXT,
    is_primary  INTEGER NOT NULL DEFAULT 0,
    selected    INTEGER NOT NULL DEFAULT 0,
    delta_link  TEXT,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (user_id, calendar_id)
);

-- What operations see per connected user, as google_sync_status holds for
-- Google (the same columns, so one set of store operations serves both),
-- plus the notification items refused for a wrong clientState.
CREATE TABLE microsoft_sync_status (
    user_id                    INTEGER PRIMARY KEY REFERENCES users (id),
    last_notification_at       TEXT,
    notifications              INTEGER NOT NULL DEFAULT 0,
    last_sync_at               TEXT,
    last_sync_kind             TEXT,
    last_sync_outcome          TEXT,
    last_error                 TEXT,
    last_full_sync_at          TEXT,
    syncs                      INTEGER NOT NULL DEFAULT 0,
    failed_syncs               INTEGER NOT NULL DEFAULT 0,
    created                    INTEGER NOT NULL DEFAULT 0,
    updated                    INTEGER NOT NULL DEFAULT 0,
    canceled                   INTEGER NOT NULL DEFAULT 0,
    renewals                   INTEGER NOT NULL DEFAULT 0,
    last_renewal_at            TEXT,
    renewal_failures           INTEGER NOT NULL DEFAULT 0,
    last_renewal_error         TEXT,
    last_renewal_error_at      TEXT,
    next_renewal_attempt_at    TEXT,
    safety_net_syncs           INTEGER NOT NULL DEFAULT 0,
    safety_net_changes         INTEGER NOT NULL DEFAULT 0,
    last_safety_net_at         TEXT,
    last_safety_net_changes_at TEXT,
    passes_wanted              INTEGER NOT NULL DEFAULT 0,
    passes_done                INTEGER NOT NULL DEFAULT 0,
    dropped_notifications      INTEGER NOT NULL DEFAULT 0
);
