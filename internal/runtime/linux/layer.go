package linux

import (
	"path/filepath"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/runtime"
)

// UpperDir returns the directory of a stopped sandbox's writable layer:
// an overlayfs upper dir, owners shifted by UIDBase. Made on layers
// (Spec.Layers), it holds what a build step wrote, ready to be stored as
// an image layer. It goes with the sandbox.
func (r *Runtime) UpperDir(id string) (string, error) {
	sb, err := r.lookup(id)
	if err != nil {
		return "", err
	}
	sb.life.Lock()
	defer sb.life.Unlock()
	if st := sb.getStatus(); st != runtime.StatusStopped {
		return "", errdefs.Userf(errdefs.ErrConflict, "sandbox %s is %s: stop it before reading its writable layer", id, st)
	}
	return filepath.Join(r.sandboxDir(id), "upper"), nil
}
