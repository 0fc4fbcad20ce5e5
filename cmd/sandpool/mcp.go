package main

import (
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/sandpool/sandpool/internal/buildinfo"
	"github.com/sandpool/sandpool/internal/mcpserver"
)

// mcpCommand is `sandpool mcp`: an MCP server over stdio for desktop and
// CLI agents, talking to a sandpool server with the CLI's --url and
// --api-key.
func (c *cli) mcpCommand() *cobra.Command {
	var cfg mcpserver.Config
	cmd := &cobra.Command{
		Use:   "mcp",
		Short: "Serve MCP (Model Context Protocol) over stdio, for AI agents",
		Long: `Serve MCP over standard input and output: an agent (Claude Desktop, an IDE,
a CLI agent) starts "sandpool mcp" and gets tools to run commands and code in
sandboxes and move files. It talks to the sandpool server at --url with
--api-key (or SANDPOOL_URL and SANDPOOL_API_KEY). The session's own sandbox is
made on the first call that needs one (or acquired from --pool) and destroyed
(or released) when the agent closes the session.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			cfg.Version = buildinfo.Get().Version
			// stdout is the protocol's: the log goes to stderr.
			cfg.Log = slog.New(slog.NewTextHandler(c.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
			return mcpserver.ServeStdio(cmd.Context(), cl, cfg, c.stdin, c.stdout)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Pool, "pool", "", "acquire the session's sandbox from this warm pool (and offer acquire_from_pool and release)")
	f.StringVar(&cfg.Template, "template", "", "template of the session's sandbox when there is no pool (default base)")
	return cmd
}
