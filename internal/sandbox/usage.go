package sandbox

import (
	"context"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/runtime"
)

// Metrics are what a sandbox uses (the runtime's type).
type Metrics = runtime.Metrics

// Metrics measures what a sandbox uses now: CPU and memory from its
// cgroup, disk from its writable layers. Reading them is not activity and
// does not resume a paused sandbox (a frozen one uses no CPU; an archived
// one no CPU or memory).
func (s *Service) Metrics(ctx context.Context, tenant, id string) (Metrics, error) {
	row, err := s.row(ctx, tenant, id)
	if err != nil {
		return Metrics{}, err
	}
	if row.Node != s.cfg.Node {
		return Metrics{}, errdefs.Userf(ErrElsewhere, "sandbox %s lives on node %s", id, row.Node)
	}
	if !slices.Contains([]Status{StatusRunning, StatusReady, StatusPaused, StatusResetting}, Status(row.Status)) {
		return Metrics{}, errdefs.Userf(errdefs.ErrConflict, "sandbox %s is %s", id, row.Status)
	}
	return s.rt.Metrics(ctx, id)
}

// DialPort connects to a TCP port on a running sandbox's loopback (a
// paused one is resumed first, as for any call), whatever network the
// sandbox has. An open connection counts as activity, as a process stream
// does, until it is closed.
func (s *Service) DialPort(ctx context.Context, tenant, id string, port int) (net.Conn, error) {
	if port <= 0 || port > 65535 {
		return nil, errdefs.Userf(errdefs.ErrInvalid, "port %d out of range 1-65535", port)
	}
	row, err := s.running(ctx, tenant, id)
	if err != nil {
		return nil, err
	}
	c, err := s.rt.DialPort(ctx, id, port)
	if err != nil {
		return nil, s.check(row, err)
	}
	s.mu.Lock()
	s.streams[id]++
	s.mu.Unlock()
	return &trackedConn{Conn: c, s: s, id: id}, nil
}

// trackedConn is a port connection counted as an open stream.
type trackedConn struct {
	net.Conn
	s    *Service
	id   string
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.s.mu.Lock()
		if c.s.streams[c.id]--; c.s.streams[c.id] <= 0 {
			delete(c.s.streams, c.id)
		}
		if a := c.s.activity[c.id]; a != nil {
			a.last, a.dirty = time.Now(), true
		}
		c.s.mu.Unlock()
	})
	return c.Conn.Close()
}

// CloseWrite passes a half-close on to the sandbox's end.
func (c *trackedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
