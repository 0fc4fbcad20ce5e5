// Package resolver is the host side of a sandbox's DNS: Upstream asks the
// host's resolvers (and reads the host's hosts file) on a sandbox's
// behalf, and Cache remembers which addresses each name resolved to for
// one sandbox, so a connection can be checked against the answers that
// sandbox was given.
package resolver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/miekg/dns"
)

// Config says where Upstream sends queries.
type Config struct {
	// Servers are the upstream resolvers. Empty means the nameservers
	// listed in ResolvConf.
	Servers []netip.AddrPort
	// ResolvConf is read when Servers is empty; "" means /etc/resolv.conf.
	ResolvConf string
	// HostsFile is consulted before the servers for A queries; "" means
	// /etc/hosts and "-" means none.
	HostsFile string
	// Timeout bounds one query to one server; 0 means 2 s.
	Timeout time.Duration
}

// Upstream resolves names for sandboxes.
type Upstream struct {
	servers []string
	hosts   *hostsFile
	timeout time.Duration
	udp     *dns.Client
	tcp     *dns.Client
}

// ErrNoServers means no upstream resolver is configured or found.
var ErrNoServers = errors.New("resolver: no upstream DNS servers")

// NewUpstream checks cfg and prepares an Upstream.
func NewUpstream(cfg Config) (*Upstream, error) {
	u := &Upstream{timeout: cfg.Timeout}
	if u.timeout <= 0 {
		u.timeout = 2 * time.Second
	}
	for _, s := range cfg.Servers {
		if !s.IsValid() {
			return nil, fmt.Errorf("resolver: invalid server %v", s)
		}
		u.servers = append(u.servers, s.String())
	}
	if len(u.servers) == 0 {
		path := cfg.ResolvConf
		if path == "" {
			path = "/etc/resolv.conf"
		}
		cc, err := dns.ClientConfigFromFile(path)
		if err != nil {
			return nil, fmt.Errorf("resolver: read %s: %w", path, err)
		}
		for _, s := range cc.Servers {
			u.servers = append(u.servers, net.JoinHostPort(s, strconv.Itoa(53)))
		}
	}
	if len(u.servers) == 0 {
		return nil, ErrNoServers
	}
	switch cfg.HostsFile {
	case "-":
	case "":
		u.hosts = &hostsFile{path: "/etc/hosts"}
	default:
		u.hosts = &hostsFile{path: cfg.HostsFile}
	}
	u.udp = &dns.Client{Net: "udp", Timeout: u.timeout, UDPSize: 1232}
	u.tcp = &dns.Client{Net: "tcp", Timeout: u.timeout}
	return u, nil
}

// Servers returns the upstream servers in use ("ip:port").
func (u *Upstream) Servers() []string { return append([]string(nil), u.servers...) }

// hostsTTL is the TTL given to answers from the hosts file.
const hostsTTL = 60

// Exchange asks for name (normalized, without the trailing dot) and
// qtype. A queries for a name in the hosts file are answered from it.
// Otherwise each server is tried in turn over UDP, and over TCP when the
// answer is truncated. The question sent upstream is built fresh: nothing
// of the sandbox's own query (options, IDs, flags) leaves the host.
func (u *Upstream) Exchange(ctx context.Context, name string, qtype uint16) (*dns.Msg, error) {
	fqdn := dns.Fqdn(name)
	if qtype == dns.TypeA && u.hosts != nil {
		if addrs := u.hosts.lookup(name); len(addrs) > 0 {
			m := new(dns.Msg)
			m.SetQuestion(fqdn, qtype)
			m.Response = true
			for _, a := range addrs {
				m.Answer = append(m.Answer, &dns.A{
					Hdr: dns.RR_Header{Name: fqdn, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: hostsTTL},
					A:   a.AsSlice(),
				})
			}
			return m, nil
		}
	}
	q := new(dns.Msg)
	q.SetQuestion(fqdn, qtype)
	q.RecursionDesired = true
	q.SetEdns0(1232, false)
	var lastErr error
	for _, s := range u.servers {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		r, _, err := u.udp.ExchangeContext(ctx, q, s)
		if err == nil && r.Truncated {
			r, _, err = u.tcp.ExchangeContext(ctx, q, s)
		}
		if err != nil {
			lastErr = err
			continue
		}
		if r.Rcode == dns.RcodeServerFailure || r.Rcode == dns.RcodeRefused {
			lastErr = fmt.Errorf("%s answered %s", s, dns.RcodeToString[r.Rcode])
			continue
		}
		return r, nil
	}
	return nil, fmt.Errorf("resolver: %s: %w", name, lastErr)
}
