package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"

	"github.com/sandpool/sandpool/internal/egress"
	"github.com/sandpool/sandpool/internal/sandbox"
)

// egressConfig is how `sandpool serve` gives sandboxes a way out: the
// engine's settings and the policy of sandboxes that name none.
type egressConfig struct {
	off          bool
	mode         string
	allow, deny  []string
	allowPrivate []string
	resolvers    []string
	hostsFile    string
}

func (e *egressConfig) addFlags(f *pflag.FlagSet) {
	noEgress, _ := strconv.ParseBool(os.Getenv("SANDPOOL_NO_EGRESS"))
	f.BoolVar(&e.off, "no-egress", noEgress,
		"no sandbox ever gets a way out: only egress none is allowed, and nothing of egress runs (env SANDPOOL_NO_EGRESS=1)")
	f.StringVar(&e.mode, "default-egress", envOr("SANDPOOL_DEFAULT_EGRESS", string(egress.ModeOpen)),
		"egress of sandboxes (and pools) that name none: none, open or allowlist (env SANDPOOL_DEFAULT_EGRESS)")
	f.StringSliceVar(&e.allow, "default-allow", envList("SANDPOOL_DEFAULT_ALLOW"),
		"with --default-egress allowlist: what sandboxes may reach (host names, *.wildcards, IPs, CIDRs; env SANDPOOL_DEFAULT_ALLOW)")
	f.StringSliceVar(&e.deny, "default-deny", envList("SANDPOOL_DEFAULT_DENY"),
		"what sandboxes that name no policy may never reach (env SANDPOOL_DEFAULT_DENY)")
	f.StringSliceVar(&e.allowPrivate, "egress-allow-private", envList("SANDPOOL_EGRESS_ALLOW_PRIVATE"),
		"CIDRs of private, loopback or link-local ranges (or the host's own addresses) sandboxes may reach if their policy allows: refused otherwise (env SANDPOOL_EGRESS_ALLOW_PRIVATE)")
	f.StringSliceVar(&e.resolvers, "egress-resolver", envList("SANDPOOL_EGRESS_RESOLVER"),
		"DNS servers (ip:port) the sandboxes' resolver asks (default: the nameservers of /etc/resolv.conf; env SANDPOOL_EGRESS_RESOLVER)")
	f.StringVar(&e.hostsFile, "egress-hosts-file", envOr("SANDPOOL_EGRESS_HOSTS_FILE", ""),
		"hosts file the sandboxes' resolver reads first (default /etc/hosts; - for none; env SANDPOOL_EGRESS_HOSTS_FILE)")
}

// envList reads a comma-separated list from the environment.
func envList(key string) []string {
	v := os.Getenv(key)
	if v == "" {
		return nil
	}
	return strings.Split(v, ",")
}

// check names the first bad setting.
func (e *egressConfig) check() error {
	if e.off {
		// --default-egress is "open" unless given: with --no-egress it
		// can only be left so, or say none.
		if e.mode != string(egress.ModeNone) && e.mode != string(egress.ModeOpen) || len(e.allow)+len(e.deny)+len(e.allowPrivate)+len(e.resolvers) > 0 {
			return errors.New("--no-egress: no other egress setting may be given (--default-egress can only be none)")
		}
		return nil
	}
	if _, err := egress.ParsePolicy(e.mode, e.allow, e.deny); err != nil {
		return fmt.Errorf("--default-egress, --default-allow, --default-deny: %w", err)
	}
	if _, err := e.prefixes(); err != nil {
		return err
	}
	if _, err := e.resolverAddrs(); err != nil {
		return err
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		return errors.New("egress needs /dev/net/tun (try: modprobe tun), or run with --no-egress")
	}
	return nil
}

func (e *egressConfig) prefixes() ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range e.allowPrivate {
		p, err := netip.ParsePrefix(strings.TrimSpace(s))
		if err != nil || p.Masked() != p {
			return nil, fmt.Errorf("--egress-allow-private %q: want a CIDR such as 10.1.0.0/16 (its network address)", s)
		}
		out = append(out, p)
	}
	return out, nil
}

func (e *egressConfig) resolverAddrs() ([]netip.AddrPort, error) {
	var out []netip.AddrPort
	for _, s := range e.resolvers {
		s = strings.TrimSpace(s)
		if a, err := netip.ParseAddr(s); err == nil {
			out = append(out, netip.AddrPortFrom(a, 53))
			continue
		}
		ap, err := netip.ParseAddrPort(s)
		if err != nil {
			return nil, fmt.Errorf("--egress-resolver %q: want ip or ip:port", s)
		}
		out = append(out, ap)
	}
	return out, nil
}

// engine makes the egress engine, with its metrics on reg; nil with
// --no-egress.
func (e *egressConfig) engine(reg prometheus.Registerer, log *slog.Logger) (*egress.Engine, error) {
	if e.off {
		return nil, nil
	}
	private, err := e.prefixes()
	if err != nil {
		return nil, err
	}
	resolvers, err := e.resolverAddrs()
	if err != nil {
		return nil, err
	}
	eng, err := egress.New(egress.Config{Resolvers: resolvers, HostsFile: e.hostsFile, AllowPrivate: private, Registry: reg, Log: log})
	if err != nil {
		return nil, fmt.Errorf("%w (name DNS servers with --egress-resolver, or run with --no-egress)", err)
	}
	return eng, nil
}

// defaultNetwork is the policy of sandboxes that name none.
func (e *egressConfig) defaultNetwork() sandbox.Network {
	if e.off {
		return sandbox.Network{Egress: string(egress.ModeNone)}
	}
	return sandbox.Network{Egress: e.mode, Allow: e.allow, Deny: e.deny}
}

// String is what the start-up line says of egress.
func (e *egressConfig) String() string {
	if e.off {
		return "off"
	}
	return "default " + e.mode
}
