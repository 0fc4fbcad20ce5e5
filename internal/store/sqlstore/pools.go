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

func (s *DB) TakeIdle(ctx context.Context, t store.Take) (store.Sandbox, error) {
	pick := "SELECT id FROM sandboxes WHERE pool = ? AND status = ?"
	args := []any{t.To, time.Now().UnixNano(), t.SessionTimeout, t.OnTimeout, t.Pool, t.From}
	if t.Node != "" {
		pick += " AND node = ?"
		args = append(args, t.Node)
	}
	pick += " ORDER BY updated_at, id LIMIT 1"
	if s.d.SkipLocked {
		pick += " FOR UPDATE SKIP LOCKED"
	}
	// One statement: the pick and the update are atomic, and the status
	// condition makes a lost race update nothing rather than the same row.
	args = append(args, t.From)
	row := s.queryRow(ctx, ("UPDATE sandboxes SET status = ?, uses = uses + 1, updated_at = ?, timeout_s = ?, on_timeout = ? " +
		"WHERE id = (" + pick + ") AND status = ? RETURNING " + sandboxCols), args...)
	sb, err := scanSandbox(row)
	if errors.Is(err, sql.ErrNoRows) {
		return sb, fmt.Errorf("pool %s has no idle sandbox: %w", t.Pool, errdefs.ErrNotFound)
	}
	return sb, err
}

const poolCols = "name, tenant, config, status, created_at, updated_at"

func scanPool(r scanner) (store.Pool, error) {
	var p store.Pool
	var created, updated int64
	err := r.Scan(&p.Name, &p.Tenant, &p.Config, &p.Status, &created, &updated)
	p.CreatedAt, p.UpdatedAt = fromNanos(created), fromNanos(updated)
	return p, err
}

func (s *DB) CreatePool(ctx context.Context, p store.Pool) error {
	now := time.Now()
	if p.CreatedAt.IsZero() {
		p.CreatedAt = now
	}
	_, err := s.exec(ctx, ("INSERT INTO pools (" + poolCols + ") VALUES (?, ?, ?, ?, ?, ?)"),
		p.Name, p.Tenant, p.Config, p.Status, nanos(p.CreatedAt), nanos(now))
	if err != nil && s.d.IsUnique(err) {
		return fmt.Errorf("pool %s: %w", p.Name, errdefs.ErrExists)
	}
	return err
}

func (s *DB) GetPool(ctx context.Context, name string) (store.Pool, error) {
	p, err := scanPool(s.queryRow(ctx, ("SELECT " + poolCols + " FROM pools WHERE name = ?"), name))
	if errors.Is(err, sql.ErrNoRows) {
		return p, fmt.Errorf("pool %s: %w", name, errdefs.ErrNotFound)
	}
	return p, err
}

func (s *DB) ListPools(ctx context.Context) ([]store.Pool, error) {
	rows, err := s.query(ctx, "SELECT "+poolCols+" FROM pools ORDER BY name")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []store.Pool
	for rows.Next() {
		p, err := scanPool(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

func (s *DB) UpdatePool(ctx context.Context, name, config, status string) error {
	query := "UPDATE pools SET config = ?, status = ?, updated_at = ? WHERE name = ?"
	if status != "draining" {
		query += " AND status <> 'draining'" // an update never undoes a delete
	}
	res, err := s.exec(ctx, query, config, status, time.Now().UnixNano(), name)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		if _, err := s.GetPool(ctx, name); err != nil {
			return err
		}
		return fmt.Errorf("pool %s is being deleted: %w", name, errdefs.ErrConflict)
	}
	return nil
}

func (s *DB) DeletePool(ctx context.Context, name string) error {
	res, err := s.exec(ctx, ("DELETE FROM pools WHERE name = ?"), name)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("pool %s: %w", name, errdefs.ErrNotFound)
	}
	return nil
}

func (s *DB) CreateTemplate(ctx context.Context, t store.Template) error {
	if t.CreatedAt.IsZero() {
		t.CreatedAt = time.Now()
	}
	_, err := s.exec(ctx, ("INSERT INTO templates (name, base, hooks, created_at) VALUES (?, ?, ?, ?)"),
		t.Name, t.Base, t.Hooks, nanos(t.CreatedAt))
	if err != nil && s.d.IsUnique(err) {
		return fmt.Errorf("template %s: %w", t.Name, errdefs.ErrExists)
	}
	return err
}

func (s *DB) GetTemplate(ctx context.Context, name string) (store.Template, error) {
	var t store.Template
	var created int64
	err := s.queryRow(ctx, ("SELECT name, base, hooks, created_at FROM templates WHERE name = ?"), name).
		Scan(&t.Name, &t.Base, &t.Hooks, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return t, fmt.Errorf("template %s: %w", name, errdefs.ErrNotFound)
	}
	t.CreatedAt = fromNanos(created)
	return t, err
}

func (s *DB) ListTemplates(ctx context.Context) ([]store.Template, error) {
	rows, err := s.query(ctx, "SELECT name, base, hooks, created_at FROM templates ORDER BY name")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []store.Template
	for rows.Next() {
		var t store.Template
		var created int64
		if err := rows.Scan(&t.Name, &t.Base, &t.Hooks, &created); err != nil {
			return nil, err
		}
		t.CreatedAt = fromNanos(created)
		out = append(out, t)
	}
	return out, rows.Err()
}

func (s *DB) DeleteTemplate(ctx context.Context, name string) error {
	res, err := s.exec(ctx, ("DELETE FROM templates WHERE name = ?"), name)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("template %s: %w", name, errdefs.ErrNotFound)
	}
	return nil
}
