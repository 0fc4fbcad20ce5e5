package e2b

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"

	"github.com/sandpool/sandpool/internal/sandbox"
)

// allTraffic is E2B's "every address" (the SDKs' ALL_TRAFFIC): in denyOut
// it makes allowOut an allowlist.
const allTraffic = "0.0.0.0/0"

// networkBody is E2B's network configuration of a sandbox, as a create
// (with allow_internet_access beside it) and PUT /sandboxes/{id}/network
// send it.
type networkBody struct {
	AllowOut []string `json:"allowOut"`
	DenyOut  []string `json:"denyOut"`
	// Refused: sandpool neither injects headers nor chains proxies.
	Rules       json.RawMessage `json:"rules"`
	EgressProxy json.RawMessage `json:"egressProxy"`
	// Accepted and ignored: a sandbox's ports always need its token, and
	// the Host sandpool sends to a port is the sandbox's own.
	AllowPublicTraffic *bool           `json:"allowPublicTraffic"`
	MaskRequestHost    *string         `json:"maskRequestHost"`
	HTTPSPorts         json.RawMessage `json:"httpsPorts"`
}

// networkUpdateBody is the body of PUT /sandboxes/{id}/network.
type networkUpdateBody struct {
	networkBody
	AllowInternetAccess *bool `json:"allow_internet_access"`
}

// networkJSON is a sandbox's network as E2B shows it (SandboxDetail).
type networkJSON struct {
	AllowOut []string `json:"allowOut,omitempty"`
	DenyOut  []string `json:"denyOut,omitempty"`
}

// toNetwork maps E2B's egress settings onto a sandpool policy; nil when
// none is given (the server's default then applies).
//
//   - allow_internet_access false: egress none, or an allowlist of allowOut;
//   - denyOut holding 0.0.0.0/0: an allowlist of allowOut, less the rest
//     of denyOut;
//   - otherwise open, less denyOut (allowOut adds nothing to open).
//
// One difference remains: in E2B an allowOut entry wins over a denyOut one,
// in sandpool a deny always wins; an entry in both lists is taken as
// allowed.
func toNetwork(internet *bool, n *networkBody) (*sandbox.Network, error) {
	if n == nil {
		n = &networkBody{}
	}
	if len(n.Rules) > 0 && string(n.Rules) != "null" {
		return nil, fmt.Errorf("%w: network rules (request transforms)", errNotSupported)
	}
	if len(n.EgressProxy) > 0 && string(n.EgressProxy) != "null" {
		return nil, fmt.Errorf("%w: network egressProxy", errNotSupported)
	}
	if internet == nil && n.AllowOut == nil && n.DenyOut == nil {
		return nil, nil
	}
	deny := slices.DeleteFunc(slices.Clone(n.DenyOut), func(e string) bool { return slices.Contains(n.AllowOut, e) })
	all := slices.Contains(deny, allTraffic)
	deny = slices.DeleteFunc(deny, func(e string) bool { return e == allTraffic })
	switch {
	case (all || (internet != nil && !*internet)) && len(n.AllowOut) == 0:
		return &sandbox.Network{Egress: "none"}, nil // nothing allowed: an empty allowlist
	case all || (internet != nil && !*internet):
		return &sandbox.Network{Egress: "allowlist", Allow: n.AllowOut, Deny: deny}, nil
	default:
		return &sandbox.Network{Egress: "open", Deny: deny}, nil
	}
}

// fromNetwork shows a sandpool policy as E2B does: whether the sandbox
// reaches the internet, and its lists.
func fromNetwork(n sandbox.Network) (internet bool, out *networkJSON) {
	switch n.Egress {
	case "open":
		if len(n.Deny) == 0 {
			return true, nil
		}
		return true, &networkJSON{DenyOut: n.Deny}
	case "allowlist":
		return len(n.Allow) > 0, &networkJSON{AllowOut: n.Allow, DenyOut: append([]string{allTraffic}, n.Deny...)}
	default:
		return false, nil
	}
}

// updateNetwork changes a running sandbox's egress (PUT
// /sandboxes/{id}/network): connections open stay, new ones follow it.
func (s *Server) updateNetwork(w http.ResponseWriter, r *http.Request, tenant string, sb sandbox.Sandbox) {
	var body networkUpdateBody
	if err := decodeBody(w, r, &body); err != nil {
		s.writeAPIError(w, r, err)
		return
	}
	n, err := toNetwork(body.AllowInternetAccess, &body.networkBody)
	if err != nil {
		s.writeAPIError(w, r, err)
		return
	}
	if n == nil { // nothing said: open, as a sandbox made with no restriction
		n = &sandbox.Network{Egress: "open"}
	}
	if _, err := s.svc.SetNetwork(r.Context(), tenant, sb.ID, *n); err != nil {
		s.writeAPIError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
