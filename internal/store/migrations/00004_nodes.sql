-- Nodes and leases, for several nodes on one database.

-- +goose Up
CREATE TABLE nodes (
    id           TEXT PRIMARY KEY,
    address      TEXT NOT NULL,
    capacity     INTEGER NOT NULL,
    status       TEXT NOT NULL,
    heartbeat_at BIGINT NOT NULL,
    started_at   BIGINT NOT NULL
);

CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    term       BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);

CREATE INDEX sandboxes_node ON sandboxes (node, status);

-- One row: the secret nodes use between themselves.
CREATE TABLE cluster (
    id     INTEGER PRIMARY KEY,
    secret TEXT NOT NULL
);

-- +goose Down
DROP TABLE cluster;
DROP INDEX sandboxes_node;
DROP TABLE leases;
DROP TABLE nodes;
