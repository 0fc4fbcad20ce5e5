package egress

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sandpool/sandpool/internal/egress/egresstest"
)

// sandboxNS stands in for a sandbox: a process in a new network
// namespace (and, with user, a new user namespace whose root is an
// unprivileged host uid, as sandpool makes them).
type sandboxNS struct {
	cmd   *exec.Cmd
	pid   int
	path  string // its network namespace
	user  bool
	dir   string // world-readable directory with resolv.conf
	world *egresstest.World
}

func newSandboxNS(t testing.TB, user bool) *sandboxNS {
	t.Helper()
	cmd := exec.Command("sleep", "3600")
	attr := &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
	if user {
		attr.Cloneflags |= syscall.CLONE_NEWUSER
		attr.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: 100000, Size: 65536}}
		attr.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: 100000, Size: 65536}}
		attr.Credential = &syscall.Credential{Uid: 0, Gid: 0, NoSetGroups: true}
	}
	cmd.SysProcAttr = attr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &sandboxNS{cmd: cmd, pid: cmd.Process.Pid, user: user, world: getWorld(t)}
	s.path = "/proc/" + strconv.Itoa(s.pid) + "/ns/net"
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	if out, err := s.run("ip", "link", "set", "lo", "up"); err != nil {
		t.Fatalf("lo up: %v %s", err, out)
	}
	return s
}

// run runs a command inside the sandbox's namespaces (as its root).
func (s *sandboxNS) run(args ...string) (string, error) {
	pre := []string{"--target", strconv.Itoa(s.pid), "--net"}
	if s.user {
		pre = append(pre, "--user")
	}
	out, err := exec.Command("nsenter", append(pre, args...)...).CombinedOutput()
	return string(out), err
}

// curl runs curl inside the sandbox with /etc/resolv.conf pointing at
// gateway, trusting the test CA. It returns curl's output and error.
func (s *sandboxNS) curl(t testing.TB, gateway netip.Addr, args ...string) (string, error) {
	t.Helper()
	if s.dir == "" {
		dir, err := os.MkdirTemp("", "egress-sb")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		_ = os.Chmod(dir, 0o755)
		if err := os.WriteFile(dir+"/resolv.conf", []byte("nameserver "+gateway.String()+"\noptions timeout:2 attempts:1\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		s.dir = dir
	}
	script := `mount --bind "$1" /etc/resolv.conf && shift && exec "$@"`
	cargs := append([]string{"unshare", "-m", "sh", "-c", script, "sh", s.dir + "/resolv.conf",
		"curl", "-sS", "--max-time", "10", "--cacert", getWorld(t).CAFile}, args...)
	return s.run(cargs...)
}

// dial connects from inside the sandbox.
func (s *sandboxNS) dial(ctx context.Context, addr string) (net.Conn, error) {
	var c net.Conn
	err := inNS(s.path, func() error {
		var err error
		d := net.Dialer{Timeout: 5 * time.Second}
		c, err = d.DialContext(ctx, "tcp4", addr)
		return err
	})
	return c, err
}

// listen listens inside the sandbox.
func (s *sandboxNS) listen(addr string) (net.Listener, error) {
	var l net.Listener
	err := inNS(s.path, func() error {
		var err error
		l, err = net.Listen("tcp4", addr)
		return err
	})
	return l, err
}

// query sends a DNS query from inside the sandbox to server (UDP unless
// tcp).
func (s *sandboxNS) query(server netip.Addr, name string, qtype uint16, tcp bool) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	netw := "udp"
	if tcp {
		netw = "tcp"
	}
	var conn *dns.Conn
	err := inNS(s.path, func() error {
		c, err := net.DialTimeout(netw, net.JoinHostPort(server.String(), "53"), 3*time.Second)
		if err != nil {
			return err
		}
		conn = &dns.Conn{Conn: c}
		return nil
	})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	cl := &dns.Client{Net: netw, Timeout: 3 * time.Second}
	r, _, err := cl.ExchangeWithConn(m, conn)
	return r, err
}

// resolve asks the sandbox's resolver for name's A records.
func (s *sandboxNS) resolve(t testing.TB, gw netip.Addr, name string) []string {
	t.Helper()
	r, err := s.query(gw, name, dns.TypeA, false)
	if err != nil {
		t.Fatalf("resolve %s: %v", name, err)
	}
	var out []string
	for _, rr := range r.Answer {
		if a, ok := rr.(*dns.A); ok {
			out = append(out, a.A.String())
		}
	}
	return out
}

// httpGet sends a GET with the given Host to addr from inside the sandbox
// and returns the response body (or an error when the connection is
// refused or cut).
func (s *sandboxNS) httpGet(addr, host string) (string, error) {
	c, err := s.dial(context.Background(), addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", host)
	b, err := io.ReadAll(c)
	if err != nil {
		return string(b), err
	}
	if !strings.HasPrefix(string(b), "HTTP/1.1 200") {
		return string(b), fmt.Errorf("no response (%q)", b)
	}
	return string(b), nil
}

// tlsGet does a TLS handshake with sni to addr from inside the sandbox
// and a GET; it returns the body's first line.
func (s *sandboxNS) tlsGet(addr, sni string) (string, error) {
	c, err := s.dial(context.Background(), addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	tc := tls.Client(c, &tls.Config{ServerName: sni, RootCAs: s.world.CA.Pool})
	if err := tc.Handshake(); err != nil {
		return "", err
	}
	fmt.Fprintf(tc, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", sni)
	b, err := io.ReadAll(tc)
	if err != nil && len(b) == 0 {
		return "", err
	}
	return string(b), nil
}

// newEngine makes an engine using the fake internet's resolver and no
// hosts file, with its own registry.
func newEngine(t testing.TB, mod ...func(*Config)) (*Engine, *prometheus.Registry) {
	t.Helper()
	getWorld(t)
	reg := prometheus.NewRegistry()
	cfg := Config{
		Resolvers: []netip.AddrPort{netip.AddrPortFrom(upstreamDNS, 53)},
		HostsFile: "-",
		Registry:  reg,
	}
	for _, m := range mod {
		m(&cfg)
	}
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e, reg
}

// attach makes a sandbox namespace and attaches a link under the policy.
func attach(t testing.TB, e *Engine, user bool, mode string, allow, deny []string) (*sandboxNS, *Link) {
	t.Helper()
	sb := newSandboxNS(t, user)
	p, err := ParsePolicy(mode, allow, deny)
	if err != nil {
		t.Fatal(err)
	}
	l, err := e.Attach(context.Background(), Sandbox{ID: "sb-test", NetNS: sb.path}, p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return sb, l
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func lookPath(name string) (string, error) { return exec.LookPath(name) }
