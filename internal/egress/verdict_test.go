package egress

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/sandpool/sandpool/internal/egress/resolver"
	"github.com/sandpool/sandpool/internal/egress/sniff"
)

func testJudge() *judge {
	cache := resolver.NewCache(0)
	cache.Add("allowed.test", []netip.Addr{netip.MustParseAddr("198.51.100.10")}, time.Minute)
	cache.Add("a.pkg.test", []netip.Addr{netip.MustParseAddr("198.51.100.12")}, time.Minute)
	cache.Add("denied.test", []netip.Addr{netip.MustParseAddr("198.51.100.11")}, time.Minute) // resolved before a policy change
	cache.Add("shared.test", []netip.Addr{netip.MustParseAddr("198.51.100.11")}, time.Minute)
	e := &Engine{cfg: Config{}.withDefaults()}
	return &judge{
		guard:     &guard{link: netip.MustParsePrefix("100.64.253.0/30"), allowPrivate: []netip.Prefix{netip.MustParsePrefix("10.9.0.0/16")}},
		cache:     cache,
		nameProto: e.nameProto,
	}
}

func TestJudge(t *testing.T) {
	j := testJudge()
	type step struct {
		dst  string
		name string // "" with res Incomplete: judged by address only
		res  sniff.Result
		want string // "allow", "name", or a refusal reason
	}
	for _, tc := range []struct {
		mode        string
		allow, deny []string
		steps       []step
	}{
		{"none", nil, nil, []step{
			{"198.51.100.10:443", "", 0, reasonPolicy},
			{"10.0.0.1:80", "", 0, reasonBlocked},
		}},
		{"open", nil, nil, []step{
			{"203.0.113.9:443", "", 0, "allow"},
			{"203.0.113.9:22", "", 0, "allow"},
			{"169.254.169.254:80", "", 0, reasonBlocked},
			{"100.64.253.1:53", "", 0, reasonBlocked},
			{"10.9.1.1:80", "", 0, "allow"}, // AllowPrivate
			{"127.0.0.1:80", "", 0, reasonBlocked},
		}},
		{"open", nil, []string{"denied.test", "203.0.113.0/24"}, []step{
			{"198.51.100.10:443", "", 0, "name"},
			{"198.51.100.10:443", "denied.test", sniff.Named, reasonPolicy},
			{"198.51.100.10:443", "allowed.test", sniff.Named, "allow"},
			{"198.51.100.10:443", "", sniff.Invalid, reasonNoName},
			{"198.51.100.10:443", "", sniff.Nameless, "allow"},
			{"198.51.100.11:22", "", 0, reasonPolicy}, // denied.test resolved there
			{"203.0.113.5:443", "", 0, reasonPolicy},
		}},
		{"allowlist", []string{"allowed.test", "*.pkg.test", "shared.test", "203.0.113.0/24"}, []string{"denied.test"}, []step{
			{"198.51.100.10:443", "", 0, "name"},
			{"198.51.100.10:443", "allowed.test", sniff.Named, "allow"},
			{"198.51.100.10:80", "allowed.test", sniff.Named, "allow"},
			{"198.51.100.10:443", "other.test", sniff.Named, reasonPolicy},
			{"198.51.100.11:443", "allowed.test", sniff.Named, reasonMismatch}, // SNI spoof
			{"198.51.100.12:443", "a.pkg.test", sniff.Named, "allow"},
			{"198.51.100.12:443", "b.pkg.test", sniff.Named, reasonMismatch},
			{"198.51.100.10:443", "", sniff.Invalid, reasonNoName},
			{"198.51.100.10:443", "", sniff.Nameless, "allow"}, // its address came from allowed.test
			{"198.51.100.10:22", "", 0, "allow"},
			{"198.51.100.11:22", "", 0, "allow"}, // shared.test resolved there too
			{"198.51.100.99:22", "", 0, reasonPolicy},
			{"203.0.113.7:22", "", 0, "allow"},
			{"203.0.113.7:443", "", 0, "name"}, // deny names exist: read the name
			{"203.0.113.7:443", "denied.test", sniff.Named, reasonPolicy},
			{"203.0.113.7:443", "whatever.test", sniff.Named, "allow"},
		}},
		{"allowlist", []string{"203.0.113.0/24"}, nil, []step{
			{"203.0.113.7:443", "", 0, "allow"}, // no name rules: never read
			{"198.51.100.10:443", "", 0, reasonPolicy},
		}},
	} {
		p := mustPolicy(tc.mode, tc.allow, tc.deny)
		for _, s := range tc.steps {
			dst := netip.MustParseAddrPort(s.dst)
			var v verdict
			if s.res == sniff.Incomplete {
				v = j.byAddress(p, dst)
			} else {
				v = j.byName(p, dst, s.name, s.res)
			}
			got := v.reason
			switch v.kind {
			case allow:
				got = "allow"
			case needName:
				got = "name"
			}
			if got != s.want {
				t.Errorf("%s %v: %s name=%q (%v): got %s, want %s", tc.mode, tc.allow, s.dst, s.name, s.res, got, s.want)
			}
		}
	}
}

func TestConfigValidate(t *testing.T) {
	if err := (Config{}).Validate(); err != nil {
		t.Fatalf("zero config: %v", err)
	}
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Subnet: netip.MustParsePrefix("100.64.253.0/31")}, "Subnet"},
		{Config{Subnet: netip.MustParsePrefix("100.64.253.1/30")}, "Subnet"},
		{Config{Subnet: netip.MustParsePrefix("fd00::/64")}, "Subnet"},
		{Config{Interface: "a-very-long-interface-name"}, "Interface"},
		{Config{MTU: 100}, "MTU"},
		{Config{MaxConns: -1}, "MaxConns"},
		{Config{AllowPrivate: []netip.Prefix{netip.MustParsePrefix("100.64.0.0/10")}}, "overlaps"},
		{Config{AllowPrivate: []netip.Prefix{netip.MustParsePrefix("10.0.0.1/8")}}, "AllowPrivate"},
		{Config{Resolvers: []netip.AddrPort{netip.MustParseAddrPort("192.0.2.53:0")}}, "Resolvers"},
	} {
		if err := tc.cfg.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate(%+v) = %v, want it to name %s", tc.cfg, err, tc.want)
		}
	}
}
