package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/sandpool/sandpool/client"
)

func TestPauseResumeOverHTTP(t *testing.T) {
	s := startServer(t, "")
	c := s.client("")
	ctx := context.Background()
	sb, err := c.CreateSandbox(ctx, client.CreateSandboxRequest{Template: "base", Timeout: 2})
	if err != nil {
		t.Fatal(err)
	}
	if sb.OnTimeout != "pause" || sb.TimesOutAt == nil {
		t.Fatalf("created: %+v", sb)
	}
	if _, err := c.Exec(ctx, sb.ID, client.ExecRequest{Shell: "echo kept > /tmp/f; setsid sleep 600 >/dev/null 2>&1 &"}); err != nil {
		t.Fatal(err)
	}
	// Idle for its timeout: paused, frozen.
	deadline := time.Now().Add(60 * time.Second)
	for {
		got, err := c.GetSandbox(ctx, sb.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Status == "paused" {
			if got.Archived || got.PausedAt == nil {
				t.Fatalf("paused: %+v", got)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not paused: %+v", got)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// A client that does not resume gets 409; a normal call resumes.
	_, err = s.client("", client.WithoutAutoResume()).Exec(ctx, sb.ID, client.ExecRequest{Cmd: []string{"true"}})
	if ae := apiErr(err); ae == nil || ae.Status != 409 {
		t.Fatalf("exec without auto-resume: %v", err)
	}
	res, err := c.Exec(ctx, sb.ID, client.ExecRequest{Shell: "cat /tmp/f; pgrep -c sleep"})
	if err != nil || string(res.Stdout) != "kept\n1\n" {
		t.Fatalf("exec on a paused sandbox: %q %v", res.Stdout, err)
	}
	// Archive on demand, resume: files, no processes.
	if _, err := c.Pause(ctx, sb.ID, true); err != nil {
		t.Fatal(err)
	}
	r, err := c.Resume(ctx, sb.ID)
	if err != nil || r.ResumedFrom != "archive" || r.ProcessesKept || r.Status != "running" {
		t.Fatalf("resume: %+v %v", r, err)
	}
	res, err = c.Exec(ctx, sb.ID, client.ExecRequest{Shell: "cat /tmp/f; pgrep -c sleep"})
	if err != nil || string(res.Stdout) != "kept\n0\n" {
		t.Fatalf("after archive: %q %v", res.Stdout, err)
	}
	// Timeout off: it stays running.
	zero := 0
	got, err := c.SetTimeout(ctx, sb.ID, client.TimeoutUpdate{Timeout: &zero})
	if err != nil || got.Timeout != 0 || got.TimesOutAt != nil {
		t.Fatalf("timeout off: %+v %v", got, err)
	}
	bad := -3
	if _, err := c.SetTimeout(ctx, sb.ID, client.TimeoutUpdate{Timeout: &bad}); apiErr(err) == nil || apiErr(err).Status != 422 {
		t.Fatalf("negative timeout: %v", err)
	}
	if !strings.Contains(s.log(), "serving on") {
		t.Fatal("no server log")
	}
}
