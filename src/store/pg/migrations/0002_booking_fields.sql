-- PostgreSQL twin of src/store/migrations/0002_booking_fields.sql.
-- What a booked (Calendly) meeting needs beyond a calendar event.
ALTER TABLE meetings ADD COLUMN invitees jsonb NOT NULL DEFAULT '[]';
ALTER TABLE meetings ADD COLUMN cancel_url text;
ALTER TABLE meetings ADD COLUMN reschedule_url text;
ALTER TABLE meetings ADD COLUMN cancel_reason text;
ALTER TABLE meetings ADD COLUMN canceled_by text;
ALTER TABLE meetings ADD COLUMN previous_starts_at timestamptz(3);
ALTER TABLE meetings ADD COLUMN google_event_id text;
CREATE INDEX meetings_google_event ON meetings (user_id, google_event_id);
