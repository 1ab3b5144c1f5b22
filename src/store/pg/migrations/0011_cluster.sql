-- PostgreSQL twin of src/store/migrations/0011_cluster.sql: the node
-- registry, the leases with their fencing tokens, and the per-user count of
-- Google syncs asked for and finished.
CREATE TABLE cluster_nodes (
    id                   text PRIMARY KEY,
    address              text NOT NULL,
    version              text NOT NULL,
    started_at           timestamptz(3) NOT NULL,
    heartbeat_at         timestamptz(3) NOT NULL,
    published_seq        bigint NOT NULL DEFAULT 0,
    settings_fingerprint text NOT NULL
);
CREATE TABLE cluster_leases (
    name        text PRIMARY KEY,
    holder      text,
    token       bigint NOT NULL DEFAULT 0,
    acquired_at timestamptz(3),
    expires_at  timestamptz(3)
);
ALTER TABLE google_sync_status ADD COLUMN passes_wanted bigint NOT NULL DEFAULT 0;
ALTER TABLE google_sync_status ADD COLUMN passes_done bigint NOT NULL DEFAULT 0;
