package resolver

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func TestCache(t *testing.T) {
	c := NewCache(8)
	now := time.Unix(1000, 0)
	c.now = func() time.Time { return now }
	a, b := netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("198.51.100.2")
	c.Add("x.test", []netip.Addr{a, b}, 0)
	c.Add("y.test", []netip.Addr{netip.MustParseAddr("::ffff:198.51.100.1")}, 2*MaxHold)
	if !c.Has("x.test", a) || !c.Has("x.test", b) || c.Has("x.test", netip.MustParseAddr("198.51.100.3")) || c.Has("z.test", a) {
		t.Fatal("Has wrong")
	}
	names := c.Names(a)
	slices.Sort(names)
	if !slices.Equal(names, []string{"x.test", "y.test"}) {
		t.Fatalf("Names = %v", names)
	}
	now = now.Add(MinHold + time.Second) // x.test's answer (TTL 0) held MinHold
	if c.Has("x.test", a) || !c.Has("y.test", a) || !slices.Equal(c.Names(a), []string{"y.test"}) {
		t.Fatal("expiry wrong")
	}
	now = now.Add(MaxHold) // y.test's capped at MaxHold
	if c.Has("y.test", a) {
		t.Fatal("hold not capped")
	}
	for i := range 20 {
		c.Add(string(rune('a'+i))+".test", []netip.Addr{a}, time.Hour)
	}
	if c.Len() > 8 {
		t.Fatalf("cache holds %d names, max 8", c.Len())
	}
	if !c.Has("t.test", a) {
		t.Fatal("newest name evicted")
	}
}

func TestHostsFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "hosts")
	if err := os.WriteFile(p, []byte("# c\n127.0.0.1 localhost\n203.0.113.5 Web.Test web # comment\n2001:db8::1 web.test\nbad line\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	u, err := NewUpstream(Config{Servers: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:1")}, HostsFile: p, Timeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	m, err := u.Exchange(context.Background(), "web.test", dns.TypeA)
	if err != nil || len(m.Answer) != 1 || m.Answer[0].(*dns.A).A.String() != "203.0.113.5" {
		t.Fatalf("hosts answer %v %v", m, err)
	}
	if m, err := u.Exchange(context.Background(), "web", dns.TypeA); err != nil || len(m.Answer) != 1 {
		t.Fatalf("alias: %v %v", m, err)
	}
}

func TestResolvConf(t *testing.T) {
	p := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(p, []byte("nameserver 192.0.2.53\nnameserver 2001:db8::53\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	u, err := NewUpstream(Config{ResolvConf: p})
	if err != nil {
		t.Fatal(err)
	}
	if got := u.Servers(); !slices.Equal(got, []string{"192.0.2.53:53", "[2001:db8::53]:53"}) {
		t.Fatalf("servers %v", got)
	}
	if err := os.WriteFile(p, []byte("search x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := NewUpstream(Config{ResolvConf: p}); err == nil {
		t.Fatal("no servers accepted")
	}
}
