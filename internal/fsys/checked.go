package fsys

import (
	"context"
	"io"
)

// Checked returns a Files whose every call first asks open for the Files to
// use (and a check for its errors), then passes the call's error through
// check. Layers that must look at each error (a broken sandbox is retired,
// an unreachable agent becomes a state error) wrap a Files with it.
func Checked(open func() (Files, func(error) error, error)) Files { return checked{open} }

type checked struct {
	open func() (Files, func(error) error, error)
}

func (c checked) Read(ctx context.Context, path string, opts Options) (io.ReadCloser, Info, error) {
	f, check, err := c.open()
	if err != nil {
		return nil, Info{}, err
	}
	rc, fi, err := f.Read(ctx, path, opts)
	return rc, fi, check(err)
}

func (c checked) Write(ctx context.Context, path string, r io.Reader, opts WriteOptions) (int64, error) {
	f, check, err := c.open()
	if err != nil {
		return 0, err
	}
	n, err := f.Write(ctx, path, r, opts)
	return n, check(err)
}

func (c checked) List(ctx context.Context, path string, opts ListOptions) ([]Info, error) {
	f, check, err := c.open()
	if err != nil {
		return nil, err
	}
	out, err := f.List(ctx, path, opts)
	return out, check(err)
}

func (c checked) Stat(ctx context.Context, path string, opts Options) (Info, error) {
	f, check, err := c.open()
	if err != nil {
		return Info{}, err
	}
	fi, err := f.Stat(ctx, path, opts)
	return fi, check(err)
}

func (c checked) Mkdir(ctx context.Context, path string, opts MkdirOptions) error {
	f, check, err := c.open()
	if err != nil {
		return err
	}
	return check(f.Mkdir(ctx, path, opts))
}

func (c checked) Remove(ctx context.Context, path string, opts RemoveOptions) error {
	f, check, err := c.open()
	if err != nil {
		return err
	}
	return check(f.Remove(ctx, path, opts))
}

func (c checked) Rename(ctx context.Context, from, to string, opts Options) error {
	f, check, err := c.open()
	if err != nil {
		return err
	}
	return check(f.Rename(ctx, from, to, opts))
}

func (c checked) Watch(ctx context.Context, path string, opts WatchOptions) (Watcher, error) {
	f, check, err := c.open()
	if err != nil {
		return nil, err
	}
	w, err := f.Watch(ctx, path, opts)
	if err != nil {
		return nil, check(err)
	}
	return checkedWatcher{w, check}, nil
}

// checkedWatcher passes the errors that end a watch through check.
type checkedWatcher struct {
	Watcher
	check func(error) error
}

func (w checkedWatcher) Next() (Event, error) {
	ev, err := w.Watcher.Next()
	if err != nil && err != io.EOF {
		return ev, w.check(err)
	}
	return ev, err
}
