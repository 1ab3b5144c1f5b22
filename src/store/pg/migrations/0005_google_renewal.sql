-- PostgreSQL twin of src/store/migrations/0005_google_renewal.sql.
-- Channel renewal and the safety-net sync, per connected user.
ALTER TABLE google_sync_status ADD COLUMN renewals bigint NOT NULL DEFAULT 0;
ALTER TABLE google_sync_status ADD COLUMN last_renewal_at timestamptz(3);
ALTER TABLE google_sync_status ADD COLUMN renewal_failures bigint NOT NULL DEFAULT 0;
ALTER TABLE google_sync_status ADD COLUMN last_renewal_error text;
ALTER TABLE google_sync_status ADD COLUMN last_renewal_error_at timestamptz(3);
ALTER TABLE google_sync_status ADD COLUMN next_renewal_attempt_at timestamptz(3);

ALTER TABLE google_sync_status ADD COLUMN safety_net_syncs bigint NOT NULL DEFAULT 0;
ALTER TABLE google_sync_status ADD COLUMN safety_net_changes bigint NOT NULL DEFAULT 0;
ALTER TABLE google_sync_status ADD COLUMN last_safety_net_at timestamptz(3);
ALTER TABLE google_sync_status ADD COLUMN last_safety_net_changes_at timestamptz(3);
