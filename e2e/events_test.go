package e2e

import (
	"context"
	"io"
	"strings"
	"testing"

	"github.com/sandpool/sandpool/client"
)

func TestEvents(t *testing.T) {
	s := startServer(t, "")
	ctx := context.Background()
	b := s.tenant("evb")
	evA, err := s.tenant("eva").Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer evA.Close()
	evB, err := b.Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer evB.Close()
	sbB, err := b.CreateSandbox(ctx, client.CreateSandboxRequest{Template: "base"})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.DeleteSandbox(ctx, sbB.ID); err != nil {
		t.Fatal(err)
	}
	var seq []string
	for len(seq) < 4 {
		ev, err := evB.Next()
		if err != nil {
			t.Fatalf("after %v: %v", seq, err)
		}
		if ev.Type != "sandbox" || ev.Sandbox != sbB.ID || ev.Time.IsZero() {
			t.Fatalf("event %+v", ev)
		}
		seq = append(seq, ev.Status)
	}
	if got := strings.Join(seq, " "); got != "creating running stopping stopped" {
		t.Fatalf("events %s", got)
	}
	// Tenant a saw nothing of b's sandbox; its feed ends when the server
	// shuts down, without holding the shutdown up.
	got := make(chan error, 1)
	go func() {
		ev, err := evA.Next()
		if err == nil {
			t.Errorf("tenant a got %+v", ev)
		}
		got <- err
	}()
	s.stop()
	// Shutdown did not wait for the stream: nothing was cut off at the
	// shutdown timeout.
	if log := s.log(); strings.Contains(log, "cut off at the shutdown timeout") {
		t.Errorf("shutdown waited for an open event stream:\n%s", log)
	}
	if err := <-got; err != io.EOF {
		t.Errorf("feed ended with %v, want EOF", err)
	}
}
