-- Pools, their sandboxes, and templates with hooks.

-- +goose Up
ALTER TABLE sandboxes ADD COLUMN pool TEXT NOT NULL DEFAULT '';
ALTER TABLE sandboxes ADD COLUMN uses INTEGER NOT NULL DEFAULT 0;
CREATE INDEX sandboxes_pool ON sandboxes (pool, status, updated_at);

CREATE TABLE pools (
    name       TEXT PRIMARY KEY,
    tenant     TEXT NOT NULL,
    config     TEXT NOT NULL,
    status     TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE templates (
    name       TEXT PRIMARY KEY,
    base       TEXT NOT NULL,
    hooks      TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- +goose Down
DROP TABLE templates;
DROP TABLE pools;
DROP INDEX sandboxes_pool;
ALTER TABLE sandboxes DROP COLUMN uses;
ALTER TABLE sandboxes DROP COLUMN pool;
