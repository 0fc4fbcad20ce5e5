package linux

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/ids"
	"github.com/sandpool/sandpool/internal/runtime"
)

// Validate checks a spec without making anything.
func (r *Runtime) Validate(spec runtime.Spec) error {
	if spec.ID != "" && !idPattern.MatchString(spec.ID) {
		return errdefs.Userf(errdefs.ErrInvalid, "invalid sandbox id %q", spec.ID)
	}
	if spec.Template == "" && len(spec.Layers) == 0 {
		return errdefs.Userf(errdefs.ErrInvalid, "template is required")
	}
	if len(spec.Hostname) > 63 || strings.ContainsAny(spec.Hostname, "/\x00 ") {
		return errdefs.Userf(errdefs.ErrInvalid, "invalid hostname %q", spec.Hostname)
	}
	if err := validateLimits(spec.Limits); err != nil {
		return err
	}
	if spec.Limits.DiskBytes > 0 {
		return errdefs.Userf(errdefs.ErrNotSupported, "disk limits are not supported by this runtime yet")
	}
	if _, err := r.checkNetwork(spec.Network); err != nil {
		return err
	}
	if err := validateDevices(spec.Devices); err != nil {
		return err
	}
	if len(spec.Layers) > 0 {
		return checkLayers(spec.Layers)
	}
	_, err := r.template(spec.Template)
	return err
}

// maxLayers bounds the read-only layers of a sandbox: overlayfs stacks at
// most 500, and a sandbox adds its sealed layers to its template's.
const maxLayers = 490

// checkLayers checks layer directories given by a caller.
func checkLayers(layers []string) error {
	if len(layers) > maxLayers {
		return errdefs.Userf(errdefs.ErrInvalid, "%d layers: overlayfs stacks at most %d here", len(layers), maxLayers)
	}
	for _, l := range layers {
		if !filepath.IsAbs(l) || filepath.Clean(l) != l {
			return errdefs.Userf(errdefs.ErrInvalid, "layer %q: want a clean absolute path", l)
		}
		if st, err := os.Stat(l); err != nil || !st.IsDir() {
			return errdefs.Userf(errdefs.ErrNotFound, "layer %s is not a directory", l)
		}
	}
	return nil
}

// Create makes and boots a sandbox.
func (r *Runtime) Create(ctx context.Context, spec runtime.Spec) (_ runtime.Info, retErr error) {
	if spec.ID == "" {
		spec.ID = ids.Sandbox()
	}
	if spec.Hostname == "" {
		spec.Hostname = "sandbox"
	}
	if err := r.Validate(spec); err != nil {
		return runtime.Info{}, err
	}
	lim := spec.Limits.WithDefaults(r.cfg.Defaults)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sb := &sandbox{
		st: state{ID: spec.ID, Template: spec.Template, Hostname: spec.Hostname, Limits: lim,
			CreatedAt: time.Now().UTC(), Lower: spec.Layers, Network: spec.Network, Devices: spec.Devices},
		status: runtime.StatusStopped,
		cancel: cancel,
	}
	sb.life.Lock()
	defer sb.life.Unlock()
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return runtime.Info{}, errors.New("linux runtime: closed")
	}
	if _, ok := r.sandboxes[spec.ID]; ok {
		r.mu.Unlock()
		return runtime.Info{}, errdefs.Userf(errdefs.ErrExists, "sandbox %q already exists", spec.ID)
	}
	r.sandboxes[spec.ID] = sb
	r.mu.Unlock()
	defer func() {
		sb.mu.Lock()
		sb.cancel = nil
		sb.mu.Unlock()
		if retErr != nil {
			// Best effort; the original error wins. Cleanup must finish
			// even if ctx was what failed.
			cctx, ccancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
			if err := r.teardown(cctx, sb, true); err != nil {
				r.cfg.Log.Error("clean up failed create", "sandbox", spec.ID, "err", err)
			}
			ccancel()
			r.forget(sb)
		}
	}()

	t0 := time.Now()
	if err := r.prepareDir(sb.st); err != nil {
		return runtime.Info{}, err
	}
	r.cfg.Observe("directory", time.Since(t0))
	if err := r.boot(ctx, sb); err != nil {
		return runtime.Info{}, err
	}
	return sb.info(), nil
}

// forget drops a destroyed sandbox from the table.
func (r *Runtime) forget(sb *sandbox) {
	sb.mu.Lock()
	sb.gone = true
	sb.mu.Unlock()
	r.mu.Lock()
	if r.sandboxes[sb.st.ID] == sb {
		delete(r.sandboxes, sb.st.ID)
	}
	r.mu.Unlock()
}

// prepareDir makes the sandbox directory: state.json first, so a crash
// from here on leaves something a later Open finds and cleans.
func (r *Runtime) prepareDir(st state) error {
	dir := r.sandboxDir(st.ID)
	if err := os.Mkdir(dir, 0o700); err != nil {
		if errors.Is(err, os.ErrExist) {
			return errdefs.Userf(errdefs.ErrExists, "sandbox directory %s already exists", dir)
		}
		return err
	}
	st.Stopped = true
	if err := r.saveState(st); err != nil {
		return err
	}
	uid := int(r.cfg.UIDBase)
	for _, d := range []string{"", "upper", "work", "rootfs"} {
		p := filepath.Join(dir, d)
		if d != "" {
			if err := os.Mkdir(p, 0o755); err != nil {
				return err
			}
		}
		// Owned by the sandbox's root so its init can use them.
		if err := os.Chown(p, uid, uid); err != nil {
			return err
		}
	}
	return nil
}
