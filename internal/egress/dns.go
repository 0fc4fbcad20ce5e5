package egress

import (
	"context"
	"encoding/binary"
	"io"
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/sandpool/sandpool/internal/egress/policy"
)

// dnsIdle is how long a DNS flow (a UDP 5-tuple, a TCP connection) may
// stay silent before it is closed.
const dnsIdle = 10 * time.Second

// handleUDP is called, on the stack's goroutine, for the first datagram
// of every UDP flow the sandbox starts. DNS (port 53, whatever the
// address: a query to any resolver is answered by sandpool's) gets an
// endpoint served on its own goroutine; anything else is dropped, so QUIC
// and other UDP find no way out and fall back to TCP.
func (l *Link) handleUDP(r *udp.ForwarderRequest) bool {
	if r.ID().LocalPort != 53 || !l.enter() {
		return true
	}
	if l.dnsFlows.Add(1) > maxDNSFlows {
		l.dnsFlows.Add(-1)
		l.exit()
		return true
	}
	var wq waiter.Queue
	ep, terr := r.CreateEndpoint(&wq)
	if terr != nil {
		l.dnsFlows.Add(-1)
		l.exit()
		return true
	}
	c := gonet.NewUDPConn(&wq, ep)
	go func() {
		defer l.exit()
		defer l.dnsFlows.Add(-1)
		if !l.track(c) {
			c.Close()
			return
		}
		defer func() {
			l.untrack(c)
			c.Close()
		}()
		buf := make([]byte, dns.MaxMsgSize)
		for {
			_ = c.SetReadDeadline(time.Now().Add(dnsIdle))
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			if resp := l.answer(buf[:n], false); resp != nil {
				if _, err := c.Write(resp); err != nil {
					return
				}
			}
		}
	}()
	return true
}

// serveDNSTCP serves DNS over a TCP connection to port 53 (any address).
func (l *Link) serveDNSTCP(r *tcp.ForwarderRequest) {
	if l.dnsFlows.Add(1) > maxDNSFlows {
		l.dnsFlows.Add(-1)
		r.Complete(true)
		return
	}
	defer l.dnsFlows.Add(-1)
	c, err := accept(r)
	if err != nil {
		return
	}
	if !l.track(c) {
		c.reset()
		return
	}
	defer func() {
		l.untrack(c)
		c.Close()
	}()
	var hdr [2]byte
	for {
		_ = c.SetReadDeadline(time.Now().Add(dnsIdle))
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return
		}
		msg := make([]byte, binary.BigEndian.Uint16(hdr[:]))
		if _, err := io.ReadFull(c, msg); err != nil {
			return
		}
		resp := l.answer(msg, true)
		if resp == nil {
			return
		}
		out := make([]byte, 2+len(resp))
		binary.BigEndian.PutUint16(out, uint16(len(resp)))
		copy(out[2:], resp)
		if _, err := c.Write(out); err != nil {
			return
		}
	}
}

// answer handles one query from the sandbox and returns the packed
// response, or nil to stay silent (not a query at all). Only names the
// policy permits are looked up; others get NXDOMAIN without anything
// leaving the host. Only A queries return addresses, and never addresses
// the sandbox may not reach (DNS rebinding): AAAA gets an empty answer
// (the sandbox has no IPv6), and HTTPS/SVCB too (their address hints and
// ECH keys would bypass these checks).
func (l *Link) answer(raw []byte, overTCP bool) []byte {
	req := new(dns.Msg)
	if err := req.Unpack(raw); err != nil || req.Response {
		return nil
	}
	resp := new(dns.Msg)
	resp.SetReply(req)
	resp.RecursionAvailable = true
	size := dns.MinMsgSize
	if opt := req.IsEdns0(); opt != nil {
		size = max(size, int(min(opt.UDPSize(), 1232)))
		resp.SetEdns0(uint16(size), false)
	}
	pack := func() []byte {
		if !overTCP {
			resp.Truncate(size)
		}
		b, err := resp.Pack()
		if err != nil {
			return nil
		}
		return b
	}
	m := l.eng.m
	l.stats.dnsQueries.Add(1)
	switch {
	case req.Opcode != dns.OpcodeQuery:
		resp.Rcode = dns.RcodeNotImplemented
		m.dnsFailed.Inc()
		return pack()
	case len(req.Question) != 1:
		resp.Rcode = dns.RcodeFormatError
		m.dnsFailed.Inc()
		return pack()
	}
	q := req.Question[0]
	name, bad := policy.NormalizeName(q.Name)
	if q.Qclass != dns.ClassINET || bad != "" || !l.policy.Load().NamePermitted(name) {
		resp.Rcode = dns.RcodeNameError
		l.stats.dnsRefused.Add(1)
		m.dnsRefused.Inc()
		return pack()
	}
	switch q.Qtype {
	case dns.TypeAAAA, dns.TypeHTTPS, dns.TypeSVCB, dns.TypeANY:
		m.dnsOK.Inc()
		return pack() // NOERROR, no records
	}
	ctx, cancel := context.WithTimeout(l.ctx, l.eng.cfg.DNSTimeout)
	defer cancel()
	up, err := l.eng.upstream.Exchange(ctx, name, q.Qtype)
	if err != nil {
		resp.Rcode = dns.RcodeServerFailure
		m.dnsFailed.Inc()
		return pack()
	}
	resp.Rcode = up.Rcode
	resp.Answer = l.filterAnswer(name, q.Qtype, up.Answer)
	for _, rr := range resp.Answer { // echo the sandbox's spelling of its name
		if strings.EqualFold(rr.Header().Name, q.Name) {
			rr.Header().Name = q.Name
		}
	}
	m.dnsOK.Inc()
	return pack()
}

// filterAnswer keeps the records a sandbox may see, and remembers the
// addresses it was given for name.
func (l *Link) filterAnswer(name string, qtype uint16, rrs []dns.RR) []dns.RR {
	var out []dns.RR
	var addrs []netip.Addr
	ttl := uint32(0)
	for _, rr := range rrs {
		switch rr := rr.(type) {
		case *dns.A:
			ip, ok := netip.AddrFromSlice(rr.A)
			if !ok || qtype != dns.TypeA || l.eng.guard.blocked(ip.Unmap()) {
				continue // rebinding: private, loopback, metadata...
			}
			addrs = append(addrs, ip.Unmap())
			ttl = max(ttl, rr.Hdr.Ttl)
		case *dns.AAAA, *dns.HTTPS, *dns.SVCB:
			continue
		}
		// For a CNAME chain, the addresses count for the name asked.
		out = append(out, rr)
	}
	l.cache.Add(name, addrs, time.Duration(ttl)*time.Second)
	return out
}
