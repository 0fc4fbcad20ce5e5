package e2b

import (
	"encoding/json"
	"math"
	"time"

	"github.com/sandpool/sandpool/internal/sandbox"
)

// The control plane's JSON, with E2B's names (mixed case on purpose: they
// are the SDKs').

// newSandboxBody is the body of a create (NewSandbox, NewSandboxV2).
// Unknown keys are ignored, as E2B's API does.
type newSandboxBody struct {
	TemplateID string            `json:"templateID"`
	Timeout    *int              `json:"timeout"`
	Metadata   map[string]string `json:"metadata"`
	EnvVars    map[string]string `json:"envVars"`
	AutoPause  *bool             `json:"autoPause"`
	AutoResume *struct {
		Enabled bool `json:"enabled"`
	} `json:"autoResume"`
	VolumeMounts []json.RawMessage `json:"volumeMounts"`
	// AllowInternetAccess and Network are the sandbox's egress (toNetwork).
	AllowInternetAccess *bool        `json:"allow_internet_access"`
	Network             *networkBody `json:"network"`
	// Accepted and ignored: secure is always so; mcp and iam are not
	// offered.
	Secure          *bool           `json:"secure"`
	AutoPauseMemory *bool           `json:"autoPauseMemory"`
	MCP             json.RawMessage `json:"mcp"`
	IAM             json.RawMessage `json:"iam"`
}

// timeoutBody is the body of connect, resume and timeout.
type timeoutBody struct {
	Timeout   *int  `json:"timeout"`
	AutoPause *bool `json:"autoPause"`
}

// sandboxJSON answers create, connect and resume (Sandbox).
type sandboxJSON struct {
	TemplateID         string  `json:"templateID"`
	SandboxID          string  `json:"sandboxID"`
	ClientID           string  `json:"clientID"`
	EnvdVersion        string  `json:"envdVersion"`
	Alias              string  `json:"alias,omitempty"`
	EnvdAccessToken    string  `json:"envdAccessToken"`
	TrafficAccessToken *string `json:"trafficAccessToken"`
	Domain             string  `json:"domain"`
}

// lifecycleJSON says what a sandbox's timeout does.
type lifecycleJSON struct {
	AutoResume bool   `json:"autoResume"`
	OnTimeout  string `json:"onTimeout"`
}

// listedJSON is a sandbox in a list (ListedSandbox).
type listedJSON struct {
	TemplateID  string            `json:"templateID"`
	Alias       string            `json:"alias,omitempty"`
	SandboxID   string            `json:"sandboxID"`
	ClientID    string            `json:"clientID"`
	StartedAt   time.Time         `json:"startedAt"`
	EndAt       time.Time         `json:"endAt"`
	CPUCount    int               `json:"cpuCount"`
	MemoryMB    int64             `json:"memoryMB"`
	DiskSizeMB  int64             `json:"diskSizeMB"`
	Metadata    map[string]string `json:"metadata,omitempty"`
	State       string            `json:"state"`
	EnvdVersion string            `json:"envdVersion"`
}

// detailJSON is one sandbox (SandboxDetail).
type detailJSON struct {
	listedJSON
	EnvdAccessToken     string         `json:"envdAccessToken"`
	Domain              string         `json:"domain"`
	Lifecycle           *lifecycleJSON `json:"lifecycle"`
	AllowInternetAccess bool           `json:"allowInternetAccess"`
	Network             *networkJSON   `json:"network,omitempty"`
}

// metricJSON is one measurement (SandboxMetric).
type metricJSON struct {
	Timestamp     time.Time `json:"timestamp"`
	TimestampUnix int64     `json:"timestampUnix"`
	CPUCount      int       `json:"cpuCount"`
	CPUUsedPct    float64   `json:"cpuUsedPct"`
	MemUsed       int64     `json:"memUsed"`
	MemTotal      int64     `json:"memTotal"`
	MemCache      int64     `json:"memCache"`
	DiskUsed      int64     `json:"diskUsed"`
	DiskTotal     int64     `json:"diskTotal"`
}

// noEnd is the end shown for a sandbox with no timeout: E2B has no such
// thing, and the SDKs need a time.
const noEnd = 100 * 365 * 24 * time.Hour

// state is a sandbox's state as E2B knows them: running or paused.
func state(sb sandbox.Sandbox) string {
	if sb.Status == sandbox.StatusPaused {
		return "paused"
	}
	return "running"
}

// visible reports whether the E2B API shows a sandbox: one that runs or is
// paused (a pool's idle ones belong to the pool).
func visible(sb sandbox.Sandbox) bool {
	return sb.Status == sandbox.StatusRunning || sb.Status == sandbox.StatusPaused
}

// endAt is when the sandbox's timeout acts, if nothing happens: sandpool's
// timeout counts inactivity, so this moves with every call.
func endAt(sb sandbox.Sandbox, now time.Time) time.Time {
	switch {
	case sb.Timeout == 0:
		return sb.CreatedAt.Add(noEnd)
	case sb.TimesOutAt != nil:
		return *sb.TimesOutAt
	case sb.Status == sandbox.StatusPaused && sb.TimeoutLeft != nil:
		return now.Add(time.Duration(*sb.TimeoutLeft * float64(time.Second)))
	}
	return now.Add(time.Duration(sb.Timeout) * time.Second) // a stream is open: activity now
}

func (s *Server) listed(sb sandbox.Sandbox, now time.Time) listedJSON {
	return listedJSON{TemplateID: sb.Template, Alias: sb.Template, SandboxID: toE2B(sb.ID), ClientID: sb.NodeName,
		StartedAt: sb.CreatedAt, EndAt: endAt(sb, now), CPUCount: max(int(math.Ceil(sb.Limits.CPUs)), 1),
		MemoryMB: sb.Limits.MemoryBytes >> 20, DiskSizeMB: sb.Limits.DiskBytes >> 20, Metadata: sb.Metadata,
		State: state(sb), EnvdVersion: EnvdVersion}
}

func (s *Server) detail(sb sandbox.Sandbox, now time.Time) detailJSON {
	internet, network := fromNetwork(sb.Network)
	return detailJSON{listedJSON: s.listed(sb, now), EnvdAccessToken: s.accessToken(sb), Domain: s.cfg.Domain,
		Lifecycle: &lifecycleJSON{AutoResume: sb.AutoResume, OnTimeout: sb.OnTimeout}, AllowInternetAccess: internet, Network: network}
}

// sandboxJSON describes a sandbox made or resumed for the caller. Its
// access token opens envd and the sandbox's ports; it is the traffic
// token too (what E2B asks for on ports of a sandbox closed to the
// public, as sandpool's always are).
func (s *Server) sandboxJSON(sb sandbox.Sandbox) sandboxJSON {
	tok := s.accessToken(sb)
	return sandboxJSON{TemplateID: sb.Template, SandboxID: toE2B(sb.ID), ClientID: sb.NodeName, EnvdVersion: EnvdVersion,
		Alias: sb.Template, EnvdAccessToken: tok, TrafficAccessToken: &tok, Domain: s.cfg.Domain}
}
