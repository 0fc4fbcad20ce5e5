package client

import (
	"context"
	"io"
	"net/url"
	"strconv"
	"time"
)

// FileInfo describes a file in a sandbox.
type FileInfo struct {
	Name    string    `json:"name"`
	Path    string    `json:"path"`
	Type    string    `json:"type"` // file, dir, symlink, other
	Size    int64     `json:"size"`
	Mode    uint32    `json:"mode"`
	ModTime time.Time `json:"mod_time"`
	UID     int       `json:"uid"`
	GID     int       `json:"gid"`
	Target  string    `json:"target,omitempty"`
}

func pathQuery(p string) url.Values { return url.Values{"path": {p}} }

// ReadFile streams a file out of a sandbox. Close the reader.
func (c *Client) ReadFile(ctx context.Context, id, path string) (io.ReadCloser, error) {
	resp, err := c.do(ctx, request{method: "GET", path: sandboxPath(id, "/files"), query: pathQuery(path), retry: true})
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// WriteOptions for WriteFile.
type WriteOptions struct {
	Mode        uint32 // permission bits; 0 means 0644
	User        string // owner; empty means the sandbox's "user"
	MakeParents bool
}

// WriteFile streams r into a file in a sandbox and returns the bytes
// written. Nothing is buffered: r is read as the upload goes.
func (c *Client) WriteFile(ctx context.Context, id, path string, r io.Reader, opts WriteOptions) (int64, error) {
	q := pathQuery(path)
	if opts.Mode != 0 {
		q.Set("mode", strconv.FormatUint(uint64(opts.Mode), 8))
	}
	if opts.User != "" {
		q.Set("user", opts.User)
	}
	if opts.MakeParents {
		q.Set("parents", "true")
	}
	var out struct {
		Size int64 `json:"size"`
	}
	// Wrap r so net/http cannot see its length and buffer it: it streams.
	err := c.call(ctx, request{method: "PUT", path: sandboxPath(id, "/files"), query: q, stream: struct{ io.Reader }{r}}, &out)
	return out.Size, err
}

// ListFiles lists a directory.
func (c *Client) ListFiles(ctx context.Context, id, path string) ([]FileInfo, error) {
	var out struct {
		Files []FileInfo `json:"files"`
	}
	err := c.call(ctx, request{method: "GET", path: sandboxPath(id, "/files/list"), query: pathQuery(path), retry: true}, &out)
	return out.Files, err
}

// Stat describes one file.
func (c *Client) Stat(ctx context.Context, id, path string) (*FileInfo, error) {
	var fi FileInfo
	if err := c.call(ctx, request{method: "GET", path: sandboxPath(id, "/files/stat"), query: pathQuery(path), retry: true}, &fi); err != nil {
		return nil, err
	}
	return &fi, nil
}

// Mkdir makes a directory (and its parents, if parents).
func (c *Client) Mkdir(ctx context.Context, id, path string, parents bool) error {
	return c.call(ctx, request{method: "POST", path: sandboxPath(id, "/files/mkdir"),
		body: jsonBody(map[string]any{"path": path, "parents": parents})}, nil)
}

// Remove deletes a file or directory (with its contents if recursive).
func (c *Client) Remove(ctx context.Context, id, path string, recursive bool) error {
	q := pathQuery(path)
	if recursive {
		q.Set("recursive", "true")
	}
	return c.call(ctx, request{method: "DELETE", path: sandboxPath(id, "/files"), query: q}, nil)
}

// Rename moves a file or directory.
func (c *Client) Rename(ctx context.Context, id, from, to string) error {
	return c.call(ctx, request{method: "POST", path: sandboxPath(id, "/files/rename"),
		body: jsonBody(map[string]string{"from": from, "to": to})}, nil)
}
