package sandbox

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/runtime"
	"github.com/sandpool/sandpool/internal/store"
)

// keyedMutex is one mutex per sandbox id, made on demand.
type keyedMutex struct {
	mu sync.Mutex
	m  map[string]*keyedEntry
}

type keyedEntry struct {
	mu   sync.Mutex
	refs int
}

// tryLock locks id's mutex if it is free; ok false if someone holds it.
func (k *keyedMutex) tryLock(id string) (unlock func(), ok bool) {
	k.mu.Lock()
	if k.m == nil {
		k.m = map[string]*keyedEntry{}
	}
	e := k.m[id]
	if e == nil {
		e = &keyedEntry{}
		k.m[id] = e
	}
	if !e.mu.TryLock() {
		if e.refs == 0 {
			delete(k.m, id)
		}
		k.mu.Unlock()
		return nil, false
	}
	e.refs++
	k.mu.Unlock()
	return func() {
		e.mu.Unlock()
		k.mu.Lock()
		if e.refs--; e.refs == 0 {
			delete(k.m, id)
		}
		k.mu.Unlock()
	}, true
}

// lock locks id's mutex and returns its unlock.
func (k *keyedMutex) lock(id string) func() {
	k.mu.Lock()
	if k.m == nil {
		k.m = map[string]*keyedEntry{}
	}
	e := k.m[id]
	if e == nil {
		e = &keyedEntry{}
		k.m[id] = e
	}
	e.refs++
	k.mu.Unlock()
	e.mu.Lock()
	return func() {
		e.mu.Unlock()
		k.mu.Lock()
		if e.refs--; e.refs == 0 {
			delete(k.m, id)
		}
		k.mu.Unlock()
	}
}

type noAutoResumeKey struct{}

// WithoutAutoResume makes calls on ctx refuse a paused sandbox (409)
// instead of resuming it first.
func WithoutAutoResume(ctx context.Context) context.Context {
	return context.WithValue(ctx, noAutoResumeKey{}, true)
}

func autoResume(ctx context.Context) bool { return ctx.Value(noAutoResumeKey{}) == nil }

// storeErr turns a lost conditional update into a conflict for the caller.
func (s *Service) storeErr(err error) error {
	if errdefs.CodeOf(err) != "" {
		return err // says precisely what it is already (gpus_exhausted)
	}
	if errors.Is(err, errdefs.ErrConflict) {
		return errdefs.Userf(errdefs.ErrConflict, "%v", err)
	}
	if errors.Is(err, errdefs.ErrNotFound) {
		return errdefs.Userf(errdefs.ErrNotFound, "%v", err)
	}
	return err
}

func (s *Service) archiveAfter(row store.Sandbox) int {
	if row.ArchiveAfter > 0 {
		return row.ArchiveAfter
	}
	return int(s.cfg.ArchiveAfter / time.Second)
}

// opTimeout bounds a pause, archive or resume: work that is finished even
// when its caller goes away, but never waits forever (a process stuck in
// the kernel can keep a freeze from completing).
const opTimeout = time.Minute

// PauseOptions modify Pause.
type PauseOptions struct {
	// Archive stops the processes too (memory freed, files kept).
	Archive bool
}

// Pause freezes a running sandbox: every process stops where it is, its
// memory is kept, it uses no CPU. With Archive (or later, after
// archive_after) its processes are stopped and its memory freed; its files
// stay. A failed pause destroys the sandbox, and the event says why.
func (s *Service) Pause(ctx context.Context, tenant, id string, opts PauseOptions) (Sandbox, error) {
	row, err := s.row(ctx, tenant, id)
	if err != nil {
		return Sandbox{}, err
	}
	if err := s.pause(ctx, row, "requested", opts.Archive); err != nil {
		return Sandbox{}, err
	}
	return s.Get(ctx, tenant, id)
}

// pause does Pause on work that must finish: it is not tied to ctx's
// cancellation.
func (s *Service) pause(ctx context.Context, row store.Sandbox, reason string, archive bool) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), opTimeout)
	defer cancel()
	unlock := s.locks.lock(row.ID)
	defer unlock()
	row, err := s.st.GetSandbox(ctx, row.ID) // as it is now, under the lock
	if err != nil {
		return s.storeErr(err)
	}
	switch Status(row.Status) {
	case StatusPaused:
		if reason == "archive_after" && time.Since(row.PausedAt) < time.Duration(s.archiveAfter(row))*time.Second {
			return nil // resumed and paused again since the reaper looked
		}
		if archive && !row.Archived {
			return s.archive(ctx, row, reason)
		}
		return nil
	case StatusRunning:
		if reason == "archive_after" {
			return nil // resumed meanwhile: not for archiving
		}
	default:
		return errdefs.Userf(errdefs.ErrConflict, "sandbox %s is %s; only a running sandbox can be paused", row.ID, row.Status)
	}
	if row.Pool != "" {
		return errdefs.Userf(errdefs.ErrConflict, "sandbox %s is from pool %s: release it instead", row.ID, row.Pool)
	}
	now := time.Now()
	var left time.Duration
	s.mu.Lock()
	a := s.activity[row.ID]
	if reason == "timeout" && (a == nil || s.streams[row.ID] > 0 || now.Sub(a.last) <= a.timeout) {
		s.mu.Unlock()
		return nil // active again since the reaper looked
	}
	if a != nil {
		// Calls that come now wait for this pause, then resume.
		a.pausing = true
		if a.timeout > 0 {
			left = max(a.timeout-now.Sub(a.last), 0)
			if s.streams[row.ID] > 0 {
				left = a.timeout // an open stream is activity
			}
		}
	}
	s.mu.Unlock()
	notPausing := func() {
		s.mu.Lock()
		if a := s.activity[row.ID]; a != nil {
			a.pausing = false
		}
		s.mu.Unlock()
	}
	paused := string(StatusPaused)
	// Written before the freeze: a crash in between is finished by the
	// reconciler, which freezes a sandbox the store calls paused.
	if err := s.st.UpdateSandbox(ctx, row.ID, []string{string(StatusRunning)},
		store.Update{Status: &paused, PausedAt: &now, TimeoutLeft: &left, Archived: new(false)}); err != nil {
		notPausing()
		return s.storeErr(err)
	}
	s.forget(row.ID)
	if err := s.rt.Freeze(ctx, row.ID); err != nil {
		s.failPause(ctx, row, err)
		return fmt.Errorf("pause sandbox %s: %w", row.ID, err)
	}
	s.publish(row, StatusPaused, reason, "")
	s.m.pauses.WithLabelValues(reason).Inc()
	if archive {
		row.Status, row.PausedAt, row.TimeoutLeft = paused, now, left
		return s.archive(ctx, row, reason)
	}
	return nil
}

// failPause destroys a sandbox whose pause failed: a sandbox is never
// left half paused.
func (s *Service) failPause(ctx context.Context, row store.Sandbox, cause error) {
	s.cfg.Log.Error("pause failed; destroying the sandbox", "sandbox", row.ID, "err", cause)
	row.Status = string(StatusPaused)
	row.Error = "pause failed: " + cause.Error()
	if err := s.destroy(ctx, row, "pause_failed"); err != nil {
		s.cfg.Log.Error("destroy sandbox after a failed pause", "sandbox", row.ID, "err", err)
	}
}

// archive stops a paused sandbox's processes, keeping its files. The
// caller holds the sandbox's lock.
func (s *Service) archive(ctx context.Context, row store.Sandbox, reason string) error {
	if err := s.rt.Stop(ctx, row.ID); err != nil {
		s.failPause(ctx, row, err)
		return fmt.Errorf("archive sandbox %s: %w", row.ID, err)
	}
	// Its processes are gone, and with them its hold on its GPUs: they
	// go back (a resume takes GPUs again).
	if err := s.st.UpdateSandbox(ctx, row.ID, []string{string(StatusPaused)}, store.Update{Archived: new(true), GPUs: new("")}); err != nil {
		return s.storeErr(err)
	}
	s.releaseGPUs(row.ID)
	s.publish(row, StatusPaused, "archived: "+reason, "")
	s.m.archives.Inc()
	return nil
}

// ResumeInfo says what a resume brought back.
type ResumeInfo struct {
	// From is "frozen" (processes and memory kept) or "archive" (the
	// sandbox was started again on its files; its processes were not
	// kept), or "" if it was running already.
	From          string `json:"resumed_from,omitempty"`
	ProcessesKept bool   `json:"processes_kept"`
}

// Resume makes a paused sandbox run again, with the inactivity timeout it
// had left when paused (the full timeout if it was paused for timing out).
func (s *Service) Resume(ctx context.Context, tenant, id string) (Sandbox, ResumeInfo, error) {
	row, err := s.row(ctx, tenant, id)
	if err != nil {
		return Sandbox{}, ResumeInfo{}, err
	}
	info, err := s.resume(ctx, row, "requested")
	if err != nil {
		return Sandbox{}, ResumeInfo{}, err
	}
	sb, err := s.Get(ctx, tenant, id)
	return sb, info, err
}

func (s *Service) resume(ctx context.Context, row store.Sandbox, reason string) (ResumeInfo, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), opTimeout)
	defer cancel()
	unlock := s.locks.lock(row.ID)
	defer unlock()
	row, err := s.st.GetSandbox(ctx, row.ID)
	if err != nil {
		return ResumeInfo{}, s.storeErr(err)
	}
	switch Status(row.Status) {
	case StatusRunning:
		return ResumeInfo{ProcessesKept: true}, nil // resumed meanwhile
	case StatusPaused:
	default:
		return ResumeInfo{}, errdefs.Userf(errdefs.ErrConflict, "sandbox %s is %s; only a paused sandbox can be resumed", row.ID, row.Status)
	}
	start := time.Now()
	info := ResumeInfo{From: "frozen", ProcessesKept: true}
	if rs, err := s.rt.Get(ctx, row.ID); err == nil && !row.Archived &&
		(rs.Status == runtime.StatusStopped || rs.Status == runtime.StatusBroken) {
		// Its processes are gone though the store says frozen (an archive
		// whose record failed, a host restart): start it on its files.
		row.Archived = true
	}
	if row.Archived {
		info = ResumeInfo{From: "archive"}
		if err := s.regainGPUs(ctx, row); err != nil {
			return ResumeInfo{}, err // it stays archived
		}
		if _, err := s.rt.Start(ctx, row.ID); err != nil {
			s.retire(row, &errdefs.StateError{Sandbox: row.ID, Err: fmt.Errorf("start from archive: %w", err)})
			return ResumeInfo{}, fmt.Errorf("resume sandbox %s: %w", row.ID, err)
		}
	} else if err := s.rt.Thaw(ctx, row.ID); err != nil {
		if !errors.Is(err, errdefs.ErrConflict) {
			s.retire(row, &errdefs.StateError{Sandbox: row.ID, Err: fmt.Errorf("thaw: %w", err)})
		}
		return ResumeInfo{}, fmt.Errorf("resume sandbox %s: %w", row.ID, err)
	}
	running := string(StatusRunning)
	var zero time.Time
	if err := s.st.UpdateSandbox(ctx, row.ID, []string{string(StatusPaused)},
		store.Update{Status: &running, PausedAt: &zero, Archived: new(false), TimeoutLeft: new(time.Duration(0))}); err != nil {
		return ResumeInfo{}, s.storeErr(err)
	}
	// The countdown goes on from where it was paused; a sandbox paused for
	// timing out gets its whole timeout again.
	last := time.Now()
	if full := time.Duration(row.Timeout) * time.Second; row.TimeoutLeft > 0 && row.TimeoutLeft < full {
		last = last.Add(row.TimeoutLeft - full)
	}
	row.Status = running
	s.track(row, last)
	s.publish(row, StatusRunning, "resumed: "+reason, "")
	s.m.resumes.WithLabelValues(info.From).Inc()
	s.m.resumeLatency.WithLabelValues(info.From).Observe(time.Since(start).Seconds())
	return info, nil
}
