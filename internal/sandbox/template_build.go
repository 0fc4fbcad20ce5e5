package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/sandpool/sandpool/internal/dockerfile"
	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/image"
	"github.com/sandpool/sandpool/internal/runtime"
)

// BuildRequest makes a template by building a Dockerfile: FROM an image
// or an image template, RUN in sandboxes, COPY and ADD from the context.
type BuildRequest struct {
	Name string
	// Context is the build context as a tar stream (uncompressed); the
	// Dockerfile is one of its files.
	Context io.Reader
	// Dockerfile is its path in the context; empty means "Dockerfile".
	Dockerfile string
	// Args are --build-arg values.
	Args map[string]string
	// NoCache runs every step, cached or not.
	NoCache bool
	// Platform of the images FROM pulls; empty means the server's.
	Platform string
	// Hooks are the template's; Hooks.Network is also the egress policy
	// the RUN steps run under (nil: the server's default).
	Hooks Hooks
	// Build also runs the template's setup in a sandbox of it, as
	// TemplateRequest.Build.
	Build bool
	// Output gets the build's progress and its RUN steps' output as they
	// come; Pull how FROM's pull goes.
	Output io.Writer
	Pull   func(PullProgress)
}

// maxDockerfile bounds the Dockerfile read from a context.
const maxDockerfile = 1 << 20

// BuildTemplate builds a Dockerfile into template req.Name: each step a
// layer in the image store, steps whose inputs did not change since an
// earlier build taken from the cache. On any failure (a Dockerfile that
// does not parse, a RUN that fails, with its output in the error) nothing
// of it is left.
func (s *Service) BuildTemplate(ctx context.Context, req BuildRequest) (_ Template, retErr error) {
	images, err := s.images()
	if err != nil {
		return Template{}, err
	}
	net := s.networkFor(req.Hooks.Network)
	if err := s.rt.Validate(runtime.Spec{ID: "sb_check", Template: "base", Network: net}); err != nil {
		return Template{}, err
	}
	if req.Context == nil {
		return Template{}, errdefs.Userf(errdefs.ErrInvalid, "a build needs its context, as a tar archive")
	}
	done, err := s.reserve(ctx, req.Name)
	if err != nil {
		return Template{}, err
	}
	defer done()
	out := req.Output
	if out == nil {
		out = io.Discard
	}
	out = &lockedWriter{w: out}

	// The context is unpacked under the store's tmp/, which a start
	// sweeps: a crash leaves nothing of it.
	dir, err := os.MkdirTemp(filepath.Join(images.Dir(), "tmp"), "context-")
	if err != nil {
		return Template{}, err
	}
	defer os.RemoveAll(dir)
	if err := image.Extract(ctx, dir, req.Context, 0, s.maxTemplateBytes()); err != nil {
		return Template{}, fmt.Errorf("build context: %w", err)
	}
	df, err := readDockerfile(dir, req.Dockerfile)
	if err != nil {
		return Template{}, err
	}

	lease := images.Lease()
	defer s.releaseImages(ctx, lease, &retErr)
	b := &dockerfile.Builder{
		Store:     images,
		Runner:    &stepRunner{s: s, template: req.Name, lease: lease, network: net},
		Templates: fromTemplates{s},
		Pull:      s.pullOptions(ImageSource{Platform: req.Platform}, req.Pull),
	}
	res, err := b.Build(ctx, lease, df, dockerfile.Options{Context: dir, Args: req.Args, Output: out,
		NoCache: req.NoCache, MaxLayerBytes: s.maxTemplateBytes()})
	if err != nil {
		return Template{}, fmt.Errorf("build template %s: %w", req.Name, err)
	}
	instructions := make([]string, len(res.Steps))
	for i, st := range res.Steps {
		instructions[i] = st.Instruction
	}
	origin := "Dockerfile"
	if from := fromOf(instructions); from != "" {
		origin += " (FROM " + from + ")"
	}
	return s.placeImage(ctx, TemplateRequest{Name: req.Name, Hooks: req.Hooks, Build: req.Build, Progress: req.Output},
		res.Image, lease, origin)
}

// readDockerfile parses the Dockerfile at name in the context dir, never
// following a path or link out of it.
func readDockerfile(dir, name string) (*dockerfile.Dockerfile, error) {
	if name == "" {
		name = "Dockerfile"
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	f, err := root.Open(filepath.Clean(name))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, errdefs.Userf(errdefs.ErrInvalid, "no Dockerfile %q in the build context", name)
		}
		return nil, errdefs.Userf(errdefs.ErrInvalid, "Dockerfile %q: %v", name, err)
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		return nil, errdefs.Userf(errdefs.ErrInvalid, "Dockerfile %q is not a regular file", name)
	}
	return dockerfile.Parse(io.LimitReader(f, maxDockerfile+1))
}
