package egress

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"

	"github.com/sandpool/sandpool/internal/egress/resolver"
)

// Link is one sandbox's path out: its TUN interface, the user-space stack
// behind it, its resolver cache and its counters. It is safe for
// concurrent use.
type Link struct {
	eng   *Engine
	id    string
	iface string
	st    *stack.Stack
	tun   *tunLink // the TUN: detached first on Close, closed last
	cache *resolver.Cache
	judge *judge

	policy atomic.Pointer[Policy]

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc

	mu     sync.Mutex
	closed bool
	conns  map[io.Closer]struct{} // open connections, closed by Close
	wg     sync.WaitGroup         // handlers and relays under way

	active    atomic.Int64 // TCP connections being judged or relayed
	dnsFlows  atomic.Int64 // DNS exchanges being served
	closeOnce sync.Once
	closeErr  error

	stats struct {
		bytesOut, bytesIn, conns, refused, failed, dnsQueries, dnsRefused atomic.Uint64
	}
}

// maxDNSFlows bounds one sandbox's concurrent DNS exchanges (UDP flows and
// TCP connections to port 53).
const maxDNSFlows = 128

func newLink(e *Engine, id, iface string, st *stack.Stack, tl *tunLink, pol *Policy) *Link {
	l := &Link{
		eng:   e,
		id:    id,
		iface: iface,
		st:    st,
		tun:   tl,
		cache: resolver.NewCache(0),
		conns: map[io.Closer]struct{}{},
	}
	l.judge = &judge{guard: e.guard, cache: l.cache, nameProto: e.nameProto,
		denied: func(name string, ip netip.Addr) bool { return e.deny.has(l.ctx, name, ip) }}
	l.policy.Store(pol)
	l.ctx, l.cancel = context.WithCancel(context.Background())
	// maxInFlight bounds handshakes the forwarder has handed to us and we
	// have not completed; MaxConns bounds the rest.
	tcpFwd := tcp.NewForwarder(st, tcpBufSize, e.cfg.MaxConns, l.handleTCP)
	st.SetTransportProtocolHandler(tcp.ProtocolNumber, tcpFwd.HandlePacket)
	udpFwd := udp.NewForwarder(st, l.handleUDP)
	st.SetTransportProtocolHandler(udp.ProtocolNumber, udpFwd.HandlePacket)
	tl.start() // only now: the handlers above are in place
	return l
}

// nameProto says how streams to port are read for a name.
func (e *Engine) nameProto(port uint16) proto {
	for _, p := range e.cfg.TLSPorts {
		if p == port {
			return protoTLS
		}
	}
	for _, p := range e.cfg.HTTPPorts {
		if p == port {
			return protoHTTP
		}
	}
	return protoNone
}

// SetPolicy replaces the link's policy (nil means mode none). Connections
// and DNS queries that start afterwards are judged by it; established
// connections are left alone.
func (l *Link) SetPolicy(p *Policy) {
	if p == nil {
		p = &Policy{}
	}
	l.policy.Store(p)
}

// Policy returns the policy in force.
func (l *Link) Policy() *Policy { return l.policy.Load() }

// Interface returns the name of the sandbox's interface.
func (l *Link) Interface() string { return l.iface }

// Stats are one link's counters since it was attached.
type Stats struct {
	// BytesOut and BytesIn count relayed TCP payload, sandbox to upstream
	// and upstream to sandbox.
	BytesOut, BytesIn uint64
	// Connections counts TCP connections allowed (and dialed).
	Connections uint64
	// Refused counts TCP connections refused by policy or limits.
	Refused uint64
	// Failed counts allowed connections whose upstream dial failed.
	Failed uint64
	// Active is the number of TCP connections open or being judged now.
	Active int64
	// DNSQueries counts DNS queries answered or refused; DNSRefused those
	// refused because of the policy.
	DNSQueries, DNSRefused uint64
}

// Stats returns the link's counters.
func (l *Link) Stats() Stats {
	return Stats{
		BytesOut:    l.stats.bytesOut.Load(),
		BytesIn:     l.stats.bytesIn.Load(),
		Connections: l.stats.conns.Load(),
		Refused:     l.stats.refused.Load(),
		Failed:      l.stats.failed.Load(),
		Active:      l.active.Load(),
		DNSQueries:  l.stats.dnsQueries.Load(),
		DNSRefused:  l.stats.dnsRefused.Load(),
	}
}

// DialSandbox connects to a TCP port the sandbox listens on, through the
// link (the sandbox sees the gateway address as the peer). The listener
// must be bound to the wildcard address or the sandbox's interface
// address: the sandbox's kernel does not deliver packets arriving on its
// interface to 127.0.0.1. The connection closes with the link.
func (l *Link) DialSandbox(ctx context.Context, port uint16) (net.Conn, error) {
	if !l.enter() {
		return nil, ErrClosed
	}
	defer l.exit()
	addr := tcpip.FullAddress{NIC: nicID, Addr: tcpip.AddrFrom4(l.eng.cfg.sandboxAddr().As4()), Port: port}
	c, err := gonet.DialContextTCP(ctx, l.st, addr, ipv4.ProtocolNumber)
	if err != nil {
		return nil, fmt.Errorf("egress: dial sandbox %s port %d: %w", l.id, port, err)
	}
	tc := &trackedConn{Conn: c, l: l}
	if !l.track(tc) {
		c.Close()
		return nil, ErrClosed
	}
	return tc, nil
}

// trackedConn forgets itself from its link when closed.
type trackedConn struct {
	net.Conn
	l    *Link
	once sync.Once
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.untrack(c) })
	return err
}

// Close stops the link: open connections are cut, the stack stops, and
// the TUN descriptor is closed, which removes the sandbox's interface.
// It waits for the link's goroutines to end. Later calls return the first
// call's result.
func (l *Link) Close() error {
	l.closeOnce.Do(func() {
		l.mu.Lock()
		l.closed = true
		conns := l.conns
		l.conns = nil
		l.mu.Unlock()
		l.cancel()
		// Stop reading the TUN before the stack goes: gVisor's Stack.Wait
		// removes the NIC (waiting for the reader) while holding the
		// stack's lock, which a packet being delivered may need; detached
		// first, no packet is in flight by then.
		l.tun.Attach(nil)
		for c := range conns {
			_ = c.Close() // best effort: the stack is going away anyway
		}
		l.st.Close() // aborts every endpoint, unblocking their readers
		l.waitHandlers()
		l.st.Wait() // removes the NIC: the TUN reader stops
		l.closeErr = l.tun.closeFile()
		l.eng.forget(l)
	})
	return l.closeErr
}

// waitHandlers waits for every handler and relay to leave. A handler
// whose upstream dial succeeded just as Close began starts the sandbox's
// handshake after the stack's Close aborted what was registered: that
// handshake would wait out its SYN-ACK retransmissions (minutes) when
// the sandbox never answers. So whatever registers later is aborted
// too, until the handlers are gone.
func (l *Link) waitHandlers() {
	done := make(chan struct{})
	go func() {
		l.wg.Wait()
		close(done)
	}()
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
			for _, e := range l.st.RegisteredEndpoints() {
				e.Abort()
			}
		}
	}
}

// enter registers a handler or relay; false means the link is closed.
func (l *Link) enter() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	l.wg.Add(1)
	return true
}

func (l *Link) exit() { l.wg.Done() }

// track adds c to the connections Close cuts; false means the link is
// closed and the caller must close c itself.
func (l *Link) track(cs ...io.Closer) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	for _, c := range cs {
		l.conns[c] = struct{}{}
	}
	return true
}

func (l *Link) untrack(cs ...io.Closer) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range cs {
		delete(l.conns, c)
	}
}

// addrOf converts a stack address to netip.
func addrOf(a tcpip.Address) netip.Addr {
	ip, _ := netip.AddrFromSlice(a.AsSlice())
	return ip.Unmap()
}
