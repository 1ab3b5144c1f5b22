-- What a booked (Calendly) meeting needs beyond a calendar event.
ALTER TABLE meetings ADD COLUMN invitees TEXT NOT NULL DEFAULT '[]';
ALTER TABLE meetings ADD COLUMN cancel_url TEXT;
ALTER TABLE meetings ADD COLUMN reschedule_url TEXT;
ALTER TABLE meetings ADD COLUMN cancel_reason TEXT;
ALTER TABLE meetings ADD COLUMN canceled_by TEXT;
ALTER TABLE meetings ADD COLUMN previous_starts_at TEXT;
ALTER TABLE meetings ADD COLUMN google_event_id TEXT;
CREATE INDEX meetings_google_event ON meetings (user_id, google_event_id);
