package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sandpool/sandpool/client"
)

func TestSandboxLifecycle(t *testing.T) {
	s := startServer(t, "")
	c := s.tenant("acme")
	ctx := context.Background()

	sb, err := c.CreateSandbox(ctx, client.CreateSandboxRequest{Template: "base",
		Env: map[string]string{"GREETING": "hello"}, Metadata: map[string]string{"job": "e2e"}})
	if err != nil {
		t.Fatal(err)
	}
	if sb.Status != "running" || sb.Template != "base" || !strings.HasPrefix(sb.ID, "sb_") || sb.CreatedAt.IsZero() {
		t.Fatalf("created: %+v", sb)
	}

	// A short command: the whole result at once.
	res, err := c.Exec(ctx, sb.ID, client.ExecRequest{Shell: "echo $GREETING; echo oops >&2; exit 3"})
	if err != nil {
		t.Fatal(err)
	}
	if string(res.Stdout) != "hello\n" || string(res.Stderr) != "oops\n" || res.ExitCode != 3 {
		t.Fatalf("exec: %+v stdout %q stderr %q", res.ExitStatus, res.Stdout, res.Stderr)
	}
	// Stdin, cwd, env.
	res, err = c.Exec(ctx, sb.ID, client.ExecRequest{Cmd: []string{"sh", "-c", "cat; pwd; echo $X"}, Stdin: []byte("in\n"), Cwd: "/tmp", Env: map[string]string{"X": "y"}})
	if err != nil || string(res.Stdout) != "in\n/tmp\ny\n" {
		t.Fatalf("exec with stdin: %q %v", res.Stdout, err)
	}

	// Streamed: output arrives as it is written, not at the end.
	st, err := c.ExecStream(ctx, sb.ID, client.ExecRequest{Shell: "for i in 1 2 3; do echo $i; sleep 0.2; done; echo done >&2"})
	if err != nil {
		t.Fatal(err)
	}
	var chunks []string
	var stderr string
	var exit *client.ExitStatus
	for {
		ev, err := st.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		switch ev.Type {
		case "stdout":
			chunks = append(chunks, string(ev.Data))
		case "stderr":
			stderr += string(ev.Data)
		case "exit":
			exit = ev.Exit
		}
	}
	st.Close()
	if strings.Join(chunks, "") != "1\n2\n3\n" || len(chunks) < 3 || stderr != "done\n" || exit == nil || exit.ExitCode != 0 {
		t.Fatalf("stream: chunks %q stderr %q exit %+v", chunks, stderr, exit)
	}

	// Files round trip, as the sandbox's user (who cannot write where
	// only root may: 403, and nothing changes).
	if _, err := c.WriteFile(ctx, sb.ID, "/etc/passwd", strings.NewReader("x"), client.WriteOptions{}); client.StatusOf(err) != 403 {
		t.Fatalf("overwrite /etc/passwd as the user: %v", err)
	}
	if _, err := c.WriteFile(ctx, sb.ID, "/home/user/work/notes.txt", strings.NewReader("data"), client.WriteOptions{MakeParents: true}); err != nil {
		t.Fatal(err)
	}
	files, err := c.ListFiles(ctx, sb.ID, "/home/user/work")
	if err != nil || len(files) != 1 || files[0].Name != "notes.txt" || files[0].Size != 4 {
		t.Fatalf("list: %+v %v", files, err)
	}
	res, err = c.Exec(ctx, sb.ID, client.ExecRequest{Cmd: []string{"cat", "/home/user/work/notes.txt"}})
	if err != nil || string(res.Stdout) != "data" {
		t.Fatalf("file seen from inside: %q %v", res.Stdout, err)
	}

	// List, with a metadata filter.
	list, err := c.ListSandboxes(ctx, client.ListOptions{Metadata: map[string]string{"job": "e2e"}})
	if err != nil || len(list) != 1 || list[0].ID != sb.ID {
		t.Fatalf("list: %+v %v", list, err)
	}
	if list, _ := c.ListSandboxes(ctx, client.ListOptions{Metadata: map[string]string{"job": "other"}}); len(list) != 0 {
		t.Fatalf("list with another filter: %+v", list)
	}

	// Delete: gone from the list, calls refused with 409, deleting again is fine.
	if err := c.DeleteSandbox(ctx, sb.ID); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteSandbox(ctx, sb.ID); err != nil {
		t.Fatalf("delete again: %v", err)
	}
	got, err := c.GetSandbox(ctx, sb.ID)
	if err != nil || got.Status != "stopped" {
		t.Fatalf("after delete: %+v %v", got, err)
	}
	if list, _ := c.ListSandboxes(ctx, client.ListOptions{}); len(list) != 0 {
		t.Fatalf("listed after delete: %+v", list)
	}
	_, err = c.Exec(ctx, sb.ID, client.ExecRequest{Cmd: []string{"true"}})
	if ae := apiErr(err); ae == nil || ae.Status != 409 {
		t.Fatalf("exec after delete: %v", err)
	}
}

func apiErr(err error) *client.APIError {
	var ae *client.APIError
	if errors.As(err, &ae) {
		return ae
	}
	return nil
}

// A background process is given stdin from separate calls, reattached to,
// and stopped with a signal.
func TestProcessesStdinAndSignal(t *testing.T) {
	s := startServer(t, "")
	c := s.client("")
	ctx := context.Background()
	sb, err := c.CreateSandbox(ctx, client.CreateSandboxRequest{Template: "base"})
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.StartProcess(ctx, sb.ID, client.ExecRequest{Shell: "echo ready; read x; echo got $x; exec sleep 60"})
	if err != nil {
		t.Fatal(err)
	}
	ps, err := c.ListProcesses(ctx, sb.ID)
	if err != nil || len(ps) != 1 || ps[0].ID != p.ID || !ps[0].Running {
		t.Fatalf("processes: %+v %v", ps, err)
	}
	st, err := c.Attach(ctx, sb.ID, p.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	lines := make(chan string, 16)
	exited := make(chan client.ExitStatus, 1)
	go func() {
		pr, pw := io.Pipe()
		go func() {
			sc := bufio.NewScanner(pr)
			for sc.Scan() {
				lines <- sc.Text()
			}
		}()
		es, _ := st.Wait(pw, io.Discard)
		pw.Close()
		exited <- es
	}()
	expect := func(want string) {
		t.Helper()
		select {
		case got := <-lines:
			if got != want {
				t.Fatalf("line %q, want %q", got, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no line %q", want)
		}
	}
	expect("ready")
	if err := c.WriteStdin(ctx, sb.ID, p.ID, strings.NewReader("pi"), false); err != nil {
		t.Fatal(err)
	}
	if err := c.WriteStdin(ctx, sb.ID, p.ID, strings.NewReader("ng\n"), true); err != nil {
		t.Fatal(err)
	}
	expect("got ping")
	// TERM until it ends: a signal that lands while the shell is between
	// its handler and exec is lost inside the shell.
	var es client.ExitStatus
	for done := false; !done; {
		if err := c.Signal(ctx, sb.ID, p.ID, "TERM"); err != nil {
			t.Fatal(err)
		}
		select {
		case es = <-exited:
			done = true
		case <-time.After(300 * time.Millisecond):
		}
	}
	if es.Signal != "SIGTERM" || es.ExitCode != 128+15 {
		t.Fatalf("exit %+v, want killed by SIGTERM", es)
	}
	if err := c.Signal(ctx, sb.ID, "p999", "TERM"); apiErr(err) == nil || apiErr(err).Status != 404 {
		t.Fatalf("signal to an unknown process: %v", err)
	}
}

// pattern is a deterministic stream of n bytes.
type pattern struct {
	rng  *rand.ChaCha8
	left int64
}

func (p *pattern) Read(b []byte) (int, error) {
	if p.left == 0 {
		return 0, io.EOF
	}
	if int64(len(b)) > p.left {
		b = b[:p.left]
	}
	p.rng.Read(b)
	p.left -= int64(len(b))
	return len(b), nil
}

// 200 MiB goes in and out without the server holding it in memory.
func TestLargeFileConstantMemory(t *testing.T) {
	s := startServer(t, "")
	c := s.client("")
	ctx := context.Background()
	sb, err := c.CreateSandbox(ctx, client.CreateSandboxRequest{Template: "base", Limits: client.Limits{MemoryBytes: 256 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	// Warm up so the baseline includes the buffers a transfer uses.
	if _, err := c.WriteFile(ctx, sb.ID, "/tmp/small", &pattern{rng: rand.NewChaCha8([32]byte{1}), left: 4 << 20}, client.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	before := vmHWM(t, s.pid())

	const size = 200 << 20
	want := sha256.New()
	n, err := c.WriteFile(ctx, sb.ID, "/home/user/big.bin", io.TeeReader(&pattern{rng: rand.NewChaCha8([32]byte{2}), left: size}, want),
		client.WriteOptions{MakeParents: true})
	if err != nil || n != size {
		t.Fatalf("upload: %d %v", n, err)
	}
	res, err := c.Exec(ctx, sb.ID, client.ExecRequest{Cmd: []string{"stat", "-c", "%s", "/home/user/big.bin"}})
	if err != nil || strings.TrimSpace(string(res.Stdout)) != "209715200" {
		t.Fatalf("size inside: %q %v", res.Stdout, err)
	}
	rc, err := c.ReadFile(ctx, sb.ID, "/home/user/big.bin")
	if err != nil {
		t.Fatal(err)
	}
	got := sha256.New()
	m, err := io.Copy(got, rc)
	rc.Close()
	if err != nil || m != size {
		t.Fatalf("download: %d %v", m, err)
	}
	if !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
		t.Fatal("downloaded bytes differ from uploaded ones")
	}
	after := vmHWM(t, s.pid())
	t.Logf("server peak RSS %d KiB before, %d KiB after 2x200 MiB", before, after)
	if grew := after - before; grew > 48<<10 {
		t.Fatalf("server peak memory grew by %d KiB moving 200 MiB each way", grew)
	}
}

func TestAuth(t *testing.T) {
	s := startServer(t, "")
	ctx := context.Background()
	for name, key := range map[string]string{"no key": "", "wrong key": "spk_nottherightkey", "garbage": "x"} {
		c, _ := client.New(s.url, key)
		_, err := c.ListSandboxes(ctx, client.ListOptions{})
		if ae := apiErr(err); ae == nil || ae.Status != 401 || ae.Code != "unauthorized" {
			t.Errorf("%s: %v, want 401", name, err)
		}
	}
	// Health and readiness need no key.
	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get(s.url + path)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("%s: %v %v", path, resp, err)
		}
		resp.Body.Close()
	}
	// A tenant key cannot manage keys; a revoked key is refused.
	tenant := s.tenant("t1")
	if _, err := tenant.CreateKey(ctx, "t2", false); apiErr(err) == nil || apiErr(err).Status != 403 {
		t.Fatalf("tenant creating a key: %v", err)
	}
	admin := s.client("")
	k, err := admin.CreateKey(ctx, "t3", false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.client(k.Secret).ListSandboxes(ctx, client.ListOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := admin.RevokeKey(ctx, k.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.client(k.Secret).ListSandboxes(ctx, client.ListOptions{}); apiErr(err) == nil || apiErr(err).Status != 401 {
		t.Fatalf("revoked key: %v", err)
	}
	keys, err := admin.ListKeys(ctx)
	if err != nil || len(keys) != 3 {
		t.Fatalf("keys: %+v %v", keys, err)
	}
}

func TestTenantsSeeOnlyTheirOwn(t *testing.T) {
	s := startServer(t, "")
	ctx := context.Background()
	a, b := s.tenant("alpha"), s.tenant("beta")
	sb, err := a.CreateSandbox(ctx, client.CreateSandboxRequest{Template: "base"})
	if err != nil {
		t.Fatal(err)
	}
	calls := map[string]error{}
	_, calls["get"] = b.GetSandbox(ctx, sb.ID)
	_, calls["exec"] = b.Exec(ctx, sb.ID, client.ExecRequest{Cmd: []string{"true"}})
	_, calls["read"] = b.ReadFile(ctx, sb.ID, "/etc/hostname")
	calls["delete"] = b.DeleteSandbox(ctx, sb.ID)
	for name, err := range calls {
		if ae := apiErr(err); ae == nil || ae.Status != 404 {
			t.Errorf("tenant b %s of a's sandbox: %v, want 404", name, err)
		}
	}
	if list, err := b.ListSandboxes(ctx, client.ListOptions{}); err != nil || len(list) != 0 {
		t.Fatalf("b lists: %+v %v", list, err)
	}
	if got, err := a.GetSandbox(ctx, sb.ID); err != nil || got.Status != "running" {
		t.Fatalf("a's sandbox: %+v %v", got, err)
	}
}

func TestIdempotentCreate(t *testing.T) {
	s := startServer(t, "")
	c := s.client("")
	ctx := context.Background()
	req := client.CreateSandboxRequest{Template: "base", Metadata: map[string]string{"n": "1"}, IdempotencyKey: "order-42"}
	first, err := c.CreateSandbox(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	again, err := c.CreateSandbox(ctx, req)
	if err != nil || again.ID != first.ID {
		t.Fatalf("same key, same body: %+v %v, want %s", again, err, first.ID)
	}
	req.Metadata["n"] = "2"
	_, err = c.CreateSandbox(ctx, req)
	if ae := apiErr(err); ae == nil || ae.Status != 422 || ae.Code != "idempotency_mismatch" {
		t.Fatalf("same key, other body: %v", err)
	}
	// Another tenant's identical key is its own.
	other, err := s.tenant("other").CreateSandbox(ctx, client.CreateSandboxRequest{Template: "base", IdempotencyKey: "order-42"})
	if err != nil || other.ID == first.ID {
		t.Fatalf("other tenant: %+v %v", other, err)
	}
	if list, _ := c.ListSandboxes(ctx, client.ListOptions{}); len(list) != 1 {
		t.Fatalf("%d sandboxes after three creates with one key", len(list))
	}
}

func TestCapacity(t *testing.T) {
	s := startServer(t, "", "--max-sandboxes", "1")
	c := s.client("", client.WithRetryBudget(0))
	ctx := context.Background()
	if _, err := c.CreateSandbox(ctx, client.CreateSandboxRequest{Template: "base"}); err != nil {
		t.Fatal(err)
	}
	_, err := c.CreateSandbox(ctx, client.CreateSandboxRequest{Template: "base"})
	if ae := apiErr(err); ae == nil || ae.Status != 429 || ae.Code != "at_capacity" {
		t.Fatalf("create over capacity: %v", err)
	}
}

// SIGTERM stops the server cleanly; its sandboxes live on and the next
// start serves them again.
func TestRestartKeepsSandboxes(t *testing.T) {
	s := startServer(t, "")
	c := s.client("")
	ctx := context.Background()
	sb, err := c.CreateSandbox(ctx, client.CreateSandboxRequest{Template: "base"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, sb.ID, client.ExecRequest{Shell: "echo kept > /tmp/state"}); err != nil {
		t.Fatal(err)
	}
	p, err := c.StartProcess(ctx, sb.ID, client.ExecRequest{Cmd: []string{"sleep", "600"}})
	if err != nil {
		t.Fatal(err)
	}
	s.stop()
	if !strings.Contains(s.log(), "sandboxes keep running") {
		t.Fatalf("shutdown log:\n%s", s.log())
	}

	s2 := startServer(t, s.data)
	c2 := s2.client("") // the admin key is the same: it lives in the data directory
	got, err := c2.GetSandbox(ctx, sb.ID)
	if err != nil || got.Status != "running" {
		t.Fatalf("after restart: %+v %v", got, err)
	}
	res, err := c2.Exec(ctx, sb.ID, client.ExecRequest{Cmd: []string{"cat", "/tmp/state"}})
	if err != nil || string(res.Stdout) != "kept\n" {
		t.Fatalf("state after restart: %q %v", res.Stdout, err)
	}
	ps, err := c2.ListProcesses(ctx, sb.ID)
	if err != nil || len(ps) != 1 || ps[0].ID != p.ID || !ps[0].Running {
		t.Fatalf("processes after restart: %+v %v", ps, err)
	}
	if err := c2.DeleteSandbox(ctx, sb.ID); err != nil {
		t.Fatal(err)
	}
}

func TestServeExplainsWhatIsWrong(t *testing.T) {
	s := startServer(t, "")
	addr := strings.TrimPrefix(s.url, "http://")
	out, err := exec.Command(binary, "serve", "--listen", addr, "--data", t.TempDir()).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "address is in use") {
		t.Fatalf("second server on a taken port: %v\n%s", err, out)
	}
	out, err = exec.Command(binary, "serve", "--data", "relative/dir", "--listen", "127.0.0.1:0").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "absolute path") {
		t.Fatalf("relative data dir: %v\n%s", err, out)
	}
}

// The node says which build it runs, in GET /v1/node and as a metric, and
// the CLI says the same; a build from a git checkout names its revision.
func TestBuildInfo(t *testing.T) {
	s := startServer(t, "")
	ctx := context.Background()
	node, err := s.client(s.adminKey).Node(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(node.Build.GoVersion, "go1.") || node.Build.Version == "" {
		t.Fatalf("build %+v", node.Build)
	}
	rev, gitErr := exec.Command("git", "rev-parse", "HEAD").Output()
	if gitErr == nil && node.Build.Revision != strings.TrimSpace(string(rev)) {
		t.Fatalf("revision %q, want %q (the checkout it was built from)", node.Build.Revision, rev)
	}
	out, err := exec.Command(binary, "version").Output()
	if err != nil || !strings.Contains(string(out), node.Build.GoVersion) ||
		(node.Build.Revision != "" && !strings.Contains(string(out), node.Build.Revision[:12])) {
		t.Fatalf("sandpool version: %q %v", out, err)
	}
	metrics := s.metrics(t)
	want := fmt.Sprintf(`sandpool_build_info{go_version=%q,modified=%q,revision=%q,version=%q} 1`,
		node.Build.GoVersion, strconv.FormatBool(node.Build.Modified), node.Build.Revision, node.Build.Version)
	if !strings.Contains(metrics, want) {
		t.Fatalf("metrics lack %s", want)
	}
}
