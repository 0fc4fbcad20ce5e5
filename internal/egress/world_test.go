package egress

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
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

// The fake internet: one network namespace ("upstream") behind a veth
// pair from the test's host namespace. Every address of 198.51.100.0/24
// and 203.0.113.0/24 is local there (an AnyIP route), with servers on
// wildcard listeners that log which address and name each connection
// was for:
//
//	:53   DNS (UDP and TCP, answering only on upstreamDNS) from zone
//	:80   HTTP, answers "host=<Host> addr=<local address>"
//	:443  HTTPS with a certificate for every zone name, from a test CA
//	:7000 echo
//	:9000 bulk: reads a decimal count and a newline, writes that many bytes
//	:4433 UDP sink (QUIC and other UDP should never arrive)
//
// The host's routes for those two ranges point into the namespace; the
// host has no other route, so no test packet can leave the machine.
var (
	upstreamDNS = netip.MustParseAddr("198.51.100.53")
	hostVethIP  = netip.MustParseAddr("192.0.2.1")
)

// zone is what the fake authoritative DNS answers (A records).
var zone = map[string][]string{
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

// cnames are CNAME records of the zone.
var cnames = map[string]string{"cname.allowed.test.": "target.cdn.test."}

// hit is one connection or query a fake server saw.
type hit struct {
	Kind  string // "dns", "http", "https", "echo", "bulk", "udp"
	Local netip.AddrPort
	Name  string // query name, Host, or SNI
}

type world struct {
	holder  *exec.Cmd
	nsPath  string
	caPEM   string // path of the CA certificate
	ca      *testCA
	closers []io.Closer
	wg      sync.WaitGroup

	mu   sync.Mutex
	hits []hit
}

var (
	worldOnce sync.Once
	theWorld  *world
	worldErr  error
)

// getWorld builds the fake internet on first use.
func getWorld(t testing.TB) *world {
	t.Helper()
	worldOnce.Do(func() { theWorld, worldErr = startWorld() })
	if worldErr != nil {
		t.Fatalf("fake internet: %v", worldErr)
	}
	return theWorld
}

func stopWorld() {
	if theWorld != nil {
		theWorld.close()
	}
}

func startWorld() (_ *world, retErr error) {
	w := &world{}
	defer func() {
		if retErr != nil {
			w.close()
		}
	}()
	w.holder = exec.Command("sleep", "3600")
	w.holder.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
	if err := w.holder.Start(); err != nil {
		return nil, err
	}
	pid := strconv.Itoa(w.holder.Process.Pid)
	w.nsPath = "/proc/" + pid + "/ns/net"
	up := func(args ...string) []string { return append([]string{"nsenter", "--net=" + w.nsPath}, args...) }
	for _, c := range [][]string{
		{"ip", "link", "add", "egh0", "type", "veth", "peer", "name", "egu0", "netns", pid},
		{"ip", "addr", "add", hostVethIP.String() + "/30", "dev", "egh0"},
		{"ip", "link", "set", "egh0", "up"},
		up("ip", "link", "set", "lo", "up"),
		up("ip", "addr", "add", "192.0.2.2/30", "dev", "egu0"),
		up("ip", "link", "set", "egu0", "up"),
		up("ip", "route", "add", "default", "via", hostVethIP.String()),
		up("ip", "route", "add", "local", "198.51.100.0/24", "dev", "lo"),
		up("ip", "route", "add", "local", "203.0.113.0/24", "dev", "lo"),
		{"ip", "route", "add", "198.51.100.0/24", "via", "192.0.2.2"},
		{"ip", "route", "add", "203.0.113.0/24", "via", "192.0.2.2"},
	} {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("%v: %v: %s", c, err, out)
		}
	}
	ca, err := newTestCA()
	if err != nil {
		return nil, err
	}
	w.ca = ca
	dir, err := os.MkdirTemp("", "egress-ca")
	if err != nil {
		return nil, err
	}
	w.closers = append(w.closers, closerFunc(func() error { return os.RemoveAll(dir) }))
	w.caPEM = dir + "/ca.pem"
	if err := os.WriteFile(w.caPEM, ca.certPEM, 0o644); err != nil {
		return nil, err
	}
	return w, w.serve()
}

type closerFunc func() error

func (f closerFunc) Close() error { return f() }

func (w *world) record(h hit) {
	w.mu.Lock()
	w.hits = append(w.hits, h)
	w.mu.Unlock()
}

// mark returns a position in the log; hitsSince reads what came after.
func (w *world) mark() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.hits)
}

func (w *world) hitsSince(mark int) []hit {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]hit(nil), w.hits[mark:]...)
}

// sawAddr reports whether any server saw a connection to addr since mark.
func (w *world) sawAddr(mark int, addr string) bool {
	for _, h := range w.hitsSince(mark) {
		if h.Local.Addr().String() == addr && h.Kind != "dns" {
			return true
		}
	}
	return false
}

// sawQuery reports whether the fake DNS was asked for name since mark.
func (w *world) sawQuery(mark int, name string) bool {
	for _, h := range w.hitsSince(mark) {
		if h.Kind == "dns" && strings.EqualFold(h.Name, dns.Fqdn(name)) {
			return true
		}
	}
	return false
}

// inNS runs fn on a thread inside the network namespace at path: sockets
// fn creates belong to that namespace.
func inNS(path string, fn func() error) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	runtime.LockOSThread()
	self, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer self.Close()
	if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return err
	}
	ferr := fn()
	if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
		return err // the thread stays locked and dies with the goroutine
	}
	runtime.UnlockOSThread()
	return ferr
}

func (w *world) serve() error {
	var lns []net.Listener
	var pcs []net.PacketConn
	err := inNS(w.nsPath, func() error {
		for _, port := range []string{"80", "443", "7000", "9000"} {
			l, err := net.Listen("tcp4", ":"+port)
			if err != nil {
				return err
			}
			lns = append(lns, l)
		}
		l53, err := net.Listen("tcp4", upstreamDNS.String()+":53")
		if err != nil {
			return err
		}
		lns = append(lns, l53)
		for _, a := range []string{upstreamDNS.String() + ":53", ":4433"} {
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
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &w.ca.leaf, nil },
	}
	w.go_(func() { _ = httpSrv.Serve(lns[0]) })
	w.go_(func() { _ = httpSrv.Serve(tls.NewListener(lns[1], tlsCfg)) })
	// Copies through plain buffers: io.Copy between two TCP connections
	// would splice through pooled pipes, descriptors that the leak test
	// would count.
	w.go_(func() {
		w.acceptLoop(lns[2], "echo", func(c net.Conn) { _, _ = io.Copy(struct{ io.Writer }{c}, struct{ io.Reader }{c}) })
	})
	w.go_(func() { w.acceptLoop(lns[3], "bulk", bulkServe) })
	dnsH := dns.HandlerFunc(w.dnsHandler)
	udpDNS := &dns.Server{PacketConn: pcs[0], Handler: dnsH}
	tcpDNS := &dns.Server{Listener: lns[4], Handler: dnsH}
	w.closers = append(w.closers, closerFunc(udpDNS.Shutdown), closerFunc(tcpDNS.Shutdown))
	w.go_(func() { _ = udpDNS.ActivateAndServe() })
	w.go_(func() { _ = tcpDNS.ActivateAndServe() })
	w.go_(func() {
		buf := make([]byte, 2048)
		for {
			_, _, err := pcs[1].ReadFrom(buf)
			if err != nil {
				return
			}
			w.record(hit{Kind: "udp", Local: netip.MustParseAddrPort(pcs[1].LocalAddr().String())})
		}
	})
	return nil
}

func (w *world) go_(fn func()) {
	w.wg.Add(1)
	go func() { defer w.wg.Done(); fn() }()
}

type localKey struct{}

func (w *world) httpHandler(rw http.ResponseWriter, r *http.Request) {
	la := r.Context().Value(localKey{}).(net.Addr)
	kind, name := "http", r.Host
	if r.TLS != nil {
		kind, name = "https", r.TLS.ServerName
	}
	local := netip.MustParseAddrPort(la.String())
	w.record(hit{Kind: kind, Local: local, Name: name})
	fmt.Fprintf(rw, "host=%s addr=%s\n", r.Host, local.Addr())
}

func (w *world) acceptLoop(l net.Listener, kind string, fn func(net.Conn)) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		w.record(hit{Kind: kind, Local: netip.MustParseAddrPort(c.LocalAddr().String())})
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

func (w *world) dnsHandler(rw dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	if len(req.Question) == 1 {
		q := req.Question[0]
		name := strings.ToLower(q.Name)
		w.record(hit{Kind: "dns", Local: netip.MustParseAddrPort(rw.LocalAddr().String()), Name: name})
		target := name
		if c, ok := cnames[name]; ok {
			m.Answer = append(m.Answer, &dns.CNAME{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: 60}, Target: c})
			target = c
		}
		addrs, ok := zone[target]
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

func (w *world) close() {
	for i := len(w.closers) - 1; i >= 0; i-- {
		_ = w.closers[i].Close()
	}
	w.wg.Wait()
	if w.holder != nil && w.holder.Process != nil {
		_ = w.holder.Process.Kill()
		_ = w.holder.Wait()
	}
	for _, r := range []string{"198.51.100.0/24", "203.0.113.0/24"} {
		_ = exec.Command("ip", "route", "del", r).Run() // gone with the veth anyway
	}
}
