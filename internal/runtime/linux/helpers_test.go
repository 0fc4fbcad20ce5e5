package linux_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/sandpool/sandpool/internal/proc"
	"github.com/sandpool/sandpool/internal/runtime"
	"github.com/sandpool/sandpool/internal/runtime/linux"
	"github.com/sandpool/sandpool/internal/runtime/linux/linuxtest"
)

// testCgroupParent keeps test sandboxes apart from a real sandpool's.
var testCgroupParent = linuxtest.CgroupParent

// openRuntime opens a runtime on a fresh data directory and, at cleanup,
// destroys what is left and closes it.
func openRuntime(tb testing.TB) *linux.Runtime { return linuxtest.Open(tb) }

func openRuntimeAt(tb testing.TB, dir string) *linux.Runtime { return linuxtest.OpenAt(tb, dir) }

func createSandbox(tb testing.TB, r *linux.Runtime, spec runtime.Spec) string {
	tb.Helper()
	info, err := r.Create(context.Background(), spec)
	if err != nil {
		tb.Fatalf("create: %v", err)
	}
	return info.ID
}

type result struct {
	proc.ExitStatus
	Stdout, Stderr string
}

// run runs a command to completion and returns its output.
func run(tb testing.TB, r runtime.Runtime, id string, spec proc.Spec) result {
	tb.Helper()
	res, err := tryRun(r, id, spec, nil)
	if err != nil {
		tb.Fatalf("exec %v %q: %v", spec.Cmd, spec.Shell, err)
	}
	return res
}

func tryRun(r runtime.Runtime, id string, spec proc.Spec, stdin []byte) (result, error) {
	var out, errb bytes.Buffer
	stdio := proc.Stdio{Stdout: &out, Stderr: &errb}
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
	return run(tb, r, id, proc.Spec{Shell: line})
}
