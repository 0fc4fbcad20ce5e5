package policy

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		mode        string
		allow, deny []string
		want        string // substring of the error
	}{
		{"bogus", nil, nil, `egress mode "bogus"`},
		{"open", []string{"a.test"}, nil, "allow entries need egress mode allowlist"},
		{"none", []string{"a.test"}, nil, "allow entries need egress mode allowlist"},
		{"allowlist", []string{"ok.test", ""}, nil, `allow[1] "": empty entry`},
		{"allowlist", []string{"https://a.test/x"}, nil, "a URL is not an entry"},
		{"allowlist", []string{"a.test/path"}, nil, "a path is not allowed"},
		{"allowlist", []string{"10.0.0.1/8"}, nil, "did you mean 10.0.0.0/8"},
		{"allowlist", []string{"10.0.0.0/33"}, nil, "not a CIDR"},
		{"allowlist", []string{"a.test:443"}, nil, "ports are not supported"},
		{"allowlist", []string{"*"}, nil, "wildcard"},
		{"allowlist", []string{"a.*.test"}, nil, "wildcard"},
		{"allowlist", []string{"**.test"}, nil, "wildcard"},
		{"allowlist", []string{"a..test"}, nil, "empty label"},
		{"allowlist", []string{"-a.test"}, nil, "invalid character"},
		{"allowlist", []string{"a b.test"}, nil, "invalid character"},
		{"allowlist", []string{strings.Repeat("a", 64) + ".test"}, nil, "longer than 63"},
		{"open", nil, []string{"fe80::1%eth0"}, "zoned addresses"},
		{"open", nil, []string{"ok.test", "bad_.test", "x y"}, `deny[2] "x y"`},
	} {
		_, err := Parse(tc.mode, tc.allow, tc.deny)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%q, %q, %q) = %v, want error containing %q", tc.mode, tc.allow, tc.deny, err, tc.want)
			continue
		}
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("Parse(%q, %q, %q): %v does not wrap ErrInvalid", tc.mode, tc.allow, tc.deny, err)
		}
	}
	_, err := Parse("allowlist", []string{"ok.test", "bad..test"}, nil)
	var ee *EntryError
	if !errors.As(err, &ee) || ee.List != "allow" || ee.Index != 1 || ee.Entry != "bad..test" {
		t.Errorf("EntryError = %+v", ee)
	}
	if _, err := Parse("allowlist", make([]string, MaxEntries+1), nil); err == nil {
		t.Error("too many entries accepted")
	}
}

func TestModes(t *testing.T) {
	for _, m := range []string{"", "none", "NONE", " open ", "allowlist"} {
		if _, err := Parse(m, nil, nil); err != nil {
			t.Errorf("Parse(%q): %v", m, err)
		}
	}
	var zero *Policy
	if zero.Mode() != ModeNone || (&Policy{}).Mode() != ModeNone || zero.NamePermitted("a.test") {
		t.Error("zero policy is not mode none")
	}
}

func TestNameMatching(t *testing.T) {
	p := MustParse("allowlist",
		[]string{"Allowed.Test.", "*.pkg.test", "bücher.test", "203.0.113.0/24", "198.51.100.7", "::ffff:192.0.2.9"},
		[]string{"bad.pkg.test", "*.evil.pkg.test", "203.0.113.66"})
	for _, tc := range []struct {
		name string
		want bool
	}{
		{"allowed.test", true},
		{"x.allowed.test", false},
		{"a.pkg.test", true},
		{"x.y.pkg.test", true},
		{"pkg.test", false},
		{"xpkg.test", false},
		{"bad.pkg.test", false},
		{"evil.pkg.test", true}, // "*.evil.pkg.test" does not match its apex
		{"a.evil.pkg.test", false},
		{"xn--bcher-kva.test", true},
		{"other.test", false},
	} {
		if got := p.NamePermitted(tc.name); got != tc.want {
			t.Errorf("NamePermitted(%q) = %v, want %v", tc.name, got, tc.want)
		}
	}
	for _, tc := range []struct {
		ip           string
		allow, denyd bool
	}{
		{"203.0.113.5", true, false},
		{"203.0.113.66", true, true},
		{"198.51.100.7", true, false},
		{"198.51.100.8", false, false},
		{"::ffff:203.0.113.5", true, false},
		{"192.0.2.9", true, false},
	} {
		ip := netip.MustParseAddr(tc.ip)
		if p.AllowsAddr(ip) != tc.allow || p.DeniesAddr(ip) != tc.denyd {
			t.Errorf("%s: allows %v denies %v, want %v %v", tc.ip, p.AllowsAddr(ip), p.DeniesAddr(ip), tc.allow, tc.denyd)
		}
	}
	open := MustParse("open", nil, []string{"denied.test"})
	if !open.NamePermitted("anything.test") || open.NamePermitted("denied.test") || !open.HasDenyNames() || open.HasAllowNames() {
		t.Error("open mode matching wrong")
	}
	if MustParse("none", nil, nil).NamePermitted("a.test") {
		t.Error("mode none permits a name")
	}
}

func TestBlocked(t *testing.T) {
	for _, s := range []string{
		"0.0.0.0", "10.1.2.3", "100.64.0.1", "127.0.0.1", "169.254.169.254", "172.16.0.1",
		"172.31.255.255", "192.168.1.1", "198.18.0.1", "224.0.0.1", "255.255.255.255",
		"::", "::1", "::ffff:127.0.0.1", "::ffff:169.254.169.254", "::ffff:10.0.0.1",
		"64:ff9b::a9fe:a9fe", "2002:a9fe:a9fe::1", "2001::1", "fc00::1", "fd12::1",
		"fe80::1", "ff02::1", "::127.0.0.1",
	} {
		if !Blocked(netip.MustParseAddr(s)) {
			t.Errorf("Blocked(%s) = false", s)
		}
	}
	for _, s := range []string{"198.51.100.1", "203.0.113.9", "192.0.2.1", "1.1.1.1", "2001:db8::1", "2606:4700::1111", "172.32.0.1", "100.128.0.1"} {
		if Blocked(netip.MustParseAddr(s)) {
			t.Errorf("Blocked(%s) = true", s)
		}
	}
	if !Blocked(netip.Addr{}) {
		t.Error("invalid address not blocked")
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"a.test", "*.a.test", "10.0.0.0/8", "::1", "bücher.test", "a..b", "*"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, entry string) {
		p, err := Parse("allowlist", []string{entry}, nil)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		// A parsed name entry matches its own normalized form.
		if n, bad := NormalizeName(strings.TrimPrefix(strings.TrimSpace(entry), "*.")); bad == "" && !strings.HasPrefix(strings.TrimSpace(entry), "*.") {
			if _, err := netip.ParseAddr(strings.Trim(strings.TrimSpace(entry), "[]")); err != nil && !p.AllowsName(n) {
				t.Fatalf("entry %q does not match its name %q", entry, n)
			}
		}
	})
}
