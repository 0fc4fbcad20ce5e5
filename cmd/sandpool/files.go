package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/sandpool/sandpool/client"
)

func (c *cli) filesCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "files", Short: "Move files in and out of a sandbox"}
	var user string
	cmd.PersistentFlags().StringVarP(&user, "user", "u", "", "act as this user of the sandbox (default: its user)")
	cmd.AddCommand(c.filesPut(&user), c.filesGet(&user), c.filesList(&user), c.filesWatch(&user))
	return cmd
}

func (c *cli) filesPut(user *string) *cobra.Command {
	var mode string
	put := &cobra.Command{
		Use:   "put ID LOCAL REMOTE",
		Short: "Upload a file (LOCAL - reads standard input)",
		Args:  cobra.ExactArgs(3),
		RunE: act(c, func(ctx context.Context, cl *client.Client, args []string) (map[string]any, error) {
			var m uint64
			if mode != "" {
				var err error
				if m, err = strconv.ParseUint(mode, 8, 32); err != nil {
					return nil, fmt.Errorf("--mode %q: want octal, like 755", mode)
				}
			}
			var r io.Reader = c.stdin
			if args[1] != "-" {
				f, err := os.Open(args[1])
				if err != nil {
					return nil, err
				}
				defer f.Close()
				r = f
			}
			n, err := cl.WriteFile(ctx, args[0], args[2], r, client.WriteOptions{Mode: uint32(m), User: *user, MakeParents: true})
			if err != nil {
				return nil, err
			}
			return map[string]any{"path": args[2], "size": n}, nil
		}, func(v map[string]any) error {
			fmt.Fprintf(c.stderr, "wrote %d bytes to %s\n", v["size"], v["path"])
			return nil
		}),
	}
	put.Flags().StringVar(&mode, "mode", "", "permission bits in octal (default 644)")
	return put
}

func (c *cli) filesGet(user *string) *cobra.Command {
	return &cobra.Command{
		Use:   "get ID REMOTE [LOCAL]",
		Short: "Download a file (to standard output without LOCAL)",
		Args:  cobra.RangeArgs(2, 3),
		RunE: func(cmd *cobra.Command, args []string) (retErr error) {
			cl, err := c.client()
			if err != nil {
				return err
			}
			rc, err := cl.ReadFileAs(cmd.Context(), args[0], args[1], *user)
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
}

func (c *cli) filesList(user *string) *cobra.Command {
	var depth int
	ls := &cobra.Command{
		Use:   "ls ID [PATH]",
		Short: "List a directory (default: /home/user)",
		Args:  cobra.RangeArgs(1, 2),
		RunE: act(c, func(ctx context.Context, cl *client.Client, args []string) ([]client.FileInfo, error) {
			p := "/home/user"
			if len(args) == 2 {
				p = args[1]
			}
			return cl.ListFilesWith(ctx, args[0], p, client.ListFilesOptions{User: *user, Depth: depth})
		}, func(list []client.FileInfo) error {
			rows := make([][]string, 0, len(list))
			for _, f := range list {
				name := f.Path
				if depth <= 1 {
					name = f.Name
				}
				if f.Target != "" {
					name += " -> " + f.Target
				}
				rows = append(rows, []string{fmt.Sprintf("%04o", f.Mode), f.Type, strconv.FormatInt(f.Size, 10),
					f.ModTime.Local().Format(time.DateTime), name})
			}
			return c.table("MODE\tTYPE\tSIZE\tMODIFIED\tNAME", rows)
		}),
	}
	ls.Flags().IntVar(&depth, "depth", 1, "levels to list (1: the directory's own entries)")
	return ls
}
