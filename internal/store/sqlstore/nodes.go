package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/store"
)

func (s *DB) Heartbeat(ctx context.Context, n store.Node, staleBefore time.Time) (store.Node, error) {
	now := time.Now().UnixNano()
	// The update applies only to the caller's own record, one marked
	// down, or one whose heart stopped before staleBefore: a live node's
	// name is not taken over.
	res, err := s.exec(ctx, "INSERT INTO nodes (id, address, capacity, status, heartbeat_at, started_at, incarnation) VALUES (?, ?, ?, 'up', ?, ?, ?) "+
		"ON CONFLICT (id) DO UPDATE SET address = excluded.address, capacity = excluded.capacity, status = 'up', "+
		"heartbeat_at = excluded.heartbeat_at, started_at = CASE WHEN nodes.incarnation = excluded.incarnation THEN nodes.started_at ELSE excluded.started_at END, "+
		"incarnation = excluded.incarnation "+
		"WHERE nodes.incarnation = excluded.incarnation OR nodes.status <> 'up' OR nodes.heartbeat_at < ?",
		n.ID, n.Address, n.Capacity, now, now, n.Incarnation, staleBefore.UnixNano())
	if err != nil {
		return store.Node{}, err
	}
	if k, err := res.RowsAffected(); err != nil || k == 1 {
		return store.Node{}, err
	}
	nodes, err := s.listNodes(ctx, "WHERE id = ?", n.ID)
	if err != nil {
		return store.Node{}, err
	}
	if len(nodes) == 0 {
		return store.Node{}, fmt.Errorf("node %s: record vanished: %w", n.ID, errdefs.ErrConflict)
	}
	return nodes[0], fmt.Errorf("node %s is held by another process at %s: %w", n.ID, nodes[0].Address, errdefs.ErrConflict)
}

func (s *DB) ListNodes(ctx context.Context) ([]store.Node, error) {
	return s.listNodes(ctx, "ORDER BY id")
}

func (s *DB) listNodes(ctx context.Context, where string, args ...any) ([]store.Node, error) {
	rows, err := s.query(ctx, "SELECT id, address, capacity, status, heartbeat_at, started_at, incarnation FROM nodes "+where, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []store.Node
	for rows.Next() {
		var n store.Node
		var hb, st int64
		if err := rows.Scan(&n.ID, &n.Address, &n.Capacity, &n.Status, &hb, &st, &n.Incarnation); err != nil {
			return nil, err
		}
		n.HeartbeatAt, n.StartedAt = fromNanos(hb), fromNanos(st)
		out = append(out, n)
	}
	return out, rows.Err()
}

func (s *DB) MarkNodeLost(ctx context.Context, node string, before time.Time, active []string, lost, errMsg string) ([]store.Sandbox, bool, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, false, err
	}
	defer tx.Rollback() // after Commit this does nothing
	res, err := tx.ExecContext(ctx, s.q("UPDATE nodes SET status = 'down' WHERE id = ? AND status = 'up' AND heartbeat_at < ?"), node, before.UnixNano())
	if err != nil {
		return nil, false, err
	}
	if n, err := res.RowsAffected(); err != nil || n != 1 {
		return nil, false, err
	}
	var out []store.Sandbox
	if len(active) > 0 {
		args := []any{lost, errMsg, time.Now().UnixNano(), node}
		for _, a := range active {
			args = append(args, a)
		}
		rows, err := tx.QueryContext(ctx, s.q("UPDATE sandboxes SET status = ?, error = ?, updated_at = ? WHERE node = ? AND status IN (?"+
			strings.Repeat(", ?", len(active)-1)+") RETURNING "+sandboxCols), args...)
		if err != nil {
			return nil, false, err
		}
		for rows.Next() {
			sb, err := scanSandbox(rows)
			if err != nil {
				rows.Close()
				return nil, false, err
			}
			out = append(out, sb)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, false, err
		}
	}
	return out, true, tx.Commit()
}

func (s *DB) AcquireLease(ctx context.Context, name, holder string, ttl time.Duration) (store.Lease, error) {
	now := time.Now()
	exp := now.Add(ttl).UnixNano()
	// Free, expired or ours: take it (a new holder gets a new term).
	_, err := s.exec(ctx, "INSERT INTO leases (name, holder, term, expires_at) VALUES (?, ?, 1, ?) "+
		"ON CONFLICT (name) DO UPDATE SET "+
		"term = CASE WHEN leases.holder = excluded.holder THEN leases.term ELSE leases.term + 1 END, "+
		"holder = excluded.holder, expires_at = excluded.expires_at "+
		"WHERE leases.holder = excluded.holder OR leases.expires_at < ?",
		name, holder, exp, now.UnixNano())
	if err != nil {
		return store.Lease{}, err
	}
	var l store.Lease
	var e int64
	err = s.queryRow(ctx, "SELECT name, holder, term, expires_at FROM leases WHERE name = ?", name).Scan(&l.Name, &l.Holder, &l.Term, &e)
	if errors.Is(err, sql.ErrNoRows) {
		return l, errdefs.ErrNotFound
	}
	l.ExpiresAt = fromNanos(e)
	return l, err
}

func (s *DB) ReleaseLease(ctx context.Context, name, holder string, term int64) error {
	_, err := s.exec(ctx, "DELETE FROM leases WHERE name = ? AND holder = ? AND term = ?", name, holder, term)
	return err
}

// fenceCond is the condition a fenced write adds, and its arguments.
func fenceCond(f *store.Fence) (string, []any) {
	conds := []string{"1 = 1"}
	var args []any
	if f.Lease != "" {
		conds = append(conds, "EXISTS (SELECT 1 FROM leases WHERE name = ? AND holder = ? AND term = ? AND expires_at > ?)")
		args = append(args, f.Lease, f.Holder, f.Term, time.Now().UnixNano())
	}
	if f.Pool != "" {
		conds = append(conds, "EXISTS (SELECT 1 FROM pools WHERE name = ? AND status <> 'draining')")
		args = append(args, f.Pool)
	}
	if f.Pool != "" && f.MaxInPool > 0 && len(f.Counted) > 0 {
		conds = append(conds, "(SELECT COUNT(*) FROM sandboxes WHERE pool = ? AND status IN (?"+strings.Repeat(", ?", len(f.Counted)-1)+")) < ?")
		args = append(args, f.Pool)
		for _, st := range f.Counted {
			args = append(args, st)
		}
		args = append(args, f.MaxInPool)
	}
	return strings.Join(conds, " AND "), args
}

func (s *DB) ClusterSecret(ctx context.Context, candidate string) (string, error) {
	if _, err := s.exec(ctx, "INSERT INTO cluster (id, secret) VALUES (1, ?) ON CONFLICT (id) DO NOTHING", candidate); err != nil {
		return "", err
	}
	var secret string
	err := s.queryRow(ctx, "SELECT secret FROM cluster WHERE id = 1").Scan(&secret)
	return secret, err
}
