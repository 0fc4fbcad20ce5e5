package linux_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/sandpool/sandpool/internal/runtime"
	"github.com/sandpool/sandpool/internal/runtime/linux"
)

func TestSmoke(t *testing.T) {
	dir := t.TempDir()
	r, err := linux.Open(linux.Config{DataDir: dir, CgroupParent: "sandpool-test"})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ctx := context.Background()
	info, err := r.Create(ctx, runtime.Spec{Template: "base"})
	if err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	p, err := r.Exec(ctx, info.ID, runtime.ExecSpec{Shell: "id; hostname; ls -la /; ps aux; cat /proc/self/status | grep -i cap; ip addr 2>&1; python3 -c 'print(1+1)'"}, runtime.Stdio{Stdout: &out, Stderr: &errb})
	if err != nil {
		t.Fatal(err)
	}
	st, err := p.Wait()
	t.Logf("%+v %v\n%s\n%s", st, err, out.String(), errb.String())
	if err := r.Destroy(ctx, info.ID); err != nil {
		t.Fatal(err)
	}
}
