package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sandpool/sandpool/client"
	"github.com/sandpool/sandpool/internal/egress/egresstest"
	"github.com/sandpool/sandpool/internal/latency"
	"github.com/sandpool/sandpool/internal/runtime/linux/linuxtest"
)

// Network tests run `sandpool serve` inside the host namespace of a fake
// internet of their own (egresstest.NewIsolated): its routes lead only
// into the fake internet's namespace, its resolver is the fake
// internet's, and no test packet can leave the machine.

// newWorld builds a fake internet for one test, with a hosts file for
// the server's resolver.
func newWorld(t *testing.T) (*egresstest.World, string) {
	t.Helper()
	w, err := egresstest.NewIsolated()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Close)
	hosts := filepath.Join(t.TempDir(), "hosts")
	if err := os.WriteFile(hosts, []byte("127.0.0.1 localhost\n203.0.113.40 files.test\n169.254.169.254 metadata.test\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return w, hosts
}

// netFiles puts the probe and the fake internet's CA in a sandbox.
func netFiles(t testing.TB, c *client.Client, w *egresstest.World, id string) {
	t.Helper()
	ctx := context.Background()
	for path, data := range map[string]string{egresstest.ProbePath: egresstest.Probe, "/tmp/ca.pem": string(w.CA.PEM)} {
		if _, err := c.WriteFile(ctx, id, path, strings.NewReader(data), client.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

// probe runs egresstest's probe in a sandbox; ok is its verdict.
func probe(t testing.TB, c *client.Client, id string, args ...string) (string, bool) {
	t.Helper()
	res, err := c.Exec(context.Background(), id, client.ExecRequest{Cmd: append([]string{"python3", egresstest.ProbePath}, args...), Timeout: 60})
	if err != nil {
		t.Fatalf("probe %v: %v", args, err)
	}
	return strings.TrimSpace(string(res.Stdout) + string(res.Stderr)), res.ExitCode == 0
}

// curl runs curl in a sandbox, trusting the fake internet's CA.
func curl(t testing.TB, c *client.Client, id string, args ...string) (string, bool) {
	t.Helper()
	res, err := c.Exec(context.Background(), id, client.ExecRequest{
		Cmd: append([]string{"curl", "-sS", "--max-time", "10", "--cacert", "/tmp/ca.pem"}, args...), Timeout: 60})
	if err != nil {
		t.Fatalf("curl %v: %v", args, err)
	}
	return strings.TrimSpace(string(res.Stdout) + string(res.Stderr)), res.ExitCode == 0
}

func mustCurl(t testing.TB, c *client.Client, id, want string, args ...string) {
	t.Helper()
	if out, ok := curl(t, c, id, args...); !ok || !strings.Contains(out, want) {
		t.Fatalf("curl %v: want %q, got %q", args, want, out)
	}
}

func mustNotCurl(t testing.TB, c *client.Client, id string, args ...string) {
	t.Helper()
	if out, ok := curl(t, c, id, args...); ok {
		t.Fatalf("curl %v went through: %q", args, out)
	}
}

// TestNetwork: the real binary, through the client and the CLI: the
// default policy, the modes, what is always refused, host names held on
// the connection, a change while running, the counters, the metrics.
func TestNetwork(t *testing.T) {
	w, hosts := newWorld(t)
	s := startServerIn(t, w, "", "--egress-hosts-file", hosts)
	c := s.client("")
	ctx := context.Background()

	// The default is open: the fake internet, and the hosts file, answer.
	sb, err := c.CreateSandbox(ctx, client.CreateSandboxRequest{Template: "base"})
	if err != nil || sb.Network.Egress != "open" {
		t.Fatalf("create: %+v %v", sb, err)
	}
	netFiles(t, c, w, sb.ID)
	mustCurl(t, c, sb.ID, "host=allowed.test addr=198.51.100.10", "https://allowed.test/")
	mustCurl(t, c, sb.ID, "host=files.test addr=203.0.113.40", "http://files.test/")
	if out, ok := probe(t, c, sb.ID, "echo", "203.0.113.20", "7000"); !ok {
		t.Fatalf("echo: %s", out)
	}
	// Never reached, whatever the mode: the host's addresses and its
	// listeners (the API among them), the gateway, private and
	// link-local ranges (cloud metadata), a private answer in the hosts
	// file.
	var accepted atomic.Int32
	var ln net.Listener
	if err := egresstest.InNS(w.HostNS, func() error {
		var err error
		ln, err = net.Listen("tcp4", "0.0.0.0:0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Close()
		}
	}()
	hostPort := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	apiPort := s.url[strings.LastIndex(s.url, ":")+1:]
	for _, target := range [][2]string{{"127.0.0.1", hostPort}, {"127.0.0.1", apiPort}, {egresstest.HostVethIP.String(), hostPort},
		{egresstest.HostVethIP.String(), apiPort}, {"100.64.253.1", apiPort}, {"10.0.0.1", "80"}, {"172.16.0.1", "80"},
		{"192.168.0.1", "80"}, {"169.254.169.254", "80"}} {
		if out, ok := probe(t, c, sb.ID, "echo", target[0], target[1]); ok {
			t.Fatalf("reached %s:%s: %s", target[0], target[1], out)
		}
	}
	if n := accepted.Load(); n != 0 {
		t.Fatalf("a listener on the host accepted %d connections from a sandbox", n)
	}
	mustNotCurl(t, c, sb.ID, "http://metadata.test/")

	// Allowlist by name: HTTP by Host, HTTPS by SNI, other TCP by the
	// address the name resolved to; wildcards; an unlisted address.
	al, err := c.CreateSandbox(ctx, client.CreateSandboxRequest{Template: "base",
		Network: &client.Network{Egress: "allowlist", Allow: []string{"allowed.test", "*.pkg.test", "other.test"}}})
	if err != nil {
		t.Fatal(err)
	}
	netFiles(t, c, w, al.ID)
	mustCurl(t, c, al.ID, "host=allowed.test", "https://allowed.test/")
	mustCurl(t, c, al.ID, "host=a.pkg.test", "https://a.pkg.test/")
	mustCurl(t, c, al.ID, "host=allowed.test", "http://allowed.test/")
	mark := w.Mark()
	mustNotCurl(t, c, al.ID, "https://pkg.test/")
	mustNotCurl(t, c, al.ID, "https://denied.test/")
	mustNotCurl(t, c, al.ID, "--resolve", "allowed.test:443:198.51.100.11", "https://allowed.test/")
	mustNotCurl(t, c, al.ID, "-H", "Host: denied.test", "http://allowed.test/")
	mustNotCurl(t, c, al.ID, "http://203.0.113.99/")
	if w.SawAddr(mark, "198.51.100.11") || w.SawAddr(mark, "203.0.113.99") || w.SawQuery(mark, "denied.test") {
		t.Fatalf("the fake internet saw what the allowlist refused: %+v", w.HitsSince(mark))
	}
	if out, ok := probe(t, c, al.ID, "echo", "203.0.113.20", "7000"); ok {
		t.Fatalf("other.test's address before resolving it: %s", out)
	}
	if out, ok := probe(t, c, al.ID, "resolve", "other.test"); !ok || out != "203.0.113.20" {
		t.Fatalf("resolve other.test: %s", out)
	}
	if out, ok := probe(t, c, al.ID, "echo", "203.0.113.20", "7000"); !ok {
		t.Fatalf("other.test's address after resolving it: %s", out)
	}

	// A change on a running sandbox holds for new connections.
	n, err := c.SetNetwork(ctx, sb.ID, client.Network{Egress: "none"})
	if err != nil || n.Egress != "none" {
		t.Fatalf("SetNetwork: %+v %v", n, err)
	}
	mustNotCurl(t, c, sb.ID, "https://allowed.test/")
	if got, _ := c.GetSandbox(ctx, sb.ID); got.Network.Egress != "none" {
		t.Fatalf("GetSandbox after SetNetwork: %+v", got.Network)
	}
	n, err = c.GetNetwork(ctx, sb.ID)
	if err != nil || n.Stats.Connections < 3 || n.Stats.Refused < 7 || n.Stats.BytesIn == 0 || n.Stats.DNSQueries == 0 {
		t.Fatalf("counters: %+v %v", n, err)
	}

	// The CLI: create with a policy, show it, change it.
	cli := func(args ...string) string {
		t.Helper()
		cmd := w.Command(binary, append([]string{"--url", s.url, "--api-key", s.adminKey}, args...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("sandpool %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	id := cli("sandbox", "create", "--egress", "allowlist", "--allow", "allowed.test,*.pkg.test", "--deny", "bad.pkg.test")
	if out := cli("network", "get", id); !strings.Contains(out, "allowlist allowed.test,*.pkg.test; deny bad.pkg.test") {
		t.Fatalf("network get: %s", out)
	}
	if out := cli("network", "set", id, "--egress", "none"); !strings.Contains(out, "egress        none") {
		t.Fatalf("network set: %s", out)
	}
	if out := cli("sandbox", "get", id); !regexp.MustCompile(`network\s+none`).MatchString(out) {
		t.Fatalf("sandbox get: %s", out)
	}

	// Metrics: totals, no sandbox ids.
	m := s.metrics(t)
	for _, want := range []string{`sandpool_egress_connections_total{outcome="allowed"}`, `sandpool_egress_refusals_total{reason="blocked_address"}`,
		`sandpool_egress_links 3`, `sandpool_egress_bytes_total{direction="in"}`, `sandpool_egress_dns_queries_total{outcome="refused"}`} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	for _, line := range strings.Split(m, "\n") {
		if strings.HasPrefix(line, "sandpool_egress") && strings.Contains(line, "sb_") {
			t.Errorf("a sandbox id in a metric: %s", line)
		}
	}
	for _, x := range []string{sb.ID, al.ID, id} {
		if err := c.DeleteSandbox(ctx, x); err != nil {
			t.Fatal(err)
		}
	}
}

// TestNetworkRestart: sandboxes outlive their server, their network links
// do not; the next server gives running sandboxes theirs again, with the
// policy they had, after a stop and after a crash.
func TestNetworkRestart(t *testing.T) {
	w, _ := newWorld(t)
	data := t.TempDir()
	s := startServerIn(t, w, data)
	c := s.client("")
	ctx := context.Background()
	open, err := c.CreateSandbox(ctx, client.CreateSandboxRequest{Template: "base"})
	if err != nil {
		t.Fatal(err)
	}
	al, err := c.CreateSandbox(ctx, client.CreateSandboxRequest{Template: "base"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.SetNetwork(ctx, al.ID, client.Network{Egress: "allowlist", Allow: []string{"allowed.test"}}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{open.ID, al.ID} {
		netFiles(t, c, w, id)
	}
	mustCurl(t, c, open.ID, "host=other.test", "https://other.test/")
	s.stop()

	s = startServerIn(t, w, data)
	c = s.client("")
	mustCurl(t, c, open.ID, "host=other.test", "https://other.test/")
	mustCurl(t, c, al.ID, "host=allowed.test", "https://allowed.test/")
	mustNotCurl(t, c, al.ID, "https://other.test/")
	if got, err := c.GetSandbox(ctx, al.ID); err != nil || got.Network.Egress != "allowlist" {
		t.Fatalf("after the restart: %+v %v", got, err)
	}
	// The same after a crash: SIGKILL, no shutdown of any kind.
	s.cmd.Process.Kill()
	<-s.exited
	s = startServerIn(t, w, data)
	c = s.client("")
	mustCurl(t, c, open.ID, "host=other.test", "https://other.test/")
	mustNotCurl(t, c, al.ID, "https://other.test/")
	mustCurl(t, c, al.ID, "host=allowed.test", "https://allowed.test/")
	for _, id := range []string{open.ID, al.ID} {
		if err := c.DeleteSandbox(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
}

// TestNetworkLeak: networked sandboxes made and destroyed through the
// real binary, some destroyed while being made, some with connections
// open, across a server killed with SIGKILL: afterwards nothing is left
// of them on the host: no process, interface, route, rule, firewall
// table, namespace-holding descriptor or connection.
func TestNetworkLeak(t *testing.T) {
	w, _ := newWorld(t)
	data := t.TempDir()
	before := hostNetwork(t, w)
	n := 200
	if testing.Short() {
		n = 40
	}
	var ids sync.Map
	round := func(s *server, first, count int, kill bool) {
		c := s.client("", client.WithRetryBudget(0))
		var wg sync.WaitGroup
		work := make(chan int)
		for range 4 {
			wg.Go(func() {
				for i := range work {
					leakOne(t, c, w, &ids, i)
				}
			})
		}
		for i := first; i < first+count; i++ {
			if kill && i == first+count/2 {
				s.cmd.Process.Kill() // SIGKILL, mid-traffic: no shutdown of any kind
				<-s.exited
			}
			work <- i
		}
		close(work)
		wg.Wait()
	}
	s := startServerIn(t, w, data)
	round(s, 0, n/2, true)
	s = startServerIn(t, w, data)
	round(s, n/2, n-n/2, false)
	// Everything made, through either server, goes through the API.
	c := s.client("")
	list, err := c.ListSandboxes(context.Background(), client.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, sb := range list {
		if err := c.DeleteSandbox(context.Background(), sb.ID); err != nil {
			t.Errorf("delete %s: %v", sb.ID, err)
		}
	}
	// Links close in the background; then the server holds no TUN (which
	// would keep a sandbox's network namespace alive).
	waitFor(t, "the server's egress links closed", func() bool {
		return regexp.MustCompile(`(?m)^sandpool_egress_links 0$`).MatchString(s.metrics(t))
	})
	if n := fdsOf(t, s.pid())["tun"]; n != 0 {
		t.Errorf("the server holds %d TUN descriptors", n)
	}
	s.stop()
	var all []string
	ids.Range(func(k, _ any) bool { all = append(all, k.(string)); return true })
	for _, l := range linuxtest.Leftovers(data, all) {
		t.Errorf("left: %s", l)
	}
	if after := hostNetwork(t, w); after != before {
		t.Errorf("the host's network changed:\n%s\nwas\n%s", after, before)
	}
	// The fake internet holds no connection from a sandbox any more.
	waitFor(t, "connections to the fake internet closed", func() bool {
		out, _ := exec.Command("nsenter", "--net="+w.UpstreamNS(), "ss", "-Htn", "state", "established").Output()
		return strings.TrimSpace(string(out)) == ""
	})
	t.Logf("%d sandboxes, %d deleted while being made", len(all), midCreate.Load())
	if midCreate.Load() == 0 {
		t.Error("no sandbox was deleted while being made: the test did not exercise it")
	}
}

// midCreate counts sandboxes deleted while being made.
var midCreate atomic.Int32

// leakOne puts one networked sandbox through one fate.
func leakOne(t *testing.T, c *client.Client, w *egresstest.World, ids *sync.Map, i int) {
	ctx := context.Background()
	req := client.CreateSandboxRequest{Template: "base", Metadata: map[string]string{"leak": strconv.Itoa(i)}}
	if i%3 == 1 {
		req.Network = &client.Network{Egress: "allowlist", Allow: []string{"allowed.test", "203.0.113.0/24"}}
	}
	switch i % 4 {
	case 0: // deleted while it is being made (seen as creating, then deleted)
		var made *client.Sandbox
		done := make(chan struct{})
		go func() {
			defer close(done)
			if sb, err := c.CreateSandbox(ctx, req); err == nil {
				made = sb
			}
		}()
	poll:
		for {
			select {
			case <-done:
				break poll
			default:
			}
			list, err := c.ListSandboxes(ctx, client.ListOptions{Statuses: []string{"creating"}, Metadata: req.Metadata})
			if err != nil {
				break // the server was killed
			}
			if len(list) > 0 {
				ids.Store(list[0].ID, true)
				if c.DeleteSandbox(ctx, list[0].ID) == nil {
					midCreate.Add(1)
				}
				break
			}
			time.Sleep(time.Millisecond)
		}
		<-done
		if made != nil {
			ids.Store(made.ID, true)
			_ = c.DeleteSandbox(ctx, made.ID) // the server may be gone: the next one's list catches it
		}
		return
	case 1: // a connection held open, then deleted
		sb, err := c.CreateSandbox(ctx, req)
		if err != nil {
			return // the server was killed
		}
		ids.Store(sb.ID, true)
		hold := `python3 -c 'import socket,time; s=socket.create_connection(("203.0.113.20",7000)); s.sendall(b"x"); s.recv(1); print("open", flush=True); time.sleep(300)'`
		p, err := c.StartProcess(ctx, sb.ID, client.ExecRequest{Shell: hold})
		if err == nil {
			for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
				if n, err := c.GetNetwork(ctx, sb.ID); err != nil || n.Stats.Active > 0 {
					break
				}
			}
			_ = p
		}
		_ = c.DeleteSandbox(ctx, sb.ID)
	default: // some traffic, then deleted
		sb, err := c.CreateSandbox(ctx, req)
		if err != nil {
			return
		}
		ids.Store(sb.ID, true)
		_, _ = c.Exec(ctx, sb.ID, client.ExecRequest{Cmd: []string{"curl", "-sS", "--max-time", "5", "http://allowed.test/"}})
		if i%8 == 2 {
			return // left for the next server to find and delete
		}
		_ = c.DeleteSandbox(ctx, sb.ID)
	}
}

// hostNetwork describes the host namespace of w: interfaces, addresses,
// routes, rules and firewall.
func hostNetwork(t *testing.T, w *egresstest.World) string {
	t.Helper()
	var b strings.Builder
	for _, cmd := range [][]string{{"ip", "-o", "link"}, {"ip", "-o", "-4", "addr"}, {"ip", "route"}, {"ip", "rule"}, {"nft", "list", "ruleset"}} {
		out, err := w.Command(cmd[0], cmd[1:]...).CombinedOutput()
		if err != nil && cmd[0] != "nft" {
			t.Fatalf("%v: %v %s", cmd, err, out)
		}
		fmt.Fprintf(&b, "%v:\n%s", cmd, out)
	}
	return b.String()
}

// fdsOf counts a process's descriptors by kind ("tun", "socket", "other").
func fdsOf(t *testing.T, pid int) map[string]int {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, e := range ents {
		l, _ := os.Readlink(dir + "/" + e.Name())
		switch {
		case l == "/dev/net/tun":
			out["tun"]++
		case strings.HasPrefix(l, "socket:"):
			out["socket"]++
		default:
			out["other"]++
		}
	}
	return out
}

// BenchmarkNetworkCreate is create-to-ready over HTTP against the real
// binary, with egress none (loopback only) and open (a network link),
// alternately, so both see the same load; and the delete after each.
func BenchmarkNetworkCreate(b *testing.B) {
	w, err := egresstest.NewIsolated()
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	s := startServerIn(b, w, "")
	c := s.client("")
	ctx := context.Background()
	modes := []string{"none", "open"}
	create := make([]latency.Recorder, len(modes))
	del := make([]latency.Recorder, len(modes))
	i := 0
	for b.Loop() {
		m := i % len(modes)
		i++
		t0 := time.Now()
		sb, err := c.CreateSandbox(ctx, client.CreateSandboxRequest{Template: "base", Network: &client.Network{Egress: modes[m]}})
		if err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if err := c.DeleteSandbox(ctx, sb.ID); err != nil {
			b.Fatal(err)
		}
		create[m].Add(t1.Sub(t0))
		del[m].Since(t1)
	}
	for m, mode := range modes {
		create[m].Report(b, "create_"+mode)
		del[m].Report(b, "delete_"+mode)
	}
}

// TestNoEgress: `serve --no-egress` gives no sandbox a way out and says so
// when one is asked for; contradictory settings refuse to start.
func TestNoEgress(t *testing.T) {
	s := startServer(t, "", "--no-egress")
	c := s.client("")
	ctx := context.Background()
	if !strings.Contains(s.log(), "egress off") {
		t.Errorf("the start-up line does not say egress is off:\n%s", s.log())
	}
	sb, err := c.CreateSandbox(ctx, client.CreateSandboxRequest{Template: "base"})
	if err != nil || sb.Network.Egress != "none" {
		t.Fatalf("create: %+v %v", sb, err)
	}
	res, err := c.Exec(ctx, sb.ID, client.ExecRequest{Shell: "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '"})
	if err != nil || strings.TrimSpace(string(res.Stdout)) != "lo" {
		t.Fatalf("interfaces: %q %v", res.Stdout, err)
	}
	_, err = c.CreateSandbox(ctx, client.CreateSandboxRequest{Template: "base", Network: &client.Network{Egress: "open"}})
	if ae := apiErr(err); ae == nil || ae.Status != 403 || ae.Code != "egress_disabled" {
		t.Fatalf("create with egress open: %v", err)
	}
	if _, err := c.SetNetwork(ctx, sb.ID, client.Network{Egress: "allowlist", Allow: []string{"pypi.org"}}); apiErr(err) == nil || apiErr(err).Code != "egress_disabled" {
		t.Fatalf("SetNetwork: %v", err)
	}
	if err := c.DeleteSandbox(ctx, sb.ID); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(binary, "serve", "--listen", "127.0.0.1:0", "--data", t.TempDir(), "--no-egress", "--default-egress", "allowlist").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--no-egress") {
		t.Fatalf("serve --no-egress --default-egress allowlist: %v %s", err, out)
	}
	out, err = exec.Command(binary, "serve", "--listen", "127.0.0.1:0", "--data", t.TempDir(), "--default-egress", "allowlist", "--default-allow", "a..b").CombinedOutput()
	if err == nil || !strings.Contains(string(out), `allow[0] "a..b"`) {
		t.Fatalf("serve with a bad --default-allow: %v %s", err, out)
	}
}
