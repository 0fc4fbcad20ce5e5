package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/sandpool/sandpool/client"
	"github.com/sandpool/sandpool/internal/gpu/gputest"
)

// gpuHolders maps each GPU index the node hands out to its holders.
func gpuHolders(t *testing.T, c *client.Client) map[int][]string {
	t.Helper()
	n, err := c.Node(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := map[int][]string{}
	for _, g := range n.GPUs {
		out[g.Index] = g.Sandboxes
	}
	return out
}

// seenGPUs lists the GPU nodes a sandbox's /dev holds.
func seenGPUs(t *testing.T, c *client.Client, id string) string {
	t.Helper()
	res, err := c.Exec(context.Background(), id, client.ExecRequest{Shell: "cd /dev && ls -d nvidia[0-9]* 2>/dev/null | tr '\\n' ' '"})
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(res.Stdout))
}

const openScript = `import errno, os, sys
for p in sys.argv[1:]:
    try:
        os.close(os.open(p, os.O_RDWR)); print("OK")
    except OSError as e:
        print(errno.errorcode.get(e.errno, str(e.errno)))
`

// TestGPUSandboxes runs the real binary on a stand-in host of two GPUs
// (character devices no driver has: opening one the device cgroup lets
// through fails with ENXIO, one it refuses with EPERM): concurrent
// creates never hand a GPU to two sandboxes, each sees and opens only its
// own, the rest get 409 gpus_exhausted; holders survive a SIGKILL of the
// server and a restart; deletes give GPUs back.
func TestGPUSandboxes(t *testing.T) {
	h := gputest.New(t, 2)
	data := t.TempDir()
	s := startServer(t, data, "--gpu-root", h.Root)
	c := s.client("")
	ctx := context.Background()
	node, err := c.Node(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(node.GPUs) != 2 || node.GPUs[0].UUID != gputest.UUID(0) || node.GPUs[1].Index != 1 || node.GPUDriver != "580.0.1" {
		t.Fatalf("node: %+v", node)
	}
	if m := s.metrics(t); !strings.Contains(m, "sandpool_node_gpus 2") || !strings.Contains(m, `sandpool_gpu_sandboxes{gpu="1"} 0`) {
		t.Fatalf("metrics lack the GPUs:\n%s", grepLines(m, "gpu"))
	}

	// Eight creates at once for two GPUs.
	type made struct {
		id  string
		err error
	}
	results := make(chan made, 8)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			sb, err := c.CreateSandbox(ctx, client.CreateSandboxRequest{Template: "base", Limits: client.Limits{GPUs: 1}})
			if err != nil {
				results <- made{err: err}
				return
			}
			results <- made{id: sb.ID}
		})
	}
	wg.Wait()
	close(results)
	var ids []string
	for r := range results {
		switch ae := apiErr(r.err); {
		case r.err == nil:
			ids = append(ids, r.id)
		case ae != nil && ae.Status == 409 && ae.Code == "gpus_exhausted":
		default:
			t.Errorf("create: %v", r.err)
		}
	}
	if len(ids) != 2 {
		t.Fatalf("%d of 8 concurrent creates got a GPU, want 2", len(ids))
	}
	seen := map[string]string{}
	for _, id := range ids {
		g := seenGPUs(t, c, id)
		if g != "nvidia0" && g != "nvidia1" {
			t.Fatalf("%s sees %q", id, g)
		}
		if other, dup := seen[g]; dup {
			t.Fatalf("%s handed to %s and %s", g, other, id)
		}
		seen[g] = id
	}
	a, b := seen["nvidia0"], seen["nvidia1"]
	// Each opens its own node (ENXIO: let through to a driver that is
	// not there) and cannot reach the other's, as its root too.
	for _, tc := range []struct{ id, own, other string }{{a, "nvidia0", "nvidia1"}, {b, "nvidia1", "nvidia0"}} {
		for _, user := range []string{"", "root"} {
			res, err := c.Exec(ctx, tc.id, client.ExecRequest{User: user,
				Cmd: []string{"python3", "-c", openScript, "/dev/" + tc.own, "/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/" + tc.other, h.Node(tc.other)}})
			if err != nil {
				t.Fatal(err)
			}
			if got, want := strings.Fields(string(res.Stdout)), []string{"ENXIO", "ENXIO", "ENXIO", "ENOENT", "ENOENT"}; !slices.Equal(got, want) {
				t.Errorf("%s as %q opens %v, want %v (%s)", tc.id, user, got, want, res.Stderr)
			}
		}
		mk, err := c.Exec(ctx, tc.id, client.ExecRequest{User: "root", Shell: fmt.Sprintf("mknod /dev/%s c %d %s", tc.other, h.GPUMajor, strings.TrimPrefix(tc.other, "nvidia"))})
		if err != nil || mk.ExitCode == 0 {
			t.Errorf("%s: root made the other's node: %+v %v", tc.id, mk, err)
		}
		// Its device cgroup refuses the other's node even to a host process
		// placed in it (EPERM), and lets its own through (ENXIO).
		if got := gputest.OpenFrom(t, []string{deviceProcs(s, tc.id)}, h.Node(tc.own), h.Node(tc.other)); !slices.Equal(got, []string{"ENXIO", "EPERM"}) {
			t.Errorf("%s: from its device cgroup: %v", tc.id, got)
		}
		res, err := c.Exec(ctx, tc.id, client.ExecRequest{Shell: "echo $CUDA_VISIBLE_DEVICES"})
		if err != nil || strings.TrimSpace(string(res.Stdout)) != gputest.UUID(int(tc.own[len(tc.own)-1]-'0')) {
			t.Errorf("%s: CUDA_VISIBLE_DEVICES %q, %v", tc.id, res.Stdout, err)
		}
	}
	plain, err := c.CreateSandbox(ctx, client.CreateSandboxRequest{Template: "base"})
	if err != nil {
		t.Fatal(err)
	}
	if g := seenGPUs(t, c, plain.ID); g != "" {
		t.Fatalf("a sandbox without GPUs sees %q", g)
	}
	// Client mistakes are 422, not 500.
	for _, n := range []int{3, -1} {
		_, err := c.CreateSandbox(ctx, client.CreateSandboxRequest{Template: "base", Limits: client.Limits{GPUs: n}})
		if ae := apiErr(err); ae == nil || ae.Status != 422 {
			t.Errorf("gpus %d: %v", n, err)
		}
	}
	// The CLI says why.
	cli := exec.Command(binary, "sandbox", "create", "--gpus", "1")
	cli.Env = append(cli.Environ(), "SANDPOOL_URL="+s.url, "SANDPOOL_API_KEY="+s.adminKey)
	out, err := cli.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "gpus_exhausted") {
		t.Errorf("CLI create with no GPU free: %v\n%s", err, out)
	}

	// SIGKILL: the next server knows who holds what from the store.
	s.cmd.Process.Kill()
	<-s.exited
	s = startServer(t, data, "--gpu-root", h.Root)
	c = s.client("")
	if hs := gpuHolders(t, c); !slices.Equal(hs[0], []string{a}) || !slices.Equal(hs[1], []string{b}) {
		t.Fatalf("holders after SIGKILL and restart: %v (want %s, %s)", hs, a, b)
	}
	if _, err := c.CreateSandbox(ctx, client.CreateSandboxRequest{Template: "base", Limits: client.Limits{GPUs: 1}}); apiErr(err) == nil || apiErr(err).Code != "gpus_exhausted" {
		t.Fatalf("a create after the restart: %v", err)
	}
	if err := c.DeleteSandbox(ctx, a); err != nil {
		t.Fatal(err)
	}
	d, err := c.CreateSandbox(ctx, client.CreateSandboxRequest{Template: "base", Limits: client.Limits{GPUs: 1}})
	if err != nil {
		t.Fatal(err)
	}
	if g := seenGPUs(t, c, d.ID); g != "nvidia0" {
		t.Fatalf("the GPU a delete gave back: %s sees %q", d.ID, g)
	}
	// A clean restart too.
	s.stop()
	s = startServer(t, data, "--gpu-root", h.Root)
	c = s.client("")
	if hs := gpuHolders(t, c); !slices.Equal(hs[0], []string{d.ID}) || !slices.Equal(hs[1], []string{b}) {
		t.Fatalf("holders after a restart: %v", hs)
	}
	for _, id := range []string{b, d.ID, plain.ID} {
		if err := c.DeleteSandbox(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	for i, hs := range gpuHolders(t, c) {
		if len(hs) != 0 {
			t.Errorf("GPU %d still held by %v after every delete", i, hs)
		}
	}
}

// TestGPUServeFlags: --gpus picks GPUs, none refuses GPU requests
// clearly, a GPU that is not there stops serve at start; a template can
// carry gpus.
func TestGPUServeFlags(t *testing.T) {
	h := gputest.New(t, 2)
	ctx := context.Background()
	s := startServer(t, "", "--gpu-root", h.Root, "--gpus", "1")
	c := s.client("")
	if hs := gpuHolders(t, c); len(hs) != 1 || hs[1] != nil {
		t.Fatalf("--gpus 1: %v", hs)
	}
	if _, err := c.AddTemplate(ctx, client.TemplateRequest{Name: "gpu", From: "base", Limits: &client.Limits{GPUs: 1}}, nil); err != nil {
		t.Fatal(err)
	}
	sb, err := c.CreateSandbox(ctx, client.CreateSandboxRequest{Template: "gpu"})
	if err != nil {
		t.Fatal(err)
	}
	if g := seenGPUs(t, c, sb.ID); g != "nvidia1" || sb.Limits.GPUs != 1 {
		t.Fatalf("a sandbox of a GPU template: %+v sees %q", sb.Limits, g)
	}
	if err := c.DeleteSandbox(ctx, sb.ID); err != nil {
		t.Fatal(err)
	}
	// The CLI's --gpus on templates and pools.
	cli := func(args ...string) (string, error) {
		cmd := exec.Command(binary, args...)
		cmd.Env = append(cmd.Environ(), "SANDPOOL_URL="+s.url, "SANDPOOL_API_KEY="+s.adminKey)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := cli("template", "add", "gpu-cli", "--from", "base", "--gpus", "1"); err != nil {
		t.Fatalf("template add --gpus: %v\n%s", err, out)
	}
	id, err := cli("sandbox", "create", "--template", "gpu-cli")
	if err != nil {
		t.Fatalf("create of a GPU template: %v\n%s", err, id)
	}
	if g := seenGPUs(t, c, strings.TrimSpace(id)); g != "nvidia1" {
		t.Fatalf("a sandbox of a template added with --gpus sees %q", g)
	}
	if err := c.DeleteSandbox(ctx, strings.TrimSpace(id)); err != nil {
		t.Fatal(err)
	}
	if out, err := cli("pool", "create", "two", "--gpus", "2", "--min-idle", "0"); err == nil || !strings.Contains(out, "422") {
		t.Fatalf("pool create --gpus 2 on a node handing out 1: %v\n%s", err, out)
	}

	none := startServer(t, "", "--gpu-root", h.Root, "--gpus", "none")
	_, err = none.client("").CreateSandbox(ctx, client.CreateSandboxRequest{Template: "base", Limits: client.Limits{GPUs: 1}})
	if ae := apiErr(err); ae == nil || ae.Status != 422 || ae.Code != "no_gpus" {
		t.Fatalf("a GPU create with --gpus none: %v", err)
	}

	out, err := exec.Command(binary, "serve", "--listen", "127.0.0.1:0", "--data", t.TempDir(), "--cgroup-parent", s.cgroup,
		"--gpu-root", h.Root, "--gpus", "0,7").CombinedOutput()
	if err == nil || !strings.Contains(string(out), `GPU "7" not found`) {
		t.Fatalf("--gpus naming a GPU that is not there: %v\n%s", err, out)
	}
}

// deviceProcs is the cgroup.procs file of a sandbox's device cgroup.
func deviceProcs(s *server, id string) string {
	if _, err := os.Stat("/sys/fs/cgroup/devices"); err == nil {
		return filepath.Join("/sys/fs/cgroup/devices", s.cgroup, id, "cgroup.procs")
	}
	return filepath.Join("/sys/fs/cgroup", s.cgroup, id, "cgroup.procs")
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
