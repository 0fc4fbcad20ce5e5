package sandbox

import (
	"context"
	"fmt"
	"time"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/store"
)

// running returns the row of a running sandbox of tenant, or the error to
// give the caller, and marks activity.
func (s *Service) running(ctx context.Context, tenant, id string) (store.Sandbox, error) {
	row, err := s.row(ctx, tenant, id)
	if err != nil {
		return row, err
	}
	if row.Node != s.cfg.Node {
		return row, fmt.Errorf("%w: sandbox %s lives on node %s", ErrElsewhere, id, row.Node)
	}
	switch Status(row.Status) {
	case StatusRunning:
	case StatusPaused:
		if err := s.mayResume(ctx, row); err != nil {
			return row, err
		}
		if _, err := s.resume(ctx, row, "traffic"); err != nil {
			return row, err
		}
		if row, err = s.st.GetSandbox(ctx, id); err != nil {
			return row, err
		}
		if Status(row.Status) != StatusRunning {
			return row, errdefs.Userf(errdefs.ErrConflict, "sandbox %s is %s", id, row.Status)
		}
	case StatusFailed:
		return row, errdefs.Userf(errdefs.ErrConflict, "sandbox %s has failed: %s", id, row.Error)
	default:
		return row, errdefs.Userf(errdefs.ErrConflict, "sandbox %s is %s", id, row.Status)
	}
	// Touched under s.mu, where a pause checks activity and says it is
	// pausing: either the pause sees this call and gives up (a timeout),
	// or this call sees the pause, waits for it and resumes the sandbox.
	s.mu.Lock()
	a := s.activity[id]
	pausing := a != nil && a.pausing
	if a != nil && !pausing {
		a.last, a.dirty = time.Now(), true
	}
	s.mu.Unlock()
	if a == nil && row.Pool != "" {
		// A pool's sandbox handed out through another node: its activity
		// is tracked here, where it runs.
		s.track(row, time.Now())
	}
	if pausing {
		return s.runningAgain(ctx, tenant, id)
	}
	return row, nil
}

// runningAgain waits for a pause under way, then resumes the sandbox (or
// refuses, without auto-resume).
func (s *Service) runningAgain(ctx context.Context, tenant, id string) (store.Sandbox, error) {
	unlock := s.locks.lock(id) // the pause holds it until it is done
	unlock()
	row, err := s.row(ctx, tenant, id)
	if err != nil {
		return row, err
	}
	if Status(row.Status) == StatusPaused {
		if err := s.mayResume(ctx, row); err != nil {
			return row, err
		}
		if _, err := s.resume(ctx, row, "traffic"); err != nil {
			return row, err
		}
		row, err = s.st.GetSandbox(ctx, id)
		if err != nil {
			return row, err
		}
	}
	if Status(row.Status) != StatusRunning {
		return row, errdefs.Userf(errdefs.ErrConflict, "sandbox %s is %s", id, row.Status)
	}
	s.touch(id)
	return row, nil
}

// mayResume says why a call may not resume a paused sandbox: the caller
// asked it not to, or the sandbox was made without auto-resume.
func (s *Service) mayResume(ctx context.Context, row store.Sandbox) error {
	if !autoResume(ctx) {
		return errdefs.Userf(errdefs.ErrConflict, "sandbox %s is paused (resume it, or allow calls to resume it)", row.ID)
	}
	if specOf(row).NoAutoResume {
		return errdefs.Userf(errdefs.ErrConflict, "sandbox %s is paused and was made without auto-resume (resume it)", row.ID)
	}
	return nil
}
