-- PostgreSQL twin of src/store/migrations/0009_changes_by_user.sql.
-- A non-admin resume or catch-up reads only its user's changes.
CREATE INDEX changes_user_seq ON changes (user_id, seq);
