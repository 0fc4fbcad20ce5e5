// Package portproxy passes HTTP requests, WebSocket and other upgrades
// included, to a server listening on a port inside a sandbox, over a
// connection the caller dials (sandpool dials through the sandbox's agent,
// so a sandbox needs no network for it). Responses stream as they come.
// The native API and the E2B front end both serve ports with it.
package portproxy

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httputil"
	"time"
)

// Dialer connects to the port a request is for.
type Dialer func(ctx context.Context) (net.Conn, error)

// Proxy forwards requests to sandbox ports. Its zero value is not usable:
// make one with New and share it.
type Proxy struct {
	rp *httputil.ReverseProxy
}

// Options configure a Proxy.
type Options struct {
	// StripHeaders are removed from every request before it goes in (the
	// caller's credentials for sandpool itself, routing headers).
	StripHeaders []string
	// OnError answers a request that could not be passed on (the dial or
	// the exchange failed).
	OnError func(w http.ResponseWriter, r *http.Request, err error)
}

type dialKey struct{}

// New makes a Proxy.
func New(opts Options) *Proxy {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			d, ok := ctx.Value(dialKey{}).(Dialer)
			if !ok {
				return nil, errors.New("portproxy: no dialer for this request")
			}
			return d(ctx)
		},
		// Every request dials its own connection: connections are to one
		// sandbox's port each, and a kept one would outlive its caller.
		DisableKeepAlives: true,
		// Accept-Encoding goes through as the client sent it, and the
		// answer comes back as the server encoded it.
		DisableCompression:    true,
		TLSHandshakeTimeout:   0,
		ExpectContinueTimeout: time.Second,
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = "sandbox"
			pr.Out.Host = pr.In.Host // servers that check Host see the name the client used
			for _, h := range opts.StripHeaders {
				pr.Out.Header.Del(h)
			}
			pr.SetXForwarded()
		},
		Transport:     tr,
		FlushInterval: -1, // stream: server-sent events, long polls, downloads
		ErrorHandler:  opts.OnError,
	}
	return &Proxy{rp: rp}
}

// Serve passes r to the server dial reaches, with the request's path
// replaced by path (which starts with "/"; the query is kept).
func (p *Proxy) Serve(w http.ResponseWriter, r *http.Request, path string, dial Dialer) {
	out := r.WithContext(context.WithValue(r.Context(), dialKey{}, dial))
	u := *r.URL
	u.Path, u.RawPath = path, ""
	out.URL = &u
	p.rp.ServeHTTP(w, out)
}
