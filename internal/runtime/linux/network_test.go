package linux_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sandpool/sandpool/internal/egress"
	"github.com/sandpool/sandpool/internal/egress/egresstest"
	"github.com/sandpool/sandpool/internal/fsys"
	"github.com/sandpool/sandpool/internal/proc"
	"github.com/sandpool/sandpool/internal/runtime"
	"github.com/sandpool/sandpool/internal/runtime/linux"
	"github.com/sandpool/sandpool/internal/runtime/linux/linuxtest"
)

// These tests run real sandboxes against the fake internet of package
// egresstest, built behind the network namespace TestMain moved this test
// binary into: curl and Python inside the sandboxes, the egress engine in
// this process, every address a test reaches living in a namespace the
// test made.

// newEngine makes an egress engine whose upstream resolver is the fake
// internet's (and no hosts file), registered on its own registry.
func newEngine(tb testing.TB, mod ...func(*egress.Config)) (*egress.Engine, *prometheus.Registry) {
	tb.Helper()
	egresstest.Shared(tb)
	reg := prometheus.NewRegistry()
	cfg := egress.Config{
		Resolvers: []netip.AddrPort{netip.AddrPortFrom(egresstest.UpstreamDNS, 53)},
		HostsFile: "-",
		Registry:  reg,
	}
	for _, m := range mod {
		m(&cfg)
	}
	eng, err := egress.New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { eng.Close() })
	return eng, reg
}

// openNetRuntime opens a runtime on dir ("" for a fresh one) whose
// sandboxes get egress through eng.
func openNetRuntime(tb testing.TB, eng *egress.Engine, dir string) *linux.Runtime {
	tb.Helper()
	return linuxtest.OpenWith(tb, linux.Config{DataDir: dir, Egress: eng})
}

// netSandbox creates a base sandbox with network n and puts the probe and
// the fake internet's CA in it.
func netSandbox(tb testing.TB, r *linux.Runtime, n runtime.Network) string {
	tb.Helper()
	id := createSandbox(tb, r, runtime.Spec{Template: "base", Network: n})
	putNetFiles(tb, r, id)
	return id
}

func putNetFiles(tb testing.TB, r *linux.Runtime, id string) {
	tb.Helper()
	w := egresstest.Shared(tb)
	ctx := context.Background()
	for path, data := range map[string][]byte{egresstest.ProbePath: []byte(egresstest.Probe), "/tmp/ca.pem": w.CA.PEM} {
		if _, err := r.Files(id).Write(ctx, path, bytes.NewReader(data), fsys.WriteOptions{Mode: 0o644}); err != nil {
			tb.Fatal(err)
		}
	}
}

// probe runs the probe in the sandbox as its user; ok is its verdict.
func probe(tb testing.TB, r runtime.Runtime, id string, args ...string) (out string, ok bool) {
	tb.Helper()
	res := run(tb, r, id, proc.Spec{Cmd: append([]string{"python3", egresstest.ProbePath}, args...), Timeout: time.Minute})
	return strings.TrimSpace(res.Stdout + res.Stderr), res.Code == 0
}

// curl runs curl in the sandbox, trusting the fake internet's CA.
func curl(tb testing.TB, r runtime.Runtime, id string, args ...string) (string, bool) {
	tb.Helper()
	res := run(tb, r, id, proc.Spec{Cmd: append([]string{"curl", "-sS", "--max-time", "10", "--cacert", "/tmp/ca.pem"}, args...),
		Timeout: time.Minute})
	return strings.TrimSpace(res.Stdout + res.Stderr), res.Code == 0
}

// mustReach asserts that the probe works and its output contains want.
func mustReach(tb testing.TB, r runtime.Runtime, id, want string, args ...string) {
	tb.Helper()
	out, ok := probe(tb, r, id, args...)
	if !ok || !strings.Contains(out, want) {
		tb.Fatalf("probe %v: want success with %q, got %q", args, want, out)
	}
}

// mustNotReach asserts that the probe fails, that no server of the fake
// internet saw it, and (for a sandbox with a link) that the refusal was
// counted, not just lost.
func mustNotReach(tb testing.TB, r runtime.Runtime, id string, counted bool, args ...string) {
	tb.Helper()
	w := egresstest.Shared(tb)
	mark := w.Mark()
	before, _ := r.NetworkStats(context.Background(), id)
	if out, ok := probe(tb, r, id, args...); ok {
		tb.Fatalf("probe %v went through: %q", args, out)
	}
	if len(args) > 1 && w.SawAddr(mark, args[1]) {
		tb.Fatalf("probe %v: a server at %s saw it", args, args[1])
	}
	if counted {
		after, _ := r.NetworkStats(context.Background(), id)
		if after.Refused <= before.Refused {
			tb.Fatalf("probe %v: refusal not counted (%+v)", args, after)
		}
	}
}

// interfaces lists the sandbox's network interfaces.
func interfaces(tb testing.TB, r runtime.Runtime, id string) string {
	tb.Helper()
	out := sh(tb, r, id, "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort | tr '\\n' ' '").Stdout
	return strings.TrimSpace(out)
}

var (
	openNet   = runtime.Network{Egress: runtime.EgressOpen}
	allowlist = runtime.Network{Egress: runtime.EgressAllowlist,
		Allow: []string{"allowed.test", "*.pkg.test", "other.test", "198.51.100.200/29"}}
)

func TestNetworkNone(t *testing.T) {
	eng, _ := newEngine(t)
	r := openNetRuntime(t, eng, "")
	w := egresstest.Shared(t)
	for _, n := range []runtime.Network{{}, {Egress: runtime.EgressNone}} {
		id := netSandbox(t, r, n)
		if got := interfaces(t, r, id); got != "lo" {
			t.Fatalf("interfaces with egress %q: %q", n.Egress, got)
		}
		mark := w.Mark()
		if out, ok := curl(t, r, id, "https://allowed.test/"); ok {
			t.Fatalf("curl with egress none: %s", out)
		}
		mustNotReach(t, r, id, false, "http", "198.51.100.10", "80", "allowed.test")
		mustNotReach(t, r, id, false, "echo", "203.0.113.20", "7000")
		if w.SawQuery(mark, "allowed.test") {
			t.Fatal("a sandbox without egress reached the upstream resolver")
		}
	}
}

func TestNetworkOpen(t *testing.T) {
	eng, _ := newEngine(t)
	r := openNetRuntime(t, eng, "")
	id := netSandbox(t, r, openNet)
	if got := interfaces(t, r, id); got != "eth0 lo" {
		t.Fatalf("interfaces: %q", got)
	}
	if out, ok := curl(t, r, id, "https://allowed.test/"); !ok || !strings.Contains(out, "host=allowed.test addr=198.51.100.10") {
		t.Fatalf("curl https: %s", out)
	}
	if out, ok := curl(t, r, id, "http://denied.test/"); !ok || !strings.Contains(out, "host=denied.test") {
		t.Fatalf("curl http, any name in open mode: %s", out)
	}
	mustReach(t, r, id, "addr=203.0.113.77", "http", "203.0.113.77", "80", "by-address")
	mustReach(t, r, id, "ok", "echo", "203.0.113.20", "7000")

	// Always refused, whatever the mode: the host's own addresses and
	// listeners, the sandbox's gateway, private, shared and link-local
	// ranges (cloud metadata included).
	var accepted atomic.Int32
	ln, err := net.Listen("tcp4", "0.0.0.0:0") // on every address of the host (this test's namespace)
	if err != nil {
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
	port := fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)
	for _, host := range []string{egresstest.HostVethIP.String(), eng.Gateway().String(), "10.0.0.1", "172.16.5.4",
		"192.168.1.1", "169.254.169.254", "100.64.0.1"} {
		mustNotReach(t, r, id, true, "echo", host, port)
	}
	// 127.0.0.1 inside is the sandbox's own loopback, never the host's.
	mustNotReach(t, r, id, false, "echo", "127.0.0.1", port)
	if n := accepted.Load(); n != 0 {
		t.Fatalf("the host's listener accepted %d connections from the sandbox", n)
	}
	st, err := r.NetworkStats(context.Background(), id)
	if err != nil || st.Connections < 4 || st.BytesIn == 0 || st.BytesOut == 0 || st.Refused < 7 || st.DNSQueries < 2 {
		t.Fatalf("counters: %+v %v", st, err)
	}
}

// TestNetworkOtherSandbox: every sandbox has the same link addresses but
// its own stack: what one listens on, another cannot reach.
func TestNetworkOtherSandbox(t *testing.T) {
	eng, _ := newEngine(t)
	r := openNetRuntime(t, eng, "")
	a := netSandbox(t, r, openNet)
	b := netSandbox(t, r, openNet)
	p, err := r.Exec(context.Background(), b, proc.Spec{Cmd: []string{"python3", egresstest.ProbePath, "listen", "8080", "/tmp/accepted"},
		Background: true}, proc.Stdio{})
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	waitUntil(t, "b listens", func() bool { return sh(t, r, b, "test -f /tmp/accepted && echo yes").Stdout == "yes\n" })
	for _, host := range []string{eng.SandboxAddr().Addr().String(), eng.Gateway().String()} {
		mustNotReach(t, r, a, false, "echo", host, "8080")
	}
	// b's listener works: a connection from b itself is logged (the
	// probe fails, as the listener answers nothing).
	probe(t, r, b, "echo", eng.SandboxAddr().Addr().String(), "8080")
	if got := sh(t, r, b, "wc -l < /tmp/accepted").Stdout; got != "1\n" {
		t.Fatalf("b accepted %q connections; only its own was expected", got)
	}
}

func TestNetworkAllowlist(t *testing.T) {
	eng, _ := newEngine(t)
	r := openNetRuntime(t, eng, "")
	w := egresstest.Shared(t)
	id := netSandbox(t, r, allowlist)

	// Listed names, wildcards included, work end to end.
	for _, u := range []string{"https://allowed.test/", "https://a.pkg.test/", "http://allowed.test/"} {
		if out, ok := curl(t, r, id, u); !ok || !strings.Contains(out, "host=") {
			t.Fatalf("curl %s: %s", u, out)
		}
	}
	// The apex of a wildcard and unlisted names do not resolve, and the
	// upstream resolver never hears of them.
	mark := w.Mark()
	for _, u := range []string{"https://pkg.test/", "https://denied.test/"} {
		if out, ok := curl(t, r, id, u); ok {
			t.Fatalf("curl %s went through: %s", u, out)
		}
	}
	if w.SawQuery(mark, "pkg.test") || w.SawQuery(mark, "denied.test") {
		t.Fatal("a query for an unlisted name reached upstream")
	}
	// HTTP by Host: the allowed name's own address with an unlisted Host.
	mustNotReach(t, r, id, true, "http", "198.51.100.10", "80", "denied.test")
	mustReach(t, r, id, "host=allowed.test", "http", "198.51.100.10", "80", "allowed.test")
	// HTTPS by SNI: a listed name pointed at another address is refused.
	mark = w.Mark()
	if out, ok := curl(t, r, id, "--resolve", "allowed.test:443:198.51.100.11", "https://allowed.test/"); ok {
		t.Fatalf("an allowed SNI to another address went through: %s", out)
	}
	if out, ok := curl(t, r, id, "-k", "https://198.51.100.11/"); ok {
		t.Fatalf("TLS without a name to an unlisted address went through: %s", out)
	}
	if w.SawAddr(mark, "198.51.100.11") {
		t.Fatal("the unlisted server saw a connection")
	}
	// Other TCP by the resolved address: refused until the name is
	// resolved in this sandbox.
	mustNotReach(t, r, id, true, "echo", "203.0.113.20", "7000")
	mustReach(t, r, id, "203.0.113.20", "resolve", "other.test")
	mustReach(t, r, id, "ok", "echo", "203.0.113.20", "7000")
	// Addresses and CIDRs on the list need no name; others are refused.
	mustReach(t, r, id, "ok", "echo", "198.51.100.201", "7000")
	mustNotReach(t, r, id, true, "echo", "203.0.113.99", "7000")
	mustNotReach(t, r, id, true, "http", "203.0.113.99", "80", "allowed.test")
	st, _ := r.NetworkStats(context.Background(), id)
	if st.DNSRefused < 2 {
		t.Fatalf("refused queries not counted: %+v", st)
	}
}

// TestNetworkRootCannotUndo: the sandbox's root can neither change its
// network (it has no capabilities) nor get around the policy with its own
// resolver, addresses or a rewritten /etc/resolv.conf: the policy is
// enforced outside the sandbox.
func TestNetworkRootCannotUndo(t *testing.T) {
	eng, _ := newEngine(t)
	r := openNetRuntime(t, eng, "")
	w := egresstest.Shared(t)
	id := netSandbox(t, r, allowlist)
	root := func(line string) result {
		return run(t, r, id, proc.Spec{Shell: line, User: "root"})
	}
	for _, c := range []string{"ip link set eth0 down", "ip route del default", "ip addr add 203.0.113.77/32 dev eth0",
		"ip link add v0 type veth peer name v1", "nft flush ruleset", "ip link del eth0"} {
		if res := root(c); res.Code == 0 {
			t.Fatalf("%q as the sandbox's root succeeded", c)
		}
	}
	if got := interfaces(t, r, id); got != "eth0 lo" {
		t.Fatalf("interfaces after root's attempts: %q", got)
	}
	// Another resolver, by address: port 53 is sandpool's resolver
	// whatever the address, so an unlisted name stays unresolved.
	mark := w.Mark()
	if res := root("echo nameserver " + egresstest.UpstreamDNS.String() + " > /etc/resolv.conf"); res.Code != 0 {
		t.Fatalf("rewrite resolv.conf: %+v", res)
	}
	mustReach(t, r, id, "rcode=3 answers=0", "dns", egresstest.UpstreamDNS.String(), "denied.test")
	mustNotReach(t, r, id, false, "resolve", "denied.test")
	if w.SawQuery(mark, "denied.test") {
		t.Fatal("a query for an unlisted name reached upstream")
	}
	mustNotReach(t, r, id, true, "http", "198.51.100.11", "80", "denied.test")
	mustReach(t, r, id, "198.51.100.10", "resolve", "allowed.test")
	mustReach(t, r, id, "host=allowed.test", "http", "198.51.100.10", "80", "allowed.test")
}

// TestNetworkSetPolicy: a running sandbox's policy changes for the
// connections it opens next; a sandbox made without a way out gets one;
// freeze, stop and start keep the policy.
func TestNetworkSetPolicy(t *testing.T) {
	eng, _ := newEngine(t)
	r := openNetRuntime(t, eng, "")
	ctx := context.Background()
	id := netSandbox(t, r, runtime.Network{})
	mustNotReach(t, r, id, false, "echo", "203.0.113.20", "7000")
	if err := r.SetNetwork(ctx, id, openNet); err != nil {
		t.Fatal(err)
	}
	mustReach(t, r, id, "ok", "echo", "203.0.113.20", "7000")
	if err := r.SetNetwork(ctx, id, runtime.Network{Egress: runtime.EgressOpen, Deny: []string{"203.0.113.0/24"}}); err != nil {
		t.Fatal(err)
	}
	mustNotReach(t, r, id, true, "echo", "203.0.113.20", "7000")
	mustReach(t, r, id, "ok", "echo", "198.51.100.20", "7000")
	if err := r.SetNetwork(ctx, id, runtime.Network{Egress: runtime.EgressNone}); err != nil {
		t.Fatal(err)
	}
	mustNotReach(t, r, id, true, "echo", "198.51.100.20", "7000")
	if err := r.SetNetwork(ctx, id, allowlist); err != nil {
		t.Fatal(err)
	}
	if in, _ := r.Get(ctx, id); !in.Network.Equal(allowlist) {
		t.Fatalf("Info.Network = %+v", in.Network)
	}
	// Bad entries are refused, naming the entry; the policy stays.
	for _, bad := range []runtime.Network{{Egress: "everything"}, {Egress: "allowlist", Allow: []string{"a..test"}},
		{Egress: "open", Allow: []string{"x.test"}}, {Egress: "open", Deny: []string{"http://x.test/"}}} {
		err := r.SetNetwork(ctx, id, bad)
		if err == nil || !strings.Contains(err.Error(), "network") {
			t.Fatalf("SetNetwork(%+v): %v", bad, err)
		}
	}
	mustReach(t, r, id, "ok", "echo", "198.51.100.201", "7000")
	// Freeze keeps the link; stop and start make a new one, same policy.
	if err := r.Freeze(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := r.Thaw(ctx, id); err != nil {
		t.Fatal(err)
	}
	mustReach(t, r, id, "ok", "echo", "198.51.100.201", "7000")
	before, _ := r.NetworkStats(ctx, id)
	if err := r.Stop(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Start(ctx, id); err != nil {
		t.Fatal(err)
	}
	mustNotReach(t, r, id, true, "echo", "198.51.100.11", "7000")
	mustReach(t, r, id, "ok", "echo", "198.51.100.201", "7000")
	after, _ := r.NetworkStats(ctx, id)
	if after.Connections <= before.Connections || after.BytesOut < before.BytesOut {
		t.Fatalf("counters went back across a restart: %+v then %+v", before, after)
	}
	// A stopped sandbox takes a new policy at its next start.
	if err := r.Stop(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := r.SetNetwork(ctx, id, runtime.Network{}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Start(ctx, id); err != nil {
		t.Fatal(err)
	}
	if got := interfaces(t, r, id); got != "lo" {
		t.Fatalf("interfaces after a start with egress none: %q", got)
	}
}

// TestNetworkWithoutEngine: a runtime without egress refuses every mode
// but none.
func TestNetworkWithoutEngine(t *testing.T) {
	r := openRuntime(t)
	if r.Capabilities().Egress {
		t.Fatal("Capabilities().Egress without an engine")
	}
	err := r.Validate(runtime.Spec{Template: "base", Network: openNet})
	if err == nil || !strings.Contains(err.Error(), "egress is disabled") {
		t.Fatalf("Validate with egress open: %v", err)
	}
	id := createSandbox(t, r, runtime.Spec{Template: "base", Network: runtime.Network{Egress: runtime.EgressNone}})
	if err := r.SetNetwork(context.Background(), id, openNet); err == nil {
		t.Fatal("SetNetwork open without an engine")
	}
}

// netHelperEnv makes the test binary a short-lived server: it creates a
// sandbox with egress open in the data directory it names, through an
// engine of its own, prints its id and exits; its link dies with it.
const netHelperEnv = "SANDPOOL_TEST_NET_CREATE_IN"

func runNetHelper(dir string) {
	eng, err := egress.New(egress.Config{Resolvers: []netip.AddrPort{netip.AddrPortFrom(egresstest.UpstreamDNS, 53)}, HostsFile: "-"})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	r, err := linux.Open(linux.Config{DataDir: dir, CgroupParent: testCgroupParent, Egress: eng})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	info, err := r.Create(context.Background(), runtime.Spec{Template: "base", Network: openNet})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(info.ID)
	os.Exit(0) // no Close of anything: as a crash would leave it
}

// TestNetworkAfterRestart: a sandbox outlives the process that made it;
// its link does not (the TUN went with that process's descriptors), and
// the next process to open the data directory makes it again, with the
// same policy.
func TestNetworkAfterRestart(t *testing.T) {
	egresstest.Shared(t)
	dir := t.TempDir()
	cmd := exec.Command("/proc/self/exe", "-test.run=^$")
	cmd.Env = append(os.Environ(), netHelperEnv+"="+dir)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helper: %v %s", err, out)
	}
	id := strings.TrimSpace(string(out))
	// Without an engine nothing re-attaches: the sandbox is cut off.
	plain, err := linux.Open(linux.Config{DataDir: dir, CgroupParent: testCgroupParent})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { plain.Close() }) // before the runtime below is opened: cleanups run last first
	waitUntil(t, "the dead server's interface to go", func() bool { return interfaces(t, plain, id) == "lo" })
	plain.Close()
	eng, _ := newEngine(t)
	r := openNetRuntime(t, eng, dir)
	info, err := r.Get(context.Background(), id)
	if err != nil || info.Status != runtime.StatusRunning || !info.Network.Equal(openNet) || info.NetworkDetached {
		t.Fatalf("after reopening: %+v %v", info, err)
	}
	putNetFiles(t, r, id)
	if got := interfaces(t, r, id); got != "eth0 lo" {
		t.Fatalf("interfaces after reopening: %q", got)
	}
	if out, ok := curl(t, r, id, "https://allowed.test/"); !ok || !strings.Contains(out, "host=allowed.test") {
		t.Fatalf("curl after reopening: %s", out)
	}
}

// waitUntil polls cond for up to 10 s; it asserts an outcome, not a
// duration.
func waitUntil(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	// Generous: under a loaded CI machine links close slowly (each waits
	// for an RCU grace period); the wait ends as soon as cond holds.
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	tb.Fatalf("timed out waiting until %s", what)
}
