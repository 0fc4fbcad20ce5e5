package linux_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/sandpool/sandpool/internal/runtime"
	"github.com/sandpool/sandpool/internal/runtime/linux"
)

// testCgroupParent keeps test sandboxes apart from a real sandpool's.
const testCgroupParent = "sandpool-test"

// openRuntime opens a runtime on a fresh data directory and, at cleanup,
// destroys what is left and closes it.
func openRuntime(tb testing.TB) *linux.Runtime {
	tb.Helper()
	return openRuntimeAt(tb, tb.TempDir())
}

func openRuntimeAt(tb testing.TB, dir string) *linux.Runtime {
	tb.Helper()
	r, err := linux.Open(linux.Config{DataDir: dir, CgroupParent: testCgroupParent})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		list, _ := r.List(ctx)
		for _, sb := range list {
			if err := r.Destroy(ctx, sb.ID); err != nil {
				tb.Errorf("cleanup: %v", err)
			}
		}
		r.Close()
	})
	return r
}

func createSandbox(tb testing.TB, r *linux.Runtime, spec runtime.Spec) string {
	tb.Helper()
	info, err := r.Create(context.Background(), spec)
	if err != nil {
		tb.Fatalf("create: %v", err)
	}
	return info.ID
}

type result struct {
	runtime.ExitStatus
	Stdout, Stderr string
}

// run runs a command to completion and returns its output.
func run(tb testing.TB, r runtime.Runtime, id string, spec runtime.ExecSpec) result {
	tb.Helper()
	res, err := tryRun(r, id, spec, nil)
	if err != nil {
		tb.Fatalf("exec %v %q: %v", spec.Cmd, spec.Shell, err)
	}
	return res
}

func tryRun(r runtime.Runtime, id string, spec runtime.ExecSpec, stdin []byte) (result, error) {
	var out, errb bytes.Buffer
	stdio := runtime.Stdio{Stdout: &out, Stderr: &errb}
	if stdin != nil {
		stdio.Stdin = bytes.NewReader(stdin)
	}
	p, err := r.Exec(context.Background(), id, spec, stdio)
	if err != nil {
		return result{}, err
	}
	st, err := p.Wait()
	return result{ExitStatus: st, Stdout: out.String(), Stderr: errb.String()}, err
}

// sh runs a shell line as the default user.
func sh(tb testing.TB, r runtime.Runtime, id, line string) result {
	tb.Helper()
	return run(tb, r, id, runtime.ExecSpec{Shell: line})
}
