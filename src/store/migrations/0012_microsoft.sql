-- Microsoft 365 / Outlook (issue 20): accounts keyed by tenant and object id,
-- their calendars with each one's delta link, per-user sync bookkeeping,
-- Graph subscriptions kept as channels of a second provider, and meetings
-- of source 'microsoft'. Only additions and a wider CHECK, so the previous
-- binary still runs on it during a rolling deploy; sign-in states of both
-- providers go to google_oauth_states, which keeps its name for that reason.

-- meetings.source gains 'microsoft', and meetings gain microsoft_event_id
-- (NULL for every existing row). SQLite cannot change a CHECK in place,
-- so the table is rebuilt with the same columns, rows and indexes (no table
-- refers to meetings, so dropping the old one cascades to nothing).
CREATE TABLE meetings_new (
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
INSERT INTO meetings_new (id, user_id, source, external_id, title, description, location, meeting_url, starts_at, ends_at,
                          all_day, timezone, status, client_id, attendees, notes, created_at, updated_at, invitees, cancel_url,
                          reschedule_url, cancel_reason, canceled_by, previous_starts_at, google_event_id, calendar_id, calendar_name)
SELECT id, user_id, source, external_id, title, description, location, meeting_url, starts_at, ends_at,
       all_day, timezone, status, client_id, attendees, notes, created_at, updated_at, invitees, cancel_url,
       reschedule_url, cancel_reason, canceled_by, previous_starts_at, google_event_id, calendar_id, calendar_name
FROM meetings;
DROP TABLE meetings;
ALTER TABLE meetings_new RENAME TO meetings;
CREATE INDEX meetings_user_starts ON meetings (user_id, starts_at);
CREATE INDEX meetings_client ON meetings (client_id);
CREATE INDEX meetings_google_event ON meetings (user_id, google_event_id);
-- The Outlook event of a meeting (its immutable id), kept when a Calendly
-- booking takes the Outlook copy over, so later edits of the event still
-- find the booking (as google_event_id does for Google).
CREATE INDEX meetings_microsoft_event ON meetings (user_id, microsoft_event_id);

-- Push channels of either provider: a Google channel or a Graph subscription
-- (channel_id: the subscription id; token: its clientState). Still at most
-- one active per calendar, now per provider.
ALTER TABLE calendar_watch_channels ADD COLUMN provider TEXT NOT NULL DEFAULT 'google' CHECK (provider IN ('google', 'microsoft'));
DROP INDEX calendar_watch_channels_one_active;
CREATE UNIQUE INDEX calendar_watch_channels_one_active
    ON calendar_watch_channels (provider, user_id, calendar_id) WHERE state = 'active';

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
