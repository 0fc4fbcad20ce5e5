package client

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"time"
)

// FileEvent is one change in a watched directory.
type FileEvent struct {
	// Name is the changed entry's path relative to the watched directory.
	Name string `json:"name"`
	// Op is create, write, remove, rename (moved away) or chmod.
	Op string `json:"op"`
}

// FileWatch is a running watch of a directory in a sandbox.
type FileWatch struct {
	body io.ReadCloser
	sc   *bufio.Scanner
}

// WatchOptions for WatchFiles.
type WatchOptions struct {
	// Recursive watches what is below the directory too, including
	// directories made later.
	Recursive bool
	// User watches as this user (default: the sandbox's user).
	User string
}

// WatchFiles watches a directory. It returns once the watch is armed:
// every change after that is reported. Close it when done.
func (c *Client) WatchFiles(ctx context.Context, id, path string, opts WatchOptions) (*FileWatch, error) {
	q := userQuery(path, opts.User)
	q.Set("recursive", strconv.FormatBool(opts.Recursive))
	resp, err := c.do(ctx, request{method: "GET", path: sandboxPath(id, "/files/watch"), query: q})
	if err != nil {
		return nil, err
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 8<<10), 1<<20)
	return &FileWatch{body: resp.Body, sc: sc}, nil
}

// Next returns the next change; io.EOF when the watch has ended (the
// directory was removed, or Close was called).
func (w *FileWatch) Next() (FileEvent, error) {
	if !w.sc.Scan() {
		if err := w.sc.Err(); err != nil {
			return FileEvent{}, fmt.Errorf("sandpool: file watch: %w", err)
		}
		return FileEvent{}, io.EOF
	}
	var ev FileEvent
	if err := json.Unmarshal(w.sc.Bytes(), &ev); err != nil {
		return FileEvent{}, fmt.Errorf("sandpool: bad file event %q: %w", w.sc.Bytes(), err)
	}
	return ev, nil
}

// Close ends the watch.
func (w *FileWatch) Close() error { return w.body.Close() }

// Metrics are what a sandbox uses now.
type Metrics struct {
	Timestamp time.Time `json:"timestamp"`
	// CPUCount is the CPUs it may use; CPUUsedPct how busy it kept them
	// since the last reading (100: all of them all the time).
	CPUCount   int     `json:"cpu_count"`
	CPUUsedPct float64 `json:"cpu_used_pct"`
	// Memory without page cache, page cache, and the limit.
	MemUsedBytes  int64 `json:"mem_used_bytes"`
	MemCacheBytes int64 `json:"mem_cache_bytes"`
	MemTotalBytes int64 `json:"mem_total_bytes"`
	// Disk held by its writable layers, and its disk limit (or the size
	// of the filesystem they are on).
	DiskUsedBytes  int64 `json:"disk_used_bytes"`
	DiskTotalBytes int64 `json:"disk_total_bytes"`
}

// Metrics reads what a sandbox uses now. It does not resume a paused one.
func (c *Client) Metrics(ctx context.Context, id string) (*Metrics, error) {
	var m Metrics
	if err := c.call(ctx, request{method: "GET", path: sandboxPath(id, "/metrics"), retry: true}, &m); err != nil {
		return nil, err
	}
	return &m, nil
}
