// Package pool keeps warm pools of ready sandboxes and hands them out:
// acquire takes an idle sandbox atomically in the store and health-checks
// it, release resets it for the next session (or destroys it), and a
// replenish loop per pool keeps min_idle <= idle <= max_idle within
// max_total.
package pool

import (
	"fmt"

	"github.com/sandpool/sandpool/internal/pattern"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/proc"
	"github.com/sandpool/sandpool/internal/sandbox"
)

// Acquire policies: what an acquire does when no idle sandbox is healthy.
const (
	FailFast     = "fail_fast"     // answer "pool empty" at once
	DirectCreate = "direct_create" // make one for the caller (within max_total)
	Wait         = "wait"          // wait for one up to acquire_timeout
)

// Pool statuses.
const (
	StatusActive   = "active"
	StatusDegraded = "degraded" // creating sandboxes keeps failing; backing off
	StatusDraining = "draining" // being deleted: acquires refused
)

// Config is a pool's settings. Durations are in seconds.
type Config struct {
	Name     string            `json:"name"`
	Template string            `json:"template"`
	Limits   sandbox.Limits    `json:"limits,omitzero"`
	Env      map[string]string `json:"env,omitempty"`
	// Network is the egress policy of the pool's sandboxes (nil: the
	// server's default); a reset gives it back to a sandbox whose session
	// changed it.
	Network *sandbox.Network `json:"network,omitempty"`

	// MinIdle idle sandboxes are kept ready; at most MaxIdle (default:
	// twice MinIdle, at least 1) stay idle; at most MaxTotal (0: no limit but the node's)
	// exist, idle and in use together.
	MinIdle  int `json:"min_idle"`
	MaxIdle  int `json:"max_idle"`
	MaxTotal int `json:"max_total"`
	// MaxUses sessions a sandbox serves before it is destroyed (0: no limit).
	MaxUses int `json:"max_uses"`
	// MaxIdleTime destroys sandboxes idle longer than this, keeping
	// MinIdle (0: never).
	MaxIdleTime float64 `json:"max_idle_time"`
	// AcquirePolicy is fail_fast (default), direct_create or wait;
	// AcquireTimeout bounds a wait (default 30).
	AcquirePolicy  string  `json:"acquire_policy"`
	AcquireTimeout float64 `json:"acquire_timeout"`
	// HealthCheckTimeout bounds the agent round trip of each acquire
	// (default 1).
	HealthCheckTimeout float64 `json:"health_check_timeout"`
	// SessionTimeout destroys an acquired sandbox after this many seconds
	// without activity, so a caller that never releases it does not keep
	// it for ever (0: never; the pool makes another).
	SessionTimeout int `json:"session_timeout"`
}

var nameRE = pattern.New(`^[a-z0-9][a-z0-9._-]*$`, 1, 63)

// WithDefaults fills unset settings.
func (c Config) WithDefaults() Config {
	if c.MaxIdle == 0 {
		// Room for released sandboxes above the floor, so a busy pool
		// reuses them instead of making new ones and destroying old.
		c.MaxIdle = max(2*c.MinIdle, 1)
		if c.MaxTotal > 0 {
			c.MaxIdle = max(min(c.MaxIdle, c.MaxTotal), c.MinIdle)
		}
	}
	if c.AcquirePolicy == "" {
		c.AcquirePolicy = FailFast
	}
	if c.AcquireTimeout == 0 {
		c.AcquireTimeout = 30
	}
	if c.HealthCheckTimeout == 0 {
		c.HealthCheckTimeout = 1
	}
	return c
}

// Validate names the first bad setting.
func (c Config) Validate() error {
	bad := func(format string, args ...any) error {
		return errdefs.Userf(errdefs.ErrInvalid, "pool %s: %s", c.Name, fmt.Sprintf(format, args...))
	}
	if err := proc.CheckEnv(c.Env); err != nil {
		return bad("%v", err)
	}
	switch {
	case !nameRE.MatchString(c.Name):
		return errdefs.Userf(errdefs.ErrInvalid, "invalid pool name %q: use a-z, 0-9, '.', '_' and '-', at most 63", c.Name)
	case c.Template == "":
		return bad("template is required")
	case c.MinIdle < 0 || c.MinIdle > 10000:
		return bad("min_idle %d out of range 0-10000", c.MinIdle)
	case c.MaxIdle < c.MinIdle:
		return bad("max_idle %d is below min_idle %d", c.MaxIdle, c.MinIdle)
	case c.MaxTotal < 0:
		return bad("max_total %d must not be negative", c.MaxTotal)
	case c.MaxTotal > 0 && c.MaxTotal < c.MaxIdle:
		return bad("max_total %d is below max_idle %d", c.MaxTotal, c.MaxIdle)
	case c.MaxUses < 0:
		return bad("max_uses %d must not be negative", c.MaxUses)
	case c.MaxIdleTime < 0:
		return bad("max_idle_time %g must not be negative", c.MaxIdleTime)
	case c.AcquirePolicy != FailFast && c.AcquirePolicy != DirectCreate && c.AcquirePolicy != Wait:
		return bad("acquire_policy %q: want fail_fast, direct_create or wait", c.AcquirePolicy)
	case c.AcquireTimeout < 0 || c.AcquireTimeout > 3600:
		return bad("acquire_timeout %g out of range 0-3600", c.AcquireTimeout)
	case c.SessionTimeout < 0 || c.SessionTimeout > 30*24*3600:
		return bad("session_timeout %d out of range 0-2592000", c.SessionTimeout)
	case c.HealthCheckTimeout < 0 || c.HealthCheckTimeout > 60:
		return bad("health_check_timeout %g out of range 0-60", c.HealthCheckTimeout)
	}
	return nil
}
