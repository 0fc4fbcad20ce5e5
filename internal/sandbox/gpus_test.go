package sandbox_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/events"
	"github.com/sandpool/sandpool/internal/gpu"
	"github.com/sandpool/sandpool/internal/gpu/gputest"
	"github.com/sandpool/sandpool/internal/sandbox"
	"github.com/sandpool/sandpool/internal/store"
)

// gpuEnv is a service on a stand-in host of n GPUs.
func gpuEnv(t *testing.T, n int, cfg sandbox.Config) (*env, gputest.Host) {
	t.Helper()
	h := gputest.New(t, n)
	host, err := gpu.Discover(context.Background(), gpu.Options{Root: h.Root})
	if err != nil || len(host.GPUs) != n {
		t.Fatalf("discover %d stand-in GPUs: %+v, %v", n, host, err)
	}
	cfg.GPUHost = host
	return newEnv(t, cfg), h
}

// gpusSeen lists the GPU nodes a sandbox sees in its /dev.
func (e *env) gpusSeen(t *testing.T, tenant, id string) string {
	t.Helper()
	out, _ := e.run(t, tenant, id, "cd /dev && ls -d nvidia[0-9]* 2>/dev/null | tr '\\n' ' '")
	return strings.TrimSpace(out)
}

// holders maps each GPU index to the sandboxes the node says hold it.
func (e *env) holders(t *testing.T) map[int][]string {
	t.Helper()
	in, err := e.svc.Node(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := map[int][]string{}
	for _, g := range in.GPUs {
		out[g.Index] = g.Sandboxes
	}
	return out
}

func gpuRow(t *testing.T, e *env, id string) store.Sandbox {
	t.Helper()
	row, err := e.st.GetSandbox(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return row
}

func TestGPUCreate(t *testing.T) {
	e, _ := gpuEnv(t, 2, sandbox.Config{})
	ctx := context.Background()
	a := e.create(t, "t", sandbox.CreateRequest{Limits: sandbox.Limits{GPUs: 1}})
	b := e.create(t, "t", sandbox.CreateRequest{Limits: sandbox.Limits{GPUs: 1}})
	plain := e.create(t, "t", sandbox.CreateRequest{})
	if a.Limits.GPUs != 1 || gpuRow(t, e, a.ID).GPUs != "0" || gpuRow(t, e, b.ID).GPUs != "1" || gpuRow(t, e, plain.ID).GPUs != "" {
		t.Fatalf("rows: %q %q %q", gpuRow(t, e, a.ID).GPUs, gpuRow(t, e, b.ID).GPUs, gpuRow(t, e, plain.ID).GPUs)
	}
	if got := e.gpusSeen(t, "t", a.ID); got != "nvidia0" {
		t.Errorf("a sees %q", got)
	}
	if got := e.gpusSeen(t, "t", b.ID); got != "nvidia1" {
		t.Errorf("b sees %q", got)
	}
	if got := e.gpusSeen(t, "t", plain.ID); got != "" {
		t.Errorf("a sandbox without GPUs sees %q", got)
	}
	out, _ := e.run(t, "t", b.ID, "echo $CUDA_VISIBLE_DEVICES $NVIDIA_VISIBLE_DEVICES")
	if want := gputest.UUID(1) + " " + gputest.UUID(1) + "\n"; out != want {
		t.Errorf("b's environment: %q, want %q", out, want)
	}

	// None free: 409 gpus_exhausted, and nothing written.
	before, _ := e.st.CountSandboxes(ctx, store.Filter{})
	_, err := e.svc.Create(ctx, "t", "", sandbox.CreateRequest{Template: "base", Limits: sandbox.Limits{GPUs: 1}})
	if !errors.Is(err, sandbox.ErrGPUsExhausted) || !errors.Is(err, errdefs.ErrConflict) || errdefs.CodeOf(err) != "gpus_exhausted" {
		t.Fatalf("a third GPU sandbox: %v", err)
	}
	if after, _ := e.st.CountSandboxes(ctx, store.Filter{}); after != before {
		t.Fatalf("a refused create wrote %d rows", after-before)
	}
	// Never possible here: a client mistake.
	for _, n := range []int{-1, 3} {
		if _, err := e.svc.Create(ctx, "t", "", sandbox.CreateRequest{Template: "base", Limits: sandbox.Limits{GPUs: n}}); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("gpus %d: %v", n, err)
		}
	}
	if h := e.holders(t); len(h[0]) != 1 || h[0][0] != a.ID || len(h[1]) != 1 || h[1][0] != b.ID {
		t.Fatalf("holders %v", h)
	}
	// A destroy gives its GPU back at once.
	if err := e.svc.Delete(ctx, "t", a.ID); err != nil {
		t.Fatal(err)
	}
	if h := e.holders(t); len(h[0]) != 0 {
		t.Fatalf("holders after a delete: %v", h)
	}
	c := e.create(t, "t", sandbox.CreateRequest{Limits: sandbox.Limits{GPUs: 1}})
	if got := e.gpusSeen(t, "t", c.ID); got != "nvidia0" {
		t.Errorf("c sees %q", got)
	}
}

func TestGPUNone(t *testing.T) {
	e := newEnv(t, sandbox.Config{})
	_, err := e.svc.Create(context.Background(), "t", "", sandbox.CreateRequest{Template: "base", Limits: sandbox.Limits{GPUs: 1}})
	if !errors.Is(err, errdefs.ErrInvalid) || errdefs.CodeOf(err) != "no_gpus" {
		t.Fatalf("a GPU create on a node without GPUs: %v", err)
	}
	if in, err := e.svc.Node(context.Background()); err != nil || in.GPUs == nil || len(in.GPUs) != 0 {
		t.Fatalf("node: %+v, %v", in.GPUs, err)
	}
}

// TestGPUConcurrentCreates creates and deletes GPU sandboxes from many
// goroutines at once: each sandbox that is made sees exactly one GPU node,
// never one another sandbox holds; the rest are refused with
// gpus_exhausted; nothing is held at the end.
func TestGPUConcurrentCreates(t *testing.T) {
	const gpus, workers, rounds = 3, 8, 3
	e, _ := gpuEnv(t, gpus, sandbox.Config{})
	ctx := context.Background()
	var mu sync.Mutex
	owner := map[string]string{} // GPU node -> sandbox, as the sandboxes see it
	made, refused := 0, 0
	var wg sync.WaitGroup
	errs := make(chan error, workers*rounds)
	for range workers {
		wg.Go(func() {
			for range rounds {
				sb, err := e.svc.Create(ctx, "t", "", sandbox.CreateRequest{Template: "base", Limits: sandbox.Limits{GPUs: 1}})
				if errors.Is(err, sandbox.ErrGPUsExhausted) {
					mu.Lock()
					refused++
					mu.Unlock()
					continue
				}
				if err != nil {
					errs <- err
					return
				}
				seen := e.gpusSeen(t, "t", sb.ID)
				mu.Lock()
				made++
				if strings.Contains(seen, " ") || seen == "" {
					errs <- fmt.Errorf("%s sees %q", sb.ID, seen)
				} else if o, ok := owner[seen]; ok {
					errs <- fmt.Errorf("%s handed to %s while %s held it", seen, sb.ID, o)
				}
				owner[seen] = sb.ID
				mu.Unlock()
				mu.Lock()
				delete(owner, seen)
				mu.Unlock()
				if err := e.svc.Delete(ctx, "t", sb.ID); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if made+refused != workers*rounds || made < gpus {
		t.Errorf("%d made, %d refused", made, refused)
	}
	for i, h := range e.holders(t) {
		if len(h) != 0 {
			t.Errorf("GPU %d still held by %v", i, h)
		}
	}
	t.Logf("%d made, %d refused", made, refused)
}

// TestGPUPauseArchiveResume: a frozen sandbox keeps its GPU; an archived
// one gives it back and takes one again when resumed, which fails
// clearly (and leaves it archived) while none is free.
func TestGPUPauseArchiveResume(t *testing.T) {
	e, _ := gpuEnv(t, 1, sandbox.Config{})
	ctx := context.Background()
	a := e.create(t, "a", sandbox.CreateRequest{Limits: sandbox.Limits{GPUs: 1}})
	if _, err := e.svc.Pause(ctx, "a", a.ID, sandbox.PauseOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Create(ctx, "a", "", sandbox.CreateRequest{Template: "base", Limits: sandbox.Limits{GPUs: 1}}); !errors.Is(err, sandbox.ErrGPUsExhausted) {
		t.Fatalf("a GPU create while the holder is frozen: %v", err)
	}
	if _, err := e.svc.Pause(ctx, "a", a.ID, sandbox.PauseOptions{Archive: true}); err != nil {
		t.Fatal(err)
	}
	if row := gpuRow(t, e, a.ID); row.GPUs != "" || !row.Archived {
		t.Fatalf("archived row: %+v", row)
	}
	b := e.create(t, "a", sandbox.CreateRequest{Limits: sandbox.Limits{GPUs: 1}})
	_, _, err := e.svc.Resume(ctx, "a", a.ID)
	if !errors.Is(err, sandbox.ErrGPUsExhausted) || errdefs.CodeOf(err) != "gpus_exhausted" {
		t.Fatalf("resume with no GPU free: %v", err)
	}
	if sb := e.status(t, a.ID); sb.Status != sandbox.StatusPaused || !sb.Archived {
		t.Fatalf("after a refused resume: %+v", sb)
	}
	if err := e.svc.Delete(ctx, "a", b.ID); err != nil {
		t.Fatal(err)
	}
	_, info, err := e.svc.Resume(ctx, "a", a.ID)
	if err != nil || info.From != "archive" {
		t.Fatalf("resume: %+v, %v", info, err)
	}
	if got := e.gpusSeen(t, "a", a.ID); got != "nvidia0" {
		t.Fatalf("resumed sandbox sees %q", got)
	}
	if row := gpuRow(t, e, a.ID); row.GPUs != "0" {
		t.Fatalf("resumed row holds %q", row.GPUs)
	}
}

// TestGPURestart: a new service on the same store and runtime (a restart)
// knows who holds what from the rows; a GPU held in memory by no active
// row (a path that forgot to give it back) is released by the reconciler.
func TestGPURestart(t *testing.T) {
	e, h := gpuEnv(t, 2, sandbox.Config{})
	ctx := context.Background()
	a := e.create(t, "t", sandbox.CreateRequest{Limits: sandbox.Limits{GPUs: 1}})
	e.svc.Close()
	host, err := gpu.Discover(ctx, gpu.Options{Root: h.Root})
	if err != nil {
		t.Fatal(err)
	}
	svc := sandbox.New(e.rt, e.st, events.NewBroker(), sandbox.Config{Node: "n1", GPUHost: host, ReconcileInterval: 100 * time.Millisecond})
	if err := svc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	e.svc = svc
	if hs := e.holders(t); len(hs[0]) != 1 || hs[0][0] != a.ID {
		t.Fatalf("holders after a restart: %v", hs)
	}
	b := e.create(t, "t", sandbox.CreateRequest{Limits: sandbox.Limits{GPUs: 1}})
	if got := e.gpusSeen(t, "t", b.ID); got != "nvidia1" {
		t.Fatalf("b sees %q", got)
	}
	if _, err := e.svc.Create(ctx, "t", "", sandbox.CreateRequest{Template: "base", Limits: sandbox.Limits{GPUs: 1}}); !errors.Is(err, sandbox.ErrGPUsExhausted) {
		t.Fatalf("a third: %v", err)
	}
	// The row stops saying so behind the service's back: the next pass
	// gives the GPU back.
	if err := e.st.SetStatus(ctx, b.ID, nil, "failed", "test"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the reconciler gives b's GPU back", func() bool { return len(e.holders(t)[1]) == 0 })
}

// TestGPUTemplateLimits: a template defined with gpus 1 gives its
// sandboxes a GPU; one defined on it inherits that.
func TestGPUTemplateLimits(t *testing.T) {
	e, _ := gpuEnv(t, 1, sandbox.Config{})
	ctx := context.Background()
	tpl, err := e.svc.AddTemplate(ctx, sandbox.TemplateRequest{Name: "gpu", From: "base", Limits: &sandbox.Limits{GPUs: 1}})
	if err != nil || tpl.Limits == nil || tpl.Limits.GPUs != 1 {
		t.Fatalf("template: %+v, %v", tpl, err)
	}
	if _, err := e.svc.AddTemplate(ctx, sandbox.TemplateRequest{Name: "gpu2", From: "gpu"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.AddTemplate(ctx, sandbox.TemplateRequest{Name: "big", From: "base", Limits: &sandbox.Limits{GPUs: 2}}); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("a template asking for more GPUs than the node has: %v", err)
	}
	list, err := e.svc.Templates(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, tp := range list {
		if (tp.Name == "gpu" || tp.Name == "gpu2") && (tp.Limits == nil || tp.Limits.GPUs != 1) {
			t.Errorf("listed %s: %+v", tp.Name, tp.Limits)
		}
	}
	sb := e.create(t, "t", sandbox.CreateRequest{Template: "gpu2"})
	if sb.Limits.GPUs != 1 || e.gpusSeen(t, "t", sb.ID) != "nvidia0" {
		t.Fatalf("a sandbox of the template: %+v sees %q", sb.Limits, e.gpusSeen(t, "t", sb.ID))
	}
	if err := e.svc.CheckTemplate(ctx, "gpu", sandbox.Limits{GPUs: 2}); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("check of 2 GPUs on a 1-GPU node: %v", err)
	}
}
