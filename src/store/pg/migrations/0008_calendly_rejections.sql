-- PostgreSQL twin of src/store/migrations/0008_calendly_rejections.sql.
-- Calendly deliveries refused before their signature verified, counted one
-- row per minute and reason. `minute` is the instant the minute starts.
CREATE TABLE calendly_rejections (
    minute  timestamptz(3) NOT NULL,
    reason  text NOT NULL,
    count   bigint NOT NULL,
    last_at timestamptz(3) NOT NULL,
    PRIMARY KEY (minute, reason)
);
CREATE INDEX calendly_rejections_last ON calendly_rejections (last_at);
