package client

import (
	"context"
	"net/url"
)

// Egress modes of a Network.
const (
	EgressNone      = "none"      // loopback only
	EgressOpen      = "open"      // every public address, less Deny
	EgressAllowlist = "allowlist" // only Allow, less Deny
)

// Network is a sandbox's egress policy: what it may reach outside itself.
// Entries of Allow (allowlist mode only) and Deny are CIDRs, IP addresses,
// host names and "*." wildcards (subdomains, not the apex). Whatever the
// policy, the server's host, other sandboxes and private, loopback and
// link-local ranges are never reached, unless the operator allowed a
// range.
type Network struct {
	// Egress is "none", "open" or "allowlist".
	Egress string   `json:"egress"`
	Allow  []string `json:"allow,omitempty"`
	Deny   []string `json:"deny,omitempty"`
}

// NetworkStats count a sandbox's traffic out, since its node (re)started.
type NetworkStats struct {
	BytesOut    uint64 `json:"bytes_out"`
	BytesIn     uint64 `json:"bytes_in"`
	Connections uint64 `json:"connections"` // TCP connections let through
	Refused     uint64 `json:"refused"`     // refused by the policy (or always-refused ranges, limits)
	Failed      uint64 `json:"failed"`      // let through, but the destination did not answer
	Active      int64  `json:"active"`      // open now
	DNSQueries  uint64 `json:"dns_queries"`
	DNSRefused  uint64 `json:"dns_refused"` // names the policy does not allow
}

// SandboxNetwork is a sandbox's egress policy and its counters.
type SandboxNetwork struct {
	Network
	Stats NetworkStats `json:"stats"`
}

// GetNetwork returns a sandbox's egress policy and traffic counters.
func (c *Client) GetNetwork(ctx context.Context, id string) (*SandboxNetwork, error) {
	var n SandboxNetwork
	err := c.call(ctx, request{method: "GET", path: "/v1/sandboxes/" + url.PathEscape(id) + "/network", retry: true}, &n)
	if err != nil {
		return nil, err
	}
	return &n, nil
}

// SetNetwork changes a sandbox's egress policy: the connections and DNS
// queries it starts from then on follow it.
func (c *Client) SetNetwork(ctx context.Context, id string, n Network) (*SandboxNetwork, error) {
	var out SandboxNetwork
	err := c.call(ctx, request{method: "PUT", path: "/v1/sandboxes/" + url.PathEscape(id) + "/network", body: jsonBody(n)}, &out)
	if err != nil {
		return nil, err
	}
	return &out, nil
}
