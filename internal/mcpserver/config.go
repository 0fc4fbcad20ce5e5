package mcpserver

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/sandpool/sandpool/internal/pattern"
)

// Defaults, in one place.
const (
	defaultTemplate       = "base"
	defaultCommandTimeout = 60 * time.Second
	maxCommandTimeout     = time.Hour
	defaultMaxOutputBytes = 32 << 10
	defaultMaxReadBytes   = 256 << 10
	defaultKeepAlive      = 30 * time.Second
	defaultSessionTimeout = 30 * time.Minute
	// sandboxTimeoutFactor times KeepAlive is the inactivity timeout
	// (with on_timeout kill) of a sandbox made for a session: the pings
	// keep it alive while the session lasts, and a session whose process
	// died without ending it leaves nothing behind for long.
	sandboxTimeoutFactor = 4
	// cleanupTimeout bounds destroying or releasing one session's
	// sandboxes when it ends.
	cleanupTimeout = 30 * time.Second
	// homeDir is where relative paths and commands start.
	homeDir = "/home/user"
)

// Config configures the MCP front end. The zero value works.
type Config struct {
	// Pool, if set, is the pool a session's own sandbox is acquired from
	// (and given back to when the session ends); the tools
	// acquire_from_pool and release are offered then. Over HTTP a client
	// may name another with /mcp?pool=NAME.
	Pool string
	// Template of a session's own sandbox when there is no pool
	// (default "base").
	Template string
	// CommandTimeout is run_command's and run_code's timeout when the
	// model gives none (default 60s; a model may ask for up to an hour).
	CommandTimeout time.Duration
	// MaxOutputBytes is how much of each of stdout and stderr a result
	// shows (default 32 KiB): the first and the last half, with a note
	// of what was left out between them.
	MaxOutputBytes int
	// MaxReadBytes is the largest file read_file returns (default 256 KiB).
	MaxReadBytes int64
	// KeepAlive is how often a session's sandboxes are pinged (default
	// 30s). A sandbox made for a session is killed by the server after
	// four times this without activity, so one whose session vanished
	// without ending (a killed process) does not stay for long.
	KeepAlive time.Duration
	// SessionTimeout ends an HTTP session that sent nothing for this long
	// (default 30m); its sandbox goes with it.
	SessionTimeout time.Duration
	// Version is told to clients as the server's version (default "dev").
	Version string
	// Log receives warnings about cleanups that failed (default: slog's).
	Log *slog.Logger
}

// poolName is what a pool name may be (the API checks it again); it
// keeps /mcp?pool= from naming anything odd.
var poolName = pattern.New(`^[a-z0-9][a-z0-9._-]*$`, 1, 63)

// Validate names the first bad setting.
func (c Config) Validate() error {
	switch {
	case c.Pool != "" && !poolName.MatchString(c.Pool):
		return fmt.Errorf("mcp: pool %q: want a-z, 0-9, '.', '_' and '-', at most 63", c.Pool)
	case c.CommandTimeout < 0 || c.CommandTimeout > maxCommandTimeout:
		return fmt.Errorf("mcp: command timeout %s: want 0 (the default, %s) up to %s", c.CommandTimeout, defaultCommandTimeout, maxCommandTimeout)
	case c.MaxOutputBytes < 0 || (c.MaxOutputBytes > 0 && c.MaxOutputBytes < 1024):
		return fmt.Errorf("mcp: max output bytes %d: want 0 (the default) or at least 1024", c.MaxOutputBytes)
	case c.MaxReadBytes < 0:
		return fmt.Errorf("mcp: max read bytes %d must not be negative", c.MaxReadBytes)
	case c.KeepAlive < 0 || (c.KeepAlive > 0 && c.KeepAlive < time.Second):
		return fmt.Errorf("mcp: keepalive %s: want 0 (the default) or at least 1s", c.KeepAlive)
	case c.SessionTimeout < 0:
		return fmt.Errorf("mcp: session timeout %s must not be negative", c.SessionTimeout)
	}
	return nil
}

// withDefaults fills in what was left zero.
func (c Config) withDefaults() Config {
	if c.Template == "" {
		c.Template = defaultTemplate
	}
	if c.CommandTimeout == 0 {
		c.CommandTimeout = defaultCommandTimeout
	}
	if c.MaxOutputBytes == 0 {
		c.MaxOutputBytes = defaultMaxOutputBytes
	}
	if c.MaxReadBytes == 0 {
		c.MaxReadBytes = defaultMaxReadBytes
	}
	if c.KeepAlive == 0 {
		c.KeepAlive = defaultKeepAlive
	}
	if c.SessionTimeout == 0 {
		c.SessionTimeout = defaultSessionTimeout
	}
	if c.Version == "" {
		c.Version = "dev"
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	return c
}
