package egress

import (
	"context"
	"net/netip"
	"sync"
	"time"

	"github.com/miekg/dns"

	"github.com/sandpool/sandpool/internal/egress/resolver"
)

// denyAddrs resolves, on the host, the exact names of open-mode deny
// lists, so that a sandbox reaching such a name's address without saying
// the name (by IP, or TLS without SNI) is refused too. The sandbox never
// asks for these names (its queries for them get NXDOMAIN); the operator's
// policy does. Answers are shared by all links and kept for their TTL,
// clamped to [denyMinHold, denyMaxHold]; a failed lookup counts as no
// addresses for denyMinHold. Wildcards cannot be resolved: "*.x" holds on
// DNS and on SNI/Host only.
type denyAddrs struct {
	up      *resolver.Upstream
	timeout time.Duration

	mu sync.Mutex
	m  map[string]denyEntry
}

type denyEntry struct {
	addrs []netip.Addr
	exp   time.Time
}

const (
	denyMinHold  = 30 * time.Second
	denyMaxHold  = 5 * time.Minute
	denyMaxNames = 4096
)

// has reports whether name currently resolves (on the host) to ip.
func (d *denyAddrs) has(ctx context.Context, name string, ip netip.Addr) bool {
	for _, a := range d.lookup(ctx, name) {
		if a == ip {
			return true
		}
	}
	return false
}

func (d *denyAddrs) lookup(ctx context.Context, name string) []netip.Addr {
	now := time.Now()
	d.mu.Lock()
	e, ok := d.m[name]
	d.mu.Unlock()
	if ok && now.Before(e.exp) {
		return e.addrs
	}
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	e = denyEntry{exp: now.Add(denyMinHold)}
	if m, err := d.up.Exchange(ctx, name, dns.TypeA); err == nil {
		ttl := uint32(0)
		for _, rr := range m.Answer {
			if a, ok := rr.(*dns.A); ok {
				if ip, ok := netip.AddrFromSlice(a.A); ok {
					e.addrs = append(e.addrs, ip.Unmap())
					ttl = max(ttl, a.Hdr.Ttl)
				}
			}
		}
		e.exp = now.Add(min(max(time.Duration(ttl)*time.Second, denyMinHold), denyMaxHold))
	}
	d.mu.Lock()
	if len(d.m) >= denyMaxNames {
		clear(d.m)
	}
	d.m[name] = e
	d.mu.Unlock()
	return e.addrs
}
