-- PostgreSQL twin of src/store/migrations/0012_microsoft.sql: meetings of
-- source 'microsoft', Graph subscriptions as channels of a second provider,
-- and the Microsoft tables.
ALTER TABLE meetings DROP CONSTRAINT meetings_source_check;
ALTER TABLE meetings ADD CONSTRAINT meetings_source_check CHECK (source IN ('google', 'calendly', 'manual', 'microsoft'));
ALTER TABLE meetings ADD COLUMN microsoft_event_id text;
CREATE INDEX meetings_microsoft_event ON meetings (user_id, microsoft_event_id);

ALTER TABLE calendar_watch_channels ADD COLUMN provider text NOT NULL DEFAULT 'google' CHECK (provider IN ('google', 'microsoft'));
DROP INDEX calendar_watch_channels_one_active;
CREATE UNIQUE INDEX calendar_watch_channels_one_active
    ON calendar_watch_channels (provider, user_id, calendar_id) WHERE state = 'active';

CREATE TABLE microsoft_accounts (
    user_id          bigint PRIMARY KEY REFERENCES users (id),
    tenant_id        text NOT NULL,
    object_id        text NOT NULL,
    username         text,
    refresh_token    text,
    access_token     text,
    token_expires_at timestamptz(3),
    needs_reconnect  boolean NOT NULL DEFAULT false,
    connected_at     timestamptz(3) NOT NULL,
    updated_at       timestamptz(3) NOT NULL,
    UNIQUE (tenant_id, object_id)
);

CREATE TABLE microsoft_calendars (
    user_id     bigint NOT NULL REFERENCES users (id),
    calendar_id text NOT NULL,
    name        text NOT NULL,
    color       text,
    is_primary  boolean NOT NULL DEFAULT false,
    selected    boolean NOT NULL DEFAULT false,
    delta_link  text,
    updated_at  timestamptz(3) NOT NULL,
    PRIMARY KEY (user_id, calendar_id)
);

CREATE TABLE microsoft_sync_status (
    user_id                    bigint PRIMARY KEY REFERENCES users (id),
    last_notification_at       timestamptz(3),
    notifications              bigint NOT NULL DEFAULT 0,
    last_sync_at               timestamptz(3),
    last_sync_kind             text,
    last_sync_outcome          text,
    last_error                 text,
    last_full_sync_at          timestamptz(3),
    syncs                      bigint NOT NULL DEFAULT 0,
    failed_syncs               bigint NOT NULL DEFAULT 0,
    created                    bigint NOT NULL DEFAULT 0,
    updated                    bigint NOT NULL DEFAULT 0,
    canceled                   bigint NOT NULL DEFAULT 0,
    renewals                   bigint NOT NULL DEFAULT 0,
    last_renewal_at            timestamptz(3),
    renewal_failures           bigint NOT NULL DEFAULT 0,
    last_renewal_error         text,
    last_renewal_error_at      timestamptz(3),
    next_renewal_attempt_at    timestamptz(3),
    safety_net_syncs           bigint NOT NULL DEFAULT 0,
    safety_net_changes         bigint NOT NULL DEFAULT 0,
    last_safety_net_at         timestamptz(3),
    last_safety_net_changes_at timestamptz(3),
    passes_wanted              bigint NOT NULL DEFAULT 0,
    passes_done                bigint NOT NULL DEFAULT 0,
    dropped_notifications      bigint NOT NULL DEFAULT 0
);
