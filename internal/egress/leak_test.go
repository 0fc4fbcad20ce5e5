package egress

import (
	"context"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func countFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// fdKinds describes the open descriptors, for a failure message.
func fdKinds() map[string]int {
	ents, _ := os.ReadDir("/proc/self/fd")
	kinds := map[string]int{}
	for _, e := range ents {
		l, _ := os.Readlink("/proc/self/fd/" + e.Name())
		kinds[l]++
	}
	return kinds
}

func hostLinks(t testing.TB) string {
	t.Helper()
	out, err := exec.Command("ip", "-o", "link").CombinedOutput()
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// TestAttachCloseLeaves nothing: 200 attach/close cycles over 10 sandboxes
// (half with user namespaces), a quarter closed with a relayed
// connection open and another quarter with a DNS flow open, leave no
// descriptor, goroutine or interface behind.
func TestAttachCloseLeak(t *testing.T) {
	e, _ := newEngine(t)
	var sbs []*sandboxNS
	for i := range 10 {
		sbs = append(sbs, newSandboxNS(t, i%2 == 1))
	}
	// Warm up whatever the runtime and the fake internet open once.
	l, err := e.Attach(context.Background(), Sandbox{ID: "warm", NetNS: sbs[0].path}, mustPolicy("open"))
	if err != nil {
		t.Fatal(err)
	}
	echo(t, sbs[0], "203.0.113.20:7000")
	sbs[0].resolve(t, e.Gateway(), "other.test")
	l.Close()
	runtime.GC()
	fds, gs, links := countFDs(t), runtime.NumGoroutine(), hostLinks(t)
	fdsBefore := fdKinds()

	for i := range 200 {
		sb := sbs[i%len(sbs)]
		l, err := e.Attach(context.Background(), Sandbox{ID: "leak", NetNS: sb.path}, mustPolicy("open"))
		if err != nil {
			t.Fatalf("attach %d: %v", i, err)
		}
		var open io.Closer
		switch i % 4 {
		case 0: // a relayed connection, open when the link closes
			c, err := sb.dial(context.Background(), "203.0.113.20:7000")
			if err != nil {
				t.Fatal(err)
			}
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.Write([]byte("x")); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
				t.Fatal(err)
			}
			open = c
		case 1: // a DNS flow, open when the link closes
			if _, err := sb.query(e.Gateway(), "other.test", dns.TypeA, i%8 == 1); err != nil {
				t.Fatal(err)
			}
		case 2: // a connection from the host into the sandbox
			if _, err := l.DialSandbox(context.Background(), 9); err == nil {
				t.Fatal("dialed a closed port")
			}
		}
		if err := l.Close(); err != nil {
			t.Fatalf("close %d: %v", i, err)
		}
		if open != nil {
			open.Close()
		}
	}
	waitFor(t, "goroutines to end", func() bool { return runtime.NumGoroutine() <= gs })
	// The fake internet's servers run in this process: their side of the
	// cut connections closes a moment later.
	for deadline := time.Now().Add(5 * time.Second); countFDs(t) > fds && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if got := countFDs(t); got > fds { // fewer is fine: an earlier test's descriptors closing late
		t.Errorf("%d descriptors open, %d before:\n%v\nbefore:\n%v", got, fds, fdKinds(), fdsBefore)
	}
	for _, sb := range sbs {
		if out, _ := sb.run("ip", "-o", "link"); strings.Count(strings.TrimSpace(out), "\n") != 0 {
			t.Errorf("interfaces left in a sandbox:\n%s", out)
		}
	}
	if got := hostLinks(t); got != links {
		t.Errorf("host interfaces changed:\n%s\nwas\n%s", got, links)
	}
	if n := len(e.links); n != 0 {
		t.Errorf("engine still tracks %d links", n)
	}
}

// TestCloseDuringHandshake: handshakes the sandbox never finishes (SYNs
// from an address it does not own, so it drops the SYN-ACKs) do not hold
// Close up, and leave nothing behind.
func TestCloseDuringHandshake(t *testing.T) {
	e, _ := newEngine(t)
	sb, l := attach(t, e, false, "open", nil, nil)
	gs := runtime.NumGoroutine()
	src := netip.MustParseAddr("203.0.113.250")
	for i, dst := range []string{"203.0.113.20:7000", "203.0.113.20:443", "198.51.100.10:53"} {
		injectSYN(t, sb, l.Interface(), netip.AddrPortFrom(src, uint16(40000+i)), netip.MustParseAddrPort(dst))
	}
	waitFor(t, "handshakes under way", func() bool { return runtime.NumGoroutine() >= gs+3 })
	done := make(chan error, 1)
	go func() { done <- l.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close hangs on unfinished handshakes")
	}
	waitFor(t, "goroutines to end", func() bool { return runtime.NumGoroutine() < gs })
}
