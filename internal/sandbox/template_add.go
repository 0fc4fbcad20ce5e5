package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/runtime"
)

// TemplateRequest adds a template: files imported from a directory on the
// server (Dir) or a tar stream (Tar), another template's files (From), or
// an image's layers (Image), with hooks.
type TemplateRequest struct {
	Name  string
	From  string
	Dir   string
	Tar   io.Reader
	Image *ImageSource
	Hooks Hooks
	// Limits, if set, are what its sandboxes get where a create (or a
	// pool) leaves a limit at zero: "gpus": 1 makes it a GPU template.
	Limits *Limits
	// Pull, if set, is told how an image's pull goes, layer by layer.
	Pull func(PullProgress)
	// Build makes a sandbox of the new template at once and runs its
	// setup there (its output goes to Progress as it comes): a setup that
	// fails refuses the template, with the tail of its output, and leaves
	// nothing behind.
	Build    bool
	Progress io.Writer
}

// AddTemplate adds a template. On any failure nothing of it is left.
func (s *Service) AddTemplate(ctx context.Context, req TemplateRequest) (_ Template, retErr error) {
	sources := 0
	for _, set := range []bool{req.From != "", req.Dir != "", req.Tar != nil, req.Image != nil} {
		if set {
			sources++
		}
	}
	if sources != 1 {
		return Template{}, errdefs.Userf(errdefs.ErrInvalid, "give exactly one of from, dir, an image, or a tar archive (PUT /v1/templates/{name})")
	}
	if req.Image != nil {
		return s.addImage(ctx, req)
	}
	if req.From != "" {
		t, err := s.defineTemplate(ctx, req.Name, req.From, req.Hooks, req.Limits)
		if err != nil {
			return Template{}, err
		}
		defer s.undoTemplate(ctx, req.Name, &retErr)
		return t, s.build(ctx, req)
	}
	src := runtime.TemplateSource{Dir: req.Dir, Tar: req.Tar, Origin: "tar archive"}
	if req.Dir != "" {
		src.Origin = "directory " + req.Dir
	}
	if _, err := s.rt.ImportTemplate(ctx, req.Name, src); err != nil {
		return Template{}, err
	}
	defer s.undoTemplate(ctx, req.Name, &retErr)
	return s.finishImport(ctx, req)
}

// finishImport gives a template just imported (from a directory, an
// archive or an image) the hooks and limits req names, if any, and runs
// its setup.
func (s *Service) finishImport(ctx context.Context, req TemplateRequest) (Template, error) {
	if !req.Hooks.empty() || req.Hooks.SetupTimeout != 0 || req.Limits != nil {
		if _, err := s.defineTemplate(ctx, req.Name, req.Name, req.Hooks, req.Limits); err != nil {
			return Template{}, err
		}
	}
	if err := s.build(ctx, req); err != nil {
		return Template{}, err
	}
	return s.Template(ctx, req.Name)
}

// undoTemplate deletes a template AddTemplate made when it then failed.
func (s *Service) undoTemplate(ctx context.Context, name string, err *error) {
	if *err == nil {
		return
	}
	if derr := s.DeleteTemplate(context.WithoutCancel(ctx), name); derr != nil {
		s.cfg.Log.Error("remove a template whose add failed", "template", name, "err", derr)
	}
}

// build makes a scratch sandbox of a new template, so its setup (and
// session setup) run once now, then destroys it.
func (s *Service) build(ctx context.Context, req TemplateRequest) error {
	if !req.Build {
		return nil
	}
	row, err := s.create(ctx, newSandbox{tenant: buildTenant, req: CreateRequest{Template: req.Name}, final: StatusRunning,
		progress: req.Progress})
	if row.ID != "" {
		defer func() {
			if derr := s.destroy(context.WithoutCancel(ctx), row, "build"); derr != nil {
				s.cfg.Log.Error("destroy a template's build sandbox", "sandbox", row.ID, "err", derr)
			}
		}()
	}
	var he *HookError
	if errors.As(err, &he) {
		return he // it names the template and the hook already
	}
	if err != nil {
		return fmt.Errorf("build template %s: %w", req.Name, err)
	}
	return nil
}

// buildTenant owns the sandboxes templates are built in; no API key has
// it (tenant names cannot start with "_").
const buildTenant = "_build"

// Template returns one template.
func (s *Service) Template(ctx context.Context, name string) (Template, error) {
	list, err := s.Templates(ctx)
	if err != nil {
		return Template{}, err
	}
	for _, t := range list {
		if t.Name == name {
			return t, nil
		}
	}
	return Template{}, errdefs.Userf(errdefs.ErrNotFound, "no template %q", name)
}
