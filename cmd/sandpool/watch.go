package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/sandpool/sandpool/client"
)

// filesWatch prints the changes in a directory as they happen, until the
// directory goes or the command is interrupted.
func (c *cli) filesWatch(user *string) *cobra.Command {
	var recursive bool
	cmd := &cobra.Command{
		Use:   "watch ID PATH",
		Short: "Print the changes in a directory as they happen (-r: and below it)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			w, err := cl.WatchFiles(cmd.Context(), args[0], args[1], client.WatchOptions{Recursive: recursive, User: *user})
			if err != nil {
				return err
			}
			defer w.Close()
			for {
				ev, err := w.Next()
				if errors.Is(err, io.EOF) || cmd.Context().Err() != nil {
					return nil
				}
				if err != nil {
					return err
				}
				if c.json {
					b, _ := json.Marshal(ev) // two strings
					fmt.Fprintf(c.stdout, "%s\n", b)
				} else {
					fmt.Fprintf(c.stdout, "%-6s %s\n", ev.Op, ev.Name)
				}
			}
		},
	}
	cmd.Flags().BoolVarP(&recursive, "recursive", "r", false, "watch the directories below too")
	return cmd
}

// sandboxMetrics shows what a sandbox uses now.
func (c *cli) sandboxMetrics() *cobra.Command {
	return &cobra.Command{
		Use:   "metrics ID",
		Short: "Show what a sandbox uses now: CPU, memory, disk",
		Args:  cobra.ExactArgs(1),
		RunE: act(c, func(ctx context.Context, cl *client.Client, args []string) (*client.Metrics, error) {
			return cl.Metrics(ctx, args[0])
		}, func(m *client.Metrics) error {
			return c.table("FIELD\tVALUE", [][]string{
				{"cpu", fmt.Sprintf("%.1f%% of %d", m.CPUUsedPct, m.CPUCount)},
				{"memory", fmt.Sprintf("%s used, %s cache, of %s", mib(m.MemUsedBytes), mib(m.MemCacheBytes), mib(m.MemTotalBytes))},
				{"disk", fmt.Sprintf("%s used of %s", mib(m.DiskUsedBytes), mib(m.DiskTotalBytes))},
			})
		}),
	}
}

func mib(n int64) string { return strconv.FormatFloat(float64(n)/(1<<20), 'f', 1, 64) + " MiB" }
