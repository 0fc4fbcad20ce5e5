-- Portable SQL: the same file serves SQLite and PostgreSQL. Times are unix
-- nanoseconds (BIGINT), booleans are integers, JSON is TEXT.

-- +goose Up
CREATE TABLE api_keys (
    id         TEXT PRIMARY KEY,
    tenant     TEXT NOT NULL,
    hash       TEXT NOT NULL UNIQUE,
    admin      INTEGER NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE sandboxes (
    id         TEXT PRIMARY KEY,
    tenant     TEXT NOT NULL,
    template   TEXT NOT NULL,
    status     TEXT NOT NULL,
    spec       TEXT NOT NULL,
    metadata   TEXT NOT NULL DEFAULT '{}',
    error      TEXT NOT NULL DEFAULT '',
    node       TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX sandboxes_tenant ON sandboxes (tenant, created_at);
CREATE INDEX sandboxes_status ON sandboxes (status);

CREATE TABLE idempotency_keys (
    tenant     TEXT NOT NULL,
    key        TEXT NOT NULL,
    body_hash  TEXT NOT NULL,
    sandbox_id TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (tenant, key)
);

-- +goose Down
DROP TABLE idempotency_keys;
DROP TABLE sandboxes;
DROP TABLE api_keys;
