package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/store"
)

func (s *DB) PutIdempotency(ctx context.Context, idem store.Idempotency) (store.Idempotency, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return store.Idempotency{}, err
	}
	defer tx.Rollback() // after Commit this does nothing
	now := time.Now().UnixNano()
	if _, err := tx.ExecContext(ctx, s.q("DELETE FROM idempotency_keys WHERE expires_at < ?"), now); err != nil {
		return store.Idempotency{}, err
	}
	var got store.Idempotency
	var exp int64
	err = tx.QueryRowContext(ctx, s.q("SELECT tenant, key, body_hash, sandbox_id, expires_at FROM idempotency_keys WHERE tenant = ? AND key = ?"),
		idem.Tenant, idem.Key).Scan(&got.Tenant, &got.Key, &got.BodyHash, &got.SandboxID, &exp)
	switch {
	case err == nil:
		got.ExpiresAt = fromNanos(exp)
		return got, errdefs.ErrExists
	case !errors.Is(err, sql.ErrNoRows):
		return store.Idempotency{}, err
	}
	if _, err := tx.ExecContext(ctx, s.q("INSERT INTO idempotency_keys (tenant, key, body_hash, sandbox_id, expires_at) VALUES (?, ?, ?, ?, ?)"),
		idem.Tenant, idem.Key, idem.BodyHash, idem.SandboxID, nanos(idem.ExpiresAt)); err != nil {
		if s.d.IsUnique(err) {
			return store.Idempotency{}, fmt.Errorf("idempotency key raced: %w", errdefs.ErrConflict)
		}
		return store.Idempotency{}, err
	}
	return idem, tx.Commit()
}

func (s *DB) SetIdempotency(ctx context.Context, tenant, key, sandboxID string) error {
	_, err := s.exec(ctx, "UPDATE idempotency_keys SET sandbox_id = ? WHERE tenant = ? AND key = ?", sandboxID, tenant, key)
	return err
}

func (s *DB) DeleteIdempotency(ctx context.Context, tenant, key string) error {
	_, err := s.exec(ctx, "DELETE FROM idempotency_keys WHERE tenant = ? AND key = ?", tenant, key)
	return err
}
