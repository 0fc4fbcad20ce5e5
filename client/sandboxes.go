package client

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"time"
)

// Limits bound what a sandbox may use. Zero means the server's default.
type Limits struct {
	CPUs        float64 `json:"cpus,omitempty"`
	MemoryBytes int64   `json:"memory_bytes,omitempty"`
	Pids        int64   `json:"pids,omitempty"`
	DiskBytes   int64   `json:"disk_bytes,omitempty"`
	// GPUs is how many of the node's GPUs the sandbox gets, each its own.
	// More than are free now is a 409 with code gpus_exhausted.
	GPUs int `json:"gpus,omitempty"`
}

// Sandbox is a sandbox as the server reports it.
type Sandbox struct {
	ID       string            `json:"id"`
	Template string            `json:"template"`
	Status   string            `json:"status"`
	Limits   Limits            `json:"limits"`
	Env      map[string]string `json:"env,omitempty"`
	Metadata map[string]string `json:"metadata,omitempty"`
	// Network is its egress policy now.
	Network Network `json:"network"`
	// Timeout is seconds of inactivity before OnTimeout ("pause" or
	// "kill"); ArchiveAfter seconds paused before archived.
	Timeout      int    `json:"timeout"`
	OnTimeout    string `json:"on_timeout"`
	ArchiveAfter int    `json:"archive_after"`
	// AutoResume: calls on it while it is paused resume it first.
	AutoResume bool `json:"auto_resume"`
	// TimesOutAt is when it will be paused or killed if nothing happens.
	TimesOutAt   *time.Time `json:"times_out_at,omitempty"`
	LastActivity *time.Time `json:"last_activity,omitempty"`
	// PausedAt, Archived and TimeoutLeft (seconds) describe a paused
	// sandbox.
	PausedAt    *time.Time `json:"paused_at,omitempty"`
	Archived    bool       `json:"archived,omitempty"`
	TimeoutLeft *float64   `json:"timeout_left,omitempty"`
	Pool        string     `json:"pool,omitempty"`
	Uses        int        `json:"uses,omitempty"`
	// Node is the node it lives on; any node answers for it.
	Node      string    `json:"node"`
	Error     string    `json:"error,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// CreateSandboxRequest asks for a sandbox.
type CreateSandboxRequest struct {
	Template string            `json:"template"`
	Limits   Limits            `json:"limits,omitzero"`
	Env      map[string]string `json:"env,omitempty"`
	Metadata map[string]string `json:"metadata,omitempty"`
	// Network is the sandbox's egress policy; nil means the server's
	// default.
	Network *Network `json:"network,omitempty"`
	// Timeout pauses (or, with OnTimeout "kill", destroys) the sandbox
	// after this many seconds without activity; 0 means never.
	Timeout   int    `json:"timeout,omitempty"`
	OnTimeout string `json:"on_timeout,omitempty"`
	// ArchiveAfter is seconds a paused sandbox stays frozen before its
	// processes are stopped to free memory (0: the server's default).
	ArchiveAfter int `json:"archive_after,omitempty"`
	// AutoResume, if false, makes calls on the sandbox while it is paused
	// fail with 409 instead of resuming it (default true).
	AutoResume *bool `json:"auto_resume,omitempty"`
	// Pool, if set, acquires a sandbox from that pool instead (give no
	// other settings; Template may name the pool's template).
	Pool string `json:"pool,omitempty"`
	// IdempotencyKey makes retries of this create return the same
	// sandbox; empty means the client makes one up.
	IdempotencyKey string `json:"-"`
}

// CreateSandbox makes a sandbox. It is sent with an idempotency key and
// retried like a read: a retry returns the same sandbox.
func (c *Client) CreateSandbox(ctx context.Context, req CreateSandboxRequest) (*Sandbox, error) {
	key := req.IdempotencyKey
	if key == "" {
		key = newIdempotencyKey()
	}
	h := http.Header{}
	h.Set("Idempotency-Key", key)
	var sb Sandbox
	err := c.call(ctx, request{method: "POST", path: "/v1/sandboxes", body: jsonBody(req), header: h, retry: true}, &sb)
	if err != nil {
		return nil, err
	}
	return &sb, nil
}

// GetSandbox returns one sandbox.
func (c *Client) GetSandbox(ctx context.Context, id string) (*Sandbox, error) {
	var sb Sandbox
	if err := c.call(ctx, request{method: "GET", path: "/v1/sandboxes/" + url.PathEscape(id), retry: true}, &sb); err != nil {
		return nil, err
	}
	return &sb, nil
}

// ListOptions filter ListSandboxes.
type ListOptions struct {
	// Statuses to include ("all" for every one); empty means active ones.
	Statuses []string
	// Metadata entries a sandbox must have.
	Metadata map[string]string
}

// ListSandboxes returns the caller's sandboxes, oldest first.
func (c *Client) ListSandboxes(ctx context.Context, opts ListOptions) ([]Sandbox, error) {
	q := url.Values{}
	for _, s := range opts.Statuses {
		q.Add("status", s)
	}
	for k, v := range opts.Metadata {
		q.Add("metadata", k+"="+v)
	}
	var out struct {
		Sandboxes []Sandbox `json:"sandboxes"`
	}
	if err := c.call(ctx, request{method: "GET", path: "/v1/sandboxes", query: q, retry: true}, &out); err != nil {
		return nil, err
	}
	return out.Sandboxes, nil
}

// DeleteSandbox destroys a sandbox.
func (c *Client) DeleteSandbox(ctx context.Context, id string) error {
	return c.call(ctx, request{method: "DELETE", path: "/v1/sandboxes/" + url.PathEscape(id)}, nil)
}

// Ping marks a sandbox as active.
func (c *Client) Ping(ctx context.Context, id string) (*Sandbox, error) {
	var sb Sandbox
	if err := c.call(ctx, request{method: "POST", path: "/v1/sandboxes/" + url.PathEscape(id) + "/ping"}, &sb); err != nil {
		return nil, err
	}
	return &sb, nil
}

// Template is something sandboxes can be made from.
type Template struct {
	Name      string    `json:"name"`
	BuiltIn   bool      `json:"built_in"`
	CreatedAt time.Time `json:"created_at"`
	SizeBytes int64     `json:"size_bytes"`
	// From is the template whose files this one uses, if any.
	From  string `json:"from,omitempty"`
	Hooks Hooks  `json:"hooks,omitzero"`
	// Origin says where its files came from ("image REF@DIGEST",
	// "Dockerfile (FROM ...)", "directory DIR", "tar archive").
	Origin string `json:"origin,omitempty"`
	// Image describes a template made from an image or a Dockerfile.
	Image *TemplateImage `json:"image,omitempty"`
	// Limits are what its sandboxes get where a create leaves a limit at
	// zero (GPUs: 1 makes it a GPU template).
	Limits *Limits `json:"limits,omitempty"`
}

// Hooks are a template's shell scripts, run as root inside the sandbox.
type Hooks struct {
	// Setup runs once per sandbox before it is ready; what it writes is
	// kept for every session.
	Setup string `json:"setup,omitempty"`
	// SessionSetup runs before each session, SessionTeardown after.
	SessionSetup    string `json:"session_setup,omitempty"`
	SessionTeardown string `json:"session_teardown,omitempty"`
	// SetupTimeout bounds each hook in seconds (default 600).
	SetupTimeout int `json:"setup_timeout,omitempty"`
	// Network is the egress policy Setup runs under (also in a build),
	// to install packages, say; nil means the sandbox's own.
	Network *Network `json:"network,omitempty"`
}

// DefineTemplate makes a template that uses the files of template from,
// with hooks (admin key).
func (c *Client) DefineTemplate(ctx context.Context, name, from string, hooks Hooks) (*Template, error) {
	return c.AddTemplate(ctx, TemplateRequest{Name: name, From: from, Hooks: hooks}, nil)
}

// ListTemplates returns the templates.
func (c *Client) ListTemplates(ctx context.Context) ([]Template, error) {
	var out struct {
		Templates []Template `json:"templates"`
	}
	err := c.call(ctx, request{method: "GET", path: "/v1/templates", retry: true}, &out)
	return out.Templates, err
}

// CreateTemplateFromDir registers a root filesystem directory on the
// server's host as a template (admin key).
func (c *Client) CreateTemplateFromDir(ctx context.Context, name, dir string) (*Template, error) {
	return c.AddTemplate(ctx, TemplateRequest{Name: name, Dir: dir}, nil)
}

// CreateTemplateFromTar registers a root filesystem tar stream as a
// template (admin key).
func (c *Client) CreateTemplateFromTar(ctx context.Context, name string, tar io.Reader) (*Template, error) {
	return c.AddTemplateFromTar(ctx, name, tar, TemplateUpload{}, nil)
}

// DeleteTemplate removes a template no sandbox uses (admin key).
func (c *Client) DeleteTemplate(ctx context.Context, name string) error {
	return c.call(ctx, request{method: "DELETE", path: "/v1/templates/" + url.PathEscape(name)}, nil)
}

// Key is an API key. Secret is set only when the key is created.
type Key struct {
	ID        string     `json:"id"`
	Tenant    string     `json:"tenant"`
	Admin     bool       `json:"admin"`
	CreatedAt time.Time  `json:"created_at"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
	Secret    string     `json:"key,omitempty"`
}

// CreateKey makes an API key for tenant (admin key).
func (c *Client) CreateKey(ctx context.Context, tenant string, admin bool) (*Key, error) {
	return c.CreateKeyWith(ctx, KeyRequest{Tenant: tenant, Admin: admin})
}

// KeyRequest asks for an API key.
type KeyRequest struct {
	Tenant string `json:"tenant"`
	Admin  bool   `json:"admin,omitempty"`
	// E2B makes the secret in the form the E2B SDKs accept (e2b_ and 40
	// hex digits), for use with sandpool's E2B-compatible API.
	E2B bool `json:"e2b,omitempty"`
}

// CreateKeyWith makes an API key (admin key).
func (c *Client) CreateKeyWith(ctx context.Context, req KeyRequest) (*Key, error) {
	var k Key
	err := c.call(ctx, request{method: "POST", path: "/v1/keys", body: jsonBody(req)}, &k)
	return &k, err
}

// ListKeys lists API keys (admin key).
func (c *Client) ListKeys(ctx context.Context) ([]Key, error) {
	var out struct {
		Keys []Key `json:"keys"`
	}
	err := c.call(ctx, request{method: "GET", path: "/v1/keys", retry: true}, &out)
	return out.Keys, err
}

// RevokeKey revokes an API key (admin key).
func (c *Client) RevokeKey(ctx context.Context, id string) error {
	return c.call(ctx, request{method: "DELETE", path: "/v1/keys/" + url.PathEscape(id)}, nil)
}

// NodeInfo is what a node reports of itself and its host.
type NodeInfo struct {
	Node               string `json:"node"`
	Sandboxes          int    `json:"sandboxes"`
	SandboxMemoryBytes int64  `json:"sandbox_memory_bytes"`
	MemTotalBytes      int64  `json:"mem_total_bytes"`
	MemAvailableBytes  int64  `json:"mem_available_bytes"`
	ServerRSSBytes     int64  `json:"server_rss_bytes"`
	// Build is which build of sandpool the node runs.
	Build BuildInfo `json:"build"`
	// GPUs are the GPUs the node hands out, with their holders;
	// GPUSharing says whether several sandboxes may hold one; GPUDriver
	// is the kernel driver's version; GPUNotes say what discovery missed.
	GPUs       []GPU    `json:"gpus"`
	GPUSharing bool     `json:"gpu_sharing,omitempty"`
	GPUDriver  string   `json:"gpu_driver,omitempty"`
	GPUNotes   []string `json:"gpu_notes,omitempty"`
}

// GPU is one of a node's GPUs.
type GPU struct {
	// Index is N of its node /dev/nvidiaN.
	Index       int    `json:"index"`
	UUID        string `json:"uuid,omitempty"`
	Model       string `json:"model,omitempty"`
	BusID       string `json:"bus_id,omitempty"`
	MemoryBytes int64  `json:"memory_bytes,omitempty"`
	// Sandboxes are those holding it.
	Sandboxes []string `json:"sandboxes,omitempty"`
}

// BuildInfo describes a build of sandpool.
type BuildInfo struct {
	Version   string `json:"version"`
	Revision  string `json:"revision,omitempty"`
	Time      string `json:"time,omitempty"`
	Modified  bool   `json:"modified,omitempty"`
	GoVersion string `json:"go_version"`
}

// Node reports the node this client talks to and its host's memory
// (admin key).
func (c *Client) Node(ctx context.Context) (*NodeInfo, error) {
	var n NodeInfo
	if err := c.call(ctx, request{method: "GET", path: "/v1/node", retry: true}, &n); err != nil {
		return nil, err
	}
	return &n, nil
}
