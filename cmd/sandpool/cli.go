package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/sandpool/sandpool/client"
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
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	pf := root.PersistentFlags()
	pf.StringVar(&c.url, "url", envOr("SANDPOOL_URL", "http://"+defaultListen), "server URL (env SANDPOOL_URL)")
	pf.StringVar(&c.key, "api-key", os.Getenv("SANDPOOL_API_KEY"), "API key (env SANDPOOL_API_KEY; default: the admin key in the data directory)")
	pf.BoolVar(&c.json, "json", false, "print JSON for scripts")

	root.AddCommand(serveCommand(stderr), c.sandboxCommand(), c.poolCommand(), c.execCommand(), c.filesCommand(),
		c.templateCommand(), c.keysCommand(), c.benchCommand(),
		&cobra.Command{Use: "version", Short: "Print the version", Args: cobra.NoArgs,
			Run: func(*cobra.Command, []string) { fmt.Fprintln(stdout, "sandpool", version) }})
	root.AddCommand(c.mcpCommand())
	return root
}

// client builds the API client, finding the admin key in the data
// directory when no key is given.
func (c *cli) client() (*client.Client, error) {
	key := c.key
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

func (c *cli) printJSON(v any) error {
	enc := json.NewEncoder(c.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func (c *cli) table(header string, rows [][]string) {
	tw := tabwriter.NewWriter(c.stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	tw.Flush()
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

func (c *cli) sandboxCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "sandbox", Aliases: []string{"sandboxes", "sb"}, Short: "Create, list, inspect and remove sandboxes"}

	var (
		template, memory string
		cpus             float64
		pids             int64
		timeout          int
		onTimeout        string
		archiveAfter     int
		env, meta        []string
	)
	create := &cobra.Command{
		Use:   "create",
		Short: "Create a sandbox and print its id",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			mem, err := parseSize(memory)
			if err != nil {
				return err
			}
			envMap, err := parseKV("env", env)
			if err != nil {
				return err
			}
			metaMap, err := parseKV("meta", meta)
			if err != nil {
				return err
			}
			cl, err := c.client()
			if err != nil {
				return err
			}
			sb, err := cl.CreateSandbox(cmd.Context(), client.CreateSandboxRequest{Template: template, Env: envMap,
				Metadata: metaMap, Timeout: timeout, OnTimeout: onTimeout, ArchiveAfter: archiveAfter,
				Limits: client.Limits{CPUs: cpus, MemoryBytes: mem, Pids: pids}})
			if err != nil {
				return err
			}
			if c.json {
				return c.printJSON(sb)
			}
			fmt.Fprintln(c.stdout, sb.ID)
			return nil
		},
	}
	f := create.Flags()
	f.StringVarP(&template, "template", "t", "base", "template to make the sandbox from")
	f.StringVar(&memory, "memory", "", "memory limit, e.g. 512M or 2G")
	f.Float64Var(&cpus, "cpus", 0, "CPU limit in cores, e.g. 0.5")
	f.Int64Var(&pids, "pids", 0, "process limit")
	f.IntVar(&timeout, "timeout", 0, "pause (or kill) after this many seconds without activity (0: never)")
	f.StringVar(&onTimeout, "on-timeout", "", "what the timeout does: pause (default) or kill")
	f.IntVar(&archiveAfter, "archive-after", 0, "seconds a paused sandbox stays frozen before it is archived (0: the server's default)")
	f.StringArrayVarP(&env, "env", "e", nil, "environment variable KEY=VALUE for every command (repeatable)")
	f.StringArrayVar(&meta, "meta", nil, "metadata KEY=VALUE (repeatable)")

	var statuses, metaFilter []string
	list := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List your sandboxes",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			m, err := parseKV("meta", metaFilter)
			if err != nil {
				return err
			}
			cl, err := c.client()
			if err != nil {
				return err
			}
			list, err := cl.ListSandboxes(cmd.Context(), client.ListOptions{Statuses: statuses, Metadata: m})
			if err != nil {
				return err
			}
			if c.json {
				if list == nil {
					list = []client.Sandbox{}
				}
				return c.printJSON(list)
			}
			rows := make([][]string, 0, len(list))
			for _, sb := range list {
				rows = append(rows, []string{sb.ID, sb.Status, sb.Template, sb.CreatedAt.Local().Format(time.DateTime)})
			}
			c.table("ID\tSTATUS\tTEMPLATE\tCREATED", rows)
			return nil
		},
	}
	list.Flags().StringArrayVar(&statuses, "status", nil, "only these statuses (repeatable; \"all\" for every one)")
	list.Flags().StringArrayVar(&metaFilter, "meta", nil, "only sandboxes with metadata KEY=VALUE (repeatable)")

	get := &cobra.Command{
		Use:   "get ID",
		Short: "Show one sandbox",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			sb, err := cl.GetSandbox(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if c.json {
				return c.printJSON(sb)
			}
			rows := [][]string{{"id", sb.ID}, {"status", sb.Status}, {"template", sb.Template},
				{"created", sb.CreatedAt.Local().Format(time.DateTime)},
				{"limits", fmt.Sprintf("cpus=%g memory=%d pids=%d", sb.Limits.CPUs, sb.Limits.MemoryBytes, sb.Limits.Pids)}}
			rows = append(rows, sandboxTimeRows(sb)...)
			if sb.Error != "" {
				rows = append(rows, []string{"error", sb.Error})
			}
			c.table("FIELD\tVALUE", rows)
			return nil
		},
	}
	rm := &cobra.Command{
		Use:     "rm ID...",
		Aliases: []string{"delete"},
		Short:   "Destroy sandboxes",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			var errs []error
			for _, id := range args {
				if err := cl.DeleteSandbox(cmd.Context(), id); err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", id, err))
				}
			}
			return errors.Join(errs...)
		},
	}
	cmd.AddCommand(create, list, get, rm)
	cmd.AddCommand(c.pauseCommands()...)
	return cmd
}

func (c *cli) execCommand() *cobra.Command {
	var (
		user, cwd string
		env       []string
		timeout   float64
		withStdin bool
	)
	cmd := &cobra.Command{
		Use:   "exec ID -- COMMAND [ARG...]",
		Short: "Run a command in a sandbox, streaming its output; exits with its code",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			envMap, err := parseKV("env", env)
			if err != nil {
				return err
			}
			cl, err := c.client()
			if err != nil {
				return err
			}
			req := client.ExecRequest{Cmd: args[1:], User: user, Cwd: cwd, Env: envMap, Timeout: timeout}
			if withStdin {
				if req.Stdin, err = io.ReadAll(io.LimitReader(c.stdin, 64<<20)); err != nil {
					return fmt.Errorf("read stdin: %w", err)
				}
			}
			s, err := cl.ExecStream(cmd.Context(), args[0], req)
			if err != nil {
				return err
			}
			defer s.Close()
			st, err := s.Wait(c.stdout, c.stderr)
			if err != nil {
				return err
			}
			switch {
			case st.OOMKilled:
				fmt.Fprintln(c.stderr, "sandpool: killed: out of memory")
			case st.TimedOut:
				fmt.Fprintln(c.stderr, "sandpool: killed: timeout")
			}
			if st.ExitCode != 0 {
				return exitError(st.ExitCode)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&user, "user", "u", "", "run as this user (default: user)")
	f.StringVarP(&cwd, "workdir", "w", "", "working directory (default: the user's home)")
	f.StringArrayVarP(&env, "env", "e", nil, "environment variable KEY=VALUE (repeatable)")
	f.Float64Var(&timeout, "timeout", 0, "kill the command after this many seconds")
	f.BoolVarP(&withStdin, "stdin", "i", false, "send this command's standard input (up to 64 MiB)")
	return cmd
}

func (c *cli) filesCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "files", Short: "Move files in and out of a sandbox"}
	var mode string
	put := &cobra.Command{
		Use:   "put ID LOCAL REMOTE",
		Short: "Upload a file (LOCAL - reads standard input)",
		Args:  cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			var m uint64
			if mode != "" {
				var err error
				if m, err = strconv.ParseUint(mode, 8, 32); err != nil {
					return fmt.Errorf("--mode %q: want octal, like 755", mode)
				}
			}
			var r io.Reader = c.stdin
			if args[1] != "-" {
				f, err := os.Open(args[1])
				if err != nil {
					return err
				}
				defer f.Close()
				r = f
			}
			cl, err := c.client()
			if err != nil {
				return err
			}
			n, err := cl.WriteFile(cmd.Context(), args[0], args[2], r, client.WriteOptions{Mode: uint32(m), MakeParents: true})
			if err != nil {
				return err
			}
			if c.json {
				return c.printJSON(map[string]any{"path": args[2], "size": n})
			}
			fmt.Fprintf(c.stderr, "wrote %d bytes to %s\n", n, args[2])
			return nil
		},
	}
	put.Flags().StringVar(&mode, "mode", "", "permission bits in octal (default 644)")
	get := &cobra.Command{
		Use:   "get ID REMOTE [LOCAL]",
		Short: "Download a file (to standard output without LOCAL)",
		Args:  cobra.RangeArgs(2, 3),
		RunE: func(cmd *cobra.Command, args []string) (retErr error) {
			cl, err := c.client()
			if err != nil {
				return err
			}
			rc, err := cl.ReadFile(cmd.Context(), args[0], args[1])
			if err != nil {
				return err
			}
			defer rc.Close()
			var w io.Writer = c.stdout
			if len(args) == 3 && args[2] != "-" {
				f, err := os.Create(args[2])
				if err != nil {
					return err
				}
				defer func() {
					if err := f.Close(); err != nil && retErr == nil {
						retErr = err
					}
				}()
				w = f
			}
			_, err = io.Copy(w, rc)
			return err
		},
	}
	ls := &cobra.Command{
		Use:   "ls ID [PATH]",
		Short: "List a directory (default: /home/user)",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			p := "/home/user"
			if len(args) == 2 {
				p = args[1]
			}
			cl, err := c.client()
			if err != nil {
				return err
			}
			list, err := cl.ListFiles(cmd.Context(), args[0], p)
			if err != nil {
				return err
			}
			if c.json {
				if list == nil {
					list = []client.FileInfo{}
				}
				return c.printJSON(list)
			}
			rows := make([][]string, 0, len(list))
			for _, f := range list {
				name := f.Name
				if f.Target != "" {
					name += " -> " + f.Target
				}
				rows = append(rows, []string{fmt.Sprintf("%04o", f.Mode), f.Type, strconv.FormatInt(f.Size, 10),
					f.ModTime.Local().Format(time.DateTime), name})
			}
			c.table("MODE\tTYPE\tSIZE\tMODIFIED\tNAME", rows)
			return nil
		},
	}
	cmd.AddCommand(put, get, ls)
	return cmd
}

func (c *cli) templateCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "template", Aliases: []string{"templates"}, Short: "Manage templates"}
	list := &cobra.Command{
		Use: "list", Aliases: []string{"ls"}, Short: "List templates", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			list, err := cl.ListTemplates(cmd.Context())
			if err != nil {
				return err
			}
			if c.json {
				return c.printJSON(list)
			}
			rows := make([][]string, 0, len(list))
			for _, t := range list {
				kind := "imported"
				switch {
				case t.BuiltIn:
					kind = "built-in"
				case t.From != "":
					kind = "from " + t.From
				}
				hooks := []string{}
				if t.Hooks.Setup != "" {
					hooks = append(hooks, "setup")
				}
				if t.Hooks.SessionSetup != "" {
					hooks = append(hooks, "session_setup")
				}
				if t.Hooks.SessionTeardown != "" {
					hooks = append(hooks, "session_teardown")
				}
				rows = append(rows, []string{t.Name, kind, strings.Join(hooks, ","), strconv.FormatInt(t.SizeBytes, 10), t.CreatedAt.Local().Format(time.DateTime)})
			}
			c.table("NAME\tKIND\tHOOKS\tSIZE\tCREATED", rows)
			return nil
		},
	}
	var dir, tarFile, from string
	var hooks client.Hooks
	add := &cobra.Command{
		Use:   "add NAME (--dir DIR | --tar FILE | --from TEMPLATE) [--setup SCRIPT] [--session-setup SCRIPT] [--session-teardown SCRIPT]",
		Short: "Register a root filesystem as a template, or define one on another with hooks (admin)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			given := 0
			for _, v := range []string{dir, tarFile, from} {
				if v != "" {
					given++
				}
			}
			if given != 1 {
				return errors.New("give exactly one of --dir (a directory on the server's host), --tar (a local tar file, - for stdin) and --from (an existing template)")
			}
			cl, err := c.client()
			if err != nil {
				return err
			}
			var t *client.Template
			switch {
			case from != "":
				if t, err = cl.DefineTemplate(cmd.Context(), args[0], from, hooks); err != nil {
					return err
				}
			case dir != "":
				abs, err := filepath.Abs(dir)
				if err != nil {
					return err
				}
				t, err = cl.CreateTemplateFromDir(cmd.Context(), args[0], abs)
				if err != nil {
					return err
				}
			default:
				var r io.Reader = c.stdin
				if tarFile != "-" {
					f, err := os.Open(tarFile)
					if err != nil {
						return err
					}
					defer f.Close()
					r = f
				}
				if t, err = cl.CreateTemplateFromTar(cmd.Context(), args[0], r); err != nil {
					return err
				}
			}
			if from == "" && hooks != (client.Hooks{}) {
				if t, err = cl.DefineTemplate(cmd.Context(), args[0], args[0], hooks); err != nil {
					return err
				}
			}
			if c.json {
				return c.printJSON(t)
			}
			fmt.Fprintln(c.stdout, t.Name)
			return nil
		},
	}
	add.Flags().StringVar(&dir, "dir", "", "root filesystem directory on the server's host")
	add.Flags().StringVar(&tarFile, "tar", "", "root filesystem tar archive (- for standard input)")
	add.Flags().StringVar(&from, "from", "", "use this template's files")
	add.Flags().StringVar(&hooks.Setup, "setup", "", "shell script run as root once per sandbox, before it is ready")
	add.Flags().StringVar(&hooks.SessionSetup, "session-setup", "", "shell script run as root before each session")
	add.Flags().StringVar(&hooks.SessionTeardown, "session-teardown", "", "shell script run as root after each session")
	add.Flags().IntVar(&hooks.SetupTimeout, "setup-timeout", 0, "seconds each hook may take (default 600)")
	rm := &cobra.Command{
		Use: "rm NAME", Short: "Delete a template no sandbox uses (admin)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			return cl.DeleteTemplate(cmd.Context(), args[0])
		},
	}
	cmd.AddCommand(list, add, rm)
	return cmd
}

func (c *cli) keysCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "keys", Short: "Manage API keys (admin)"}
	var tenant string
	var admin bool
	create := &cobra.Command{
		Use: "create --tenant NAME", Short: "Create an API key and print it", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if tenant == "" {
				return errors.New("--tenant is required")
			}
			cl, err := c.client()
			if err != nil {
				return err
			}
			k, err := cl.CreateKey(cmd.Context(), tenant, admin)
			if err != nil {
				return err
			}
			if c.json {
				return c.printJSON(k)
			}
			fmt.Fprintln(c.stdout, k.Secret)
			return nil
		},
	}
	create.Flags().StringVar(&tenant, "tenant", "", "tenant the key belongs to")
	create.Flags().BoolVar(&admin, "admin", false, "the key may manage keys and templates")
	list := &cobra.Command{
		Use: "list", Aliases: []string{"ls"}, Short: "List API keys", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			keys, err := cl.ListKeys(cmd.Context())
			if err != nil {
				return err
			}
			if c.json {
				return c.printJSON(keys)
			}
			rows := make([][]string, 0, len(keys))
			for _, k := range keys {
				state := "valid"
				if k.RevokedAt != nil {
					state = "revoked"
				}
				rows = append(rows, []string{k.ID, k.Tenant, strconv.FormatBool(k.Admin), state, k.CreatedAt.Local().Format(time.DateTime)})
			}
			c.table("ID\tTENANT\tADMIN\tSTATE\tCREATED", rows)
			return nil
		},
	}
	revoke := &cobra.Command{
		Use: "revoke ID", Short: "Revoke an API key", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			return cl.RevokeKey(cmd.Context(), args[0])
		},
	}
	cmd.AddCommand(create, list, revoke)
	return cmd
}
