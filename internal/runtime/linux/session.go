package linux

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/runtime"
)

// restart boots a torn-down sandbox again on its kept layers; on failure it
// tears down what the boot made. The caller holds sb.life.
func (r *Runtime) restart(ctx context.Context, sb *sandbox) error {
	id := sb.st.ID
	// A stale work directory from the last mount would make overlayfs
	// refuse; it holds nothing worth keeping between mounts.
	if err := r.freshDir(filepath.Join(r.sandboxDir(id), "work")); err != nil {
		return err
	}
	if err := r.boot(ctx, sb); err != nil {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if terr := r.teardown(cctx, sb, false); terr != nil {
			r.cfg.Log.Error("clean up failed boot", "sandbox", id, "err", terr)
		}
		return err
	}
	return nil
}

// freshDir replaces dir with an empty directory owned by the sandbox's root.
func (r *Runtime) freshDir(dir string) error {
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		return err
	}
	return os.Chown(dir, int(r.cfg.UIDBase), int(r.cfg.UIDBase))
}

// emptyDir reports whether dir has no entries.
func emptyDir(dir string) (bool, error) {
	f, err := os.Open(dir)
	if err != nil {
		return false, err
	}
	defer f.Close()
	_, err = f.Readdirnames(1)
	if errors.Is(err, io.EOF) {
		return true, nil
	}
	return false, err
}

// Reset returns a running sandbox to the state it had when it was made or
// last sealed: every process killed, the writable layer discarded, memory
// filesystems emptied. When the session changed nothing but processes this
// is done in place (the agent kills them); otherwise the sandbox is booted
// again on its sealed layers, in fresh namespaces. Restarted says which.
func (r *Runtime) Reset(ctx context.Context, id string) (restarted bool, err error) {
	sb, err := r.lookup(id)
	if err != nil {
		return false, err
	}
	sb.life.Lock()
	defer sb.life.Unlock()
	switch s := sb.getStatus(); s {
	case runtime.StatusRunning, runtime.StatusBroken, runtime.StatusStopped:
	default:
		return false, errdefs.Userf(errdefs.ErrConflict, "sandbox %s is %s", id, s)
	}
	dir := r.sandboxDir(id)
	if sb.getStatus() == runtime.StatusRunning {
		cl, _, err := r.agentFor(id)
		if err != nil {
			return false, err
		}
		dirty, err := cl.Reset(ctx)
		if err == nil && dirty == "" {
			clean, err := emptyDir(filepath.Join(dir, "upper"))
			if err == nil && clean {
				return false, nil
			}
		}
		if err != nil && ctx.Err() != nil {
			return false, ctx.Err()
		}
	}
	// Something of the session is left: start over on the sealed layers.
	if err := r.teardown(ctx, sb, false); err != nil {
		sb.setStatus(runtime.StatusBroken)
		return true, fmt.Errorf("reset sandbox %s: %w", id, err)
	}
	if err := r.freshDir(filepath.Join(dir, "upper")); err != nil {
		return true, fmt.Errorf("reset sandbox %s: %w", id, err)
	}
	if err := r.restart(ctx, sb); err != nil {
		return true, fmt.Errorf("reset sandbox %s: %w", id, err)
	}
	return true, nil
}

// Seal makes the sandbox's current files its fresh state: its processes
// are stopped, the writable layer becomes a read-only layer of this
// sandbox, and it boots again on an empty writable layer. A later Reset
// returns here. Used after a template's setup hook.
func (r *Runtime) Seal(ctx context.Context, id string) error {
	sb, err := r.lookup(id)
	if err != nil {
		return err
	}
	sb.life.Lock()
	defer sb.life.Unlock()
	switch s := sb.getStatus(); s {
	case runtime.StatusRunning, runtime.StatusStopped:
	default:
		return errdefs.Userf(errdefs.ErrConflict, "sandbox %s is %s", id, s)
	}
	if err := r.teardown(ctx, sb, false); err != nil {
		sb.setStatus(runtime.StatusBroken)
		return fmt.Errorf("seal sandbox %s: %w", id, err)
	}
	dir := r.sandboxDir(id)
	sb.mu.Lock()
	layer := "layer-" + strconv.Itoa(len(sb.st.Layers))
	sb.mu.Unlock()
	if err := os.Rename(filepath.Join(dir, "upper"), filepath.Join(dir, layer)); err != nil {
		return fmt.Errorf("seal sandbox %s: %w", id, err)
	}
	sb.mu.Lock()
	sb.st.Layers = append([]string{layer}, sb.st.Layers...)
	st := sb.st
	sb.mu.Unlock()
	// Recorded before the boot: a crash now leaves a sandbox that boots on
	// the sealed layer, not one that lost it.
	if err := r.saveState(st); err != nil {
		return err
	}
	if err := r.freshDir(filepath.Join(dir, "upper")); err != nil {
		return err
	}
	if err := r.restart(ctx, sb); err != nil {
		return fmt.Errorf("seal sandbox %s: %w", id, err)
	}
	return nil
}
