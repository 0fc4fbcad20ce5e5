package egress

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/sandpool/sandpool/internal/egress/policy"
)

// errBlockedAddress is returned by the dialer's control hook.
var errBlockedAddress = errors.New("egress: destination address is always refused")

// guard knows the addresses no sandbox reaches whatever its policy: the
// always-refused ranges, the host's own addresses and the sandbox link,
// less what the operator allowed.
type guard struct {
	link         netip.Prefix
	allowPrivate []netip.Prefix

	mu      sync.Mutex
	fetched time.Time
	host    map[netip.Addr]bool
}

// hostAddrsTTL is how long the list of the host's addresses is reused.
const hostAddrsTTL = time.Second

// blocked reports whether ip may never be a destination.
func (g *guard) blocked(ip netip.Addr) bool {
	if !ip.IsValid() {
		return true
	}
	ip = ip.Unmap()
	if g.link.Contains(ip) {
		return true
	}
	for _, p := range g.allowPrivate {
		if p.Contains(ip) {
			return false
		}
	}
	return policy.Blocked(ip) || g.isHost(ip)
}

// isHost reports whether ip is one of the host's own addresses (in the
// server's network namespace, where upstream connections are made). If
// the addresses cannot be listed and never were, every address counts as
// the host's: fail closed.
func (g *guard) isHost(ip netip.Addr) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if now := time.Now(); g.host == nil || now.Sub(g.fetched) >= hostAddrsTTL {
		if addrs, err := net.InterfaceAddrs(); err == nil {
			m := make(map[netip.Addr]bool, len(addrs))
			for _, a := range addrs {
				if n, ok := a.(*net.IPNet); ok {
					if ip, ok := netip.AddrFromSlice(n.IP); ok {
						m[ip.Unmap()] = true
					}
				}
			}
			g.host, g.fetched = m, now
		} else if g.host == nil {
			return true
		}
	}
	return g.host[ip]
}

// control is the upstream dialer's check, made on the address about to
// be connected to, after any name resolution: the last word.
func (g *guard) control(_ context.Context, _, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil || g.blocked(ap.Addr()) {
		return errBlockedAddress
	}
	return nil
}
