// Package egresstest builds a fake internet for tests of sandbox egress:
// an "upstream" network namespace behind a veth pair, where every address
// of 198.51.100.0/24 and 203.0.113.0/24 is local and answers DNS, HTTP,
// HTTPS (with a test CA), echo and bulk transfers, logging what it sees.
//
// No test packet can leave the machine: the only routes the world adds
// lead into the upstream namespace, and they are added in a namespace
// that plays the host, never in the real host's. That namespace is either
// the test process's own, after Reexec moved the test binary into a fresh
// one (for tests that run sandboxes in process), or one the World makes
// for itself (NewIsolated: for a server binary started inside it).
package egresstest

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/miekg/dns"
)

// Addresses of the fake internet.
var (
	// UpstreamDNS is the fake internet's resolver (port 53, UDP and TCP):
	// give it to the egress engine as its upstream.
	UpstreamDNS = netip.MustParseAddr("198.51.100.53")
	// HostVethIP is the host side of the veth pair: one of the host's
	// own addresses, which sandboxes must never reach.
	HostVethIP = netip.MustParseAddr("192.0.2.1")
)

// Zone is what the fake authoritative DNS answers (A records).
var Zone = map[string][]string{
	"allowed.test.":         {"198.51.100.10"},
	"denied.test.":          {"198.51.100.11"},
	"a.pkg.test.":           {"198.51.100.12"},
	"pkg.test.":             {"198.51.100.13"},
	"other.test.":           {"203.0.113.20"},
	"two.test.":             {"203.0.113.21", "203.0.113.22"},
	"rebind.allowed.test.":  {"203.0.113.23", "10.0.0.1", "127.0.0.1", "169.254.169.254", "192.0.2.1", "100.64.253.1"},
	"private.allowed.test.": {"169.254.169.254"},
	"target.cdn.test.":      {"203.0.113.24"},
	"bulk.test.":            {"203.0.113.30"},
}

// CNAMEs are CNAME records of the zone.
var CNAMEs = map[string]string{"cname.allowed.test.": "target.cdn.test."}

// Ports the fake servers listen on, on every address of the world.
const (
	PortHTTP  = 80   // answers "host=<Host> addr=<local address>"
	PortHTTPS = 443  // the same, over TLS with a certificate for every zone name
	PortEcho  = 7000 // echoes what it reads
	PortBulk  = 9000 // reads a decimal count and a newline, writes that many bytes
	PortUDP   = 4433 // UDP sink (QUIC and other UDP should never arrive)
)

// Hit is one connection or query a fake server saw.
type Hit struct {
	Kind  string // "dns", "http", "https", "echo", "bulk", "udp"
	Local netip.AddrPort
	Name  string // query name, Host, or SNI
}

// World is a running fake internet.
type World struct {
	// HostNS is the path of the network namespace that plays the host
	// (its routes lead into the world); "" when it is the test process's.
	HostNS string
	// CA signed the HTTPS servers' certificate; CAFile holds its PEM.
	CA     *CA
	CAFile string

	holders []*exec.Cmd
	nsPath  string // the upstream namespace
	closers []io.Closer
	wg      sync.WaitGroup

	mu   sync.Mutex
	hits []Hit
}

// Start builds the world behind the test process's own network namespace
// (which must be a throwaway one: see Reexec).
func Start() (*World, error) { return start(false) }

// NewIsolated builds the world behind a new network namespace of its own
// (World.HostNS), so a server started in it (see Command) dials into the
// world while the test process's namespace, the real host's, is left
// untouched.
func NewIsolated() (*World, error) { return start(true) }

func start(isolated bool) (_ *World, retErr error) {
	w := &World{}
	defer func() {
		if retErr != nil {
			w.Close()
		}
	}()
	if isolated {
		ns, err := w.holder()
		if err != nil {
			return nil, err
		}
		w.HostNS = ns
		if out, err := w.Command("ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
			return nil, fmt.Errorf("lo up in the host namespace: %v: %s", err, out)
		}
	}
	up, err := w.holder()
	if err != nil {
		return nil, err
	}
	w.nsPath = up
	pid := strings.TrimSuffix(strings.TrimPrefix(up, "/proc/"), "/ns/net")
	inUp := func(args ...string) []string { return append([]string{"nsenter", "--net=" + up}, args...) }
	for _, c := range [][]string{
		{"ip", "link", "add", "egh0", "type", "veth", "peer", "name", "egu0", "netns", pid},
		{"ip", "addr", "add", HostVethIP.String() + "/30", "dev", "egh0"},
		{"ip", "link", "set", "egh0", "up"},
		inUp("ip", "link", "set", "lo", "up"),
		inUp("ip", "addr", "add", "192.0.2.2/30", "dev", "egu0"),
		inUp("ip", "link", "set", "egu0", "up"),
		inUp("ip", "route", "add", "default", "via", HostVethIP.String()),
		inUp("ip", "route", "add", "local", "198.51.100.0/24", "dev", "lo"),
		inUp("ip", "route", "add", "local", "203.0.113.0/24", "dev", "lo"),
		{"ip", "route", "add", "198.51.100.0/24", "via", "192.0.2.2"},
		{"ip", "route", "add", "203.0.113.0/24", "via", "192.0.2.2"},
	} {
		cmd := w.Command(c[0], c[1:]...)
		if c[0] == "nsenter" {
			cmd = exec.Command(c[0], c[1:]...)
		}
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("%v: %v: %s", c, err, out)
		}
	}
	ca, err := newCA()
	if err != nil {
		return nil, err
	}
	w.CA = ca
	dir, err := os.MkdirTemp("", "egress-ca")
	if err != nil {
		return nil, err
	}
	w.closers = append(w.closers, closerFunc(func() error { return os.RemoveAll(dir) }))
	_ = os.Chmod(dir, 0o755) // readable by a sandbox's users, if bound in
	w.CAFile = dir + "/ca.pem"
	if err := os.WriteFile(w.CAFile, ca.PEM, 0o644); err != nil {
		return nil, err
	}
	return w, w.serve()
}

// holder starts a process in a new network namespace, killed with the
// world (or with the test process), and returns the namespace's path.
func (w *World) holder() (string, error) {
	cmd := exec.Command("sleep", "86400")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return "", err
	}
	w.holders = append(w.holders, cmd)
	return "/proc/" + strconv.Itoa(cmd.Process.Pid) + "/ns/net", nil
}

// UpstreamNS is the path of the fake internet's own network namespace.
func (w *World) UpstreamNS() string { return w.nsPath }

// Command is exec.Command run in the namespace that plays the host.
func (w *World) Command(name string, args ...string) *exec.Cmd {
	if w.HostNS == "" {
		return exec.Command(name, args...)
	}
	return exec.Command("nsenter", append([]string{"--net=" + w.HostNS, "--", name}, args...)...)
}

// DialContext connects from the namespace that plays the host (for an
// http.Transport reaching a server started with Command).
func (w *World) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if w.HostNS == "" {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
	var c net.Conn
	err := InNS(w.HostNS, func() error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

type closerFunc func() error

func (f closerFunc) Close() error { return f() }

func (w *World) record(h Hit) {
	w.mu.Lock()
	w.hits = append(w.hits, h)
	w.mu.Unlock()
}

// Mark returns a position in the log of hits; HitsSince reads what came
// after it.
func (w *World) Mark() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.hits)
}

// HitsSince returns the hits logged after mark.
func (w *World) HitsSince(mark int) []Hit {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]Hit(nil), w.hits[mark:]...)
}

// SawAddr reports whether any server saw a connection to addr since mark.
func (w *World) SawAddr(mark int, addr string) bool {
	for _, h := range w.HitsSince(mark) {
		if h.Local.Addr().String() == addr && h.Kind != "dns" {
			return true
		}
	}
	return false
}

// SawQuery reports whether the fake DNS was asked for name since mark.
func (w *World) SawQuery(mark int, name string) bool {
	for _, h := range w.HitsSince(mark) {
		if h.Kind == "dns" && strings.EqualFold(h.Name, dns.Fqdn(name)) {
			return true
		}
	}
	return false
}

func (w *World) serve() error {
	var lns []net.Listener
	var pcs []net.PacketConn
	err := InNS(w.nsPath, func() error {
		for _, port := range []int{PortHTTP, PortHTTPS, PortEcho, PortBulk} {
			l, err := net.Listen("tcp4", ":"+strconv.Itoa(port))
			if err != nil {
				return err
			}
			lns = append(lns, l)
		}
		l53, err := net.Listen("tcp4", UpstreamDNS.String()+":53")
		if err != nil {
			return err
		}
		lns = append(lns, l53)
		for _, a := range []string{UpstreamDNS.String() + ":53", ":" + strconv.Itoa(PortUDP)} {
			pc, err := net.ListenPacket("udp4", a)
			if err != nil {
				return err
			}
			pcs = append(pcs, pc)
		}
		return nil
	})
	for _, l := range lns {
		w.closers = append(w.closers, l)
	}
	for _, pc := range pcs {
		w.closers = append(w.closers, pc)
	}
	if err != nil {
		return err
	}
	httpSrv := &http.Server{Handler: http.HandlerFunc(w.httpHandler), ReadHeaderTimeout: 5 * time.Second,
		ErrorLog: log.New(io.Discard, "", 0), // refused and cut connections are the point
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, localKey{}, c.LocalAddr())
		}}
	w.closers = append(w.closers, httpSrv)
	tlsCfg := &tls.Config{
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &w.CA.leaf, nil },
	}
	w.goServe(func() { _ = httpSrv.Serve(lns[0]) })
	w.goServe(func() { _ = httpSrv.Serve(tls.NewListener(lns[1], tlsCfg)) })
	// Copies through plain buffers: io.Copy between two TCP connections
	// would splice through pooled pipes, descriptors that leak tests
	// would count.
	w.goServe(func() {
		w.acceptLoop(lns[2], "echo", func(c net.Conn) { _, _ = io.Copy(struct{ io.Writer }{c}, struct{ io.Reader }{c}) })
	})
	w.goServe(func() { w.acceptLoop(lns[3], "bulk", bulkServe) })
	dnsH := dns.HandlerFunc(w.dnsHandler)
	udpDNS := &dns.Server{PacketConn: pcs[0], Handler: dnsH}
	tcpDNS := &dns.Server{Listener: lns[4], Handler: dnsH}
	w.closers = append(w.closers, closerFunc(udpDNS.Shutdown), closerFunc(tcpDNS.Shutdown))
	w.goServe(func() { _ = udpDNS.ActivateAndServe() })
	w.goServe(func() { _ = tcpDNS.ActivateAndServe() })
	w.goServe(func() {
		buf := make([]byte, 2048)
		for {
			_, _, err := pcs[1].ReadFrom(buf)
			if err != nil {
				return
			}
			w.record(Hit{Kind: "udp", Local: netip.MustParseAddrPort(pcs[1].LocalAddr().String())})
		}
	})
	return nil
}

func (w *World) goServe(fn func()) {
	w.wg.Add(1)
	go func() { defer w.wg.Done(); fn() }()
}

type localKey struct{}

func (w *World) httpHandler(rw http.ResponseWriter, r *http.Request) {
	la := r.Context().Value(localKey{}).(net.Addr)
	kind, name := "http", r.Host
	if r.TLS != nil {
		kind, name = "https", r.TLS.ServerName
	}
	local := netip.MustParseAddrPort(la.String())
	w.record(Hit{Kind: kind, Local: local, Name: name})
	fmt.Fprintf(rw, "host=%s addr=%s\n", r.Host, local.Addr())
}

func (w *World) acceptLoop(l net.Listener, kind string, fn func(net.Conn)) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		w.record(Hit{Kind: kind, Local: netip.MustParseAddrPort(c.LocalAddr().String())})
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			fn(c)
		}()
	}
}

func bulkServe(c net.Conn) {
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return
	}
	n, err := strconv.ParseInt(strings.TrimSpace(line), 10, 64)
	if err != nil {
		return
	}
	buf := make([]byte, 256<<10)
	for n > 0 {
		k := min(n, int64(len(buf)))
		if _, err := c.Write(buf[:k]); err != nil {
			return
		}
		n -= k
	}
}

func (w *World) dnsHandler(rw dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	if len(req.Question) == 1 {
		q := req.Question[0]
		name := strings.ToLower(q.Name)
		w.record(Hit{Kind: "dns", Local: netip.MustParseAddrPort(rw.LocalAddr().String()), Name: name})
		target := name
		if c, ok := CNAMEs[name]; ok {
			m.Answer = append(m.Answer, &dns.CNAME{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: 60}, Target: c})
			target = c
		}
		addrs, ok := Zone[target]
		switch {
		case !ok && target == name:
			m.Rcode = dns.RcodeNameError
		case q.Qtype == dns.TypeA:
			for _, a := range addrs {
				m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: target, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 0}, A: net.ParseIP(a)})
			}
		case q.Qtype == dns.TypeAAAA:
			m.Answer = append(m.Answer, &dns.AAAA{Hdr: dns.RR_Header{Name: target, Rrtype: dns.TypeAAAA, Class: dns.ClassINET, Ttl: 60}, AAAA: net.ParseIP("2001:db8::10")})
		case q.Qtype == dns.TypeTXT:
			m.Answer = append(m.Answer, &dns.TXT{Hdr: dns.RR_Header{Name: target, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60}, Txt: []string{"hello"}})
		}
	}
	_ = rw.WriteMsg(m)
}

// Close stops the servers and removes the namespaces (and with them the
// veth pair and the routes).
func (w *World) Close() {
	for i := len(w.closers) - 1; i >= 0; i-- {
		_ = w.closers[i].Close()
	}
	w.wg.Wait()
	if w.HostNS == "" && w.nsPath != "" {
		for _, r := range []string{"198.51.100.0/24", "203.0.113.0/24"} {
			_ = exec.Command("ip", "route", "del", r).Run() // gone with the veth anyway
		}
	}
	for _, h := range w.holders {
		_ = h.Process.Kill()
		_ = h.Wait()
	}
}
