package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/loop"
	"github.com/sandpool/sandpool/internal/runtime"
	"github.com/sandpool/sandpool/internal/store"
)

// Start brings the books in line with the runtime after a start (a first
// reconciler pass that also finishes what a crash left half done, and an
// image GC), then
// starts the reaper and the reconciler. Sandboxes that are fine go on
// running, with their persisted last activity.
func (s *Service) Start(ctx context.Context) error {
	// Who holds which GPU, as the rows say, before anything is fixed or
	// made.
	if err := s.restoreGPUs(ctx); err != nil {
		return err
	}
	if err := s.reconcile(ctx, true); err != nil {
		return err
	}
	// Image records of templates a crash left unmade, and layers no
	// template uses (a pull or build cut short).
	s.gcImages(ctx)
	lctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.mu.Lock()
	s.stop = cancel
	s.mu.Unlock()
	// Rounds are detached: a pause or destroy under way is finished, not
	// cut in half by a shutdown.
	s.bg.Go(func() {
		loop.Run(lctx, loop.Options{Name: "reaper", Every: s.cfg.ReapInterval, Timeout: 5 * time.Minute, Detached: true, Log: s.cfg.Log},
			func(ctx context.Context) error { s.reapOnce(ctx); return nil })
	})
	s.bg.Go(func() {
		loop.Run(lctx, loop.Options{Name: "reconciler", Every: s.cfg.ReconcileInterval, Timeout: 5 * time.Minute, Detached: true, Log: s.cfg.Log},
			func(ctx context.Context) error { return s.reconcile(ctx, false) })
	})
	return nil
}

// reapOnce persists activity, pauses (or kills) sandboxes idle past their
// timeout, and archives sandboxes paused longer than archive_after.
func (s *Service) reapOnce(ctx context.Context) {
	now := time.Now()
	touched := map[string]time.Time{}
	var due []string
	s.mu.Lock()
	for id, a := range s.activity {
		if a.dirty {
			touched[id] = a.last
			a.dirty = false
		}
		if a.timeout > 0 && s.streams[id] == 0 && now.Sub(a.last) > a.timeout {
			due = append(due, id)
		}
	}
	s.mu.Unlock()
	if err := s.st.TouchSandboxes(ctx, touched); err != nil {
		s.cfg.Log.Warn("persist activity", "err", err)
		s.mu.Lock()
		for id := range touched {
			if a := s.activity[id]; a != nil {
				a.dirty = true // try again next round
			}
		}
		s.mu.Unlock()
	}
	for _, id := range due {
		s.timedOut(ctx, id)
	}
	paused, err := s.st.ListSandboxes(ctx, store.Filter{Node: s.cfg.Node, Statuses: []string{string(StatusPaused)}})
	if err != nil {
		s.cfg.Log.Warn("list paused sandboxes", "err", err)
		return
	}
	for _, row := range paused {
		if row.Archived || now.Sub(row.PausedAt) < time.Duration(s.archiveAfter(row))*time.Second {
			continue
		}
		if err := s.pause(ctx, row, "archive_after", true); err != nil {
			s.cfg.Log.Error("archive paused sandbox", "sandbox", row.ID, "err", err)
		}
	}
}

// timedOut pauses or kills a sandbox idle past its timeout, checking again
// under its lock that it still is.
func (s *Service) timedOut(ctx context.Context, id string) {
	s.mu.Lock()
	a := s.activity[id]
	still := a != nil && a.timeout > 0 && s.streams[id] == 0 && time.Since(a.last) > a.timeout
	var action string
	if a != nil {
		action = a.onTimeout
	}
	s.mu.Unlock()
	if !still {
		return
	}
	row, err := s.st.GetSandbox(ctx, id)
	if err != nil {
		s.cfg.Log.Error("reap idle sandbox", "sandbox", id, "err", err)
		return
	}
	if action == OnTimeoutKill || row.Pool != "" {
		err = s.killIdle(ctx, id)
	} else {
		s.m.timeouts.WithLabelValues(OnTimeoutPause).Inc()
		err = s.pause(ctx, row, "timeout", false)
	}
	if err != nil {
		s.cfg.Log.Error("reap idle sandbox", "sandbox", id, "err", err)
	}
}

// killIdle destroys a running sandbox idle past its timeout, checking
// under its lock that it still is running and idle.
func (s *Service) killIdle(ctx context.Context, id string) error {
	unlock := s.locks.lock(id)
	defer unlock()
	row, err := s.st.GetSandbox(ctx, id)
	if err != nil {
		return err
	}
	s.mu.Lock()
	a := s.activity[id]
	due := a != nil && s.streams[id] == 0 && a.timeout > 0 && time.Since(a.last) > a.timeout
	s.mu.Unlock()
	if Status(row.Status) != StatusRunning || !due {
		return nil // released, paused or used meanwhile
	}
	s.m.timeouts.WithLabelValues(OnTimeoutKill).Inc()
	return s.destroy(ctx, row, "timeout")
}

// reconcile compares the runtime with the store for this node's sandboxes
// and makes them agree:
//
//   - the store says running (or ready) and the runtime has nothing: stopped;
//     the runtime has its files but no processes: paused and archived (a
//     resume starts it again) — for a pool's idle sandbox, destroyed;
//   - the store says paused and the runtime runs it: frozen again (a pause
//     cut short); the runtime has no processes: archived;
//   - the runtime has a sandbox the store does not know (or calls stopped):
//     destroyed.
//
// At startup it also finishes rows a crash left creating, stopping or
// resetting. While running, those belong to work in progress and are left
// alone; so is any sandbox whose lock is held.
func (s *Service) reconcile(ctx context.Context, startup bool) error {
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
		if startup {
			s.recoverRow(ctx, row, have)
		} else {
			s.reconcileRow(ctx, row)
		}
	}
	for id := range have {
		if known[id] {
			continue
		}
		// Listed after the rows: a sandbox made meanwhile has a row now.
		row, err := s.st.GetSandbox(ctx, id)
		switch {
		case err == nil && row.Node != s.cfg.Node:
			continue // another node's (sharing a data directory is not supported, but do no harm)
		case err == nil && Status(row.Status) != StatusStopped && Status(row.Status) != StatusFailed && Status(row.Status) != StatusLost:
			continue // active: its row was written after the list
		case err != nil && !errors.Is(err, errdefs.ErrNotFound):
			return err
		}
		s.cfg.Log.Warn("destroying a sandbox the store does not know", "sandbox", id)
		s.m.fixes.WithLabelValues("destroy_unknown").Inc()
		if err := s.rt.Destroy(ctx, id); err != nil {
			s.cfg.Log.Error("destroy unknown sandbox", "sandbox", id, "err", err)
		} else {
			s.releaseGPUs(id)
		}
	}
	if err := s.syncGPUs(ctx); err != nil {
		return err
	}
	s.m.reconciles.Inc()
	return nil
}

// recoverRow handles one row at startup.
func (s *Service) recoverRow(ctx context.Context, row store.Sandbox, have map[string]runtime.Info) {
	switch Status(row.Status) {
	case StatusCreating:
		_ = s.rt.Destroy(ctx, row.ID) // what the crash left of it, if anything
		s.releaseGPUs(row.ID)
		_ = s.transition(ctx, row, []Status{StatusCreating}, StatusFailed, "restart", "interrupted by a restart of sandpool")
		s.m.fixes.WithLabelValues("fail_creating").Inc()
	case StatusStopping:
		if err := s.rt.Destroy(ctx, row.ID); err == nil {
			s.releaseGPUs(row.ID)
			_ = s.transition(ctx, row, []Status{StatusStopping}, StatusStopped, "restart", "")
			s.m.fixes.WithLabelValues("finish_stopping").Inc()
		}
	case StatusResetting:
		// The pool manager finishes the reset.
	default:
		s.reconcileRow(ctx, row)
		if row, err := s.st.GetSandbox(ctx, row.ID); err == nil && Status(row.Status) == StatusRunning {
			last := row.LastActive
			if last.IsZero() {
				last = time.Now()
			}
			s.track(row, last)
		}
	}
}

// reconcileRow makes the runtime and one row of a running, ready or
// paused sandbox agree.
func (s *Service) reconcileRow(ctx context.Context, row store.Sandbox) {
	switch Status(row.Status) {
	case StatusRunning, StatusReady, StatusPaused:
	case StatusStopping:
		// A destroy whose last record failed: finish it, once it is
		// clearly not under way.
		if time.Since(row.UpdatedAt) > time.Minute {
			if unlock, ok := s.locks.tryLock(row.ID); ok {
				defer unlock()
				if err := s.rt.Destroy(ctx, row.ID); err == nil {
					s.releaseGPUs(row.ID)
					s.m.fixes.WithLabelValues("finish_stopping").Inc()
					_ = s.transition(ctx, row, []Status{StatusStopping}, StatusStopped, "reconciled", "")
				}
			}
		}
		return
	default:
		return
	}
	unlock, ok := s.locks.tryLock(row.ID)
	if !ok {
		return // a pause, resume, reset or delete is under way: next pass
	}
	defer unlock()
	row, err := s.st.GetSandbox(ctx, row.ID) // as it is now, under the lock
	if err != nil {
		return
	}
	switch Status(row.Status) {
	case StatusRunning, StatusReady, StatusPaused:
	default:
		return // deleted, or being reset, meanwhile
	}
	info, err := s.rt.Get(ctx, row.ID)
	exists := err == nil
	if err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		s.cfg.Log.Warn("reconcile: runtime", "sandbox", row.ID, "err", err)
		return
	}
	fix := func(action, reason string) {
		s.m.fixes.WithLabelValues(action).Inc()
		s.cfg.Log.Warn("reconciler: "+reason, "sandbox", row.ID, "status", row.Status, "action", action)
	}
	status := Status(row.Status)
	switch {
	case !exists:
		fix("mark_stopped", "the runtime has no such sandbox")
		s.forget(row.ID)
		s.releaseGPUs(row.ID)
		_ = s.transition(ctx, row, []Status{status}, StatusStopped, "lost", "its processes and files were gone")
	case info.Status == runtime.StatusBroken || info.Status == runtime.StatusStopped:
		if row.Archived && info.Status == runtime.StatusStopped {
			return // an archived sandbox: as it should be
		}
		if status == StatusReady || row.Pool != "" {
			fix("destroy", "a pool's sandbox lost its processes")
			_ = s.destroy(ctx, row, "lost")
			return
		}
		// Its files are there: keep them, as an archived pause.
		fix("archive", "the sandbox lost its processes; its files are kept")
		if err := s.rt.Stop(ctx, row.ID); err != nil {
			s.cfg.Log.Error("reconcile: stop broken sandbox", "sandbox", row.ID, "err", err)
			return
		}
		s.forget(row.ID)
		paused, now := string(StatusPaused), time.Now()
		u := store.Update{Status: &paused, Archived: new(true), GPUs: new(""),
			Error: new("its processes were lost (host restart or crash); resume starts it again on its files")}
		if status != StatusPaused {
			u.PausedAt = &now
		}
		if err := s.st.UpdateSandbox(ctx, row.ID, []string{string(status)}, u); err == nil {
			s.releaseGPUs(row.ID)
			s.publish(row, StatusPaused, "processes lost", "")
		}
	case status == StatusPaused && row.Archived && info.Status != runtime.StatusStopped:
		fix("archive", "an archived sandbox was running")
		// A resume cut short: archived again, its GPUs given back.
		if err := s.rt.Stop(ctx, row.ID); err == nil {
			if err := s.st.UpdateSandbox(ctx, row.ID, []string{string(StatusPaused)}, store.Update{GPUs: new("")}); err == nil {
				s.releaseGPUs(row.ID)
			}
		}
	case status == StatusPaused && !row.Archived && info.Status == runtime.StatusRunning:
		fix("freeze", "a paused sandbox was running (a pause cut short)")
		if err := s.rt.Freeze(ctx, row.ID); err != nil {
			s.failPause(ctx, row, err)
		}
	case status != StatusPaused && info.Status == runtime.StatusFrozen:
		fix("thaw", "a running sandbox was frozen (a resume cut short)")
		_ = s.rt.Thaw(ctx, row.ID)
	case info.Status == runtime.StatusRunning || info.Status == runtime.StatusFrozen:
		var sp spec
		_ = json.Unmarshal([]byte(row.Spec), &sp) // written by us
		want := sp.network()
		if !info.Network.Equal(want) || info.NetworkDetached {
			// A policy change cut short, or a link that could not be
			// made again after a restart.
			fix("network", "the sandbox's network is not what the store says")
			if err := s.rt.SetNetwork(ctx, row.ID, want); err != nil {
				s.cfg.Log.Error("reconcile: network", "sandbox", row.ID, "err", err)
			}
		}
	}
}
