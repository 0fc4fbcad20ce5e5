package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sync"

	"github.com/sandpool/sandpool/internal/fsys"
)

func (fs files) Watch(ctx context.Context, path string, opts fsys.WatchOptions) (fsys.Watcher, error) {
	c, _, stop, err := fs.cl.open(ctx, request{Op: "watch", Path: path, User: opts.User, Recursive: opts.Recursive})
	if err != nil {
		return nil, err
	}
	// ctx ends the watch, as Close does (open's hook closes the
	// connection).
	return &watcher{c: c, ctx: ctx, stop: stop}, nil
}

// watcher reads the event frames of a watch.
type watcher struct {
	c    *conn
	ctx  context.Context
	stop func() bool

	mu     sync.Mutex
	closed bool
}

func (w *watcher) Next() (fsys.Event, error) {
	w.mu.Lock()
	closed := w.closed
	w.mu.Unlock()
	if closed {
		return fsys.Event{}, io.EOF
	}
	typ, b, err := w.c.recv(nil)
	switch {
	case err != nil:
		w.mu.Lock()
		closed := w.closed
		w.mu.Unlock()
		if closed || w.ctx.Err() != nil {
			return fsys.Event{}, io.EOF
		}
		return fsys.Event{}, fmt.Errorf("%w: watch cut short: %v", ErrUnreachable, err)
	case typ == frameDataEnd:
		return fsys.Event{}, io.EOF
	case typ != frameEvent:
		return fsys.Event{}, fmt.Errorf("agent: unexpected frame %q in a watch", typ)
	}
	var ev watchEvent
	if err := json.Unmarshal(b, &ev); err != nil {
		return fsys.Event{}, fmt.Errorf("agent: bad watch event: %v", err)
	}
	return fsys.Event{Name: ev.Name, Op: ev.Op}, nil
}

func (w *watcher) Close() error {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	w.stop()
	return w.c.Close()
}
