package sandbox

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/store"
)

// Delete destroys a sandbox. Deleting a stopped or failed one does nothing.
func (s *Service) Delete(ctx context.Context, tenant, id string) error {
	row, err := s.row(ctx, tenant, id)
	if err != nil {
		return err
	}
	unlock := s.locks.lock(id) // not in the middle of a pause or resume
	defer unlock()
	return s.destroy(ctx, row, "deleted")
}

func (s *Service) destroy(ctx context.Context, row store.Sandbox, reason string) error {
	switch Status(row.Status) {
	case StatusStopped, StatusFailed, StatusLost:
		// Nothing runs; make sure of it (a failed create may have left
		// part of a sandbox when its cleanup failed).
		err := s.rt.Destroy(context.WithoutCancel(ctx), row.ID)
		s.releaseGPUs(row.ID)
		return err
	}
	err := s.transition(ctx, row, []Status{StatusCreating, StatusReady, StatusRunning, StatusResetting, StatusPaused}, StatusStopping, reason, "")
	if err != nil {
		if errors.Is(err, errdefs.ErrConflict) {
			return nil // someone else is stopping it
		}
		return err
	}
	s.forget(row.ID)
	cctx := context.WithoutCancel(ctx)
	if err := s.rt.Destroy(cctx, row.ID); err != nil {
		_ = s.transition(cctx, row, []Status{StatusStopping}, StatusFailed, reason, "destroy: "+err.Error()) // best effort: the error is returned
		s.releaseGPUs(row.ID)
		return fmt.Errorf("destroy sandbox %s: %w", row.ID, err)
	}
	// Its processes are gone: its GPUs are free.
	s.releaseGPUs(row.ID)
	return s.transition(cctx, row, []Status{StatusStopping}, StatusStopped, reason, row.Error)
}

// check retires the sandbox if err says it is broken, and returns err.
func (s *Service) check(row store.Sandbox, err error) error {
	if err == nil || !errdefs.IsStateError(err) {
		return err
	}
	s.retire(row, err)
	return err
}

// retire takes a broken sandbox out of service in the background. A pool's
// sandbox is marked failed and destroyed (the pool makes another). A
// caller's sandbox keeps its files: its processes are stopped and it is
// marked paused and archived, with the cause, so a resume starts it again
// (the reconciler treats a sandbox that lost its processes the same way).
func (s *Service) retire(row store.Sandbox, cause error) {
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		unlock := s.locks.lock(row.ID)
		defer unlock()
		s.cfg.Log.Warn("retiring broken sandbox", "sandbox", row.ID, "err", cause)
		if row.Pool == "" && Status(row.Status) == StatusRunning {
			if err := s.rt.Stop(ctx, row.ID); err == nil {
				paused, now := string(StatusPaused), time.Now()
				msg := "it broke (" + cause.Error() + "); its files are kept: resume starts it again"
				if err := s.st.UpdateSandbox(ctx, row.ID, []string{string(StatusRunning)},
					store.Update{Status: &paused, PausedAt: &now, Archived: new(true), Error: &msg, GPUs: new("")}); err == nil {
					s.releaseGPUs(row.ID) // archived: a resume takes GPUs again
					s.forget(row.ID)
					s.publish(row, StatusPaused, "broken", msg)
					return
				}
			}
		}
		if err := s.transition(ctx, row, []Status{StatusRunning, StatusReady, StatusResetting, StatusPaused}, StatusFailed, "broken", cause.Error()); err != nil {
			return // already on its way out
		}
		s.forget(row.ID)
		if err := s.rt.Destroy(ctx, row.ID); err != nil {
			s.cfg.Log.Error("destroy broken sandbox", "sandbox", row.ID, "err", err)
		}
		s.releaseGPUs(row.ID)
	}()
}
