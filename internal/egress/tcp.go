package egress

import (
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/sandpool/sandpool/internal/egress/sniff"
)

// handleTCP is called (on its own goroutine) for every SYN the sandbox
// sends. Connections that can be judged by address are dialed upstream
// before the sandbox's handshake completes, so a refused or unreachable
// destination looks like one (a reset). Connections whose verdict needs
// the name are accepted first, their first bytes read, then judged.
func (l *Link) handleTCP(r *tcp.ForwarderRequest) {
	if !l.enter() {
		r.Complete(true)
		return
	}
	defer l.exit()
	id := r.ID()
	dst := netip.AddrPortFrom(addrOf(id.LocalAddress), id.LocalPort)
	if dst.Port() == 53 {
		l.serveDNSTCP(r)
		return
	}
	if l.active.Add(1) > int64(l.eng.cfg.MaxConns) {
		l.active.Add(-1)
		l.refuse(dst, reasonLimit) // counted before the sandbox can see it
		r.Complete(true)
		return
	}
	defer l.active.Add(-1)

	pol := l.policy.Load()
	v := l.judge.byAddress(pol, dst)
	switch v.kind {
	case deny:
		l.refuse(dst, v.reason)
		r.Complete(true)
	case allow:
		up, err := l.dial(dst)
		if err != nil {
			r.Complete(true)
			return
		}
		if l.ctx.Err() != nil { // closed while dialing: no handshake to start
			up.Close()
			r.Complete(true)
			return
		}
		guest, err := accept(r)
		if err != nil {
			up.Close()
			return
		}
		l.relay(guest, up, nil)
	case needName:
		guest, err := accept(r)
		if err != nil {
			return
		}
		name, res, head := l.peek(guest, l.eng.nameProto(dst.Port()))
		if v = l.judge.byName(pol, dst, name, res); v.kind != allow {
			l.refuse(dst, v.reason)
			guest.reset()
			return
		}
		up, err := l.dial(dst)
		if err != nil {
			guest.reset()
			return
		}
		l.relay(guest, up, head)
	}
}

// guestConn is the sandbox's side of a connection.
type guestConn struct {
	*gonet.TCPConn
	ep   tcpip.Endpoint
	once sync.Once
}

// Close closes the connection once; later calls do nothing (a gVisor
// endpoint must be closed only once).
func (g *guestConn) Close() error {
	g.once.Do(func() { _ = g.TCPConn.Close() })
	return nil
}

// accept completes the sandbox's handshake.
func accept(r *tcp.ForwarderRequest) (*guestConn, error) {
	var wq waiter.Queue
	ep, terr := r.CreateEndpoint(&wq)
	r.Complete(false)
	if terr != nil {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: tcpipError{terr}}
	}
	return &guestConn{TCPConn: gonet.NewTCPConn(&wq, ep), ep: ep}, nil
}

type tcpipError struct{ e tcpip.Error }

func (e tcpipError) Error() string { return e.e.String() }

// reset aborts the connection with a RST instead of a FIN.
func (g *guestConn) reset() {
	g.ep.SocketOptions().SetLinger(tcpip.LingerOption{Enabled: true, Timeout: 0})
	_ = g.Close()
}

// refuse counts and logs a refused connection.
func (l *Link) refuse(dst netip.AddrPort, reason string) {
	l.stats.refused.Add(1)
	l.eng.m.refusedConnections.Inc()
	l.eng.m.refusedBy[reason].Inc()
	l.eng.cfg.Log.Debug("egress refused", "sandbox", l.id, "dst", dst.String(), "reason", reason)
}

// dial connects to dst from the host. The control hook checks the
// address once more, right before connect(2).
func (l *Link) dial(dst netip.AddrPort) (*net.TCPConn, error) {
	d := net.Dialer{
		Timeout:        l.eng.cfg.DialTimeout,
		ControlContext: l.eng.guard.control,
		KeepAlive:      30 * time.Second,
	}
	c, err := d.DialContext(l.ctx, "tcp4", dst.String())
	if err != nil {
		l.stats.failed.Add(1)
		l.eng.m.failed.Inc()
		l.eng.cfg.Log.Debug("egress dial failed", "sandbox", l.id, "dst", dst.String(), "err", err)
		return nil, err
	}
	l.stats.conns.Add(1)
	l.eng.m.allowed.Inc()
	return c.(*net.TCPConn), nil
}

// peek reads the start of a stream until the sniffer for p decides, the
// most it reads is reached, or PeekTimeout passes. It returns what the
// sniffer made of it and the bytes read, to be sent on.
func (l *Link) peek(c *guestConn, p proto) (string, sniff.Result, []byte) {
	parse, limit := sniff.HTTPHost, sniff.MaxHTTP
	if p == protoTLS {
		parse, limit = sniff.ClientHello, sniff.MaxTLS
	}
	_ = c.SetReadDeadline(time.Now().Add(l.eng.cfg.PeekTimeout))
	defer c.SetReadDeadline(time.Time{})
	buf := make([]byte, 0, 2048)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, make([]byte, min(cap(buf), limit-len(buf)))...)[:len(buf)]
		}
		n, err := c.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		name, res := parse(buf)
		if res != sniff.Incomplete {
			return name, res, buf
		}
		if err != nil || len(buf) >= limit {
			return "", sniff.Invalid, buf
		}
	}
}

// relayBufSize is the copy buffer of each direction of a relay.
const relayBufSize = 64 << 10

var relayBufs = sync.Pool{New: func() any { b := make([]byte, relayBufSize); return &b }}

// relay sends head, then copies both ways until both sides are done,
// counting bytes as they pass. When one side finishes sending, the other
// side's write half is closed; an error on either side ends both.
func (l *Link) relay(guest *guestConn, up *net.TCPConn, head []byte) {
	if !l.track(guest, up) {
		guest.reset()
		up.Close()
		return
	}
	defer func() {
		l.untrack(guest, up)
		guest.Close()
		up.Close()
	}()
	m := l.eng.m
	if len(head) > 0 {
		if _, err := up.Write(head); err != nil {
			guest.reset()
			return
		}
		l.stats.bytesOut.Add(uint64(len(head)))
		m.bytesOut.Add(float64(len(head)))
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := pipe(up, guest, &l.stats.bytesOut, m.bytesOut.Add); err != nil {
			guest.reset()
			up.Close()
			return
		}
		_ = up.CloseWrite()
	}()
	if err := pipe(guest, up, &l.stats.bytesIn, m.bytesIn.Add); err != nil {
		guest.reset()
		up.Close()
	} else {
		_ = guest.CloseWrite()
	}
	wg.Wait()
}

// pipe copies src to dst until src's EOF (nil) or an error.
func pipe(dst io.Writer, src io.Reader, n *atomic.Uint64, add func(float64)) error {
	bp := relayBufs.Get().(*[]byte)
	defer relayBufs.Put(bp)
	buf := *bp
	for {
		nr, rerr := src.Read(buf)
		if nr > 0 {
			nw, werr := dst.Write(buf[:nr])
			n.Add(uint64(nw))
			add(float64(nw))
			if werr != nil {
				return werr
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}
