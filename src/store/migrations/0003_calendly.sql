-- Calendly: signing keys stored by `syncgate calendly subscribe`, the invitee
-- links that pair reschedules and track group events, and what the delivery
-- log needs for admins.

-- Kept in clear because verifying an HMAC needs the key itself; never returned by any API.
CREATE TABLE calendly_signing_keys (
    id               INTEGER PRIMARY KEY,
    signing_key      TEXT NOT NULL UNIQUE,
    user_id          INTEGER REFERENCES users (id),
    subscription_uri TEXT,
    callback_url     TEXT NOT NULL,
    scope            TEXT NOT NULL,
    created_at       TEXT NOT NULL
);

-- Every invitee URI heard of: its meeting and state. `expected` rows are new
-- invitees announced by a reschedule whose creation has not arrived yet.
-- meeting_id has no foreign key on purpose: a Calendly meeting may be deleted
-- through REST, and a key without ON DELETE would forbid that (no cascades on
-- synced tables); a link to a deleted meeting is treated as unknown.
CREATE TABLE calendly_invitees (
    invitee_uri TEXT PRIMARY KEY,
    user_id     INTEGER NOT NULL REFERENCES users (id),
    meeting_id  INTEGER NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('expected', 'active', 'no_show', 'canceled', 'rescheduled')),
    old_invitee TEXT,
    new_invitee TEXT,
    updated_at  TEXT NOT NULL
);
CREATE INDEX calendly_invitees_meeting ON calendly_invitees (meeting_id, state);

-- The host a delivery named when it matched no user, and what a delivery changed.
ALTER TABLE calendly_webhook_events ADD COLUMN host TEXT;
ALTER TABLE calendly_webhook_events ADD COLUMN summary TEXT;
CREATE INDEX calendly_webhook_events_outcome ON calendly_webhook_events (outcome, received_at);
