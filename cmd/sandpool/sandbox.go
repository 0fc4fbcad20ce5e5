package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/sandpool/sandpool/client"
)

func (c *cli) sandboxCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "sandbox", Aliases: []string{"sandboxes", "sb"}, Short: "Create, list, inspect and remove sandboxes"}
	cmd.AddCommand(c.sandboxCreate(), c.sandboxList(), c.sandboxGet(), c.sandboxRemove(), c.sandboxMetrics())
	cmd.AddCommand(c.pauseCommands()...)
	return cmd
}

func (c *cli) sandboxCreate() *cobra.Command {
	var (
		req       client.CreateSandboxRequest
		memory    string
		env, meta []string
		nf        networkFlags
	)
	create := &cobra.Command{
		Use:   "create",
		Short: "Create a sandbox and print its id",
		Args:  cobra.NoArgs,
		RunE: act(c, func(ctx context.Context, cl *client.Client, _ []string) (*client.Sandbox, error) {
			var err error
			if req.Limits.MemoryBytes, err = parseSize(memory); err != nil {
				return nil, err
			}
			if req.Env, err = parseKV("env", env); err != nil {
				return nil, err
			}
			if req.Metadata, err = parseKV("meta", meta); err != nil {
				return nil, err
			}
			if req.Network, err = nf.network(); err != nil {
				return nil, err
			}
			return cl.CreateSandbox(ctx, req)
		}, func(sb *client.Sandbox) error { return c.line(sb.ID) }),
	}
	f := create.Flags()
	f.StringVarP(&req.Template, "template", "t", "base", "template to make the sandbox from")
	f.StringVar(&memory, "memory", "", "memory limit, e.g. 512M or 2G")
	f.Float64Var(&req.Limits.CPUs, "cpus", 0, "CPU limit in cores, e.g. 0.5")
	f.Int64Var(&req.Limits.Pids, "pids", 0, "process limit")
	f.IntVar(&req.Limits.GPUs, "gpus", 0, "GPUs of the node the sandbox gets, each its own (0: the template's, else none)")
	f.IntVar(&req.Timeout, "timeout", 0, "pause (or kill) after this many seconds without activity (0: never)")
	f.StringVar(&req.OnTimeout, "on-timeout", "", "what the timeout does: pause (default) or kill")
	f.IntVar(&req.ArchiveAfter, "archive-after", 0, "seconds a paused sandbox stays frozen before it is archived (0: the server's default)")
	f.StringArrayVarP(&env, "env", "e", nil, "environment variable KEY=VALUE for every command (repeatable)")
	f.StringArrayVar(&meta, "meta", nil, "metadata KEY=VALUE (repeatable)")
	nf.add(f, "the sandbox")
	return create
}

func (c *cli) sandboxList() *cobra.Command {
	var statuses, metaFilter []string
	list := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List your sandboxes",
		Args:    cobra.NoArgs,
		RunE: act(c, func(ctx context.Context, cl *client.Client, _ []string) ([]client.Sandbox, error) {
			m, err := parseKV("meta", metaFilter)
			if err != nil {
				return nil, err
			}
			return cl.ListSandboxes(ctx, client.ListOptions{Statuses: statuses, Metadata: m})
		}, func(list []client.Sandbox) error {
			rows := make([][]string, 0, len(list))
			for _, sb := range list {
				rows = append(rows, []string{sb.ID, sb.Status, sb.Template, sb.CreatedAt.Local().Format(time.DateTime)})
			}
			return c.table("ID\tSTATUS\tTEMPLATE\tCREATED", rows)
		}),
	}
	list.Flags().StringArrayVar(&statuses, "status", nil, "only these statuses (repeatable; \"all\" for every one)")
	list.Flags().StringArrayVar(&metaFilter, "meta", nil, "only sandboxes with metadata KEY=VALUE (repeatable)")
	return list
}

func (c *cli) sandboxGet() *cobra.Command {
	return &cobra.Command{
		Use:   "get ID",
		Short: "Show one sandbox",
		Args:  cobra.ExactArgs(1),
		RunE: act(c, func(ctx context.Context, cl *client.Client, args []string) (*client.Sandbox, error) {
			return cl.GetSandbox(ctx, args[0])
		}, func(sb *client.Sandbox) error {
			rows := [][]string{{"id", sb.ID}, {"status", sb.Status}, {"template", sb.Template},
				{"created", sb.CreatedAt.Local().Format(time.DateTime)},
				{"limits", fmt.Sprintf("cpus=%g memory=%d pids=%d gpus=%d", sb.Limits.CPUs, sb.Limits.MemoryBytes, sb.Limits.Pids, sb.Limits.GPUs)},
				{"network", describeNetwork(sb.Network)}}
			rows = append(rows, sandboxTimeRows(sb)...)
			if sb.Error != "" {
				rows = append(rows, []string{"error", sb.Error})
			}
			return c.table("FIELD\tVALUE", rows)
		}),
	}
}

func (c *cli) sandboxRemove() *cobra.Command {
	return &cobra.Command{
		Use:     "rm ID...",
		Aliases: []string{"delete"},
		Short:   "Destroy sandboxes",
		Args:    cobra.MinimumNArgs(1),
		RunE: act(c, func(ctx context.Context, cl *client.Client, args []string) (any, error) {
			var errs []error
			for _, id := range args {
				if err := cl.DeleteSandbox(ctx, id); err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", id, err))
				}
			}
			return nil, errors.Join(errs...)
		}, nil),
	}
}
