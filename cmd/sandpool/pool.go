package main

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/sandpool/sandpool/client"
)

func (c *cli) poolCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "pool", Aliases: []string{"pools"}, Short: "Warm pools: ready sandboxes handed out in about a millisecond"}

	var cfg client.PoolConfig
	var memory string
	var nf networkFlags
	create := &cobra.Command{
		Use:   "create NAME --template T [--min-idle N] ...",
		Short: "Create a pool; it starts filling at once",
		Args:  cobra.ExactArgs(1),
		RunE: act(c, func(ctx context.Context, cl *client.Client, args []string) (*client.Pool, error) {
			mem, err := parseSize(memory)
			if err != nil {
				return nil, err
			}
			cfg.Name, cfg.Limits.MemoryBytes = args[0], mem
			if cfg.Network, err = nf.network(); err != nil {
				return nil, err
			}
			return cl.CreatePool(ctx, cfg)
		}, c.showPool),
	}
	f := create.Flags()
	f.StringVarP(&cfg.Template, "template", "t", "base", "template of the pool's sandboxes")
	f.IntVar(&cfg.MinIdle, "min-idle", 1, "idle sandboxes kept ready")
	f.IntVar(&cfg.MaxIdle, "max-idle", 0, "most idle sandboxes kept (default twice --min-idle)")
	f.IntVar(&cfg.MaxTotal, "max-total", 0, "most sandboxes, idle and in use (0: no limit)")
	f.IntVar(&cfg.MaxUses, "max-uses", 0, "sessions per sandbox before it is destroyed (0: no limit)")
	f.Float64Var(&cfg.MaxIdleTime, "max-idle-time", 0, "seconds an idle sandbox is kept above --min-idle (0: forever)")
	f.StringVar(&cfg.AcquirePolicy, "policy", "fail_fast", "when no sandbox is idle: fail_fast, direct_create or wait")
	f.Float64Var(&cfg.AcquireTimeout, "acquire-timeout", 0, "seconds the wait policy waits (default 30)")
	f.Float64Var(&cfg.HealthCheckTimeout, "health-check-timeout", 0, "seconds for each acquire's health check (default 1)")
	f.IntVar(&cfg.SessionTimeout, "session-timeout", 0, "destroy an acquired sandbox idle this many seconds (0: never)")
	f.Float64Var(&cfg.Limits.CPUs, "cpus", 0, "CPU limit of each sandbox")
	f.StringVar(&memory, "memory", "", "memory limit of each sandbox, e.g. 512M")
	nf.add(f, "each sandbox")
	f.IntVar(&cfg.Limits.GPUs, "gpus", 0, "GPUs each sandbox gets, its own (a sandbox holds them while idle in the pool)")

	list := &cobra.Command{
		Use: "list", Aliases: []string{"ls"}, Short: "List your pools", Args: cobra.NoArgs,
		RunE: act(c, func(ctx context.Context, cl *client.Client, _ []string) ([]client.Pool, error) {
			return cl.ListPools(ctx)
		}, func(list []client.Pool) error {
			rows := make([][]string, 0, len(list))
			for _, p := range list {
				rows = append(rows, []string{p.Name, p.Template, p.Status, strconv.Itoa(p.Idle), strconv.Itoa(p.InUse),
					strconv.Itoa(p.Creating), fmt.Sprintf("%d-%d", p.MinIdle, p.MaxIdle), p.AcquirePolicy})
			}
			return c.table("NAME\tTEMPLATE\tSTATUS\tIDLE\tIN USE\tCREATING\tIDLE RANGE\tPOLICY", rows)
		}),
	}

	get := &cobra.Command{
		Use: "get NAME", Short: "Show a pool with live counts", Args: cobra.ExactArgs(1),
		RunE: act(c, func(ctx context.Context, cl *client.Client, args []string) (*client.Pool, error) {
			return cl.GetPool(ctx, args[0])
		}, c.showPool),
	}

	var minIdle, maxIdle, maxTotal, maxUses, sessionTimeout int
	var maxIdleTime float64
	var policy string
	update := &cobra.Command{
		Use: "update NAME [--min-idle N] [--max-idle N] ...", Short: "Change a pool's settings (resize) without disturbing sessions",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var u client.PoolUpdate
			fl := cmd.Flags()
			if fl.Changed("min-idle") {
				u.MinIdle = &minIdle
			}
			if fl.Changed("max-idle") {
				u.MaxIdle = &maxIdle
			}
			if fl.Changed("max-total") {
				u.MaxTotal = &maxTotal
			}
			if fl.Changed("max-uses") {
				u.MaxUses = &maxUses
			}
			if fl.Changed("max-idle-time") {
				u.MaxIdleTime = &maxIdleTime
			}
			if fl.Changed("policy") {
				u.AcquirePolicy = &policy
			}
			if fl.Changed("session-timeout") {
				u.SessionTimeout = &sessionTimeout
			}
			return act(c, func(ctx context.Context, cl *client.Client, args []string) (*client.Pool, error) {
				return cl.UpdatePool(ctx, args[0], u)
			}, c.showPool)(cmd, args)
		},
	}
	uf := update.Flags()
	uf.IntVar(&minIdle, "min-idle", 0, "idle sandboxes kept ready")
	uf.IntVar(&maxIdle, "max-idle", 0, "most idle sandboxes kept")
	uf.IntVar(&maxTotal, "max-total", 0, "most sandboxes (0: no limit)")
	uf.IntVar(&maxUses, "max-uses", 0, "sessions per sandbox (0: no limit)")
	uf.Float64Var(&maxIdleTime, "max-idle-time", 0, "seconds an idle sandbox is kept above --min-idle")
	uf.StringVar(&policy, "policy", "", "fail_fast, direct_create or wait")
	uf.IntVar(&sessionTimeout, "session-timeout", 0, "destroy an acquired sandbox idle this many seconds (0: never)")

	rm := &cobra.Command{
		Use: "rm NAME", Aliases: []string{"delete"}, Short: "Drain and delete a pool", Args: cobra.ExactArgs(1),
		RunE: act(c, func(ctx context.Context, cl *client.Client, args []string) (any, error) {
			return nil, cl.DeletePool(ctx, args[0])
		}, nil),
	}

	var wait time.Duration
	acquire := &cobra.Command{
		Use: "acquire NAME", Short: "Take a ready sandbox from a pool and print its id", Args: cobra.ExactArgs(1),
		RunE: act(c, func(ctx context.Context, cl *client.Client, args []string) (*client.Sandbox, error) {
			return cl.Acquire(ctx, args[0], wait)
		}, func(sb *client.Sandbox) error { return c.line(sb.ID) }),
	}
	acquire.Flags().DurationVar(&wait, "wait", 0, "how long the wait policy may wait (default: the pool's)")

	var fatal bool
	release := &cobra.Command{
		Use: "release ID", Short: "End your session: the sandbox is reset for the next one", Args: cobra.ExactArgs(1),
		RunE: act(c, func(ctx context.Context, cl *client.Client, args []string) (*client.Sandbox, error) {
			return cl.Release(ctx, args[0], fatal)
		}, nil),
	}
	release.Flags().BoolVar(&fatal, "fatal", false, "the session broke the sandbox: destroy it")

	cmd.AddCommand(create, list, get, update, rm, acquire, release)
	return cmd
}

func (c *cli) showPool(p *client.Pool) error {
	rows := [][]string{{"name", p.Name}, {"template", p.Template}, {"status", p.Status},
		{"idle", strconv.Itoa(p.Idle)}, {"in use", strconv.Itoa(p.InUse)}, {"creating", strconv.Itoa(p.Creating)},
		{"resetting", strconv.Itoa(p.Resetting)},
		{"min/max idle", fmt.Sprintf("%d/%d", p.MinIdle, p.MaxIdle)},
		{"max total", limitText(p.MaxTotal)}, {"max uses", limitText(p.MaxUses)},
		{"policy", p.AcquirePolicy}}
	if p.LastError != "" {
		rows = append(rows, []string{"last error", p.LastError})
	}
	return c.table("FIELD\tVALUE", rows)
}

func limitText(n int) string {
	if n == 0 {
		return "none"
	}
	return strconv.Itoa(n)
}
