package api_test

import (
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/sandpool/sandpool/client"
	"github.com/sandpool/sandpool/internal/api"
	"github.com/sandpool/sandpool/internal/events"
	"github.com/sandpool/sandpool/internal/idempotency"
	"github.com/sandpool/sandpool/internal/keys"
	"github.com/sandpool/sandpool/internal/latency"
	"github.com/sandpool/sandpool/internal/pool"
	"github.com/sandpool/sandpool/internal/proc"
	"github.com/sandpool/sandpool/internal/runtime/linux/linuxtest"
	"github.com/sandpool/sandpool/internal/sandbox"
	"github.com/sandpool/sandpool/internal/store/sqlstore"
)

func TestMain(m *testing.M) { linuxtest.MainNet(m) }

// BenchmarkExecOverHTTP measures what HTTP adds to an exec round trip:
// `true` run through the service directly, then through the API over
// loopback TCP with the Go client. Reports both p50s and their difference.
func BenchmarkExecOverHTTP(b *testing.B) {
	rt := linuxtest.Open(b)
	ctx := context.Background()
	st, err := sqlstore.OpenSQLite(ctx, filepath.Join(b.TempDir(), "db"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	svc := sandbox.New(rt, st, events.NewBroker(), sandbox.Config{Node: "bench"})
	if err := svc.Start(ctx); err != nil {
		b.Fatal(err)
	}
	defer svc.Close()
	ks := keys.New(st)
	key, err := ks.Create(ctx, "bench", false, keys.Native)
	if err != nil {
		b.Fatal(err)
	}
	secret := key.Secret
	pools := pool.NewManager(svc, st, svc.Events(), pool.Options{Node: "bench", Log: discard()})
	defer pools.Close()
	srv := httptest.NewServer(api.New(svc, pools, ks, idempotency.New(st), api.Config{Log: discard()}))
	defer srv.Close()
	c, err := client.New(srv.URL, secret)
	if err != nil {
		b.Fatal(err)
	}
	sb, err := c.CreateSandbox(ctx, client.CreateSandboxRequest{Template: "base"})
	if err != nil {
		b.Fatal(err)
	}

	var direct, overHTTP latency.Recorder
	for b.Loop() {
		start := time.Now()
		p, err := svc.Exec(ctx, "bench", sb.ID, sandbox.ExecRequest{Cmd: []string{"true"}}, proc.Stdio{})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := p.Wait(); err != nil {
			b.Fatal(err)
		}
		direct.Since(start)

		start = time.Now()
		if _, err := c.Exec(ctx, sb.ID, client.ExecRequest{Cmd: []string{"true"}}); err != nil {
			b.Fatal(err)
		}
		overHTTP.Since(start)
	}
	direct.Report(b, "direct")
	overHTTP.Report(b, "http")
	b.ReportMetric(overHTTP.Ms(50)-direct.Ms(50), "http_overhead_p50_ms")
	if err := c.DeleteSandbox(ctx, sb.ID); err != nil {
		b.Fatal(err)
	}
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
