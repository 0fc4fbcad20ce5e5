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

// userQuery is ?path=p, with ?user= if user is set.
func userQuery(p, user string) url.Values {
	q := pathQuery(p)
	if user != "" {
		q.Set("user", user)
	}
	return q
}

// ReadFile streams a file out of a sandbox, read as the sandbox's user.
// Close the reader.
func (c *Client) ReadFile(ctx context.Context, id, path string) (io.ReadCloser, error) {
	return c.ReadFileAs(ctx, id, path, "")
}

// ReadFileAs is ReadFile acting as user (a name or uid; "" for the
// sandbox's user). A file the user may not read is a 403.
func (c *Client) ReadFileAs(ctx context.Context, id, path, user string) (io.ReadCloser, error) {
	resp, err := c.do(ctx, request{method: "GET", path: sandboxPath(id, "/files"), query: userQuery(path, user), retry: true})
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// WriteOptions for WriteFile.
type WriteOptions struct {
	Mode        uint32 // permission bits; 0 means 0644
	User        string // who writes (and owns) it; empty means the sandbox's user
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

// ListFiles lists a directory, as the sandbox's user.
func (c *Client) ListFiles(ctx context.Context, id, path string) ([]FileInfo, error) {
	return c.ListFilesWith(ctx, id, path, ListFilesOptions{})
}

// ListFilesOptions for ListFilesWith.
type ListFilesOptions struct {
	User  string // act as this user; "" for the sandbox's user
	Depth int    // levels to list; 0 or 1 for the directory's own entries
}

// ListFilesWith lists a directory (and, with Depth, its subdirectories).
func (c *Client) ListFilesWith(ctx context.Context, id, path string, opts ListFilesOptions) ([]FileInfo, error) {
	q := userQuery(path, opts.User)
	if opts.Depth > 1 {
		q.Set("depth", strconv.Itoa(opts.Depth))
	}
	var out struct {
		Files []FileInfo `json:"files"`
	}
	err := c.call(ctx, request{method: "GET", path: sandboxPath(id, "/files/list"), query: q, retry: true}, &out)
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
