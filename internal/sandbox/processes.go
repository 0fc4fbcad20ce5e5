package sandbox

import (
	"context"
	"io"
	"maps"
	"syscall"

	"github.com/sandpool/sandpool/internal/fsys"
	"github.com/sandpool/sandpool/internal/proc"
	"github.com/sandpool/sandpool/internal/store"
)

// ExecRequest is a process to run.
type ExecRequest = proc.Spec

func (s *Service) withEnv(row store.Sandbox, req ExecRequest) ExecRequest {
	env := specOf(row).env()
	if len(env) == 0 {
		return req
	}
	maps.Copy(env, req.Env)
	req.Env = env
	return req
}

// Exec starts a process. The returned process counts as activity until it
// is closed or has exited.
func (s *Service) Exec(ctx context.Context, tenant, id string, req ExecRequest, stdio proc.Stdio) (proc.Process, error) {
	row, err := s.running(ctx, tenant, id)
	if err != nil {
		return nil, err
	}
	p, err := s.rt.Exec(ctx, id, s.withEnv(row, req), stdio)
	if err != nil {
		return nil, s.check(row, err)
	}
	return s.tracked(row, p), nil
}

// Attach follows a background process.
func (s *Service) Attach(ctx context.Context, tenant, id, procID string, stdio proc.Stdio) (proc.Process, error) {
	row, err := s.running(ctx, tenant, id)
	if err != nil {
		return nil, err
	}
	p, err := s.rt.Attach(ctx, id, procID, stdio)
	if err != nil {
		return nil, s.check(row, err)
	}
	return s.tracked(row, p), nil
}

// AttachLive follows a process from now on, without the output it kept.
func (s *Service) AttachLive(ctx context.Context, tenant, id, procID string, stdio proc.Stdio) (proc.Process, error) {
	row, err := s.running(ctx, tenant, id)
	if err != nil {
		return nil, err
	}
	p, err := s.rt.AttachLive(ctx, id, procID, stdio)
	if err != nil {
		return nil, s.check(row, err)
	}
	return s.tracked(row, p), nil
}

// ResizePTY gives the terminal of a process started with a PTY a new size
// (the process gets SIGWINCH).
func (s *Service) ResizePTY(ctx context.Context, tenant, id, procID string, size proc.Size) error {
	row, err := s.running(ctx, tenant, id)
	if err != nil {
		return err
	}
	return s.check(row, s.rt.ResizePTY(ctx, id, procID, size))
}

// Processes lists tracked processes.
func (s *Service) Processes(ctx context.Context, tenant, id string) ([]proc.Info, error) {
	row, err := s.running(ctx, tenant, id)
	if err != nil {
		return nil, err
	}
	ps, err := s.rt.Processes(ctx, id)
	return ps, s.check(row, err)
}

// Signal signals a tracked process.
func (s *Service) Signal(ctx context.Context, tenant, id, procID string, sig syscall.Signal) error {
	row, err := s.running(ctx, tenant, id)
	if err != nil {
		return err
	}
	return s.check(row, s.rt.Signal(ctx, id, procID, sig))
}

// KillAll kills every process of a sandbox but its agent (what a fork bomb
// left, for one) and returns how many there were.
func (s *Service) KillAll(ctx context.Context, tenant, id string) (int, error) {
	row, err := s.running(ctx, tenant, id)
	if err != nil {
		return 0, err
	}
	n, err := s.rt.KillAll(ctx, id)
	return n, s.check(row, err)
}

// WriteStdin feeds a tracked process.
func (s *Service) WriteStdin(ctx context.Context, tenant, id, procID string, r io.Reader, closeStdin bool) error {
	row, err := s.running(ctx, tenant, id)
	if err != nil {
		return err
	}
	return s.check(row, s.rt.WriteStdin(ctx, id, procID, r, closeStdin))
}

// Files gives access to a running sandbox's files.
func (s *Service) Files(ctx context.Context, tenant, id string) (fsys.Files, error) {
	row, err := s.running(ctx, tenant, id)
	if err != nil {
		return nil, err
	}
	f := s.rt.Files(id)
	check := func(err error) error { return s.check(row, err) }
	return fsys.Checked(func() (fsys.Files, func(error) error, error) { return f, check, nil }), nil
}
