package storetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/store"
)

func ptr[T any](v T) *T { return &v }

func testUpdate(t *testing.T, s store.Store) {
	ctx := context.Background()
	if err := s.CreateSandbox(ctx, store.Sandbox{ID: "sb_u", Tenant: "t", Template: "base", Status: "running", Spec: "{}",
		Timeout: 30, OnTimeout: "pause", ArchiveAfter: 60}); err != nil {
		t.Fatal(err)
	}
	got, _ := s.GetSandbox(ctx, "sb_u")
	if got.Timeout != 30 || got.OnTimeout != "pause" || got.ArchiveAfter != 60 || got.Archived || !got.PausedAt.IsZero() {
		t.Fatalf("created: %+v", got)
	}
	paused := time.Unix(1000, 0)
	if err := s.UpdateSandbox(ctx, "sb_u", []string{"running"}, store.Update{Status: ptr("paused"), PausedAt: &paused,
		TimeoutLeft: ptr(7 * time.Second)}); err != nil {
		t.Fatal(err)
	}
	got, _ = s.GetSandbox(ctx, "sb_u")
	if got.Status != "paused" || !got.PausedAt.Equal(paused) || got.TimeoutLeft != 7*time.Second {
		t.Fatalf("paused: %+v", got)
	}
	// Conditional: from the wrong status nothing changes.
	if err := s.UpdateSandbox(ctx, "sb_u", []string{"running"}, store.Update{Archived: ptr(true)}); !errors.Is(err, errdefs.ErrConflict) {
		t.Fatalf("update from a wrong status: %v", err)
	}
	if err := s.UpdateSandbox(ctx, "sb_u", nil, store.Update{Archived: ptr(true), Timeout: ptr(5), OnTimeout: ptr("kill")}); err != nil {
		t.Fatal(err)
	}
	got, _ = s.GetSandbox(ctx, "sb_u")
	if !got.Archived || got.Timeout != 5 || got.OnTimeout != "kill" || got.Status != "paused" {
		t.Fatalf("after update: %+v", got)
	}
	// Metadata and the spec are replaced whole (a pool's session).
	if err := s.UpdateSandbox(ctx, "sb_u", []string{"paused"}, store.Update{Metadata: ptr(map[string]string{"k": "v", "a b": "c"}),
		Spec: ptr(`{"env":{"A":"1"}}`)}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.GetSandbox(ctx, "sb_u"); len(got.Metadata) != 2 || got.Metadata["a b"] != "c" || got.Spec != `{"env":{"A":"1"}}` {
		t.Fatalf("after replacing metadata and spec: %+v", got)
	}
	if err := s.UpdateSandbox(ctx, "sb_u", nil, store.Update{Metadata: ptr(map[string]string{})}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.GetSandbox(ctx, "sb_u"); len(got.Metadata) != 0 || got.Spec != `{"env":{"A":"1"}}` {
		t.Fatalf("after emptying metadata: %+v", got)
	}
	if err := s.UpdateSandbox(ctx, "sb_u", []string{"paused"}, store.Update{Spec: ptr(`{"network":{"egress":"open"}}`)}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.GetSandbox(ctx, "sb_u"); got.Spec != `{"network":{"egress":"open"}}` || got.Status != "paused" {
		t.Fatalf("after a spec update: %+v", got)
	}
	// GPUs held: written at create, replaced (an archive gives them back,
	// a resume takes others), read back by every query.
	if err := s.CreateSandbox(ctx, store.Sandbox{ID: "sb_gpu", Tenant: "t", Template: "base", Status: "running", Spec: "{}",
		Node: "n1", GPUs: "0,2"}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.GetSandbox(ctx, "sb_gpu"); got.GPUs != "0,2" {
		t.Fatalf("gpus at create: %q", got.GPUs)
	}
	if err := s.UpdateSandbox(ctx, "sb_gpu", []string{"running"}, store.Update{Status: ptr("paused"), GPUs: ptr("")}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.GetSandbox(ctx, "sb_gpu"); got.GPUs != "" || got.Status != "paused" {
		t.Fatalf("gpus given back: %+v", got)
	}
	if err := s.UpdateSandbox(ctx, "sb_gpu", []string{"paused"}, store.Update{GPUs: ptr("1")}); err != nil {
		t.Fatal(err)
	}
	list, err := s.ListSandboxes(ctx, store.Filter{Node: "n1"})
	if err != nil || len(list) != 1 || list[0].GPUs != "1" {
		t.Fatalf("list: %+v, %v", list, err)
	}
	if err := s.UpdateSandbox(ctx, "nope", nil, store.Update{Archived: ptr(true)}); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("update missing: %v", err)
	}
	// Touch only moves forward.
	t1, t2 := time.Unix(2000, 0), time.Unix(1500, 0)
	if err := s.TouchSandboxes(ctx, map[string]time.Time{"sb_u": t1}); err != nil {
		t.Fatal(err)
	}
	if err := s.TouchSandboxes(ctx, map[string]time.Time{"sb_u": t2, "gone": t2}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.GetSandbox(ctx, "sb_u"); !got.LastActive.Equal(t1) {
		t.Fatalf("last active %v, want %v", got.LastActive, t1)
	}
}
