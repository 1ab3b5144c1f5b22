-- Google Calendar III: several calendars per user, events that are not
-- meetings, declined invitations, moved and recurring events.

-- The user's calendars as calendarList.list gave them, which ones are ticked,
-- and per ticked calendar its own sync token, the end of the window its
-- events were imported up to, and its time zone. Replaces the per-user
-- users.google_sync_token: with no token left, every connected user gets one
-- full sync after the upgrade, which re-judges rows imported before.
CREATE TABLE google_calendars (
    user_id     INTEGER NOT NULL REFERENCES users (id),
    calendar_id TEXT NOT NULL,
    name        TEXT NOT NULL,
    color       TEXT,
    is_primary  INTEGER NOT NULL DEFAULT 0,
    selected    INTEGER NOT NULL DEFAULT 0,
    sync_token  TEXT,
    window_end  TEXT,
    time_zone   TEXT,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (user_id, calendar_id)
);

-- Which meeting each (calendar, event) is. One meeting can be listed by
-- several calendars (a shared calendar, an invitation delivered twice); it
-- is canceled only when no ticked calendar lists it any more. No foreign key
-- to meetings: a meeting deleted through REST leaves its links, which are
-- then ignored.
CREATE TABLE google_event_links (
    user_id     INTEGER NOT NULL REFERENCES users (id),
    calendar_id TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    meeting_id  INTEGER NOT NULL,
    ical_uid    TEXT,
    occurrence  TEXT,
    series_id   TEXT,
    PRIMARY KEY (user_id, calendar_id, event_id)
);
CREATE INDEX google_event_links_event ON google_event_links (user_id, event_id);
CREATE INDEX google_event_links_ical ON google_event_links (user_id, ical_uid, occurrence);
CREATE INDEX google_event_links_meeting ON google_event_links (meeting_id);
CREATE INDEX google_event_links_series ON google_event_links (user_id, series_id);

-- The calendar a Google meeting comes from, and its name for display.
ALTER TABLE meetings ADD COLUMN calendar_id TEXT;
ALTER TABLE meetings ADD COLUMN calendar_name TEXT;

ALTER TABLE users DROP COLUMN google_sync_token;
