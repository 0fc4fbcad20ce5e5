package egress

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	gvlog "gvisor.dev/gvisor/pkg/log"

	"github.com/sandpool/sandpool/internal/egress/policy"
	"github.com/sandpool/sandpool/internal/egress/resolver"
	"github.com/sandpool/sandpool/internal/egress/tun"
)

// Policy is a parsed egress policy; see ParsePolicy.
type Policy = policy.Policy

// Mode values of a Policy.
const (
	ModeNone      = policy.ModeNone
	ModeOpen      = policy.ModeOpen
	ModeAllowlist = policy.ModeAllowlist
)

// ErrInvalidPolicy is wrapped by every ParsePolicy error (a user error:
// HTTP 400). A bad entry is also a *PolicyEntryError.
var ErrInvalidPolicy = policy.ErrInvalid

// PolicyEntryError names the bad entry of an allow or deny list.
type PolicyEntryError = policy.EntryError

// ErrClosed is returned by a closed Engine or Link.
var ErrClosed = errors.New("egress: closed")

// ParsePolicy validates a sandbox's network settings: mode is "none"
// (also ""), "open" or "allowlist"; allow (allowlist mode only) and deny
// hold CIDRs, IP addresses, host names and "*." wildcards.
func ParsePolicy(mode string, allow, deny []string) (*Policy, error) {
	return policy.Parse(mode, allow, deny)
}

// Sandbox identifies the sandbox a link is for.
type Sandbox struct {
	// ID is the sandbox's ID, for logs only.
	ID string
	// NetNS is a path to the sandbox's network namespace, such as
	// /proc/<pid of its PID 1>/ns/net.
	NetNS string
}

// Engine gives sandboxes their egress links. One Engine serves a whole
// server; it is safe for concurrent use.
type Engine struct {
	cfg      Config
	upstream *resolver.Upstream
	guard    *guard
	deny     *denyAddrs
	m        *metrics

	mu     sync.Mutex
	closed bool
	links  map[*Link]struct{}
}

// quietGVisor lowers gVisor's process-wide log level once: its Info
// messages (martian packets and the like) are for sandboxed code to
// trigger at will and have no place on the server's stderr.
var quietGVisor sync.Once

// New checks cfg, finds the upstream resolvers and registers the metrics.
func New(cfg Config) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	quietGVisor.Do(func() { gvlog.SetLevel(gvlog.Warning) })
	cfg = cfg.withDefaults()
	up, err := resolver.NewUpstream(resolver.Config{
		Servers:    cfg.Resolvers,
		ResolvConf: cfg.ResolvConf,
		HostsFile:  cfg.HostsFile,
	})
	if err != nil {
		return nil, fmt.Errorf("egress: %w", err)
	}
	m, err := newMetrics(cfg.Registry)
	if err != nil {
		return nil, fmt.Errorf("egress: metrics: %w", err)
	}
	return &Engine{
		cfg:      cfg,
		upstream: up,
		guard:    &guard{link: cfg.Subnet, allowPrivate: cfg.AllowPrivate},
		deny:     &denyAddrs{up: up, timeout: cfg.DNSTimeout, m: map[string]denyEntry{}},
		m:        m,
		links:    map[*Link]struct{}{},
	}, nil
}

// SandboxAddr returns the address a sandbox's interface gets.
func (e *Engine) SandboxAddr() netip.Prefix {
	return netip.PrefixFrom(e.cfg.sandboxAddr(), e.cfg.Subnet.Bits())
}

// Gateway returns the address of sandpool's side of every sandbox's link:
// its default gateway and DNS server (the nameserver line of its
// /etc/resolv.conf).
func (e *Engine) Gateway() netip.Addr { return e.cfg.gateway() }

// Attach gives the sandbox a network path out, under pol (nil means
// mode none): it creates the TUN interface in the sandbox's network
// namespace, gives it its address and default route, and starts serving
// it. ctx bounds the setup only; the link lasts until Close.
//
// Attaching again to a sandbox whose link was closed (or whose server
// crashed) works: the old interface went with its descriptor.
func (e *Engine) Attach(ctx context.Context, sb Sandbox, pol *Policy) (*Link, error) {
	start := time.Now()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	e.mu.Lock()
	closed := e.closed
	e.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	if pol == nil {
		pol = &Policy{}
	}
	dev, err := tun.Create(sb.NetNS, tun.Config{
		Name:    e.cfg.Interface,
		MTU:     e.cfg.MTU,
		Addr:    e.SandboxAddr(),
		Gateway: e.cfg.gateway(),
	})
	if err != nil {
		return nil, fmt.Errorf("egress: attach sandbox %s: %w", sb.ID, err)
	}
	tl, err := newTUNLink(dev, e.cfg.MTU)
	if err != nil {
		_ = dev.Close() // best effort; the original error wins
		return nil, fmt.Errorf("egress: attach sandbox %s: %w", sb.ID, err)
	}
	st, err := newStack(tl, netip.PrefixFrom(e.cfg.gateway(), e.cfg.Subnet.Bits()))
	if err != nil {
		_ = tl.closeFile() // best effort; the original error wins
		return nil, fmt.Errorf("egress: attach sandbox %s: %w", sb.ID, err)
	}
	l := newLink(e, sb.ID, dev.Name, st, tl, pol)
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		l.Close()
		return nil, ErrClosed
	}
	e.links[l] = struct{}{}
	e.mu.Unlock()
	e.m.links.Inc()
	e.m.attach.Observe(time.Since(start).Seconds())
	return l, nil
}

// forget drops a closed link from the engine's set.
func (e *Engine) forget(l *Link) {
	e.mu.Lock()
	_, ok := e.links[l]
	delete(e.links, l)
	e.mu.Unlock()
	if ok {
		e.m.links.Dec()
	}
}

// Close closes every link and refuses new ones.
func (e *Engine) Close() error {
	e.mu.Lock()
	e.closed = true
	links := make([]*Link, 0, len(e.links))
	for l := range e.links {
		links = append(links, l)
	}
	e.mu.Unlock()
	var errs []error
	for _, l := range links {
		errs = append(errs, l.Close())
	}
	return errors.Join(errs...)
}
