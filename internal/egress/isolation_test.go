package egress

import (
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// injectSYN writes a raw IPv4 TCP SYN straight onto the sandbox's
// interface (bypassing its routing, as root in a sandbox can), e.g. to an
// address the sandbox's kernel would otherwise keep to itself.
func injectSYN(t *testing.T, sb *sandboxNS, ifname string, src, dst netip.AddrPort) {
	t.Helper()
	pkt := make([]byte, header.IPv4MinimumSize+header.TCPMinimumSize)
	ip := header.IPv4(pkt)
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(len(pkt)), TTL: 64, Protocol: uint8(header.TCPProtocolNumber),
		SrcAddr: tcpip.AddrFrom4(src.Addr().As4()), DstAddr: tcpip.AddrFrom4(dst.Addr().As4()),
	})
	ip.SetChecksum(^ip.CalculateChecksum())
	tcp := header.TCP(pkt[header.IPv4MinimumSize:])
	tcp.Encode(&header.TCPFields{SrcPort: src.Port(), DstPort: dst.Port(), SeqNum: 1,
		DataOffset: header.TCPMinimumSize, Flags: header.TCPFlagSyn, WindowSize: 65535})
	xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, ip.SourceAddress(), ip.DestinationAddress(), header.TCPMinimumSize)
	tcp.SetChecksum(^checksum.Combine(xsum, tcp.CalculateChecksum(0)))
	err := inNS(sb.path, func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_IP)))
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return unix.Sendto(fd, pkt, 0, &unix.SockaddrLinklayer{Ifindex: ifi.Index, Protocol: htons(unix.ETH_P_IP)})
	})
	if err != nil {
		t.Fatalf("inject SYN to %v: %v", dst, err)
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// TestHostLoopbackUnreachable: packets forged onto the interface for the
// host's loopback (and for the host's other addresses) reach nothing.
func TestHostLoopbackUnreachable(t *testing.T) {
	e, _ := newEngine(t)
	sb, l := attach(t, e, false, "open", nil, nil)
	var accepted atomic.Int32
	var lns []net.Listener
	for _, a := range []string{"127.0.0.1:0", "0.0.0.0:0"} {
		ln, err := net.Listen("tcp4", a) // in the test's host namespace
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		lns = append(lns, ln)
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				accepted.Add(1)
				c.Close()
			}
		}()
	}
	loPort := uint16(lns[0].Addr().(*net.TCPAddr).Port)
	anyPort := uint16(lns[1].Addr().(*net.TCPAddr).Port)
	src := netip.AddrPortFrom(e.SandboxAddr().Addr(), 40000)
	before := l.Stats()
	for _, dst := range []netip.AddrPort{
		netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), loPort),
		netip.AddrPortFrom(netip.MustParseAddr("0.0.0.0"), anyPort),
		netip.AddrPortFrom(hostVethIP, anyPort),
		netip.AddrPortFrom(e.Gateway(), anyPort),
	} {
		injectSYN(t, sb, l.Interface(), src, dst)
	}
	// The ordinary way too.
	if c, err := sb.dial(context.Background(), netip.AddrPortFrom(hostVethIP, anyPort).String()); err == nil {
		c.Close()
		t.Fatal("connected to the host's address")
	}
	// A last forged SYN the stack surely judges; once it is counted, the
	// earlier ones have been handled too (packets are taken in order).
	injectSYN(t, sb, l.Interface(), src, netip.MustParseAddrPort("10.1.1.1:80"))
	waitFor(t, "refusals", func() bool { return l.Stats().Refused >= before.Refused+2 })
	if n := accepted.Load(); n != 0 {
		t.Fatalf("host listeners accepted %d connections", n)
	}
	if s := l.Stats(); s.Connections != before.Connections || s.Failed != before.Failed {
		t.Fatalf("something was dialed: %+v", s)
	}
}

// TestOtherSandboxUnreachable: two sandboxes share the link addresses but
// not a stack; neither can reach the other's listener.
func TestOtherSandboxUnreachable(t *testing.T) {
	e, _ := newEngine(t)
	a, la := attach(t, e, false, "open", nil, nil)
	b, _ := attach(t, e, false, "open", nil, nil)
	ln, err := b.listen("0.0.0.0:8080")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var accepted atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Close()
		}
	}()
	for _, dst := range []string{e.SandboxAddr().Addr().String() + ":8080", e.Gateway().String() + ":8080"} {
		if c, err := a.dial(context.Background(), dst); err == nil {
			_ = c.SetDeadline(time.Now().Add(time.Second))
			_, err = c.Read(make([]byte, 1))
			c.Close()
			if err == nil {
				t.Fatalf("read from %s", dst)
			}
		}
	}
	injectSYN(t, a, la.Interface(), netip.MustParseAddrPort("100.64.253.1:40000"), netip.AddrPortFrom(e.SandboxAddr().Addr(), 8080))
	before := la.Stats().Refused
	injectSYN(t, a, la.Interface(), netip.MustParseAddrPort("100.64.253.2:40001"), netip.MustParseAddrPort("10.2.2.2:80"))
	waitFor(t, "refusal", func() bool { return la.Stats().Refused > before })
	if n := accepted.Load(); n != 0 {
		t.Fatalf("sandbox b accepted %d connections from a", n)
	}
	// b's listener itself is fine: the host reaches it through b's link.
}

// TestUDPAndICMPDropped: UDP other than DNS and ICMP go nowhere.
func TestUDPAndICMPDropped(t *testing.T) {
	e, _ := newEngine(t)
	sb, _ := attach(t, e, false, "open", nil, nil)
	w := getWorld(t)
	mark := w.Mark()
	var icmpReply bool
	err := inNS(sb.path, func() error {
		u, err := net.Dial("udp4", "203.0.113.20:4433")
		if err != nil {
			return err
		}
		defer u.Close()
		for range 3 {
			if _, err := u.Write([]byte("quic?")); err != nil {
				return err
			}
		}
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMP)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		echo := []byte{8, 0, 0, 0, 0, 1, 0, 1}
		binary.BigEndian.PutUint16(echo[2:], ^checksum.Checksum(echo, 0))
		if err := unix.Sendto(fd, echo, 0, &unix.SockaddrInet4{Addr: [4]byte{203, 0, 113, 20}}); err != nil {
			return err
		}
		tv := unix.NsecToTimeval(int64(500 * time.Millisecond))
		_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
		buf := make([]byte, 1500)
		n, _, err := unix.Recvfrom(fd, buf, 0)
		icmpReply = err == nil && n > 20 && buf[20] == 0
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if icmpReply {
		t.Error("got an ICMP echo reply")
	}
	// DNS still works, so the link is up and the datagrams above were
	// read and dropped, not lost before the stack.
	if got := sb.resolve(t, e.Gateway(), "other.test"); len(got) != 1 {
		t.Fatalf("resolve: %v", got)
	}
	for _, h := range w.HitsSince(mark) {
		if h.Kind == "udp" {
			t.Fatalf("UDP reached the fake internet: %+v", h)
		}
	}
}

// TestRootInSandboxCannotOpenEgress: root in the sandbox's user and
// network namespaces rewrites its interface, routes and firewall; the
// policy holds, since it lives outside.
func TestRootInSandboxCannotOpenEgress(t *testing.T) {
	e, _ := newEngine(t)
	sb, l := attach(t, e, true, "allowlist", []string{"allowed.test"}, nil)
	if out, err := sb.run("id", "-u"); err != nil || strings.TrimSpace(out) != "0" {
		t.Fatalf("not root in the sandbox: %v %s", err, out)
	}
	ifname := l.Interface()
	cmds := [][]string{
		{"ip", "addr", "add", "203.0.113.77/32", "dev", ifname},
		{"ip", "route", "replace", "default", "dev", ifname},
		{"ip", "route", "add", "203.0.113.0/24", "dev", ifname, "src", "203.0.113.77"},
		{"ip", "link", "set", ifname, "mtu", "9000"},
		{"ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1"},
	}
	if hasNFT() {
		cmds = append(cmds,
			[]string{"nft", "add", "table", "inet", "t"},
			[]string{"nft", "add", "chain", "inet", "t", "o", "{ type filter hook output priority 0; policy accept; }"},
			[]string{"nft", "flush", "ruleset"})
	}
	for _, c := range cmds {
		if out, err := sb.run(c...); err != nil {
			t.Fatalf("%v as sandbox root: %v %s", c, err, out)
		}
	}
	mustRefuse(t, sb, l, "203.0.113.20:7000")
	mustRefuse(t, sb, l, "198.51.100.11:80")
	if _, err := sb.tlsGet("198.51.100.11:443", "allowed.test"); err == nil {
		t.Fatal("spoofed SNI passed")
	}
	sb.resolve(t, e.Gateway(), "allowed.test")
	if _, err := sb.tlsGet("198.51.100.10:443", "allowed.test"); err != nil {
		t.Fatalf("allowed name after the changes: %v", err)
	}
	// Deleting the interface cuts the sandbox off; it opens nothing.
	if out, err := sb.run("ip", "link", "del", ifname); err != nil {
		t.Fatalf("ip link del: %v %s", err, out)
	}
	if c, err := sb.dial(context.Background(), "198.51.100.10:443"); err == nil {
		c.Close()
		t.Fatal("connected without an interface")
	}
	if err := l.Close(); err != nil {
		t.Fatalf("Close after the interface was deleted: %v", err)
	}
}

func hasNFT() bool {
	_, err := lookPath("nft")
	return err == nil
}

// TestCloseRemovesInterface: after Close the sandbox has only lo and no
// way out; attaching again works.
func TestCloseRemovesInterface(t *testing.T) {
	e, _ := newEngine(t)
	sb, l := attach(t, e, true, "open", nil, nil)
	if out, _ := sb.run("ip", "-o", "link"); !strings.Contains(out, l.Interface()) {
		t.Fatalf("no interface while attached: %s", out)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	out, err := sb.run("ip", "-o", "link")
	if err != nil || strings.Count(strings.TrimSpace(out), "\n") != 0 || !strings.Contains(out, "lo:") {
		t.Fatalf("links after Close: %v\n%s", err, out)
	}
	if c, err := sb.dial(context.Background(), "198.51.100.10:80"); err == nil {
		c.Close()
		t.Fatal("connected after Close")
	}
	l2, err := e.Attach(context.Background(), Sandbox{ID: "again", NetNS: sb.path}, mustPolicy("open"))
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	echo(t, sb, "203.0.113.20:7000")
}

// mustPolicy parses a policy or panics.
func mustPolicy(mode string, allowDeny ...[]string) *Policy {
	var allow, deny []string
	if len(allowDeny) > 0 {
		allow = allowDeny[0]
	}
	if len(allowDeny) > 1 {
		deny = allowDeny[1]
	}
	p, err := ParsePolicy(mode, allow, deny)
	if err != nil {
		panic(err)
	}
	return p
}
