-- Timeouts, activity, pause and archive.

-- +goose Up
ALTER TABLE sandboxes ADD COLUMN timeout_s INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sandboxes ADD COLUMN on_timeout TEXT NOT NULL DEFAULT 'pause';
ALTER TABLE sandboxes ADD COLUMN archive_after_s INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sandboxes ADD COLUMN last_active BIGINT NOT NULL DEFAULT 0;
ALTER TABLE sandboxes ADD COLUMN paused_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE sandboxes ADD COLUMN timeout_left_ms BIGINT NOT NULL DEFAULT 0;
ALTER TABLE sandboxes ADD COLUMN archived INTEGER NOT NULL DEFAULT 0;

-- +goose Down
ALTER TABLE sandboxes DROP COLUMN archived;
ALTER TABLE sandboxes DROP COLUMN timeout_left_ms;
ALTER TABLE sandboxes DROP COLUMN paused_at;
ALTER TABLE sandboxes DROP COLUMN last_active;
ALTER TABLE sandboxes DROP COLUMN archive_after_s;
ALTER TABLE sandboxes DROP COLUMN on_timeout;
ALTER TABLE sandboxes DROP COLUMN timeout_s;
