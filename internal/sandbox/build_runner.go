package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/sandpool/sandpool/internal/dockerfile"
	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/fsys"
	"github.com/sandpool/sandpool/internal/ids"
	"github.com/sandpool/sandpool/internal/image"
	"github.com/sandpool/sandpool/internal/proc"
	"github.com/sandpool/sandpool/internal/runtime"
	"github.com/sandpool/sandpool/internal/store"
)

// upperDirs is what running a build step needs of the runtime beyond
// runtime.Runtime: the writable layer of a stopped sandbox, to store as a
// layer. The linux runtime has it.
type upperDirs interface {
	UpperDir(id string) (string, error)
}

// stepRunner runs a Dockerfile's RUN steps in real sandboxes: each step
// in a fresh one made on the build's layers so far, with the server's
// default limits and no network (the template's policy: "none" is the
// only one yet), as the step's user. The sandbox's row stays "creating"
// while it works, so the reconciler leaves it alone and a restart
// destroys what a crash left of it.
type stepRunner struct {
	s        *Service
	template string
	lease    *image.Lease // the build's: holds the mount-point layer
	network  Network      // the egress policy of the steps' sandboxes
}

var _ dockerfile.Runner = (*stepRunner)(nil)

func (r *stepRunner) Run(ctx context.Context, step dockerfile.RunStep) (_ dockerfile.RunResult, retErr error) {
	s := r.s
	ud, ok := s.rt.(upperDirs)
	if !ok {
		return dockerfile.RunResult{}, errdefs.Userf(errdefs.ErrNotSupported, "this runtime cannot run build steps")
	}
	// The mount points init needs, if the layers lack them.
	img := image.Image{}
	for _, d := range step.Layers {
		img.Layers = append(img.Layers, image.Layer{Dir: d})
	}
	layers := step.Layers
	if mp, ok, err := s.cfg.Images.MountPointLayer(ctx, r.lease, img); err != nil {
		return dockerfile.RunResult{}, err
	} else if ok {
		layers = append(layers[:len(layers):len(layers)], mp.Dir)
	}

	id := ids.Sandbox()
	limits := runtime.Limits{}.WithDefaults(s.rt.Capabilities().Defaults)
	b, err := json.Marshal(spec{Limits: limits, Network: &r.network})
	if err != nil {
		return dockerfile.RunResult{}, err
	}
	row := store.Sandbox{ID: id, Tenant: buildTenant, Template: r.template, Status: string(StatusCreating), Spec: string(b),
		Node: s.cfg.Node, OnTimeout: OnTimeoutKill, CreatedAt: time.Now().UTC()}
	if _, err := s.admit(ctx, &row, 0); err != nil {
		return dockerfile.RunResult{}, s.storeErr(err)
	}
	cctx := context.WithoutCancel(ctx)
	release := func() {
		if err := s.destroy(cctx, row, "build"); err != nil {
			s.cfg.Log.Error("destroy a build step's sandbox", "sandbox", id, "err", err)
		}
	}
	defer func() {
		if retErr != nil {
			release()
		}
	}()
	if _, err := s.rt.Create(ctx, runtime.Spec{ID: id, Template: r.template, Layers: layers, Limits: limits, Network: r.network}); err != nil {
		return dockerfile.RunResult{}, fmt.Errorf("build step sandbox: %w", err)
	}
	workdir := step.Workdir
	if workdir == "" {
		workdir = "/"
	}
	if _, err := s.rt.Files(id).Stat(ctx, workdir, fsys.Options{User: "root"}); errors.Is(err, errdefs.ErrNotFound) {
		if err := s.rt.Files(id).Mkdir(ctx, workdir, fsys.MkdirOptions{User: "root", Parents: true}); err != nil {
			return dockerfile.RunResult{}, fmt.Errorf("working directory %s: %w", workdir, err)
		}
	}
	code, err := r.exec(ctx, id, step, workdir)
	if err != nil {
		return dockerfile.RunResult{}, err
	}
	// Nothing may write to the layer while it is read.
	if err := s.rt.Stop(cctx, id); err != nil {
		return dockerfile.RunResult{}, err
	}
	if code != 0 {
		return dockerfile.RunResult{}, &dockerfile.ExitError{Code: code}
	}
	upper, err := ud.UpperDir(id)
	if err != nil {
		return dockerfile.RunResult{}, err
	}
	return dockerfile.RunResult{UpperDir: upper, Release: release}, nil
}

// exec runs the step's command to its end and returns its exit code; a
// command that does not exist is 127, as from a shell.
func (r *stepRunner) exec(ctx context.Context, id string, step dockerfile.RunStep, workdir string) (int, error) {
	env := make(map[string]string, len(step.Env))
	for _, kv := range step.Env {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	out := step.Output
	if out == nil {
		out = io.Discard
	}
	out = &lockedWriter{w: out}
	p, err := r.s.rt.Exec(ctx, id, proc.Spec{Cmd: step.Cmd, Env: env, Cwd: workdir, User: fmt.Sprintf("%d:%d", step.UID, step.GID)},
		proc.Stdio{Stdout: out, Stderr: out})
	if err != nil {
		var ue *errdefs.UserError
		if errors.As(err, &ue) && (errors.Is(err, errdefs.ErrNotFound) || errors.Is(err, errdefs.ErrPermission)) {
			fmt.Fprintf(out, "%v\n", err)
			return 127, nil
		}
		return 0, err
	}
	st, err := p.Wait()
	if err != nil {
		return 0, err
	}
	if st.Signal != "" && st.Code == 0 {
		return 128, nil
	}
	return st.Code, nil
}
