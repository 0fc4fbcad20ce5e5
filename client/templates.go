package client

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
)

// TemplateRequest adds a template: a root filesystem directory on the
// server's host (Dir), another template's files (From), or a container
// image (ImageSource), with hooks.
type TemplateRequest struct {
	Name string `json:"name"`
	Dir  string `json:"dir,omitempty"`
	From string `json:"from,omitempty"`
	Hooks
	// Limits are what its sandboxes get where a create leaves a limit at
	// zero (GPUs: 1 makes a GPU template).
	Limits *Limits `json:"limits,omitempty"`
	// Build makes a sandbox of the template at once and runs its setup;
	// a setup that fails refuses the template (422 setup_failed, with the
	// tail of its output).
	Build bool `json:"build,omitempty"`
	ImageSource
}

// AddTemplate adds a template (admin key). With Build, the setup's output
// is copied to progress as it runs (if progress is not nil); an image's
// pull is reported to progress if it is a PullReporter.
func (c *Client) AddTemplate(ctx context.Context, req TemplateRequest, progress io.Writer) (*Template, error) {
	r := request{method: "POST", path: "/v1/templates", body: jsonBody(req)}
	return c.addTemplate(ctx, r, (req.Build || req.ImageSource.set()) && progress != nil, progress)
}

// TemplateUpload is what goes with a root filesystem tar archive.
type TemplateUpload struct {
	Hooks
	Build bool
}

// AddTemplateFromTar registers a root filesystem tar stream as a template
// (admin key); see AddTemplate for progress.
func (c *Client) AddTemplateFromTar(ctx context.Context, name string, tar io.Reader, up TemplateUpload, progress io.Writer) (*Template, error) {
	q := url.Values{}
	for k, v := range map[string]string{"setup": up.Setup, "session_setup": up.SessionSetup, "session_teardown": up.SessionTeardown} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if up.SetupTimeout != 0 {
		q.Set("setup_timeout", strconv.Itoa(up.SetupTimeout))
	}
	if n := up.Network; n != nil {
		setNetworkQuery(q, *n)
	}
	if up.Build {
		q.Set("build", "true")
	}
	h := http.Header{}
	h.Set("Content-Type", "application/x-tar")
	r := request{method: "PUT", path: "/v1/templates/" + url.PathEscape(name), query: q, stream: struct{ io.Reader }{tar}, header: h}
	return c.addTemplate(ctx, r, up.Build && progress != nil, progress)
}

func (c *Client) addTemplate(ctx context.Context, r request, stream bool, progress io.Writer) (*Template, error) {
	if !stream {
		var t Template
		if err := c.call(ctx, r, &t); err != nil {
			return nil, err
		}
		return &t, nil
	}
	if r.header == nil {
		r.header = http.Header{}
	}
	r.header.Set("Accept", "application/x-ndjson")
	resp, err := c.do(ctx, r)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.Header.Get("Content-Type") != "application/x-ndjson" {
		var t Template
		if err := json.NewDecoder(resp.Body).Decode(&t); err != nil {
			return nil, fmt.Errorf("sandpool: template reply: %w", err)
		}
		return &t, nil
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		var ev struct {
			Type       string        `json:"type"`
			Pull       *PullProgress `json:"pull"`
			Data       string        `json:"data"`
			DataBase64 string        `json:"data_base64"`
			Template   *Template     `json:"template"`
			Error      *struct {
				Code    string `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return nil, fmt.Errorf("sandpool: build event: %w", err)
		}
		switch ev.Type {
		case "pull":
			if pr, ok := progress.(PullReporter); ok && ev.Pull != nil {
				pr.PullProgress(*ev.Pull)
			}
		case "output":
			b := []byte(ev.Data)
			if ev.DataBase64 != "" {
				if b, err = base64.StdEncoding.DecodeString(ev.DataBase64); err != nil {
					return nil, fmt.Errorf("sandpool: build output: %w", err)
				}
			}
			if _, err := progress.Write(b); err != nil {
				return nil, err
			}
		case "done":
			if ev.Template == nil {
				return nil, fmt.Errorf("sandpool: build finished without its template")
			}
			return ev.Template, nil
		case "error":
			if ev.Error == nil {
				return nil, fmt.Errorf("sandpool: build failed")
			}
			return nil, &APIError{Status: statusOfCode(ev.Error.Code), Code: ev.Error.Code, Message: ev.Error.Message}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("sandpool: build stream: %w", err)
	}
	return nil, fmt.Errorf("sandpool: build stream ended before the build did")
}

// statusOfCode is the status an error code comes with when it arrives in
// a stream (whose status was 200 before it failed).
func statusOfCode(code string) int {
	switch code {
	case "not_found":
		return http.StatusNotFound
	case "exists", "conflict", "sandbox_failed":
		return http.StatusConflict
	case "permission_denied", "forbidden":
		return http.StatusForbidden
	case "at_capacity", "pool_empty", "resource_exhausted":
		return http.StatusTooManyRequests
	case "internal":
		return http.StatusInternalServerError
	}
	return http.StatusUnprocessableEntity
}

// setNetworkQuery puts an egress policy in a template upload's or build's
// query parameters.
func setNetworkQuery(q url.Values, n Network) {
	q.Set("egress", n.Egress)
	q["allow"], q["deny"] = n.Allow, n.Deny
}
