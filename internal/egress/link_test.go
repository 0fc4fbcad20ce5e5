package egress

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestSetPolicyOnLiveLink: a new policy applies to new connections and
// queries; an established connection carries on.
func TestSetPolicyOnLiveLink(t *testing.T) {
	e, _ := newEngine(t)
	sb, l := attach(t, e, false, "open", nil, nil)
	c, err := sb.dial(context.Background(), "203.0.113.20:7000")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	roundTrip := func() error {
		if _, err := c.Write([]byte("x")); err != nil {
			return err
		}
		_, err := io.ReadFull(c, make([]byte, 1))
		return err
	}
	if err := roundTrip(); err != nil {
		t.Fatal(err)
	}
	l.SetPolicy(mustPolicy("none"))
	if l.Policy().Mode() != ModeNone {
		t.Fatal("policy not replaced")
	}
	mustRefuse(t, sb, l, "203.0.113.20:7000")
	if got := sb.resolve(t, e.Gateway(), "other.test"); len(got) != 0 {
		t.Fatalf("resolved under mode none: %v", got)
	}
	if err := roundTrip(); err != nil {
		t.Fatalf("established connection cut by the policy change: %v", err)
	}
	l.SetPolicy(mustPolicy("allowlist", []string{"other.test"}))
	sb.resolve(t, e.Gateway(), "other.test")
	echo(t, sb, "203.0.113.20:7000")
	mustRefuse(t, sb, l, "198.51.100.10:80")
	l.SetPolicy(nil)
	mustRefuse(t, sb, l, "203.0.113.20:7000")
}

// TestCounters: per-link counters and Prometheus totals move, and no
// metric carries a sandbox label.
func TestCounters(t *testing.T) {
	e, reg := newEngine(t)
	sb, l := attach(t, e, false, "allowlist", []string{"bulk.test"}, nil)
	if got := sb.resolve(t, e.Gateway(), "bulk.test"); len(got) != 1 {
		t.Fatal(got)
	}
	const n = 1 << 20
	if got := bulk(t, sb, "203.0.113.30:9000", n); got != n {
		t.Fatalf("bulk read %d bytes", got)
	}
	mustRefuse(t, sb, l, "198.51.100.10:80")
	sb.resolve(t, e.Gateway(), "denied.test")
	waitFor(t, "relay done", func() bool { return l.Stats().Active == 0 })
	s := l.Stats()
	if s.BytesIn < n || s.BytesOut == 0 || s.Connections != 1 || s.Refused != 1 || s.DNSQueries != 2 || s.DNSRefused != 1 {
		t.Fatalf("stats %+v", s)
	}
	for _, tc := range []struct {
		c    prometheus.Collector
		want float64
	}{
		{e.m.bytesIn, float64(s.BytesIn)},
		{e.m.bytesOut, float64(s.BytesOut)},
		{e.m.allowed, 1},
		{e.m.refusedConnections, 1},
		{e.m.refusedBy[reasonPolicy], 1},
		{e.m.dnsRefused, 1},
		{e.m.dnsOK, 1},
		{e.m.links, 1},
	} {
		if got := testutil.ToFloat64(tc.c); got != tc.want {
			t.Errorf("metric = %v, want %v", got, tc.want)
		}
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if strings.Contains(strings.ToLower(lp.GetName()), "sandbox") || lp.GetValue() == "sb-test" {
					t.Errorf("%s has label %s=%s", mf.GetName(), lp.GetName(), lp.GetValue())
				}
			}
		}
	}
	l.Close()
	if got := testutil.ToFloat64(e.m.links); got != 0 {
		t.Errorf("links gauge after Close: %v", got)
	}
}

// bulk asks the bulk server at addr for n bytes and returns how many came.
func bulk(t testing.TB, sb *sandboxNS, addr string, n int64) int64 {
	t.Helper()
	c, err := sb.dial(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "%d\n", n)
	got, _ := io.Copy(io.Discard, bufio.NewReaderSize(c, 256<<10))
	return got
}

// TestDialSandbox: the host reaches a port the sandbox listens on through
// the link.
func TestDialSandbox(t *testing.T) {
	e, _ := newEngine(t)
	sb, l := attach(t, e, true, "none", nil, nil)
	ln, err := sb.listen("0.0.0.0:8080")
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
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	c, err := l.DialSandbox(context.Background(), 8080)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 5)
	if _, err := io.ReadFull(c, b); err != nil || string(b) != "hello" {
		t.Fatalf("echo %q %v", b, err)
	}
	if _, err := l.DialSandbox(context.Background(), 8081); err == nil {
		t.Fatal("dialed a port nobody listens on")
	}
	// The connection is cut when the link closes.
	l.Close()
	if _, err := c.Read(b); err == nil {
		t.Fatal("connection outlived the link")
	}
	c.Close()
	if _, err := l.DialSandbox(context.Background(), 8080); err == nil {
		t.Fatal("dialed through a closed link")
	}
}

// TestLimits: a sandbox's connection limit, and a name that never comes.
func TestLimits(t *testing.T) {
	e, _ := newEngine(t, func(c *Config) { c.MaxConns = 2; c.PeekTimeout = 200 * time.Millisecond })
	sb, l := attach(t, e, false, "allowlist", []string{"allowed.test", "203.0.113.0/24"}, nil)
	var open []io.Closer
	defer func() {
		for _, c := range open {
			c.Close()
		}
	}()
	for range 2 {
		c, err := sb.dial(context.Background(), "203.0.113.20:7000")
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, c)
	}
	waitFor(t, "two relays", func() bool { return l.Stats().Active == 2 })
	mustRefuse(t, sb, l, "203.0.113.21:7000")
	if got := testutil.ToFloat64(e.m.refusedBy[reasonLimit]); got != 1 {
		t.Errorf("limit refusals = %v", got)
	}
	for _, c := range open {
		c.Close()
	}
	open = nil
	waitFor(t, "relays done", func() bool { return l.Stats().Active == 0 })
	// A TLS port with name rules, and a client that says nothing.
	sb.resolve(t, e.Gateway(), "allowed.test")
	c, err := sb.dial(context.Background(), "198.51.100.10:443")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("silent client got data")
	}
	if got := testutil.ToFloat64(e.m.refusedBy[reasonNoName]); got != 1 {
		t.Errorf("no-name refusals = %v", got)
	}
}
