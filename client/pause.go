package client

import "context"

// Pause freezes a sandbox's processes (memory kept, no CPU used). With
// archive, its processes are stopped too (memory freed, files kept).
func (c *Client) Pause(ctx context.Context, id string, archive bool) (*Sandbox, error) {
	var body []byte
	if archive {
		body = jsonBody(map[string]bool{"archive": true})
	}
	var sb Sandbox
	if err := c.call(ctx, request{method: "POST", path: sandboxPath(id, "/pause"), body: body}, &sb); err != nil {
		return nil, err
	}
	return &sb, nil
}

// Resumed is a resumed sandbox and what came back.
type Resumed struct {
	Sandbox
	// ResumedFrom is "frozen" (processes and memory kept) or "archive"
	// (started again on its files: ProcessesKept is false).
	ResumedFrom   string `json:"resumed_from,omitempty"`
	ProcessesKept bool   `json:"processes_kept"`
}

// Resume runs a paused sandbox again, with the timeout it had left.
func (c *Client) Resume(ctx context.Context, id string) (*Resumed, error) {
	var r Resumed
	if err := c.call(ctx, request{method: "POST", path: sandboxPath(id, "/resume")}, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// TimeoutUpdate changes timeout settings; nil fields keep their value.
type TimeoutUpdate struct {
	Timeout      *int    `json:"timeout,omitempty"`
	OnTimeout    *string `json:"on_timeout,omitempty"`
	ArchiveAfter *int    `json:"archive_after,omitempty"`
}

// SetTimeout changes a sandbox's timeout settings; its countdown starts
// again.
func (c *Client) SetTimeout(ctx context.Context, id string, u TimeoutUpdate) (*Sandbox, error) {
	var sb Sandbox
	if err := c.call(ctx, request{method: "POST", path: sandboxPath(id, "/timeout"), body: jsonBody(u)}, &sb); err != nil {
		return nil, err
	}
	return &sb, nil
}
