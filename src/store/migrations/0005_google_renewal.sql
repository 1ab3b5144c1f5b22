-- Google Calendar II: what operations need to see about channel renewal and
-- the safety-net sync, per connected user (one row in google_sync_status).

-- Channel renewal: successes, and the current run of failures (0 once a
-- renewal works again), with the last error and when the next try is due.
ALTER TABLE google_sync_status ADD COLUMN renewals INTEGER NOT NULL DEFAULT 0;
ALTER TABLE google_sync_status ADD COLUMN last_renewal_at TEXT;
ALTER TABLE google_sync_status ADD COLUMN renewal_failures INTEGER NOT NULL DEFAULT 0;
ALTER TABLE google_sync_status ADD COLUMN last_renewal_error TEXT;
ALTER TABLE google_sync_status ADD COLUMN last_renewal_error_at TEXT;
ALTER TABLE google_sync_status ADD COLUMN next_renewal_attempt_at TEXT;

-- The safety-net sync: how often it ran and how many meeting changes it
-- found. Changes found here are changes no push announced, so a growing
-- safety_net_changes means Google's notifications are not arriving.
ALTER TABLE google_sync_status ADD COLUMN safety_net_syncs INTEGER NOT NULL DEFAULT 0;
ALTER TABLE google_sync_status ADD COLUMN safety_net_changes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE google_sync_status ADD COLUMN last_safety_net_at TEXT;
ALTER TABLE google_sync_status ADD COLUMN last_safety_net_changes_at TEXT;
