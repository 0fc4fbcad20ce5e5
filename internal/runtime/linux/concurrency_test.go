package linux_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/fsys"
	"github.com/sandpool/sandpool/internal/proc"
	"github.com/sandpool/sandpool/internal/runtime"
)

// Many goroutines share one runtime: sandboxes are created, used and
// destroyed concurrently, and every output must belong to its own caller.
func TestConcurrentUse(t *testing.T) {
	r := openRuntime(t)
	ctx := context.Background()
	shared := createSandbox(t, r, runtime.Spec{Template: "base"})

	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 5; i++ {
				token := fmt.Sprintf("g%d-i%d", g, i)
				// Own sandbox: create, exec, file round trip, destroy.
				info, err := r.Create(ctx, runtime.Spec{Template: "base"})
				if err != nil {
					t.Errorf("create: %v", err)
					return
				}
				res, err := tryRun(r, info.ID, proc.Spec{Cmd: []string{"echo", token}}, nil)
				if err != nil || res.Stdout != token+"\n" {
					t.Errorf("exec in own sandbox: %q %v", res.Stdout, err)
				}
				if _, err := r.Files(info.ID).Write(ctx, "/tmp/t", strings.NewReader(token), fsys.WriteOptions{}); err != nil {
					t.Errorf("write: %v", err)
				}
				if rc, _, err := r.Files(info.ID).Read(ctx, "/tmp/t", fsys.Options{}); err != nil {
					t.Errorf("read: %v", err)
				} else {
					b, _ := io.ReadAll(rc)
					rc.Close()
					if string(b) != token {
						t.Errorf("read back %q, want %q", b, token)
					}
				}
				// Shared sandbox: concurrent execs must not mix output.
				res, err = tryRun(r, shared, proc.Spec{Shell: "cat; echo " + token + " >&2"}, []byte(token))
				if err != nil || res.Stdout != token || res.Stderr != token+"\n" {
					t.Errorf("exec in shared sandbox: %+v %v", res, err)
				}
				if _, err := r.List(ctx); err != nil {
					t.Errorf("list: %v", err)
				}
				if err := r.Destroy(ctx, info.ID); err != nil {
					t.Errorf("destroy: %v", err)
				}
			}
		}()
	}
	wg.Wait()
	list, _ := r.List(ctx)
	if len(list) != 1 || list[0].ID != shared {
		t.Fatalf("left: %+v", list)
	}
}

// Exec racing Destroy gets either a result or a clean error: never a hang,
// never a panic, never a state error, and never a sandbox that outlives its Destroy.
func TestExecRacingDestroy(t *testing.T) {
	r := openRuntime(t)
	ctx := context.Background()
	for round := 0; round < 10; round++ {
		id := createSandbox(t, r, runtime.Spec{Template: "base"})
		var wg sync.WaitGroup
		for i := 0; i < 6; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := tryRun(r, id, proc.Spec{Shell: "sleep 0.05; echo x"}, nil)
				// Destroy is not a broken sandbox: no state error.
				if err != nil && !errors.Is(err, errdefs.ErrNotFound) && !errors.Is(err, errdefs.ErrConflict) {
					t.Errorf("exec during destroy: unexpected error %v", err)
				}
			}()
		}
		if err := r.Destroy(ctx, id); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		if _, err := r.Get(ctx, id); !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("sandbox still there after destroy: %v", err)
		}
	}
}
