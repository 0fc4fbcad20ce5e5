package mcpserver

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/sandpool/sandpool/client"
)

// Handler serves MCP over streamable HTTP (/mcp in `sandpool serve`).
//
// Every request carries an API key (Authorization: Bearer <key>), checked
// by the API before anything else: a request without a valid one gets
// 401 and makes no session. A session is bound to the key that began it
// (another key gets 403 on it) and works through the API with that key,
// so it sees only that tenant's sandboxes. The API is called in process:
// its http.Handler serves the calls directly, with no network hop.
//
// A session ends when its client deletes it (DELETE, answered once its
// sandboxes are gone), after Config.SessionTimeout without requests, or
// when the Handler is closed.
type Handler struct {
	s   *server
	api *http.Client
	h   http.Handler
}

// inProcessURL is the base URL of in-process API clients; the host only
// names them.
const inProcessURL = "http://sandpool.in-process"

// clientKey holds a request's API client in its auth.TokenInfo.
const clientKey = "sandpool.client"

// NewHandler serves MCP with api, the API's http.Handler.
func NewHandler(api http.Handler, cfg Config) (*Handler, error) {
	h := &Handler{api: &http.Client{Transport: inProcess{api}}}
	s, err := newServer(cfg, clientOf)
	if err != nil {
		return nil, err
	}
	h.s = s
	streamable := mcp.NewStreamableHTTPHandler(h.serverFor, &mcp.StreamableHTTPOptions{
		SessionTimeout: s.cfg.SessionTimeout,
		Logger:         s.sdkLog(),
		// The SDK refuses requests to a loopback address that name another
		// host, against DNS rebinding. A rebound page cannot send the API
		// key, which every request needs, so the API's own rule suffices
		// (and a server behind a proxy keeps working).
		DisableLocalhostProtection: true,
	})
	h.h = auth.RequireBearerToken(h.verify, &auth.RequireBearerTokenOptions{AllowMissingExpiration: true})(
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodDelete {
				h.delete(streamable, w, r)
				return
			}
			streamable.ServeHTTP(w, r)
		}))
	return h, nil
}

// ServeHTTP serves MCP. A client names the pool its sessions' sandboxes
// come from with ?pool=NAME (default Config.Pool).
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.s.isClosed() { // no new sessions while serve stops
		w.Header().Set("Retry-After", "1")
		http.Error(w, errClosing.Error(), http.StatusServiceUnavailable)
		return
	}
	if p := r.URL.Query().Get("pool"); p != "" && !poolName.MatchString(p) {
		http.Error(w, fmt.Sprintf("pool %q: want a-z, 0-9, '.', '_' and '-', at most 63", p), http.StatusBadRequest)
		return
	}
	h.h.ServeHTTP(w, r)
}

// Close ends every session and destroys (or gives back) their sandboxes.
// Call it before the API stops taking requests.
func (h *Handler) Close() { h.s.close() }

func (h *Handler) serverFor(r *http.Request) *mcp.Server {
	pool := r.URL.Query().Get("pool")
	if pool == "" {
		pool = h.s.cfg.Pool
	}
	srv, err := h.s.serverFor(pool)
	if err != nil { // the tools' schemas were checked at start: not seen
		h.s.cfg.Log.Error("mcp: make a server", "pool", pool, "err", err)
		return nil
	}
	return srv
}

// verify asks the API whether key is valid, with the cheapest call any
// key may make; the API answers 401 for an unknown or revoked key (and
// caches valid ones for a moment).
func (h *Handler) verify(ctx context.Context, key string, _ *http.Request) (*auth.TokenInfo, error) {
	c, err := client.New(inProcessURL, key, client.WithHTTPClient(h.api))
	if err != nil {
		return nil, err
	}
	if _, err := c.ListTemplates(ctx); err != nil {
		var ae *client.APIError
		if errors.As(err, &ae) && ae.Status == http.StatusUnauthorized {
			return nil, fmt.Errorf("%w: %s", auth.ErrInvalidToken, ae.Message)
		}
		return nil, fmt.Errorf("check the API key: %w", err)
	}
	sum := sha256.Sum256([]byte(key))
	return &auth.TokenInfo{UserID: hex.EncodeToString(sum[:]), Extra: map[string]any{clientKey: c}}, nil
}

// clientOf is the client verify made for a session's first call.
func clientOf(req *mcp.CallToolRequest) (*client.Client, string, error) {
	if req.Extra != nil && req.Extra.TokenInfo != nil {
		if c, ok := req.Extra.TokenInfo.Extra[clientKey].(*client.Client); ok {
			return c, req.Extra.TokenInfo.UserID, nil
		}
	}
	return nil, "", errors.New("mcp: a call without a verified API key") // not seen: every request is verified
}

// delete ends a session: the calls it has under way are cancelled, the
// SDK closes it, and the answer waits until its sandboxes are gone, so
// that a client that deleted its session finds nothing left.
func (h *Handler) delete(streamable http.Handler, w http.ResponseWriter, r *http.Request) {
	st := h.s.session(r.Header.Get("Mcp-Session-Id"))
	if st == nil || st.owner != auth.TokenInfoFromContext(r.Context()).UserID {
		streamable.ServeHTTP(w, r) // the SDK answers: a session without sandboxes, 404 or 403
		return
	}
	st.cancel()
	streamable.ServeHTTP(w, r)
	select {
	case <-st.cleaned:
	case <-r.Context().Done():
	}
}
