-- PostgreSQL twin of src/store/migrations/0006_google_calendars.sql.
-- Google Calendar III: several calendars per user, events that are not
-- meetings, declined invitations, moved and recurring events.

-- The user's calendars, which ones are ticked, and per ticked calendar its
-- sync token, the end of the window imported so far, and its time zone.
CREATE TABLE google_calendars (
    user_id     bigint NOT NULL REFERENCES users (id),
    calendar_id text NOT NULL,
    name        text NOT NULL,
    color       text,
    is_primary  boolean NOT NULL DEFAULT false,
    selected    boolean NOT NULL DEFAULT false,
    sync_token  text,
    window_end  timestamptz(3),
    time_zone   text,
    updated_at  timestamptz(3) NOT NULL,
    PRIMARY KEY (user_id, calendar_id)
);

-- Which meeting each (calendar, event) is. No foreign key to meetings: a
-- meeting deleted through REST leaves its links, which are then ignored.
-- `occurrence` stays text: it is Google's original start as given, a date or
-- a date-time, compared as it came.
CREATE TABLE google_event_links (
    user_id     bigint NOT NULL REFERENCES users (id),
    calendar_id text NOT NULL,
    event_id    text NOT NULL,
    meeting_id  bigint NOT NULL,
    ical_uid    text,
    occurrence  text,
    series_id   text,
    PRIMARY KEY (user_id, calendar_id, event_id)
);
CREATE INDEX google_event_links_event ON google_event_links (user_id, event_id);
CREATE INDEX google_event_links_ical ON google_event_links (user_id, ical_uid, occurrence);
CREATE INDEX google_event_links_meeting ON google_event_links (meeting_id);
CREATE INDEX google_event_links_series ON google_event_links (user_id, series_id);

-- The calendar a Google meeting comes from, and its name for display.
ALTER TABLE meetings ADD COLUMN calendar_id text;
ALTER TABLE meetings ADD COLUMN calendar_name text;

ALTER TABLE users DROP COLUMN google_sync_token;
