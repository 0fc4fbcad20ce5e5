package egress

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// waitFor polls cond until it holds or 5 s pass; it asserts an outcome,
// not a duration.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

// mustRefuse asserts that a TCP connection from the sandbox to addr is
// refused (reset before or right after the handshake), that the link
// counts it, and that no fake server saw it.
func mustRefuse(t *testing.T, sb *sandboxNS, l *Link, addr string) {
	t.Helper()
	w := getWorld(t)
	mark := w.Mark()
	before := l.Stats().Refused
	c, err := sb.dial(context.Background(), addr)
	if err == nil {
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		_, err = c.Read(make([]byte, 1))
		c.Close()
	}
	if err == nil {
		t.Fatalf("connection to %s was not refused", addr)
	}
	waitFor(t, "refusal counted", func() bool { return l.Stats().Refused > before })
	host, _, _ := net.SplitHostPort(addr)
	if w.SawAddr(mark, host) {
		t.Fatalf("a server at %s saw the refused connection", addr)
	}
}

func TestModeNone(t *testing.T) {
	e, _ := newEngine(t)
	sb, l := attach(t, e, false, "none", nil, nil)
	w := getWorld(t)
	mark := w.Mark()
	for _, a := range []string{"198.51.100.10:80", "198.51.100.10:443", "203.0.113.20:7000"} {
		mustRefuse(t, sb, l, a)
	}
	r, err := sb.query(e.Gateway(), "allowed.test", dns.TypeA, false)
	if err != nil || r.Rcode != dns.RcodeNameError {
		t.Fatalf("DNS in mode none: %v %v", r, err)
	}
	if w.SawQuery(mark, "allowed.test") {
		t.Fatal("mode none reached the upstream resolver")
	}
	if _, err := sb.curl(t, e.Gateway(), "https://allowed.test/"); err == nil {
		t.Fatal("curl succeeded in mode none")
	}
}

func TestModeOpen(t *testing.T) {
	e, _ := newEngine(t)
	sb, l := attach(t, e, false, "open", nil, nil)
	out, err := sb.curl(t, e.Gateway(), "https://allowed.test/")
	if err != nil || !strings.Contains(out, "host=allowed.test addr=198.51.100.10") {
		t.Fatalf("curl https: %v %s", err, out)
	}
	if out, err := sb.curl(t, e.Gateway(), "http://203.0.113.77/"); err != nil || !strings.Contains(out, "addr=203.0.113.77") {
		t.Fatalf("curl http by address: %v %s", err, out)
	}
	if body, err := sb.httpGet("198.51.100.11:80", "denied.test"); err != nil || !strings.Contains(body, "host=denied.test") {
		t.Fatalf("open mode, any name: %v %q", err, body)
	}
	// Always refused, whatever the mode: private ranges, metadata, CGNAT,
	// the sandbox's own gateway, the host's own address. (The host's
	// loopback: see TestHostLoopbackUnreachable.)
	for _, a := range []string{"10.0.0.1:80", "172.16.5.4:443", "192.168.1.1:80", "169.254.169.254:80",
		"100.64.0.1:80", e.Gateway().String() + ":80", hostVethIP.String() + ":80"} {
		mustRefuse(t, sb, l, a)
	}
	if l.Stats().Failed != 0 {
		t.Fatalf("a refused destination was dialed: %+v", l.Stats())
	}
}

func TestOpenWithDenyList(t *testing.T) {
	e, _ := newEngine(t)
	sb, l := attach(t, e, false, "open", nil, []string{"denied.test", "203.0.113.0/28", "*.pkg.test"})
	gw := e.Gateway()
	if got := sb.resolve(t, gw, "denied.test"); len(got) != 0 {
		t.Fatalf("denied name resolved: %v", got)
	}
	if got := sb.resolve(t, gw, "other.test"); len(got) != 1 {
		t.Fatalf("other.test: %v", got)
	}
	if _, err := sb.tlsGet("198.51.100.11:443", "denied.test"); err == nil {
		t.Fatal("denied SNI passed")
	}
	if _, err := sb.httpGet("198.51.100.11:80", "a.pkg.test"); err == nil {
		t.Fatal("denied Host passed")
	}
	mustRefuse(t, sb, l, "203.0.113.5:7000")
	// A denied name's address, by IP: the sandbox never resolved it,
	// the host did.
	mustRefuse(t, sb, l, "198.51.100.11:7000")
	if _, err := sb.curl(t, gw, "-k", "https://198.51.100.11/"); err == nil {
		t.Error("TLS without SNI to a denied name's address passed")
	}
	if _, err := sb.tlsGet("198.51.100.10:443", "allowed.test"); err != nil {
		t.Fatalf("allowed SNI: %v", err)
	}
	if _, err := sb.httpGet("203.0.113.20:80", "other.test"); err != nil {
		t.Fatalf("not denied: %v", err)
	}
}
