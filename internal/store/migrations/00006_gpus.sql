-- Which of its node's GPUs a sandbox holds ("0,2"; "" for none): the
-- lifecycle service rebuilds who holds what from these rows after a
-- restart or a crash. An archived sandbox holds none.

-- +goose Up
ALTER TABLE sandboxes ADD COLUMN gpus TEXT NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE sandboxes DROP COLUMN gpus;
