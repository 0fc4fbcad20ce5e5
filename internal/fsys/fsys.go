// Package fsys describes a sandbox's filesystem as every layer sees it:
// paths are absolute within the sandbox and can never reach the host.
package fsys

import (
	"context"
	"io"
	"time"
)

// Files is a sandbox's filesystem, seen from inside. Every call acts as a
// user of the sandbox (the options' User, or the sandbox's default user):
// what that user may not do fails with errdefs.ErrPermission.
type Files interface {
	// Read streams a regular file.
	Read(ctx context.Context, path string, opts Options) (io.ReadCloser, Info, error)
	// Write creates or replaces a regular file with r's content, owned by
	// the user, and returns the bytes written.
	Write(ctx context.Context, path string, r io.Reader, opts WriteOptions) (int64, error)
	List(ctx context.Context, path string, opts ListOptions) ([]Info, error)
	Stat(ctx context.Context, path string, opts Options) (Info, error)
	Mkdir(ctx context.Context, path string, opts MkdirOptions) error
	// Remove deletes a file, or a directory (with all it holds if recursive).
	Remove(ctx context.Context, path string, opts RemoveOptions) error
	Rename(ctx context.Context, from, to string, opts Options) error
	// Watch reports changes in a directory (and, if recursive, below it)
	// from the moment it returns until the Watcher is closed or ctx ends.
	Watch(ctx context.Context, path string, opts WatchOptions) (Watcher, error)
}

// Options are what every call takes.
type Options struct {
	// User acts as this user (a name or a numeric uid); empty means the
	// sandbox's default user.
	User string
}

// WriteOptions for Files.Write.
type WriteOptions struct {
	User string
	Mode uint32 // permission bits; 0 means 0644
	// MakeParents creates missing parent directories.
	MakeParents bool
}

// MkdirOptions for Files.Mkdir.
type MkdirOptions struct {
	User    string
	Mode    uint32 // 0 means 0755
	Parents bool   // like mkdir -p: no error if it exists
}

// ListOptions for Files.List.
type ListOptions struct {
	User string
	// Depth lists this many levels (1: the directory's own entries; 0
	// means 1).
	Depth int
}

// RemoveOptions for Files.Remove.
type RemoveOptions struct {
	User      string
	Recursive bool
}

// Info describes a file in a sandbox.
type Info struct {
	Name    string    `json:"name"`
	Path    string    `json:"path"`
	Type    string    `json:"type"` // file, dir, symlink, other
	Size    int64     `json:"size"`
	Mode    uint32    `json:"mode"` // permission bits
	ModTime time.Time `json:"mod_time"`
	Owner   int       `json:"uid"`
	Group   int       `json:"gid"`
	Target  string    `json:"target,omitempty"` // of a symlink
}

// WatchOptions for Files.Watch.
type WatchOptions struct {
	User string
	// Recursive watches every directory below too, including those made
	// while the watch runs.
	Recursive bool
}

// Event is one change in a watched directory.
type Event struct {
	// Name is the changed entry's path relative to the watched directory.
	Name string `json:"name"`
	// Op is what happened: create, write, remove, rename (moved away) or
	// chmod (attributes).
	Op string `json:"op"`
}

// Event operations.
const (
	OpCreate = "create"
	OpWrite  = "write"
	OpRemove = "remove"
	OpRename = "rename"
	OpChmod  = "chmod"
)

// Watcher is a running watch.
type Watcher interface {
	// Next returns the next event; io.EOF once the watch has ended (the
	// watched directory is gone, or Close was called).
	Next() (Event, error)
	// Close ends the watch.
	Close() error
}
