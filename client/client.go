// Package client is the Go SDK for sandpool's HTTP API.
//
// Idempotent reads (GET, HEAD, OPTIONS) are retried on 425, 429, 502, 503,
// 504 and on connection resets, with capped exponential backoff and jitter
// (0.2 s doubling to 2 s, within a time budget), honouring Retry-After.
// Mutating calls are never replayed, except sandbox creation, which always
// carries an Idempotency-Key so that a retry returns the same sandbox.
package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cenkalti/backoff/v5"
)

// Client talks to one sandpool server. It is safe for concurrent use.
type Client struct {
	base     *url.URL
	key      string
	hc       *http.Client
	budget   time.Duration
	noResume bool
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient uses hc instead of a default client.
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.hc = hc } }

// WithoutAutoResume makes calls on a paused sandbox fail with 409 instead
// of resuming it first.
func WithoutAutoResume() Option { return func(c *Client) { c.noResume = true } }

// WithRetryBudget bounds the total time spent retrying one call (default
// 15s; 0 disables retries).
func WithRetryBudget(d time.Duration) Option { return func(c *Client) { c.budget = d } }

// New returns a client for the server at baseURL (for example
// "http://127.0.0.1:7423") using apiKey.
func New(baseURL, apiKey string, opts ...Option) (*Client, error) {
	u, err := url.Parse(strings.TrimRight(baseURL, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("sandpool client: invalid server URL %q", baseURL)
	}
	c := &Client{base: u, key: apiKey, budget: 15 * time.Second,
		hc: &http.Client{Transport: &http.Transport{
			Proxy:               http.ProxyFromEnvironment,
			DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConnsPerHost: 64,
			IdleConnTimeout:     90 * time.Second,
		}}}
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

// With returns a copy of c with more options (another retry budget, say);
// c is unchanged.
func (c *Client) With(opts ...Option) *Client {
	cp := *c
	for _, o := range opts {
		o(&cp)
	}
	return &cp
}

// APIError is an error answer from the server.
type APIError struct {
	Status  int    // HTTP status code
	Code    string // stable machine code, e.g. "not_found"
	Message string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("sandpool: %s (%d %s)", e.Message, e.Status, e.Code)
}

// IsAtCapacity reports whether err says the node runs as many sandboxes as
// it may (429 at_capacity).
func IsAtCapacity(err error) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.Code == "at_capacity"
}

// IsExhausted reports whether err says a limit is reached: the sandbox's
// process limit (resource_exhausted), the node's capacity (at_capacity) or
// an empty pool (pool_empty). Retrying later, or freeing something, may
// work.
func IsExhausted(err error) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.Status == http.StatusTooManyRequests
}

// StatusOf is the HTTP status of an error answer from the server, or 0 if
// err is not one.
func StatusOf(err error) int {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Status
	}
	return 0
}

// IsNotFound reports whether err is a 404 from the server.
func IsNotFound(err error) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.Status == http.StatusNotFound
}

// request is one call.
type request struct {
	method string
	path   string
	query  url.Values
	body   []byte    // replayable body (JSON)
	stream io.Reader // or a streamed body: never retried
	header http.Header
	// retry: safe to send again (reads, and creates with an idempotency key).
	retry bool
}

func (c *Client) newHTTPRequest(ctx context.Context, r request) (*http.Request, error) {
	u := *c.base
	u.Path += r.path
	if c.noResume && strings.HasPrefix(r.path, "/v1/sandboxes/") {
		if r.query == nil {
			r.query = url.Values{}
		}
		r.query.Set("auto_resume", "false")
	}
	u.RawQuery = r.query.Encode()
	var body io.Reader
	switch {
	case r.body != nil:
		body = bytes.NewReader(r.body)
	case r.stream != nil:
		body = r.stream
	}
	req, err := http.NewRequestWithContext(ctx, r.method, u.String(), body)
	if err != nil {
		return nil, err
	}
	for k, v := range r.header {
		req.Header[k] = v
	}
	if r.body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.key != "" {
		req.Header.Set("Authorization", "Bearer "+c.key)
	}
	return req, nil
}

// retryable statuses, per the policy in the package doc.
func retryableStatus(code int) bool {
	switch code {
	case http.StatusTooEarly, http.StatusTooManyRequests, http.StatusBadGateway,
		http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// retryableErr: the connection broke before an answer came.
func retryableErr(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || errors.Is(err, syscall.EPIPE)
}

// do sends r, retrying as the policy allows, and returns a response with a
// 2xx status (the caller closes its body) or an error.
func (c *Client) do(ctx context.Context, r request) (*http.Response, error) {
	retrying := r.retry && c.budget > 0
	var lastAnswer error // the server's last error answer
	op := func() (*http.Response, error) {
		req, err := c.newHTTPRequest(ctx, r)
		if err != nil {
			return nil, backoff.Permanent(err)
		}
		resp, err := c.hc.Do(req)
		if err != nil {
			if retrying && ctx.Err() == nil && retryableErr(err) {
				return nil, err
			}
			return nil, backoff.Permanent(err)
		}
		if resp.StatusCode < 300 {
			return resp, nil
		}
		apiErr := readError(resp)
		lastAnswer = apiErr
		if retrying && retryableStatus(resp.StatusCode) {
			if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s >= 0 {
				return nil, backoff.RetryAfter(s)
			}
			return nil, apiErr
		}
		return nil, backoff.Permanent(apiErr)
	}
	if !retrying {
		resp, err := op()
		var perm *backoff.PermanentError
		if errors.As(err, &perm) {
			err = perm.Err
		}
		return resp, err
	}
	b := &backoff.ExponentialBackOff{InitialInterval: 200 * time.Millisecond, RandomizationFactor: 0.5,
		Multiplier: 2, MaxInterval: 2 * time.Second}
	b.Reset()
	resp, err := backoff.Retry(ctx, op, backoff.WithBackOff(b), backoff.WithMaxElapsedTime(c.budget))
	var ra *backoff.RetryAfterError
	if errors.As(err, &ra) && lastAnswer != nil {
		err = lastAnswer // out of budget while told to wait: report the answer
	}
	return resp, err
}

func readError(resp *http.Response) error {
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10)) // what arrived is enough to report
	var body struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	ae := &APIError{Status: resp.StatusCode}
	if json.Unmarshal(b, &body) == nil && body.Error.Code != "" {
		ae.Code, ae.Message = body.Error.Code, body.Error.Message
	} else {
		ae.Code, ae.Message = "http_"+strconv.Itoa(resp.StatusCode), strings.TrimSpace(string(b))
		if ae.Message == "" {
			ae.Message = http.StatusText(resp.StatusCode)
		}
	}
	return ae
}

// call sends r and decodes a JSON answer into out (if not nil).
func (c *Client) call(ctx context.Context, r request, out any) error {
	resp, err := c.do(ctx, r)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body) // let the connection be reused
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("sandpool: decode %s %s answer: %w", r.method, r.path, err)
	}
	return nil
}

func jsonBody(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		// Only our own request types are marshalled here; they always encode.
		return []byte("null")
	}
	return b
}

func newIdempotencyKey() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand does not fail on Linux
	return hex.EncodeToString(b[:])
}

// Health checks that the server answers.
func (c *Client) Health(ctx context.Context) error {
	return c.call(ctx, request{method: "GET", path: "/healthz", retry: true}, nil)
}
