package main

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/sandpool/sandpool/client"
)

// pauseCommands are the sandbox subcommands for timeouts and pausing.
func (c *cli) pauseCommands() []*cobra.Command {
	var archive bool
	pause := &cobra.Command{
		Use: "pause ID", Short: "Freeze a sandbox (memory kept); --archive also stops its processes (files kept)", Args: cobra.ExactArgs(1),
		RunE: act(c, func(ctx context.Context, cl *client.Client, args []string) (*client.Sandbox, error) {
			return cl.Pause(ctx, args[0], archive)
		}, nil),
	}
	pause.Flags().BoolVar(&archive, "archive", false, "stop the processes too, freeing memory")

	resume := &cobra.Command{
		Use: "resume ID", Short: "Run a paused sandbox again", Args: cobra.ExactArgs(1),
		RunE: act(c, func(ctx context.Context, cl *client.Client, args []string) (*client.Resumed, error) {
			return cl.Resume(ctx, args[0])
		}, func(r *client.Resumed) error {
			if r.ResumedFrom == "archive" {
				fmt.Fprintln(c.stderr, "sandpool: resumed from its archive: files kept, processes were not")
			}
			return nil
		}),
	}

	var onTimeout string
	var archiveAfter int
	timeout := &cobra.Command{
		Use: "timeout ID SECONDS", Short: "Set a sandbox's inactivity timeout (0: none); its countdown starts again", Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			secs, err := strconv.Atoi(args[1])
			if err != nil {
				return fmt.Errorf("timeout %q: want whole seconds", args[1])
			}
			u := client.TimeoutUpdate{Timeout: &secs}
			if cmd.Flags().Changed("on-timeout") {
				u.OnTimeout = &onTimeout
			}
			if cmd.Flags().Changed("archive-after") {
				u.ArchiveAfter = &archiveAfter
			}
			return act(c, func(ctx context.Context, cl *client.Client, args []string) (*client.Sandbox, error) {
				return cl.SetTimeout(ctx, args[0], u)
			}, func(sb *client.Sandbox) error { return c.table("FIELD\tVALUE", sandboxTimeRows(sb)) })(cmd, args)
		},
	}
	timeout.Flags().StringVar(&onTimeout, "on-timeout", "pause", "pause or kill")
	timeout.Flags().IntVar(&archiveAfter, "archive-after", 0, "seconds paused before archived (0: the server's default)")

	ping := &cobra.Command{
		Use: "ping ID", Short: "Keep a sandbox alive (counts as activity; resumes a paused one)", Args: cobra.ExactArgs(1),
		RunE: act(c, func(ctx context.Context, cl *client.Client, args []string) (*client.Sandbox, error) {
			return cl.Ping(ctx, args[0])
		}, nil),
	}
	return []*cobra.Command{pause, resume, timeout, ping}
}

// sandboxTimeRows describe a sandbox's timeout and pause state.
func sandboxTimeRows(sb *client.Sandbox) [][]string {
	var rows [][]string
	if sb.Timeout > 0 {
		rows = append(rows, []string{"timeout", fmt.Sprintf("%ds, then %s", sb.Timeout, sb.OnTimeout)})
	}
	if sb.TimesOutAt != nil {
		rows = append(rows, []string{"times out", sb.TimesOutAt.Local().Format(time.DateTime) +
			fmt.Sprintf(" (in %s)", time.Until(*sb.TimesOutAt).Round(time.Second))})
	}
	if sb.PausedAt != nil {
		state := "frozen (memory kept)"
		if sb.Archived {
			state = "archived (files kept, processes stopped)"
		}
		rows = append(rows, []string{"paused", sb.PausedAt.Local().Format(time.DateTime) + ", " + state})
	}
	if sb.TimeoutLeft != nil {
		rows = append(rows, []string{"timeout left", fmt.Sprintf("%.0fs", *sb.TimeoutLeft)})
	}
	return rows
}
