package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/sandpool/sandpool/client"
)

func (c *cli) execCommand() *cobra.Command {
	var (
		user, cwd string
		env       []string
		timeout   float64
		withStdin bool
		terminal  bool
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
			if terminal {
				st, err := c.execTerminal(cmd.Context(), cl, args[0], req)
				if err != nil {
					return err
				}
				if st.ExitCode != 0 {
					return exitError(st.ExitCode)
				}
				return nil
			}
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
	f.Float64Var(&timeout, "timeout", 0, "kill the command, and what it started, after this many seconds")
	f.BoolVarP(&withStdin, "stdin", "i", false, "send this command's standard input (up to 64 MiB)")
	f.BoolVarP(&terminal, "tty", "t", false, "run it on a terminal the size of this one, interactively (keystrokes, Ctrl-C and window size go through)")
	return cmd
}

// processCommand is about the processes a sandbox runs.
func (c *cli) processCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "process", Aliases: []string{"processes", "ps"}, Short: "List and kill a sandbox's processes"}
	list := &cobra.Command{
		Use: "list ID", Aliases: []string{"ls"}, Short: "List the processes a sandbox tracks", Args: cobra.ExactArgs(1),
		RunE: act(c, func(ctx context.Context, cl *client.Client, args []string) ([]client.Process, error) {
			return cl.ListProcesses(ctx, args[0])
		}, func(list []client.Process) error {
			rows := make([][]string, 0, len(list))
			for _, p := range list {
				state := "running"
				if !p.Running && p.Exit != nil {
					state = "exited " + strconv.Itoa(p.Exit.ExitCode)
				}
				rows = append(rows, []string{p.ID, strconv.Itoa(p.Pid), state, strconv.FormatBool(p.Background), strings.Join(p.Cmd, " ")})
			}
			return c.table("ID\tPID\tSTATE\tBACKGROUND\tCOMMAND", rows)
		}),
	}
	var all bool
	var signal string
	kill := &cobra.Command{
		Use:   "kill ID (PROCESS | --all)",
		Short: "Signal one process, or kill every process of the sandbox but its agent (--all)",
		Args:  cobra.RangeArgs(1, 2),
		RunE: act(c, func(ctx context.Context, cl *client.Client, args []string) (any, error) {
			switch {
			case all && len(args) == 1:
				n, err := cl.KillAll(ctx, args[0])
				if err != nil {
					return nil, err
				}
				return map[string]int{"killed": n}, nil
			case !all && len(args) == 2:
				return nil, cl.Signal(ctx, args[0], args[1], signal)
			}
			return nil, fmt.Errorf("give a process id, or --all (not both)")
		}, func(v any) error {
			fmt.Fprintf(c.stderr, "killed %d processes\n", v.(map[string]int)["killed"])
			return nil
		}),
	}
	kill.Flags().BoolVar(&all, "all", false, "kill every process of the sandbox (a fork bomb's leftovers, say); the sandbox lives on")
	kill.Flags().StringVarP(&signal, "signal", "s", "KILL", "signal for one process (TERM, KILL, 15, ...)")
	cmd.AddCommand(list, kill)
	return cmd
}
