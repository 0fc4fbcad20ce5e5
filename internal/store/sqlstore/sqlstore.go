// Package sqlstore implements store.Store on database/sql, with the small
// differences between SQLite and PostgreSQL behind a Dialect. Open opens
// SQLite, the default store.
package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pressly/goose/v3"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/store"
)

// Dialect is what differs between databases.
type Dialect struct {
	Goose goose.Dialect
	// Dollar: placeholders are $1, $2 (PostgreSQL) rather than ?.
	Dollar bool
	// IsUnique reports whether err is a unique-constraint violation.
	IsUnique func(error) bool
	// SkipLocked: row locks exist and TakeIdle skips rows another
	// transaction holds (PostgreSQL). SQLite has one writer at a time.
	SkipLocked bool
}

// DB is a store.Store on a SQL database.
type DB struct {
	db *sql.DB
	d  Dialect
	// stmts caches prepared statements by query text: parsing a
	// statement costs more than running most of ours.
	stmts sync.Map // string -> *sql.Stmt
}

// stmt returns the prepared statement for query (with ? placeholders).
func (s *DB) stmt(ctx context.Context, query string) (*sql.Stmt, error) {
	if st, ok := s.stmts.Load(query); ok {
		return st.(*sql.Stmt), nil
	}
	st, err := s.db.PrepareContext(ctx, s.q(query))
	if err != nil {
		return nil, err
	}
	if prev, loaded := s.stmts.LoadOrStore(query, st); loaded {
		st.Close()
		return prev.(*sql.Stmt), nil
	}
	return st, nil
}

// inTx runs f in a transaction, committed if f succeeds.
func (s *DB) inTx(ctx context.Context, f func(tx *sql.Tx) (sql.Result, error)) (sql.Result, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback() // after Commit this does nothing
	res, err := f(tx)
	if err != nil {
		return nil, err
	}
	return res, tx.Commit()
}

func (s *DB) query(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	st, err := s.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	return st.QueryContext(ctx, args...)
}

// errRow is a *sql.Row stand-in carrying a prepare error to Scan.
type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }

func (s *DB) queryRow(ctx context.Context, query string, args ...any) scanner {
	st, err := s.stmt(ctx, query)
	if err != nil {
		return errRow{err}
	}
	return st.QueryRowContext(ctx, args...)
}

func (s *DB) exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	st, err := s.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	return st.ExecContext(ctx, args...)
}

var _ store.Store = (*DB)(nil)

// New migrates db to the latest schema and returns a store on it.
func New(ctx context.Context, db *sql.DB, d Dialect) (*DB, error) {
	p, err := goose.NewProvider(d.Goose, db, subFS(), goose.WithVerbose(false))
	if err != nil {
		return nil, fmt.Errorf("store: migrations: %w", err)
	}
	if _, err := p.Up(ctx); err != nil {
		return nil, fmt.Errorf("store: migrate: %w", err)
	}
	return &DB{db: db, d: d}, nil
}

// q rewrites ? placeholders for the dialect.
func (s *DB) q(query string) string {
	if !s.d.Dollar {
		return query
	}
	var b strings.Builder
	n := 0
	for _, c := range query {
		if c == '?' {
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteRune(c)
	}
	return b.String()
}

func (s *DB) Close() error {
	s.stmts.Range(func(_, st any) bool {
		st.(*sql.Stmt).Close()
		return true
	})
	return s.db.Close()
}

func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

const sandboxCols = "id, tenant, template, status, spec, metadata, error, node, pool, uses, " +
	"timeout_s, on_timeout, archive_after_s, last_active, paused_at, timeout_left_ms, archived, created_at, updated_at, gpus"

func (s *DB) CreateSandbox(ctx context.Context, sb store.Sandbox) error {
	meta, err := json.Marshal(sb.Metadata)
	if err != nil {
		return err
	}
	if sb.Metadata == nil {
		meta = []byte("{}")
	}
	now := time.Now()
	if sb.CreatedAt.IsZero() {
		sb.CreatedAt = now
	}
	args := []any{sb.ID, sb.Tenant, sb.Template, sb.Status, sb.Spec, string(meta), sb.Error, sb.Node, sb.Pool, sb.Uses,
		sb.Timeout, sb.OnTimeout, sb.ArchiveAfter, nanos(sb.LastActive), nanos(sb.PausedAt), sb.TimeoutLeft.Milliseconds(), boolInt(sb.Archived),
		nanos(sb.CreatedAt), nanos(now), sb.GPUs}
	query := "INSERT INTO sandboxes (" + sandboxCols + ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
	if sb.Fence != nil {
		cond, fargs := fenceCond(sb.Fence)
		query = "INSERT INTO sandboxes (" + sandboxCols + ") SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ? WHERE " + cond
		args = append(args, fargs...)
	}
	var res sql.Result
	if sb.Fence != nil && sb.Fence.Pool != "" && s.d.SkipLocked {
		// With row locks, lock the pool's row first: creates for one pool
		// are then counted one at a time (SQLite has one writer anyway).
		res, err = s.inTx(ctx, func(tx *sql.Tx) (sql.Result, error) {
			if _, err := tx.ExecContext(ctx, s.q("SELECT 1 FROM pools WHERE name = ? FOR UPDATE"), sb.Fence.Pool); err != nil {
				return nil, err
			}
			return tx.ExecContext(ctx, s.q(query), args...)
		})
	} else {
		res, err = s.exec(ctx, query, args...)
	}
	if err == nil && sb.Fence != nil {
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("sandbox %s: lease lost, pool gone or full: %w", sb.ID, errdefs.ErrConflict)
		}
	}
	if err != nil && s.d.IsUnique(err) {
		return fmt.Errorf("sandbox %s: %w", sb.ID, errdefs.ErrExists)
	}
	return err
}

type scanner interface{ Scan(...any) error }

func scanSandbox(r scanner) (store.Sandbox, error) {
	var sb store.Sandbox
	var meta string
	var created, updated, lastActive, pausedAt, leftMs int64
	var archived int
	if err := r.Scan(&sb.ID, &sb.Tenant, &sb.Template, &sb.Status, &sb.Spec, &meta, &sb.Error, &sb.Node, &sb.Pool, &sb.Uses,
		&sb.Timeout, &sb.OnTimeout, &sb.ArchiveAfter, &lastActive, &pausedAt, &leftMs, &archived, &created, &updated, &sb.GPUs); err != nil {
		return sb, err
	}
	sb.CreatedAt, sb.UpdatedAt = fromNanos(created), fromNanos(updated)
	sb.LastActive, sb.PausedAt = fromNanos(lastActive), fromNanos(pausedAt)
	sb.TimeoutLeft, sb.Archived = time.Duration(leftMs)*time.Millisecond, archived != 0
	if err := json.Unmarshal([]byte(meta), &sb.Metadata); err != nil {
		return sb, fmt.Errorf("sandbox %s: metadata: %w", sb.ID, err)
	}
	return sb, nil
}

func (s *DB) GetSandbox(ctx context.Context, id string) (store.Sandbox, error) {
	row := s.queryRow(ctx, ("SELECT " + sandboxCols + " FROM sandboxes WHERE id = ?"), id)
	sb, err := scanSandbox(row)
	if errors.Is(err, sql.ErrNoRows) {
		return sb, fmt.Errorf("sandbox %s: %w", id, errdefs.ErrNotFound)
	}
	return sb, err
}

// filterWhere is the WHERE clause of f, and its arguments.
func filterWhere(f store.Filter) (string, []any) {
	where := " WHERE 1=1"
	var args []any
	if f.Tenant != "" {
		where += " AND tenant = ?"
		args = append(args, f.Tenant)
	}
	if f.Node != "" {
		where += " AND node = ?"
		args = append(args, f.Node)
	}
	if f.Pool != "" {
		where += " AND pool = ?"
		args = append(args, f.Pool)
	}
	if len(f.Statuses) > 0 {
		where += " AND status IN (?" + strings.Repeat(", ?", len(f.Statuses)-1) + ")"
		for _, st := range f.Statuses {
			args = append(args, st)
		}
	}
	return where, args
}

func (s *DB) CountSandboxes(ctx context.Context, f store.Filter) (int, error) {
	where, args := filterWhere(f)
	var n int
	err := s.queryRow(ctx, "SELECT COUNT(*) FROM sandboxes"+where, args...).Scan(&n)
	return n, err
}

func (s *DB) CountByStatus(ctx context.Context, f store.Filter) (map[string]int, error) {
	where, args := filterWhere(f)
	rows, err := s.query(ctx, "SELECT status, COUNT(*) FROM sandboxes"+where+" GROUP BY status", args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var st string
		var n int
		if err := rows.Scan(&st, &n); err != nil {
			return nil, err
		}
		out[st] = n
	}
	return out, rows.Err()
}

func (s *DB) ListSandboxes(ctx context.Context, f store.Filter) ([]store.Sandbox, error) {
	where, args := filterWhere(f)
	rows, err := s.query(ctx, "SELECT "+sandboxCols+" FROM sandboxes"+where+" ORDER BY created_at, id", args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []store.Sandbox
	for rows.Next() {
		sb, err := scanSandbox(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, sb)
	}
	return out, rows.Err()
}

func (s *DB) SetStatus(ctx context.Context, id string, from []string, status, errMsg string) error {
	return s.UpdateSandbox(ctx, id, from, store.Update{Status: &status, Error: &errMsg})
}

func (s *DB) UpdateSandbox(ctx context.Context, id string, from []string, u store.Update) error {
	var sets []string
	var args []any
	set := func(col string, v any) {
		sets = append(sets, col+" = ?")
		args = append(args, v)
	}
	if u.Status != nil {
		set("status", *u.Status)
		set("updated_at", time.Now().UnixNano())
	}
	if u.Error != nil {
		set("error", *u.Error)
	}
	if u.Timeout != nil {
		set("timeout_s", *u.Timeout)
	}
	if u.OnTimeout != nil {
		set("on_timeout", *u.OnTimeout)
	}
	if u.ArchiveAfter != nil {
		set("archive_after_s", *u.ArchiveAfter)
	}
	if u.PausedAt != nil {
		set("paused_at", nanos(*u.PausedAt))
	}
	if u.TimeoutLeft != nil {
		set("timeout_left_ms", u.TimeoutLeft.Milliseconds())
	}
	if u.Archived != nil {
		set("archived", boolInt(*u.Archived))
	}
	if u.Metadata != nil {
		meta := []byte("{}")
		if len(*u.Metadata) > 0 {
			var err error
			if meta, err = json.Marshal(*u.Metadata); err != nil {
				return err
			}
		}
		set("metadata", string(meta))
	}
	if u.Spec != nil {
		set("spec", *u.Spec)
	}
	if u.GPUs != nil {
		set("gpus", *u.GPUs)
	}
	if len(sets) == 0 {
		return nil
	}
	query := "UPDATE sandboxes SET " + strings.Join(sets, ", ") + " WHERE id = ?"
	args = append(args, id)
	if u.Fence != nil {
		f := *u.Fence
		f.MaxInPool = 0 // a create's condition: this row counts itself
		cond, fargs := fenceCond(&f)
		query += " AND " + cond
		args = append(args, fargs...)
	}
	if len(from) > 0 {
		query += " AND status IN (?" + strings.Repeat(", ?", len(from)-1) + ")"
		for _, f := range from {
			args = append(args, f)
		}
	}
	res, err := s.exec(ctx, (query), args...)
	if err != nil {
		return err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		cur, err := s.GetSandbox(ctx, id)
		if err != nil {
			return err
		}
		if u.Fence != nil {
			return fmt.Errorf("sandbox %s (%s): %s: %w", id, cur.Status, s.fenceFailed(ctx, u.Fence, cur.Status, from), errdefs.ErrConflict)
		}
		return fmt.Errorf("sandbox %s is %s, not %s: %w", id, cur.Status, strings.Join(from, " or "), errdefs.ErrConflict)
	}
	return nil
}

// fenceFailed says which condition of a fenced update no longer held
// (read after the update: the best account there is).
func (s *DB) fenceFailed(ctx context.Context, f *store.Fence, status string, from []string) string {
	if len(from) > 0 && !slices.Contains(from, status) {
		return "status changed"
	}
	if f.Pool != "" {
		p, err := s.GetPool(ctx, f.Pool)
		switch {
		case errors.Is(err, errdefs.ErrNotFound):
			return "pool " + f.Pool + " gone"
		case err == nil && p.Status == "draining":
			return "pool " + f.Pool + " being deleted"
		}
	}
	if f.Lease != "" {
		return "lease " + f.Lease + " lost"
	}
	return "lease lost, pool gone, or status changed"
}

func (s *DB) TouchSandboxes(ctx context.Context, active map[string]time.Time) error {
	if len(active) == 0 {
		return nil
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback() // after Commit this does nothing
	st, err := tx.PrepareContext(ctx, s.q("UPDATE sandboxes SET last_active = ? WHERE id = ? AND last_active < ?"))
	if err != nil {
		return err
	}
	defer st.Close()
	for id, t := range active {
		if _, err := st.ExecContext(ctx, nanos(t), id, nanos(t)); err != nil {
			return err
		}
	}
	return tx.Commit()
}

func (s *DB) DeleteSandbox(ctx context.Context, id string) error {
	res, err := s.exec(ctx, ("DELETE FROM sandboxes WHERE id = ?"), id)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("sandbox %s: %w", id, errdefs.ErrNotFound)
	}
	return nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

const keyCols = "id, tenant, hash, admin, created_at, revoked_at"
