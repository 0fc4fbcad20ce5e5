package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/sandpool/sandpool/client"
)

// networkFlags are --egress, --allow and --deny, on every command that
// takes a network policy.
type networkFlags struct {
	egress      string
	allow, deny []string
}

// add registers the flags; what says whose policy they set.
func (n *networkFlags) add(f *pflag.FlagSet, what string) {
	f.StringVar(&n.egress, "egress", "", "egress of "+what+": none, open or allowlist (default: the server's)")
	f.StringSliceVar(&n.allow, "allow", nil, "with --egress allowlist: a host name, *.wildcard, IP address or CIDR it may reach (repeatable, or comma-separated)")
	f.StringSliceVar(&n.deny, "deny", nil, "a host name, *.wildcard, IP address or CIDR it may never reach (repeatable, or comma-separated)")
}

// network is the policy the flags give, nil if none was given (the
// server's default applies). --allow alone means an allowlist; --deny
// needs a mode to subtract from.
func (n *networkFlags) network() (*client.Network, error) {
	if n.egress == "" && len(n.allow) == 0 && len(n.deny) == 0 {
		return nil, nil
	}
	mode := n.egress
	if mode == "" && len(n.allow) > 0 {
		mode = client.EgressAllowlist
	}
	if mode == "" {
		return nil, errors.New("--deny: give --egress open or allowlist too")
	}
	return &client.Network{Egress: mode, Allow: n.allow, Deny: n.deny}, nil
}

// describeNetwork is a policy on one line: "allowlist pypi.org,*.pythonhosted.org; deny 10.1.0.0/16".
func describeNetwork(n client.Network) string {
	s := n.Egress
	if s == "" {
		s = client.EgressNone
	}
	if len(n.Allow) > 0 {
		s += " " + strings.Join(n.Allow, ",")
	}
	if len(n.Deny) > 0 {
		s += "; deny " + strings.Join(n.Deny, ",")
	}
	return s
}

func (c *cli) networkCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "network", Short: "Show or change a sandbox's egress policy and see its traffic"}
	get := &cobra.Command{
		Use: "get ID", Short: "Show a sandbox's egress policy and traffic counters", Args: cobra.ExactArgs(1),
		RunE: act(c, func(ctx context.Context, cl *client.Client, args []string) (*client.SandboxNetwork, error) {
			return cl.GetNetwork(ctx, args[0])
		}, c.showNetwork),
	}
	var nf networkFlags
	set := &cobra.Command{
		Use:   "set ID --egress MODE [--allow ENTRY]... [--deny ENTRY]...",
		Short: "Change a sandbox's egress policy; connections it opens from now on follow it",
		Long: `Change a running (or paused) sandbox's egress policy. Connections and DNS
queries it starts from now on follow the new policy; those open stay open.

  sandpool network set $ID --egress none
  sandpool network set $ID --egress allowlist --allow pypi.org,*.pythonhosted.org
  sandpool network set $ID --egress open --deny 203.0.113.0/24`,
		Args: cobra.ExactArgs(1),
		RunE: act(c, func(ctx context.Context, cl *client.Client, args []string) (*client.SandboxNetwork, error) {
			n, err := nf.network()
			if err != nil {
				return nil, err
			}
			if n == nil {
				return nil, errors.New("give the new policy: --egress none|open|allowlist, with --allow and --deny")
			}
			return cl.SetNetwork(ctx, args[0], *n)
		}, c.showNetwork),
	}
	nf.add(set.Flags(), "the sandbox")
	cmd.AddCommand(get, set)
	return cmd
}

func (c *cli) showNetwork(n *client.SandboxNetwork) error {
	st := n.Stats
	return c.table("FIELD\tVALUE", [][]string{
		{"egress", describeNetwork(n.Network)},
		{"bytes out/in", fmt.Sprintf("%d / %d", st.BytesOut, st.BytesIn)},
		{"connections", fmt.Sprintf("%d (%d open, %d refused, %d failed)", st.Connections, st.Active, st.Refused, st.Failed)},
		{"dns queries", fmt.Sprintf("%d (%d refused)", st.DNSQueries, st.DNSRefused)},
	})
}
