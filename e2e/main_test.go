// Package e2e tests sandpool the way a user runs it: the real binary,
// started with `sandpool serve`, used through the Go client and the CLI.
package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sandpool/sandpool/client"
	"github.com/sandpool/sandpool/internal/egress/egresstest"
	"github.com/sandpool/sandpool/internal/runtime/linux"
	"github.com/sandpool/sandpool/internal/runtime/linux/linuxtest"
	"github.com/sandpool/sandpool/internal/store/pgtest"
	"go.uber.org/goleak"
)

// binary is the sandpool built for these tests.
var binary string

func TestMain(m *testing.M) {
	if linux.IsInit() {
		linux.Init() // the cleanup opens runtimes; their sandboxes' init is this binary
	}
	dir, err := os.MkdirTemp("", "sandpool-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "sandpool")
	// -buildvcs=auto: stamped with the checkout's revision when git is there
	// (whatever GOFLAGS says), as a user's build is.
	build := exec.Command("go", "build", "-buildvcs=auto", "-o", binary, "../cmd/sandpool")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build sandpool:", err)
		os.Exit(1)
	}
	code := linuxtest.Finish(m.Run()) // fails the run if a server left cgroups
	pgtest.Stop()
	os.RemoveAll(dir)
	if code == 0 {
		// Every goroutine a test started (readers of servers' output,
		// streams, clients) has ended.
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goroutines leaked:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// server is a running `sandpool serve`.
type server struct {
	t        testing.TB
	data     string
	cgroup   string
	url      string
	adminKey string
	cmd      *exec.Cmd
	exited   chan struct{}
	exitErr  error
	// world, for a server run inside a fake internet's host namespace
	// (startServerIn): hc reaches it there.
	world *egresstest.World
	hc    *http.Client

	mu     sync.Mutex
	stderr strings.Builder
}

// startServer runs `sandpool serve` on a free port with its own data
// directory (or data, to restart on one) and extra flags. When the test
// ends the server gets SIGTERM and must exit cleanly; then every sandbox
// still in its runtime is destroyed. It runs in this process's network
// namespace, the host's, so it runs with --no-egress unless flags say
// otherwise: no test packet may leave the machine (network tests use
// startServerIn).
func startServer(tb testing.TB, data string, flags ...string) *server {
	tb.Helper()
	egressFlag := false
	for _, f := range flags {
		egressFlag = egressFlag || strings.Contains(f, "egress")
	}
	if !egressFlag {
		flags = append(flags, "--no-egress")
	}
	return launch(tb, nil, data, flags...)
}

// startServerIn runs `sandpool serve` like startServer, but inside the
// host namespace of the fake internet w, with w's resolver as its
// upstream DNS: its sandboxes' traffic goes to w and nowhere else.
func startServerIn(tb testing.TB, w *egresstest.World, data string, flags ...string) *server {
	tb.Helper()
	flags = append([]string{"--egress-resolver", netip.AddrPortFrom(egresstest.UpstreamDNS, 53).String()}, flags...)
	return launch(tb, w, data, flags...)
}

func launch(tb testing.TB, w *egresstest.World, data string, flags ...string) *server {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Fatal("end-to-end tests need root (CI runs as root)")
	}
	if data == "" {
		data = tb.TempDir()
	}
	s := &server{t: tb, data: data, cgroup: linuxtest.CgroupParent, exited: make(chan struct{})}
	for i, f := range flags {
		if f == "--cgroup-parent" && i+1 < len(flags) {
			s.cgroup = flags[i+1]
		}
	}
	args := append([]string{"serve", "--listen", "127.0.0.1:0", "--data", data,
		"--cgroup-parent", linuxtest.CgroupParent, "--node", "e2e", "--shutdown-timeout", "5s"}, flags...)
	s.cmd = exec.Command(binary, args...)
	if w != nil {
		s.world = w
		s.cmd = w.Command(binary, args...) // nsenter execs the server: its pid is the server's
		s.hc = &http.Client{Transport: &http.Transport{DialContext: w.DialContext}}
	}
	s.cmd.Env = append(os.Environ(), "SANDPOOL_URL=", "SANDPOOL_API_KEY=")
	pipe, err := s.cmd.StderrPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := s.cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pipe)
		for sc.Scan() {
			line := sc.Text()
			s.mu.Lock()
			s.stderr.WriteString(line + "\n")
			s.mu.Unlock()
			if rest, ok := strings.CutPrefix(line, "sandpool: serving on "); ok {
				u, _, _ := strings.Cut(rest, " ")
				ready <- u
			}
		}
		s.exitErr = s.cmd.Wait()
		close(s.exited)
	}()
	select {
	case s.url = <-ready:
	case <-s.exited:
		tb.Fatalf("sandpool serve exited at start: %v\n%s", s.exitErr, s.log())
	case <-time.After(60 * time.Second):
		s.cmd.Process.Kill()
		tb.Fatalf("sandpool serve did not start\n%s", s.log())
	}
	// A node joining a database that has keys already writes no admin.key.
	if key, err := os.ReadFile(filepath.Join(data, "admin.key")); err == nil {
		s.adminKey = strings.TrimSpace(string(key))
	}
	tb.Cleanup(func() {
		s.stop()
		cleanRuntime(tb, data, s.cgroup)
		if s.hc != nil {
			s.hc.CloseIdleConnections()
		}
	})
	return s
}

func (s *server) log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stderr.String()
}

// stop sends SIGTERM and expects a clean exit. Calling it twice is fine.
func (s *server) stop() {
	s.t.Helper()
	select {
	case <-s.exited:
		return
	default:
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
		if s.exitErr != nil {
			s.t.Errorf("sandpool serve exited with %v after SIGTERM\n%s", s.exitErr, s.log())
		}
	case <-time.After(30 * time.Second):
		s.cmd.Process.Kill()
		<-s.exited
		s.t.Errorf("sandpool serve did not stop within 30s of SIGTERM\n%s", s.log())
	}
}

// pid is the server's process ID.
func (s *server) pid() int { return s.cmd.Process.Pid }

// client returns a client with key (the admin key if empty).
func (s *server) client(key string, opts ...client.Option) *client.Client {
	s.t.Helper()
	if key == "" {
		key = s.adminKey
	}
	if s.hc != nil {
		opts = append([]client.Option{client.WithHTTPClient(s.hc)}, opts...)
	}
	c, err := client.New(s.url, key, opts...)
	if err != nil {
		s.t.Fatal(err)
	}
	return c
}

// tenant makes a key for a new tenant and returns its client.
func (s *server) tenant(name string) *client.Client {
	s.t.Helper()
	k, err := s.client("").CreateKey(context.Background(), name, false)
	if err != nil {
		s.t.Fatal(err)
	}
	return s.client(k.Secret)
}

// cleanRuntime destroys what a stopped server left running in data (sandboxes
// outlive their server by design).
func cleanRuntime(tb testing.TB, data, cgroup string) {
	rt, err := linux.Open(linux.Config{DataDir: data, CgroupParent: cgroup})
	if err != nil {
		tb.Errorf("open runtime to clean up: %v", err)
		return
	}
	defer rt.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	list, _ := rt.List(ctx)
	for _, sb := range list {
		if err := rt.Destroy(ctx, sb.ID); err != nil {
			tb.Errorf("clean up %s: %v", sb.ID, err)
		}
	}
}

// vmHWM is a process's peak resident memory in KiB.
func vmHWM(tb testing.TB, pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		tb.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	tb.Fatal("no VmHWM")
	return 0
}

func osStat(p string) (os.FileInfo, error) { return os.Stat(p) }

// metrics reads the server's /metrics page.
func (s *server) metrics(tb testing.TB) string {
	tb.Helper()
	hc := http.DefaultClient
	if s.hc != nil {
		hc = s.hc
	}
	resp, err := hc.Get(s.url + "/metrics")
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		tb.Fatalf("metrics: %d %v", resp.StatusCode, err)
	}
	return string(b)
}
