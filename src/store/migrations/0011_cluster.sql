-- Several nodes on one database (only PostgreSQL runs more than one; SQLite
-- keeps the same tables so the code is one). Each node registers itself and
-- heartbeats; work that must happen once is held by a lease whose token
-- rises by one on every acquisition, so a write made under a lease checks,
-- in its own transaction, that the lease is still the holder's (fencing).
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
-- Google syncs asked for and finished, per user: a node that cannot take a
-- user's sync lease (another node is syncing them) only counts its request,
-- and the holder goes round again until the two agree.
ALTER TABLE google_sync_status ADD COLUMN passes_wanted INTEGER NOT NULL DEFAULT 0;
ALTER TABLE google_sync_status ADD COLUMN passes_done INTEGER NOT NULL DEFAULT 0;
