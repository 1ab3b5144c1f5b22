-- Calendly deliveries refused before their signature verified write no row of
-- their own (forging them must cost next to nothing): they are counted here,
-- one row per minute and reason, which health and the calendly_rejected alert
-- read. last_at lets windows shorter than a minute count too.
CREATE TABLE calendly_rejections (
    minute  TEXT NOT NULL,
    reason  TEXT NOT NULL,
    count   INTEGER NOT NULL,
    last_at TEXT NOT NULL,
    PRIMARY KEY (minute, reason)
);
CREATE INDEX calendly_rejections_last ON calendly_rejections (last_at);
