package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/sandpool/sandpool/client"
	"github.com/sandpool/sandpool/internal/latency"
)

// BenchmarkCreateExecDelete is a sandbox's whole life over HTTP against
// the real binary: create `base`, run `true`, delete.
func BenchmarkCreateExecDelete(b *testing.B) {
	s := startServer(b, "")
	c := s.client("")
	ctx := context.Background()
	var create, exec, del, total latency.Recorder
	for b.Loop() {
		t0 := time.Now()
		sb, err := c.CreateSandbox(ctx, client.CreateSandboxRequest{Template: "base"})
		if err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if _, err := c.Exec(ctx, sb.ID, client.ExecRequest{Cmd: []string{"true"}}); err != nil {
			b.Fatal(err)
		}
		t2 := time.Now()
		if err := c.DeleteSandbox(ctx, sb.ID); err != nil {
			b.Fatal(err)
		}
		t3 := time.Now()
		create.Add(t1.Sub(t0))
		exec.Add(t2.Sub(t1))
		del.Add(t3.Sub(t2))
		total.Add(t3.Sub(t0))
	}
	total.Report(b, "total")
	create.Report(b, "create")
	exec.Report(b, "first_exec")
	del.Report(b, "delete")
}

// BenchmarkExecRoundTrip runs `true` in a running sandbox over HTTP
// against the real binary.
func BenchmarkExecRoundTrip(b *testing.B) {
	s := startServer(b, "")
	c := s.client("")
	ctx := context.Background()
	sb, err := c.CreateSandbox(ctx, client.CreateSandboxRequest{Template: "base"})
	if err != nil {
		b.Fatal(err)
	}
	var rtt latency.Recorder
	for b.Loop() {
		start := time.Now()
		if _, err := c.Exec(ctx, sb.ID, client.ExecRequest{Cmd: []string{"true"}}); err != nil {
			b.Fatal(err)
		}
		rtt.Since(start)
	}
	rtt.Report(b, "exec")
	if err := c.DeleteSandbox(ctx, sb.ID); err != nil {
		b.Fatal(err)
	}
}
