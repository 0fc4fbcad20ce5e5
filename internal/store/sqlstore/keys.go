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

func (s *DB) CreateKey(ctx context.Context, k store.Key) error {
	if k.CreatedAt.IsZero() {
		k.CreatedAt = time.Now()
	}
	_, err := s.exec(ctx, ("INSERT INTO api_keys (id, tenant, hash, admin, created_at, revoked_at) VALUES (?, ?, ?, ?, ?, 0)"),
		k.ID, k.Tenant, k.Hash, boolInt(k.Admin), nanos(k.CreatedAt))
	if err != nil && s.d.IsUnique(err) {
		return fmt.Errorf("key %s: %w", k.ID, errdefs.ErrExists)
	}
	return err
}

func scanKey(r scanner) (store.Key, error) {
	var k store.Key
	var admin int
	var created, revoked int64
	err := r.Scan(&k.ID, &k.Tenant, &k.Hash, &admin, &created, &revoked)
	k.Admin, k.CreatedAt, k.RevokedAt = admin != 0, fromNanos(created), fromNanos(revoked)
	return k, err
}

func (s *DB) KeyByHash(ctx context.Context, hash string) (store.Key, error) {
	k, err := scanKey(s.queryRow(ctx, ("SELECT " + keyCols + " FROM api_keys WHERE hash = ? AND revoked_at = 0"), hash))
	if errors.Is(err, sql.ErrNoRows) {
		return k, fmt.Errorf("key: %w", errdefs.ErrNotFound)
	}
	return k, err
}

func (s *DB) ListKeys(ctx context.Context) ([]store.Key, error) {
	rows, err := s.query(ctx, "SELECT "+keyCols+" FROM api_keys ORDER BY created_at, id")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []store.Key
	for rows.Next() {
		k, err := scanKey(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, rows.Err()
}

func (s *DB) RevokeKey(ctx context.Context, id string) error {
	res, err := s.exec(ctx, ("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at = 0"), time.Now().UnixNano(), id)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("key %s: %w", id, errdefs.ErrNotFound)
	}
	return nil
}
