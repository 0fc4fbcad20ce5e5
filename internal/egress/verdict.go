package egress

import (
	"net/netip"
	"slices"

	"github.com/sandpool/sandpool/internal/egress/policy"
	"github.com/sandpool/sandpool/internal/egress/resolver"
	"github.com/sandpool/sandpool/internal/egress/sniff"
)

// verdict is the outcome of judging a connection.
type verdict struct {
	kind   verdictKind
	reason string // for deny
}

type verdictKind int

const (
	deny verdictKind = iota
	allow
	needName // judge again with the name the stream carries
)

var (
	allowed  = verdict{kind: allow}
	wantName = verdict{kind: needName}
)

func refused(reason string) verdict { return verdict{kind: deny, reason: reason} }

// judge holds what a decision needs besides the policy: the guard, the
// sandbox's resolver answers and which ports carry names.
type judge struct {
	guard     *guard
	cache     *resolver.Cache
	nameProto func(port uint16) proto
	// denied reports whether ip is an address of an exact deny-list name
	// (resolved on the host); nil means unknown.
	denied func(name string, ip netip.Addr) bool
}

// proto is how a port's streams are read for a name.
type proto int

const (
	protoNone proto = iota
	protoHTTP
	protoTLS
)

// byAddress judges a new connection to dst before any byte of it is read.
// It decides outright unless the answer depends on the name the stream
// will carry (needName), which happens only on HTTP and TLS ports when
// the policy has name rules.
func (j *judge) byAddress(p *policy.Policy, dst netip.AddrPort) verdict {
	ip := dst.Addr().Unmap()
	if j.guard.blocked(ip) {
		return refused(reasonBlocked)
	}
	mode := p.Mode()
	if mode == policy.ModeNone || p.DeniesAddr(ip) {
		return refused(reasonPolicy)
	}
	named := j.nameProto(dst.Port()) != protoNone
	switch mode {
	case policy.ModeOpen:
		if named && p.HasDenyNames() {
			return wantName
		}
	case policy.ModeAllowlist:
		if p.AllowsAddr(ip) && !(named && p.HasDenyNames()) {
			return allowed
		}
		if named && (p.HasAllowNames() || p.HasDenyNames()) {
			return wantName
		}
	}
	return j.nameless(p, ip)
}

// byName finishes judging a connection whose first bytes were read: name
// and res are what the sniffer made of them.
func (j *judge) byName(p *policy.Policy, dst netip.AddrPort, name string, res sniff.Result) verdict {
	ip := dst.Addr().Unmap()
	switch res {
	case sniff.Named:
	case sniff.Nameless:
		return j.nameless(p, ip)
	default: // unparsable, split, oversized, too slow: fail closed
		return refused(reasonNoName)
	}
	if p.DeniesName(name) {
		return refused(reasonPolicy)
	}
	switch p.Mode() {
	case policy.ModeOpen:
		return allowed
	case policy.ModeAllowlist:
		if p.AllowsAddr(ip) {
			return allowed
		}
		if !p.AllowsName(name) {
			return refused(reasonPolicy)
		}
		// The name is allowed; the address must be one this sandbox's
		// resolver gave for that very name (no SNI or Host spoofing onto
		// another address).
		if j.cache.Has(name, ip) {
			return allowed
		}
		return refused(reasonMismatch)
	}
	return refused(reasonPolicy)
}

// nameless judges a connection by its address alone: the stream carries
// no name (or its port is not one read for names). The names this
// sandbox resolved to the address stand in for it.
func (j *judge) nameless(p *policy.Policy, ip netip.Addr) verdict {
	names := j.cache.Names(ip)
	switch p.Mode() {
	case policy.ModeOpen:
		// An address a denied name resolved to stays denied, even if
		// another name shares it: whether this sandbox resolved it
		// (before the policy said so), or the host does now.
		if slices.ContainsFunc(names, p.DeniesName) {
			return refused(reasonPolicy)
		}
		if j.denied != nil {
			for _, n := range p.DenyExactNames() {
				if j.denied(n, ip) {
					return refused(reasonPolicy)
				}
			}
		}
		return allowed
	case policy.ModeAllowlist:
		if p.AllowsAddr(ip) {
			return allowed
		}
		if slices.ContainsFunc(names, p.NamePermitted) {
			return allowed
		}
	}
	return refused(reasonPolicy)
}
