package sqlstore_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/sandpool/sandpool/internal/store"
	"github.com/sandpool/sandpool/internal/store/sqlstore"
	"github.com/sandpool/sandpool/internal/store/storetest"
)

func TestSQLite(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, err := sqlstore.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "sandpool.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}

// Reopening runs no migration twice and keeps the data.
func TestSQLiteReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sandpool.db")
	ctx := context.Background()
	s, err := sqlstore.OpenSQLite(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CreateKey(ctx, store.Key{ID: "k", Tenant: "t", Hash: "h"}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = sqlstore.OpenSQLite(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.KeyByHash(ctx, "h"); err != nil {
		t.Fatal(err)
	}
}
