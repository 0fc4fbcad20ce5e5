package e2b

import (
	"context"
	"errors"
	"fmt"
	"path"
	"sync"
	"time"

	"connectrpc.com/connect"

	pb "github.com/sandpool/sandpool/internal/e2b/envd/filesystem"
	"github.com/sandpool/sandpool/internal/fsys"
	"github.com/sandpool/sandpool/internal/ids"
)

// The polling watch (CreateWatcher, GetWatcherEvents, RemoveWatcher), which
// the Python SDK's sync client uses: a watch kept on this node, its events
// kept until polled.

const (
	// maxWatcherEvents bounds the events a watcher keeps between polls;
	// older ones are dropped.
	maxWatcherEvents = 10000
	// watcherIdle is how long a watcher nobody polls is kept.
	watcherIdle = 10 * time.Minute
	// maxWatchers bounds the watchers of one node.
	maxWatchers = 1000
)

type watchers struct {
	mu sync.Mutex
	m  map[string]*polledWatch
}

// polledWatch is one watch whose events wait for a poll.
type polledWatch struct {
	tenant, sandbox string
	w               fsys.Watcher
	c               fsCall
	root            string
	includeEntry    bool

	mu       sync.Mutex
	events   []*pb.FilesystemEvent
	err      error // why the watch ended, once it has
	lastPoll time.Time
}

func (f filesystemService) CreateWatcher(ctx context.Context, req *connect.Request[pb.CreateWatcherRequest]) (*connect.Response[pb.CreateWatcherResponse], error) {
	s := f.s
	c, p, err := f.open(ctx, req.Header(), req.Msg.GetPath())
	if err != nil {
		return nil, rpcError(s.log, err)
	}
	s.watchers.mu.Lock()
	full := len(s.watchers.m) >= maxWatchers
	s.watchers.mu.Unlock()
	if full {
		return nil, connect.NewError(connect.CodeResourceExhausted, fmt.Errorf("this node keeps %d watchers: remove some", maxWatchers))
	}
	// The watch outlives this call: it runs on the server's context.
	w, err := c.fs.Watch(s.ctx, p[0], fsys.WatchOptions{User: c.user.name, Recursive: req.Msg.GetRecursive()})
	if err != nil {
		return nil, rpcError(s.log, err)
	}
	pw := &polledWatch{tenant: c.t.sb.Tenant, sandbox: c.t.sb.ID, w: w, c: c, root: p[0],
		includeEntry: req.Msg.GetIncludeEntry(), lastPoll: time.Now()}
	id := "w_" + ids.Random(10)
	s.watchers.mu.Lock()
	if s.watchers.m == nil {
		s.watchers.m = map[string]*polledWatch{}
	}
	s.watchers.m[id] = pw
	s.watchers.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f.collect(pw)
	}()
	return connect.NewResponse(&pb.CreateWatcherResponse{WatcherId: id}), nil
}

// collect keeps a watch's events until it ends.
func (f filesystemService) collect(pw *polledWatch) {
	for {
		ev, err := pw.w.Next()
		if err != nil {
			pw.mu.Lock()
			pw.err = err
			pw.mu.Unlock()
			return
		}
		fe := &pb.FilesystemEvent{Name: ev.Name, Type: eventType(ev.Op)}
		if pw.includeEntry && ev.Op != fsys.OpRemove && ev.Op != fsys.OpRename {
			if fi, err := pw.c.fs.Stat(f.s.ctx, path.Join(pw.root, ev.Name), fsys.Options{User: pw.c.user.name}); err == nil {
				fe.Entry = f.entry(f.s.ctx, &pw.c, fi)
			}
		}
		pw.mu.Lock()
		if len(pw.events) >= maxWatcherEvents {
			pw.events = pw.events[1:]
		}
		pw.events = append(pw.events, fe)
		pw.mu.Unlock()
	}
}

// watcher finds a watcher of the request's sandbox.
func (s *Server) watcher(ctx context.Context, id string) (string, *polledWatch, error) {
	t := targetOf(ctx)
	s.watchers.mu.Lock()
	pw := s.watchers.m[id]
	s.watchers.mu.Unlock()
	if pw == nil || pw.sandbox != t.sb.ID || pw.tenant != t.sb.Tenant {
		return "", nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("watcher %q not found", id))
	}
	return id, pw, nil
}

func (f filesystemService) GetWatcherEvents(ctx context.Context, req *connect.Request[pb.GetWatcherEventsRequest]) (*connect.Response[pb.GetWatcherEventsResponse], error) {
	id, pw, err := f.s.watcher(ctx, req.Msg.GetWatcherId())
	if err != nil {
		return nil, err
	}
	pw.mu.Lock()
	events, ended := pw.events, pw.err
	pw.events, pw.lastPoll = nil, time.Now()
	pw.mu.Unlock()
	if len(events) == 0 && ended != nil {
		// Ended, and everything it saw has been told.
		f.s.removeWatcher(id)
		if ctx.Err() == nil && !errors.Is(ended, context.Canceled) {
			return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("watcher %q has ended: %v", id, ended))
		}
	}
	if events == nil {
		events = []*pb.FilesystemEvent{}
	}
	return connect.NewResponse(&pb.GetWatcherEventsResponse{Events: events}), nil
}

func (f filesystemService) RemoveWatcher(ctx context.Context, req *connect.Request[pb.RemoveWatcherRequest]) (*connect.Response[pb.RemoveWatcherResponse], error) {
	id, _, err := f.s.watcher(ctx, req.Msg.GetWatcherId())
	if err != nil {
		return nil, err
	}
	f.s.removeWatcher(id)
	return connect.NewResponse(&pb.RemoveWatcherResponse{}), nil
}

func (s *Server) removeWatcher(id string) {
	s.watchers.mu.Lock()
	pw := s.watchers.m[id]
	delete(s.watchers.m, id)
	s.watchers.mu.Unlock()
	if pw != nil {
		pw.w.Close()
	}
}

// expireWatchers removes watchers nobody has polled for watcherIdle, until
// the server closes.
func (s *Server) expireWatchers() {
	defer s.wg.Done()
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		var stale []string
		s.watchers.mu.Lock()
		for id, pw := range s.watchers.m {
			pw.mu.Lock()
			if time.Since(pw.lastPoll) > watcherIdle {
				stale = append(stale, id)
			}
			pw.mu.Unlock()
		}
		s.watchers.mu.Unlock()
		for _, id := range stale {
			s.removeWatcher(id)
		}
	}
}

func (w *watchers) closeAll() {
	w.mu.Lock()
	all := w.m
	w.m = nil
	w.mu.Unlock()
	for _, pw := range all {
		pw.w.Close()
	}
}
