package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"io/fs"
	"net/url"
	"strings"

	"github.com/pressly/goose/v3"
	_ "modernc.org/sqlite" // pure Go: the binary stays static

	"github.com/sandpool/sandpool/internal/store"
)

// OpenSQLite opens (creating if needed) the SQLite database at path, in WAL
// mode with a busy timeout and immediate write transactions, so concurrent
// writers wait rather than fail. The database is held exclusively (no file
// locking per transaction): one sandpool process owns a data directory.
func OpenSQLite(ctx context.Context, path string) (*DB, error) {
	dsn := "file:" + (&url.URL{Path: path}).EscapedPath() +
		"?_pragma=locking_mode(EXCLUSIVE)&_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)&_pragma=foreign_keys(1)&_pragma=synchronous(NORMAL)&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	// One connection: SQLite takes one writer at a time anyway, and
	// writers on several connections wait for each other in the busy
	// handler, which sleeps in milliseconds. One connection queues them
	// in Go instead, in microseconds.
	db.SetMaxOpenConns(1)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	s, err := New(ctx, db, Dialect{
		Goose: goose.DialectSQLite3,
		IsUnique: func(err error) bool {
			return err != nil && strings.Contains(err.Error(), "UNIQUE constraint failed")
		},
	})
	if err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

func subFS() fs.FS {
	sub, err := fs.Sub(store.Migrations, "migrations")
	if err != nil {
		panic(err) // the embedded directory is part of the binary
	}
	return sub
}
