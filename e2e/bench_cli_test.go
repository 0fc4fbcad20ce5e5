package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/sandpool/sandpool/client"
	"github.com/sandpool/sandpool/internal/bench"
)

// TestBenchCommand runs every scenario of `sandpool bench` briefly against
// a real server: the JSON has every figure, each positive, and nothing is
// left behind.
func TestBenchCommand(t *testing.T) {
	s := startServer(t, "")
	want := []string{"cold_create_p50_ms", "cold_create_p99_ms", "acquire_p50_ms", "acquire_p99_ms",
		"acquire_release_per_sec", "exec_p50_ms", "exec_p99_ms", "pause_resume_p50_ms", "archive_resume_p50_ms",
		"density_sandboxes", "host_overhead_per_sandbox_kib"}
	var res bench.Result
	// The host-memory figure is a difference of the host's free memory:
	// other tests running at the same time can hide it; measure again then.
	for attempt := range 3 {
		cmd := exec.Command(binary, "bench", "--json", "--duration", "1s", "--concurrency", "2", "--density-max", "24")
		cmd.Env = append(os.Environ(), "SANDPOOL_URL="+s.url, "SANDPOOL_API_KEY="+s.adminKey)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("sandpool bench: %v\n%s", err, stderr.String())
		}
		res = bench.Result{}
		if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
			t.Fatalf("bench output %q: %v", stdout.String(), err)
		}
		if res["host_overhead_per_sandbox_kib"] > 0 {
			break
		}
		t.Logf("attempt %d: host overhead %g KiB: measured again", attempt, res["host_overhead_per_sandbox_kib"])
	}
	for _, name := range want {
		v, ok := res[name]
		if !ok || !(v > 0) {
			t.Errorf("%s = %v (present %v), want a positive number", name, v, ok)
		}
	}
	t.Logf("figures: %v", res)
	// Nothing left: no active sandbox, no pool, no directory.
	c := s.client("")
	list, err := c.ListSandboxes(context.Background(), client.ListOptions{})
	if err != nil || len(list) != 0 {
		t.Fatalf("sandboxes left: %+v %v", list, err)
	}
	if pools, _ := c.ListPools(context.Background()); len(pools) != 0 {
		t.Fatalf("pools left: %+v", pools)
	}
	if ents, _ := os.ReadDir(filepath.Join(s.data, "sandboxes")); len(ents) != 0 {
		t.Fatalf("%d sandbox directories left", len(ents))
	}
}

// An interrupted bench removes what it made.
func TestBenchInterrupted(t *testing.T) {
	s := startServer(t, "")
	cmd := exec.Command(binary, "bench", "--scenario", "cold,exec", "--duration", "30s")
	cmd.Env = append(os.Environ(), "SANDPOOL_URL="+s.url, "SANDPOOL_API_KEY="+s.adminKey)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := s.client("")
	// Interrupt once it is working.
	for {
		list, _ := c.ListSandboxes(context.Background(), client.ListOptions{Statuses: []string{"all"}})
		if len(list) >= 3 {
			break
		}
	}
	cmd.Process.Signal(os.Interrupt)
	err := cmd.Wait()
	if err == nil || !bytes.Contains(stderr.Bytes(), []byte("interrupted")) {
		t.Fatalf("interrupted bench: %v\n%s", err, stderr.String())
	}
	if list, _ := c.ListSandboxes(context.Background(), client.ListOptions{}); len(list) != 0 {
		t.Fatalf("sandboxes left after an interrupted bench: %+v", list)
	}
}

// Density on a node with a small --max-sandboxes: the node's limit is a
// result (the count, and why it stopped), not an error.
func TestBenchDensityAtTheNodeLimit(t *testing.T) {
	s := startServer(t, "", "--max-sandboxes", "6")
	cmd := exec.Command(binary, "bench", "--json", "--scenario", "density", "--concurrency", "4", "--density-max", "50")
	cmd.Env = append(os.Environ(), "SANDPOOL_URL="+s.url, "SANDPOOL_API_KEY="+s.adminKey)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("sandpool bench at the node's limit: %v\n%s", err, stderr.String())
	}
	var res bench.Result
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		t.Fatalf("bench output %q: %v", stdout.String(), err)
	}
	if res["density_sandboxes"] != 6 || res["density_stopped_at_node_limit"] != 1 {
		t.Fatalf("figures %v, want 6 sandboxes, stopped at the node's limit", res)
	}
	if !bytes.Contains(stderr.Bytes(), []byte("stopped by node_limit with 6 sandboxes")) {
		t.Fatalf("progress does not say why it stopped:\n%s", stderr.String())
	}
	if list, _ := s.client("").ListSandboxes(context.Background(), client.ListOptions{}); len(list) != 0 {
		t.Fatalf("sandboxes left: %+v", list)
	}
}
