package policy

import (
	"net/netip"
	"strings"
)

// NamePermitted reports whether a connection or DNS query for name (in
// NormalizeName form) may go ahead on the name alone: in open mode unless
// the deny list names it, in allowlist mode if the allow list names it and
// the deny list does not, never in mode none.
func (p *Policy) NamePermitted(name string) bool {
	switch p.Mode() {
	case ModeOpen:
		return !p.deny.matchName(name)
	case ModeAllowlist:
		return p.allow.matchName(name) && !p.deny.matchName(name)
	}
	return false
}

// AllowsName reports whether the allow list names name.
func (p *Policy) AllowsName(name string) bool { return p != nil && p.allow.matchName(name) }

// DeniesName reports whether the deny list names name.
func (p *Policy) DeniesName(name string) bool { return p != nil && p.deny.matchName(name) }

// AllowsAddr reports whether an address or CIDR of the allow list holds ip.
func (p *Policy) AllowsAddr(ip netip.Addr) bool { return p != nil && p.allow.matchAddr(ip) }

// DeniesAddr reports whether an address or CIDR of the deny list holds ip.
func (p *Policy) DeniesAddr(ip netip.Addr) bool { return p != nil && p.deny.matchAddr(ip) }

// HasAllowNames reports whether the allow list has host names or wildcards.
func (p *Policy) HasAllowNames() bool { return p != nil && p.allow.names > 0 }

// HasDenyNames reports whether the deny list has host names or wildcards.
func (p *Policy) HasDenyNames() bool { return p != nil && p.deny.names > 0 }

// DenyExactNames returns the deny list's host names, without wildcards.
func (p *Policy) DenyExactNames() []string {
	if p == nil {
		return nil
	}
	out := make([]string, 0, len(p.deny.exact))
	for n := range p.deny.exact {
		out = append(out, n)
	}
	return out
}

func (r *rules) matchName(name string) bool {
	if r.names == 0 || name == "" {
		return false
	}
	if r.exact[name] {
		return true
	}
	if len(r.suffixes) == 0 {
		return false
	}
	// "*.pkg.test" is ".pkg.test": try every proper parent of name, so
	// "a.pkg.test" and "x.a.pkg.test" match and "pkg.test" does not.
	for i := strings.IndexByte(name, '.'); i >= 0; {
		if r.suffixes[name[i:]] {
			return true
		}
		j := strings.IndexByte(name[i+1:], '.')
		if j < 0 {
			break
		}
		i += 1 + j
	}
	return false
}

func (r *rules) matchAddr(ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, p := range r.prefixes {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}
