package client

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// SandboxEvent is one transition of one of the tenant's sandboxes or
// pools.
type SandboxEvent struct {
	Type    string    `json:"type"` // "sandbox", "pool", or "dropped" when events were lost
	Sandbox string    `json:"sandbox,omitempty"`
	Pool    string    `json:"pool,omitempty"`
	Status  string    `json:"status,omitempty"`
	Reason  string    `json:"reason,omitempty"`
	Error   string    `json:"error,omitempty"`
	Time    time.Time `json:"time"`
	// Count is how many events a slow reader lost, for "dropped".
	Count int `json:"count,omitempty"`
}

// EventStream is the server's event feed (server-sent events).
type EventStream struct {
	body io.ReadCloser
	sc   *bufio.Scanner
}

// Events subscribes to the tenant's sandbox transitions from now on.
func (c *Client) Events(ctx context.Context) (*EventStream, error) {
	h := http.Header{}
	h.Set("Accept", "text/event-stream")
	resp, err := c.do(ctx, request{method: "GET", path: "/v1/events", header: h})
	if err != nil {
		return nil, err
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 4096), 1<<20)
	return &EventStream{body: resp.Body, sc: sc}, nil
}

// Next blocks until the next event; io.EOF when the server ends the feed.
func (s *EventStream) Next() (SandboxEvent, error) {
	var typ, data string
	for s.sc.Scan() {
		line := s.sc.Text()
		switch {
		case line == "":
			if data == "" {
				continue // a comment or keepalive block
			}
			var ev SandboxEvent
			if err := json.Unmarshal([]byte(data), &ev); err != nil {
				return SandboxEvent{}, fmt.Errorf("sandpool: event %q: %w", data, err)
			}
			if typ != "" {
				ev.Type = typ
			}
			return ev, nil
		case strings.HasPrefix(line, "event:"):
			typ = strings.TrimSpace(strings.TrimPrefix(line, "event:"))
		case strings.HasPrefix(line, "data:"):
			data += strings.TrimSpace(strings.TrimPrefix(line, "data:"))
		}
	}
	if err := s.sc.Err(); err != nil {
		return SandboxEvent{}, err
	}
	return SandboxEvent{}, io.EOF
}

// Close ends the subscription.
func (s *EventStream) Close() error { return s.body.Close() }
