package sqlstore_test

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/sandpool/sandpool/internal/store"
	"github.com/sandpool/sandpool/internal/store/pgtest"
	"github.com/sandpool/sandpool/internal/store/sqlstore"
	"github.com/sandpool/sandpool/internal/store/storetest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	code := m.Run()
	pgtest.Stop()
	if code == 0 {
		// Every goroutine the stores started (pools, pgx) has ended.
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goroutines leaked:", err)
			code = 1
		}
	}
	os.Exit(code)
}

func TestPostgres(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, err := sqlstore.OpenPostgres(context.Background(), pgtest.URL(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}
