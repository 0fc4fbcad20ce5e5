-- Which process holds a node's name: a random value each `sandpool serve`
-- picks at start, so a second process under the same name is refused
-- while the first is alive.

-- +goose Up
ALTER TABLE nodes ADD COLUMN incarnation TEXT NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE nodes DROP COLUMN incarnation;
