package egress

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Config configures an Engine. The zero value works on a host whose
// /etc/resolv.conf names a resolver.
type Config struct {
	// Resolvers are the upstream DNS servers sandboxes' queries go to.
	// Empty means the nameservers of ResolvConf.
	Resolvers []netip.AddrPort
	// ResolvConf is read when Resolvers is empty; "" means
	// /etc/resolv.conf.
	ResolvConf string
	// HostsFile answers A queries before the resolvers, as on the host;
	// "" means /etc/hosts, "-" means none.
	HostsFile string
	// AllowPrivate lists ranges that sandboxes may reach although they are
	// always refused otherwise (private, loopback, link-local, the host's
	// own addresses...). A sandbox's policy must still allow them. The
	// sandbox's own link (Subnet) can never be allowed.
	AllowPrivate []netip.Prefix

	// Registry receives the engine's Prometheus metrics; nil means they
	// are not registered. Never the global registry implicitly.
	Registry prometheus.Registerer
	// Log receives refusals (at debug level) and failures; nil discards.
	// Nothing secret is logged: no query names, no peeked names.
	Log *slog.Logger

	// Subnet is the sandbox's link: its first address is the gateway
	// (sandpool's side, also the DNS server), its second the sandbox's.
	// The same subnet is used in every sandbox, each having its own
	// stack. Default 100.64.253.0/30 (shared address space, RFC 6598: not
	// RFC 1918, and always refused as a destination).
	Subnet netip.Prefix
	// Interface is the name of the sandbox's interface; default "eth0".
	Interface string
	// MTU of the sandbox's interface; default 65520 (fewer packets for the
	// user-space stack to handle; nothing past the stack sees it).
	MTU int

	// MaxConns bounds one sandbox's concurrent TCP connections (and
	// handshakes in progress); default 512.
	MaxConns int
	// DialTimeout bounds a connection to an upstream host; default 10 s.
	DialTimeout time.Duration
	// PeekTimeout bounds the wait for a TLS ClientHello or HTTP request
	// head when a rule needs the name; default 10 s.
	PeekTimeout time.Duration
	// DNSTimeout bounds one sandbox query to the upstream resolvers;
	// default 5 s.
	DNSTimeout time.Duration
	// HTTPPorts are the ports whose connections are judged by the HTTP
	// Host header when a rule needs a name; default 80.
	HTTPPorts []uint16
	// TLSPorts are the ports whose connections are judged by the TLS SNI
	// when a rule needs a name; default 443.
	TLSPorts []uint16
}

// withDefaults returns cfg with every unset knob at its default.
func (cfg Config) withDefaults() Config {
	if !cfg.Subnet.IsValid() {
		cfg.Subnet = netip.MustParsePrefix("100.64.253.0/30")
	}
	if cfg.Interface == "" {
		cfg.Interface = "eth0"
	}
	if cfg.MTU == 0 {
		cfg.MTU = 65520
	}
	if cfg.MaxConns == 0 {
		cfg.MaxConns = 512
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 10 * time.Second
	}
	if cfg.PeekTimeout == 0 {
		cfg.PeekTimeout = 10 * time.Second
	}
	if cfg.DNSTimeout == 0 {
		cfg.DNSTimeout = 5 * time.Second
	}
	if cfg.HTTPPorts == nil {
		cfg.HTTPPorts = []uint16{80}
	}
	if cfg.TLSPorts == nil {
		cfg.TLSPorts = []uint16{443}
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return cfg
}

// Validate reports the first bad setting, naming it.
func (cfg Config) Validate() error {
	c := cfg.withDefaults()
	s := c.Subnet
	switch {
	case !s.Addr().Is4() || s.Bits() > 30 || s.Masked() != s:
		return fmt.Errorf("egress: Subnet %s: want an IPv4 network of at least 4 addresses (/30), given as its network address", s)
	case len(c.Interface) > 15:
		return fmt.Errorf("egress: Interface %q: longer than 15 characters", c.Interface)
	case c.MTU < 1280 || c.MTU > 65535:
		return fmt.Errorf("egress: MTU %d: want 1280 to 65535", c.MTU)
	case c.MaxConns < 1:
		return fmt.Errorf("egress: MaxConns %d: want at least 1", c.MaxConns)
	case c.DialTimeout < 0 || c.PeekTimeout < 0 || c.DNSTimeout < 0:
		return errors.New("egress: timeouts must not be negative")
	}
	for _, p := range c.AllowPrivate {
		if !p.IsValid() || p.Masked() != p {
			return fmt.Errorf("egress: AllowPrivate %s: not a network address", p)
		}
		if p.Overlaps(s) {
			return fmt.Errorf("egress: AllowPrivate %s overlaps the sandbox link %s", p, s)
		}
	}
	for _, r := range c.Resolvers {
		if !r.IsValid() || r.Port() == 0 {
			return fmt.Errorf("egress: Resolvers %s: want ip:port", r)
		}
	}
	return nil
}

// gateway and sandboxAddr are the two ends of the sandbox's link.
func (cfg Config) gateway() netip.Addr     { return cfg.Subnet.Addr().Next() }
func (cfg Config) sandboxAddr() netip.Addr { return cfg.Subnet.Addr().Next().Next() }
