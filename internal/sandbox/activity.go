package sandbox

import (
	"context"
	"encoding/json"
	"io"
	"time"

	"github.com/sandpool/sandpool/internal/runtime"
	"github.com/sandpool/sandpool/internal/store"
)

// touchNew starts tracking a sandbox's activity.
func (s *Service) touchNew(id string, timeoutSec int) {
	s.mu.Lock()
	s.activity[id] = &activity{last: time.Now(), timeout: time.Duration(timeoutSec) * time.Second}
	s.mu.Unlock()
}

// touch records activity on a sandbox.
func (s *Service) touch(id string) {
	s.mu.Lock()
	if a := s.activity[id]; a != nil {
		a.last = time.Now()
	}
	s.mu.Unlock()
}

func (s *Service) forget(id string) {
	s.mu.Lock()
	delete(s.activity, id)
	s.mu.Unlock()
}

// Ping records activity and returns the sandbox.
func (s *Service) Ping(ctx context.Context, tenant, id string) (Sandbox, error) {
	row, err := s.running(ctx, tenant, id)
	if err != nil {
		return Sandbox{}, err
	}
	return s.fromRow(row), nil
}

// tracked counts a process stream as activity while it is open.
func (s *Service) tracked(row store.Sandbox, p runtime.Process) runtime.Process {
	s.mu.Lock()
	if a := s.activity[row.ID]; a != nil {
		a.streams++
	}
	s.mu.Unlock()
	return &trackedProcess{Process: p, s: s, id: row.ID, row: row}
}

type trackedProcess struct {
	runtime.Process
	s    *Service
	id   string
	row  store.Sandbox
	done bool
}

func (p *trackedProcess) end() {
	p.s.mu.Lock()
	if !p.done {
		p.done = true
		if a := p.s.activity[p.id]; a != nil {
			a.streams--
			a.last = time.Now()
		}
	}
	p.s.mu.Unlock()
}

func (p *trackedProcess) Wait() (runtime.ExitStatus, error) {
	st, err := p.Process.Wait()
	p.end()
	return st, p.s.check(p.row, err)
}

func (p *trackedProcess) Close() error {
	p.end()
	return p.Process.Close()
}

// Start recovers what a crash or restart left half done and starts the
// reaper. Rows of this node that were creating or stopping are finished;
// running rows whose sandbox is gone are marked stopped; sandboxes the
// runtime has but the store does not know are destroyed.
func (s *Service) Start(ctx context.Context) error {
	rows, err := s.st.ListSandboxes(ctx, store.Filter{Node: s.cfg.Node, Statuses: statusStrings(Active)})
	if err != nil {
		return err
	}
	infos, err := s.rt.List(ctx)
	if err != nil {
		return err
	}
	have := map[string]runtime.Info{}
	for _, in := range infos {
		have[in.ID] = in
	}
	known := map[string]bool{}
	for _, row := range rows {
		known[row.ID] = true
		info, exists := have[row.ID]
		switch Status(row.Status) {
		case StatusCreating:
			_ = s.rt.Destroy(ctx, row.ID) // what the crash left of it, if anything
			_ = s.transition(ctx, row, []Status{StatusCreating}, StatusFailed, "restart", "interrupted by a restart of sandpool")
		case StatusStopping:
			if err := s.rt.Destroy(ctx, row.ID); err == nil {
				_ = s.transition(ctx, row, []Status{StatusStopping}, StatusStopped, "restart", "")
			}
		default:
			if !exists || info.Status == runtime.StatusBroken || info.Status == runtime.StatusStopped {
				_ = s.rt.Destroy(ctx, row.ID) // clear what is left
				_ = s.transition(ctx, row, nil, StatusStopped, "lost", "its processes were gone when sandpool started")
				continue
			}
			var sp spec
			_ = json.Unmarshal([]byte(row.Spec), &sp) // written by us
			s.touchNew(row.ID, sp.Timeout)
		}
	}
	for id := range have {
		if !known[id] {
			row, err := s.st.GetSandbox(ctx, id)
			if err == nil && row.Node != s.cfg.Node {
				continue
			}
			s.cfg.Log.Warn("destroying a sandbox the store does not know", "sandbox", id)
			if err := s.rt.Destroy(ctx, id); err != nil {
				s.cfg.Log.Error("destroy unknown sandbox", "sandbox", id, "err", err)
			}
		}
	}
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.mu.Lock()
	s.stop = cancel
	s.mu.Unlock()
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		s.reapLoop(rctx)
	}()
	return nil
}

// reapLoop kills sandboxes idle past their timeout. Each round has its own
// deadline; a failing round never ends the loop.
func (s *Service) reapLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.ReapInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.reapOnce()
		}
	}
}

func (s *Service) reapOnce() {
	now := time.Now()
	var due []string
	s.mu.Lock()
	for id, a := range s.activity {
		if a.timeout > 0 && a.streams == 0 && now.Sub(a.last) > a.timeout {
			due = append(due, id)
		}
	}
	s.mu.Unlock()
	for _, id := range due {
		// Destroys are work that must finish: not tied to shutdown.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		row, err := s.st.GetSandbox(ctx, id)
		if err == nil {
			err = s.destroy(ctx, row, "timeout")
		}
		if err != nil {
			s.cfg.Log.Error("reap idle sandbox", "sandbox", id, "err", err)
		}
		cancel()
	}
}

// checkedFiles retires the sandbox when a file operation finds it broken.
type checkedFiles struct {
	s   *Service
	row store.Sandbox
	f   runtime.Files
}

func (c checkedFiles) Read(ctx context.Context, path string) (io.ReadCloser, runtime.FileInfo, error) {
	rc, fi, err := c.f.Read(ctx, path)
	return rc, fi, c.s.check(c.row, err)
}

func (c checkedFiles) Write(ctx context.Context, path string, r io.Reader, opts runtime.WriteOptions) (int64, error) {
	n, err := c.f.Write(ctx, path, r, opts)
	return n, c.s.check(c.row, err)
}

func (c checkedFiles) List(ctx context.Context, path string) ([]runtime.FileInfo, error) {
	out, err := c.f.List(ctx, path)
	return out, c.s.check(c.row, err)
}

func (c checkedFiles) Stat(ctx context.Context, path string) (runtime.FileInfo, error) {
	fi, err := c.f.Stat(ctx, path)
	return fi, c.s.check(c.row, err)
}

func (c checkedFiles) Mkdir(ctx context.Context, path string, opts runtime.MkdirOptions) error {
	return c.s.check(c.row, c.f.Mkdir(ctx, path, opts))
}

func (c checkedFiles) Remove(ctx context.Context, path string, recursive bool) error {
	return c.s.check(c.row, c.f.Remove(ctx, path, recursive))
}

func (c checkedFiles) Rename(ctx context.Context, from, to string) error {
	return c.s.check(c.row, c.f.Rename(ctx, from, to))
}
