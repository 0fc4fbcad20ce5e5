package storetest

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/sandpool/sandpool/internal/store/sqlstore"
)

// SQLite opens a fresh SQLite store in a temporary directory, closed when
// the test ends.
func SQLite(tb testing.TB) *sqlstore.DB {
	tb.Helper()
	st, err := sqlstore.OpenSQLite(context.Background(), filepath.Join(tb.TempDir(), "sandpool.db"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	return st
}
