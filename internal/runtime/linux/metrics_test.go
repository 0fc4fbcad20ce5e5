package linux_test

import (
	"context"
	"errors"
	"testing"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/proc"
	"github.com/sandpool/sandpool/internal/runtime"
)

func TestMetrics(t *testing.T) {
	r := openRuntime(t)
	id := createSandbox(t, r, runtime.Spec{Template: "base", Limits: runtime.Limits{CPUs: 1.5, MemoryBytes: 256 << 20}})
	ctx := context.Background()

	before, err := r.Metrics(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if before.CPUCount != 2 || before.MemTotalBytes != 256<<20 || before.DiskTotalBytes <= 0 || before.Timestamp.IsZero() {
		t.Fatalf("metrics %+v", before)
	}
	// Busy for a while, 16 MiB written, 32 MiB held in memory by a process
	// still running.
	sh(t, r, id, "end=$(($(date +%s)+1)); while [ $(date +%s) -lt $end ]; do :; done; head -c 16777216 /dev/urandom > /home/user/f")
	p, err := r.Exec(ctx, id, proc.Spec{Cmd: []string{"python3", "-c", "import sys,time; b = bytearray(32 << 20); b[::4096] = b'x' * len(b[::4096]); print('held', flush=True); time.sleep(100)"}, Background: true}, proc.Stdio{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Signal(ctx, id, p.ID(), 9)
	var out syncBuffer
	a, err := r.Attach(ctx, id, p.ID(), proc.Stdio{Stdout: &out})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	out.waitFor(t, "held")
	after, err := r.Metrics(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if after.CPUUsedPct <= 0 || after.CPUUsedPct > 100 {
		t.Errorf("CPU %.1f%% after a busy loop", after.CPUUsedPct)
	}
	if after.DiskUsedBytes < 16<<20 || after.DiskUsedBytes-before.DiskUsedBytes < 16<<20 {
		t.Errorf("disk used %d before, %d after writing 16 MiB", before.DiskUsedBytes, after.DiskUsedBytes)
	}
	if after.MemUsedBytes < 32<<20 || after.MemUsedBytes > after.MemTotalBytes {
		t.Errorf("memory used %d with 32 MiB held (limit %d)", after.MemUsedBytes, after.MemTotalBytes)
	}
	if _, err := r.Metrics(ctx, "sb_nope"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("metrics of a missing sandbox: %v", err)
	}
}
