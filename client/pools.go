package client

import (
	"context"
	"net/url"
	"time"
)

// PoolConfig is a pool's settings. Durations are in seconds.
type PoolConfig struct {
	Name     string            `json:"name"`
	Template string            `json:"template"`
	Limits   Limits            `json:"limits,omitzero"`
	Env      map[string]string `json:"env,omitempty"`
	// Network is the egress policy of the pool's sandboxes (nil: the
	// server's default); each reset gives it back after a session.
	Network *Network `json:"network,omitempty"`
	// MinIdle sandboxes are kept ready; at most MaxIdle (default twice
	// MinIdle, at least 1) stay idle; at most MaxTotal (0: no limit)
	// exist, idle and in use.
	MinIdle  int `json:"min_idle"`
	MaxIdle  int `json:"max_idle,omitempty"`
	MaxTotal int `json:"max_total,omitempty"`
	// MaxUses sessions per sandbox before it is destroyed (0: no limit).
	MaxUses int `json:"max_uses,omitempty"`
	// MaxIdleTime destroys sandboxes idle longer, keeping MinIdle.
	MaxIdleTime float64 `json:"max_idle_time,omitempty"`
	// AcquirePolicy: "fail_fast" (default), "direct_create" or "wait"
	// (for up to AcquireTimeout, default 30).
	AcquirePolicy      string  `json:"acquire_policy,omitempty"`
	AcquireTimeout     float64 `json:"acquire_timeout,omitempty"`
	HealthCheckTimeout float64 `json:"health_check_timeout,omitempty"`
	// SessionTimeout destroys an acquired sandbox after this many seconds
	// without activity (0: never).
	SessionTimeout int `json:"session_timeout,omitempty"`
}

// Pool is a pool with its status and live counts.
type Pool struct {
	PoolConfig
	Status    string    `json:"status"` // active, degraded, draining
	LastError string    `json:"last_error,omitempty"`
	Idle      int       `json:"idle"`
	InUse     int       `json:"in_use"`
	Creating  int       `json:"creating"`
	Resetting int       `json:"resetting"`
	CreatedAt time.Time `json:"created_at,omitzero"`
	// Leader is the name of the node answering if it holds the pool's
	// lease (it alone fills and sheds the pool).
	Leader string `json:"leader,omitempty"`
}

// PoolUpdate changes a pool's settings; nil fields keep their value.
type PoolUpdate struct {
	MinIdle            *int     `json:"min_idle,omitempty"`
	MaxIdle            *int     `json:"max_idle,omitempty"`
	MaxTotal           *int     `json:"max_total,omitempty"`
	MaxUses            *int     `json:"max_uses,omitempty"`
	MaxIdleTime        *float64 `json:"max_idle_time,omitempty"`
	AcquirePolicy      *string  `json:"acquire_policy,omitempty"`
	AcquireTimeout     *float64 `json:"acquire_timeout,omitempty"`
	HealthCheckTimeout *float64 `json:"health_check_timeout,omitempty"`
	SessionTimeout     *int     `json:"session_timeout,omitempty"`
}

func poolPath(name, rest string) string { return "/v1/pools/" + url.PathEscape(name) + rest }

// CreatePool makes a pool; it starts filling at once.
func (c *Client) CreatePool(ctx context.Context, cfg PoolConfig) (*Pool, error) {
	var p Pool
	if err := c.call(ctx, request{method: "POST", path: "/v1/pools", body: jsonBody(cfg)}, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// ListPools returns your pools.
func (c *Client) ListPools(ctx context.Context) ([]Pool, error) {
	var out struct {
		Pools []Pool `json:"pools"`
	}
	err := c.call(ctx, request{method: "GET", path: "/v1/pools", retry: true}, &out)
	return out.Pools, err
}

// GetPool returns one pool.
func (c *Client) GetPool(ctx context.Context, name string) (*Pool, error) {
	var p Pool
	if err := c.call(ctx, request{method: "GET", path: poolPath(name, ""), retry: true}, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// UpdatePool changes a pool's settings without disturbing sessions.
func (c *Client) UpdatePool(ctx context.Context, name string, u PoolUpdate) (*Pool, error) {
	var p Pool
	if err := c.call(ctx, request{method: "PATCH", path: poolPath(name, ""), body: jsonBody(u)}, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// DeletePool drains and deletes a pool.
func (c *Client) DeletePool(ctx context.Context, name string) error {
	return c.call(ctx, request{method: "DELETE", path: poolPath(name, "")}, nil)
}

// Acquire takes a ready sandbox from a pool. wait, if positive, overrides
// the pool's acquire_timeout for the wait policy. An empty pool is an
// *APIError with Code "pool_empty".
func (c *Client) Acquire(ctx context.Context, pool string, wait time.Duration) (*Sandbox, error) {
	var body []byte
	if wait > 0 {
		body = jsonBody(map[string]float64{"timeout": wait.Seconds()})
	}
	var sb Sandbox
	if err := c.call(ctx, request{method: "POST", path: poolPath(pool, "/acquire"), body: body}, &sb); err != nil {
		return nil, err
	}
	return &sb, nil
}

// Release ends your session on a pool sandbox: it is reset for the next
// one, or destroyed if fatal.
func (c *Client) Release(ctx context.Context, id string, fatal bool) (*Sandbox, error) {
	var body []byte
	if fatal {
		body = jsonBody(map[string]string{"outcome": "fatal"})
	}
	var sb Sandbox
	if err := c.call(ctx, request{method: "POST", path: sandboxPath(id, "/release"), body: body}, &sb); err != nil {
		return nil, err
	}
	return &sb, nil
}
