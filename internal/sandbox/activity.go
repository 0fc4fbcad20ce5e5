package sandbox

import (
	"context"
	"time"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/proc"
	"github.com/sandpool/sandpool/internal/store"
)

// activity is what the reaper needs to know of a running sandbox. It is
// kept in memory (every call touches it) and persisted by the reaper.
type activity struct {
	last      time.Time
	timeout   time.Duration
	onTimeout string
	dirty     bool // last changed since it was persisted
	pausing   bool // a pause is under way: calls wait for it, then resume
}

// track starts tracking a running sandbox, as last active at last.
func (s *Service) track(row store.Sandbox, last time.Time) {
	s.mu.Lock()
	s.activity[row.ID] = &activity{last: last, timeout: time.Duration(row.Timeout) * time.Second,
		onTimeout: row.OnTimeout, dirty: true}
	s.mu.Unlock()
}

// touch records activity on a sandbox.
func (s *Service) touch(id string) {
	s.mu.Lock()
	if a := s.activity[id]; a != nil {
		a.last = time.Now()
		a.dirty = true
	}
	s.mu.Unlock()
}

func (s *Service) forget(id string) {
	s.mu.Lock()
	delete(s.activity, id)
	s.mu.Unlock()
}

// Ping records activity (resuming a paused sandbox) and returns the
// sandbox.
func (s *Service) Ping(ctx context.Context, tenant, id string) (Sandbox, error) {
	row, err := s.running(ctx, tenant, id)
	if err != nil {
		return Sandbox{}, err
	}
	return s.fromRow(row), nil
}

// OnTimeout actions.
const (
	OnTimeoutPause = "pause"
	OnTimeoutKill  = "kill"
)

func checkTimeout(timeout int, onTimeout string, archiveAfter int) error {
	if timeout < 0 || timeout > 30*24*3600 {
		return errdefs.Userf(errdefs.ErrInvalid, "timeout %d out of range: 0 (none) to 2592000 seconds", timeout)
	}
	if onTimeout != "" && onTimeout != OnTimeoutPause && onTimeout != OnTimeoutKill {
		return errdefs.Userf(errdefs.ErrInvalid, "on_timeout %q: want pause or kill", onTimeout)
	}
	if archiveAfter < 0 || archiveAfter > 365*24*3600 {
		return errdefs.Userf(errdefs.ErrInvalid, "archive_after %d out of range: 0 (the server's default) to 31536000 seconds", archiveAfter)
	}
	return nil
}

// TimeoutRequest changes a sandbox's timeout settings; nil keeps one.
type TimeoutRequest struct {
	Timeout      *int    `json:"timeout,omitempty"`
	OnTimeout    *string `json:"on_timeout,omitempty"`
	ArchiveAfter *int    `json:"archive_after,omitempty"`
}

// SetTimeout changes a sandbox's timeout settings. It counts as activity:
// a running sandbox's countdown starts again.
func (s *Service) SetTimeout(ctx context.Context, tenant, id string, req TimeoutRequest) (Sandbox, error) {
	row, err := s.row(ctx, tenant, id)
	if err != nil {
		return Sandbox{}, err
	}
	timeout, onTimeout, archiveAfter := row.Timeout, row.OnTimeout, row.ArchiveAfter
	if req.Timeout != nil {
		timeout = *req.Timeout
	}
	if req.OnTimeout != nil {
		onTimeout = *req.OnTimeout
	}
	if req.ArchiveAfter != nil {
		archiveAfter = *req.ArchiveAfter
	}
	if err := checkTimeout(timeout, onTimeout, archiveAfter); err != nil {
		return Sandbox{}, err
	}
	unlock := s.locks.lock(id)
	defer unlock()
	u := store.Update{Timeout: &timeout, OnTimeout: &onTimeout, ArchiveAfter: &archiveAfter}
	if err := s.st.UpdateSandbox(ctx, id, []string{string(StatusRunning), string(StatusPaused), string(StatusReady)}, u); err != nil {
		return Sandbox{}, s.storeErr(err)
	}
	s.mu.Lock()
	if a := s.activity[id]; a != nil {
		a.timeout, a.onTimeout = time.Duration(timeout)*time.Second, onTimeout
		a.last, a.dirty = time.Now(), true
	}
	s.mu.Unlock()
	return s.Get(ctx, tenant, id)
}

// tracked counts a process stream as activity while it is open. Open
// streams are counted apart from the activity record, which a pause and
// resume replace: a stream open across them still counts.
func (s *Service) tracked(row store.Sandbox, p proc.Process) proc.Process {
	s.mu.Lock()
	s.streams[row.ID]++
	s.mu.Unlock()
	return &trackedProcess{Process: p, s: s, id: row.ID, row: row, start: time.Now()}
}

type trackedProcess struct {
	proc.Process
	s     *Service
	id    string
	row   store.Sandbox
	start time.Time
	done  bool
}

func (p *trackedProcess) end() {
	p.s.mu.Lock()
	if !p.done {
		p.done = true
		if p.s.streams[p.id]--; p.s.streams[p.id] <= 0 {
			delete(p.s.streams, p.id)
		}
		if a := p.s.activity[p.id]; a != nil {
			a.last = time.Now()
			a.dirty = true
		}
	}
	p.s.mu.Unlock()
}

func (p *trackedProcess) Wait() (proc.ExitStatus, error) {
	st, err := p.Process.Wait()
	p.end()
	if err == nil {
		p.s.m.execDuration.Observe(time.Since(p.start).Seconds())
	}
	return st, p.s.check(p.row, err)
}

func (p *trackedProcess) Close() error {
	p.end()
	return p.Process.Close()
}
