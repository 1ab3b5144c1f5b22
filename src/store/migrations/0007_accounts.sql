-- Accounts: a user can be disabled (keeps their data, refuses their tokens)
-- and signed out everywhere (tokens issued at or before tokens_valid_after are
-- refused). last_seen is written at most once a minute and never logged as a
-- change. Every account change an admin (or the CLI) makes is kept in
-- audit_log for auth.audit_retention.
ALTER TABLE users ADD COLUMN status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled'));
ALTER TABLE users ADD COLUMN tokens_valid_after TEXT;
ALTER TABLE users ADD COLUMN last_seen TEXT;

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

CREATE INDEX audit_log_at ON audit_log (at);
