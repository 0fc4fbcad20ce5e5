package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/sandpool/sandpool/internal/bench"
)

// figures are the bench results in table order, with their units.
var figures = []struct{ name, what string }{
	{"cold_create_p50_ms", "cold: create to first exec, p50"},
	{"cold_create_p99_ms", "cold: create to first exec, p99"},
	{"acquire_p50_ms", "acquire from a warm pool, p50"},
	{"acquire_p99_ms", "acquire from a warm pool, p99"},
	{"acquire_release_per_sec", "acquire+release per second"},
	{"exec_p50_ms", "exec of true, p50"},
	{"exec_p99_ms", "exec of true, p99"},
	{"pause_resume_p50_ms", "pause+resume (frozen), p50"},
	{"archive_resume_p50_ms", "pause with archive+resume, p50"},
	{"density_sandboxes", "idle sandboxes started"},
	{"density_stopped_at_node_limit", "density stopped at the node's --max-sandboxes (1)"},
	{"host_overhead_per_sandbox_kib", "host memory per idle sandbox beyond its own (KiB)"},
}

func (c *cli) benchCommand() *cobra.Command {
	var (
		scenarios   []string
		duration    time.Duration
		concurrency int
		densityMax  int
		template    string
	)
	cmd := &cobra.Command{
		Use:   "bench [--scenario NAME...] [--duration D] [--concurrency N]",
		Short: "Measure a running server: cold start, pool acquire, exec, pause, density",
		Long: `Measure a running sandpool server through the Go client, as users feel it.
Scenarios: ` + strings.Join(bench.Scenarios, ", ") + ` (default: all). It creates what it
needs and removes it afterwards, also when interrupted. density needs an admin key.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			for i, s := range scenarios {
				scenarios[i] = strings.TrimSpace(s)
			}
			cfg := bench.Config{Client: cl, Scenarios: scenarios, Duration: duration, Concurrency: concurrency,
				DensityMax: densityMax, Progress: c.stderr, Template: template}
			res, err := bench.Run(cmd.Context(), cfg)
			if cmd.Context().Err() != nil {
				return errors.New("interrupted; what it made was removed")
			}
			if c.json {
				if res == nil {
					res = bench.Result{}
				}
				if jerr := json.NewEncoder(c.stdout).Encode(res); jerr != nil {
					return jerr
				}
				return err
			}
			var rows [][]string
			for _, f := range figures {
				if v, ok := res[f.name]; ok {
					rows = append(rows, []string{f.what, strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.2f", v), "0"), "."), f.name})
				}
			}
			for name, v := range res { // any figure without a row above
				if !slices.ContainsFunc(figures, func(f struct{ name, what string }) bool { return f.name == name }) {
					rows = append(rows, []string{name, fmt.Sprintf("%.2f", v), name})
				}
			}
			c.table("MEASURE\tVALUE\tNAME", rows)
			return err
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&scenarios, "scenario", nil, "scenarios to run (repeatable or comma-separated): "+strings.Join(bench.Scenarios, ", "))
	f.DurationVar(&duration, "duration", 10*time.Second, "how long each timed scenario runs")
	f.IntVar(&concurrency, "concurrency", 4, "callers at once")
	f.IntVar(&densityMax, "density-max", 200, "most sandboxes the density scenario starts")
	f.StringVar(&template, "template", "base", "template the sandboxes are made of (an image template, say, to compare with base)")
	return cmd
}
