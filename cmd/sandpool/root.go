package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/sandpool/sandpool/client"
	"github.com/sandpool/sandpool/internal/buildinfo"
)

// cli holds what every client command shares.
type cli struct {
	url, key string
	json     bool
	stdin    io.Reader
	stdout   io.Writer
	stderr   io.Writer
}

func rootCommand(stdin io.Reader, stdout, stderr io.Writer) *cobra.Command {
	c := &cli{stdin: stdin, stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:           "sandpool",
		Short:         "Run untrusted code in isolated Linux sandboxes",
		Version:       buildinfo.Get().String(),
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetVersionTemplate("sandpool {{.Version}}\n")
	root.SetOut(stdout)
	root.SetErr(stderr)
	pf := root.PersistentFlags()
	pf.StringVar(&c.url, "url", envOr("SANDPOOL_URL", "http://"+defaultListen), "server URL (env SANDPOOL_URL)")
	// The default is not shown as a value: help output gets pasted into
	// issues and logs, and a key must never be in it.
	pf.StringVar(&c.key, "api-key", "", "API key (default: $SANDPOOL_API_KEY, else the admin key in $SANDPOOL_DATA/admin.key)")
	pf.BoolVar(&c.json, "json", false, "print JSON for scripts")

	root.AddCommand(serveCommand(stderr), c.sandboxCommand(), c.poolCommand(), c.execCommand(), c.processCommand(),
		c.filesCommand(), c.templateCommand(), c.keysCommand(), c.benchCommand(), c.mcpCommand(), c.versionCommand())
	root.AddCommand(c.networkCommand())
	return root
}

// client builds the API client. The key comes from --api-key, else
// SANDPOOL_API_KEY, else the admin key in the data directory.
func (c *cli) client() (*client.Client, error) {
	key := c.key
	if key == "" {
		key = os.Getenv("SANDPOOL_API_KEY")
	}
	if key == "" {
		path := filepath.Join(envOr("SANDPOOL_DATA", defaultDataDir), adminKeyFile)
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("no API key: set SANDPOOL_API_KEY or --api-key (could not read %s: %v)", path, errors.Unwrap(err))
		}
		key = strings.TrimSpace(string(b))
	}
	return client.New(c.url, key)
}

// act makes a command's RunE out of the usual steps: get a client, call
// do, and show what it returns (see show).
func act[T any](c *cli, do func(ctx context.Context, cl *client.Client, args []string) (T, error), human func(T) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		cl, err := c.client()
		if err != nil {
			return err
		}
		v, err := do(cmd.Context(), cl, args)
		if err != nil {
			return err
		}
		return show(c, v, human)
	}
}

// show prints v as indented JSON with --json, else as human says (nothing
// if human is nil). Nil slices print as [].
func show[T any](c *cli, v T, human func(T) error) error {
	if any(v) == nil {
		return nil // nothing to show (a command that only acts)
	}
	if c.json {
		enc := json.NewEncoder(c.stdout)
		enc.SetIndent("", "  ")
		if b, err := json.Marshal(v); err == nil && string(b) == "null" {
			return enc.Encode([]any{})
		}
		return enc.Encode(v)
	}
	if human == nil {
		return nil
	}
	return human(v)
}

// table prints rows under a tab-separated header, aligned.
func (c *cli) table(header string, rows [][]string) error {
	tw := tabwriter.NewWriter(c.stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

// line prints one line to standard output (an id, a secret).
func (c *cli) line(s string) error {
	_, err := fmt.Fprintln(c.stdout, s)
	return err
}

// parseKV reads repeated KEY=VALUE flags.
func parseKV(flag string, list []string) (map[string]string, error) {
	if len(list) == 0 {
		return nil, nil
	}
	m := map[string]string{}
	for _, kv := range list {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--%s %q: want KEY=VALUE", flag, kv)
		}
		m[k] = v
	}
	return m, nil
}

// parseSize reads 512M, 2G, 1048576.
func parseSize(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	mult := int64(1)
	switch strings.ToUpper(s[len(s)-1:]) {
	case "K":
		mult = 1 << 10
	case "M":
		mult = 1 << 20
	case "G":
		mult = 1 << 30
	}
	if mult > 1 {
		s = s[:len(s)-1]
	}
	n, err := strconv.ParseInt(strings.TrimSuffix(strings.ToUpper(s), "I"), 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("size %q: want a number with an optional K, M or G", s)
	}
	return n * mult, nil
}

func (c *cli) versionCommand() *cobra.Command {
	return &cobra.Command{Use: "version", Short: "Print the build: version, VCS revision, whether the tree was modified", Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			return show(c, buildinfo.Get(), func(in buildinfo.Info) error { return c.line("sandpool " + in.String()) })
		}}
}
