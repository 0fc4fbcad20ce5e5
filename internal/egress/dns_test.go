package egress

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/miekg/dns"
)

func TestDNSDeniedNamesNeverLeave(t *testing.T) {
	e, _ := newEngine(t)
	sb, l := attach(t, e, false, "allowlist", allowlist, []string{"bad.pkg.test"})
	w := getWorld(t)
	gw := e.Gateway()
	mark := w.Mark()
	for _, name := range []string{"denied.test", "pkg.test", "bad.pkg.test", "x.tunnel.attacker.test", "localhost"} {
		for _, tcp := range []bool{false, true} {
			r, err := sb.query(gw, name, dns.TypeA, tcp)
			if err != nil || r.Rcode != dns.RcodeNameError || len(r.Answer) != 0 {
				t.Errorf("%s (tcp %v): %v %v", name, tcp, r, err)
			}
		}
		if w.SawQuery(mark, name) {
			t.Errorf("query for %s reached upstream", name)
		}
	}
	// Any resolver address the sandbox picks is answered by sandpool's
	// resolver, under the same rules; the address itself is never asked.
	foreign := netip.MustParseAddr("203.0.113.53")
	for _, tcp := range []bool{false, true} {
		if r, err := sb.query(foreign, "denied.test", dns.TypeA, tcp); err != nil || r.Rcode != dns.RcodeNameError {
			t.Errorf("foreign resolver, denied name (tcp %v): %v %v", tcp, r, err)
		}
		if r, err := sb.query(foreign, "allowed.test", dns.TypeA, tcp); err != nil || len(r.Answer) != 1 {
			t.Errorf("foreign resolver, allowed name (tcp %v): %v %v", tcp, r, err)
		}
	}
	for _, h := range w.HitsSince(mark) {
		if h.Kind == "dns" && h.Local.Addr() != upstreamDNS {
			t.Errorf("a query reached %v", h.Local)
		}
	}
	if s := l.Stats(); s.DNSRefused < 10 || s.DNSQueries < s.DNSRefused+2 {
		t.Errorf("DNS counters: %+v", s)
	}
}

func TestDNSAnswers(t *testing.T) {
	e, _ := newEngine(t)
	sb, l := attach(t, e, false, "allowlist", []string{"*.allowed.test", "two.test"}, nil)
	gw := e.Gateway()
	// Rebinding: private, loopback, metadata, host, link answers go.
	if got := sb.resolve(t, gw, "rebind.allowed.test"); !slices.Equal(got, []string{"203.0.113.23"}) {
		t.Errorf("rebind answers: %v", got)
	}
	if got := sb.resolve(t, gw, "private.allowed.test"); len(got) != 0 {
		t.Errorf("private-only answer: %v", got)
	}
	mustRefuse(t, sb, l, "169.254.169.254:80")
	// No IPv6 addresses, no HTTPS/SVCB hints.
	for _, qt := range []uint16{dns.TypeAAAA, dns.TypeHTTPS, dns.TypeSVCB} {
		r, err := sb.query(gw, "two.test", qt, false)
		if err != nil || r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 {
			t.Errorf("qtype %s: %v %v", dns.TypeToString[qt], r, err)
		}
	}
	// Other types of an allowed name are forwarded.
	if r, err := sb.query(gw, "two.test", dns.TypeTXT, false); err != nil || len(r.Answer) != 1 {
		t.Errorf("TXT: %v %v", r, err)
	}
	got := sb.resolve(t, gw, "two.test")
	slices.Sort(got)
	if !slices.Equal(got, []string{"203.0.113.21", "203.0.113.22"}) {
		t.Fatalf("two.test: %v", got)
	}
	// Both answers are usable, by address (non-HTTP port) and by SNI.
	echo(t, sb, "203.0.113.21:7000")
	echo(t, sb, "203.0.113.22:7000")
	if _, err := sb.tlsGet("203.0.113.22:443", "two.test"); err != nil {
		t.Errorf("tls two.test: %v", err)
	}
	// Another sandbox's answers are its own: a fresh sandbox has not
	// resolved two.test and may not use its addresses.
	sb2, l2 := attach(t, e, false, "allowlist", []string{"two.test"}, nil)
	mustRefuse(t, sb2, l2, "203.0.113.21:7000")
}

// TestDNSHostsFile: the host's hosts file answers first, filtered like
// any answer.
func TestDNSHostsFile(t *testing.T) {
	hosts := t.TempDir() + "/hosts"
	writeFile(t, hosts, "127.0.0.1 localhost\n203.0.113.40 files.test\n169.254.169.254 metadata.test\n")
	e, _ := newEngine(t, func(c *Config) { c.HostsFile = hosts })
	sb, _ := attach(t, e, false, "open", nil, nil)
	w := getWorld(t)
	mark := w.Mark()
	if got := sb.resolve(t, e.Gateway(), "files.test"); !slices.Equal(got, []string{"203.0.113.40"}) {
		t.Errorf("files.test: %v", got)
	}
	for _, n := range []string{"localhost", "metadata.test"} {
		if got := sb.resolve(t, e.Gateway(), n); len(got) != 0 {
			t.Errorf("%s: %v", n, got)
		}
	}
	if w.SawQuery(mark, "files.test") {
		t.Error("hosts-file name asked upstream")
	}
}
