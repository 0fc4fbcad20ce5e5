package sandbox

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/image"
	"github.com/sandpool/sandpool/internal/runtime"
)

// ImageSource is where an image template's image comes from: exactly one
// of Ref (a registry), OCILayout (a directory on the server) and
// DockerArchive (a `docker save` file on the server).
type ImageSource struct {
	Ref           string
	OCILayout     string
	DockerArchive string
	// Name picks one image of a layout or an archive that holds several.
	Name string
	// Platform is os/arch[/variant]; empty means the server's.
	Platform string
	// Username and Password log in to the registry; without them the
	// server's Docker config file (and credential helpers) is used.
	Username, Password string
	// Insecure allows plain HTTP (registries on loopback use it anyway).
	Insecure bool
}

// PullProgress reports on one layer of an image pull.
type PullProgress struct {
	// Layer is 1-based; Layers is how many the image has.
	Layer  int    `json:"layer"`
	Layers int    `json:"layers"`
	Digest string `json:"digest"`
	// Bytes of the layer fetched so far, of Total (compressed; 0 when
	// unknown).
	Bytes int64 `json:"bytes"`
	Total int64 `json:"total"`
	// Cached: the layer was in the store already (another template has
	// it); nothing was fetched.
	Cached bool `json:"cached,omitempty"`
	// Done: the layer is stored.
	Done bool `json:"done,omitempty"`
}

// TemplateImage describes a template made from an image or a Dockerfile.
type TemplateImage struct {
	// Source is the image's reference (oci-layout:DIR, docker-archive:FILE
	// for those); empty for a Dockerfile build.
	Source   string `json:"source,omitempty"`
	Digest   string `json:"digest,omitempty"`
	Platform string `json:"platform,omitempty"`
	// Layers is how many read-only layers its sandboxes stack.
	Layers int `json:"layers"`
	// SharedLayers is how many of them other templates use too: stored
	// once on disk.
	SharedLayers int `json:"shared_layers"`
	// UniqueBytes is the file content of the layers no other template
	// uses: what deleting this one frees.
	UniqueBytes int64 `json:"unique_bytes"`
	// The image's config: the defaults of the template's sandboxes (Env,
	// WorkingDir, User), and what it would run (shown, never run: a
	// sandbox's PID 1 is sandpool's agent).
	Env        []string          `json:"env,omitempty"`
	WorkingDir string            `json:"working_dir,omitempty"`
	User       string            `json:"user,omitempty"`
	Entrypoint []string          `json:"entrypoint,omitempty"`
	Cmd        []string          `json:"cmd,omitempty"`
	Labels     map[string]string `json:"labels,omitempty"`
}

func (src ImageSource) image() image.Source {
	return image.Source{Ref: src.Ref, OCILayout: src.OCILayout, DockerArchive: src.DockerArchive, Name: src.Name}
}

// images returns the layer store, or an error saying there is none.
func (s *Service) images() (*image.Store, error) {
	if s.cfg.Images == nil {
		return nil, errdefs.Userf(errdefs.ErrNotSupported, "this server makes no templates from images")
	}
	return s.cfg.Images, nil
}

// pullOptions says how to pull for a template.
func (s *Service) pullOptions(src ImageSource, progress func(PullProgress)) image.Options {
	opts := image.Options{Platform: src.Platform, Username: src.Username, Password: src.Password,
		Insecure: src.Insecure, MaxBytes: s.cfg.MaxTemplateBytes}
	if progress != nil {
		opts.Progress = func(p image.Progress) {
			progress(PullProgress{Layer: p.Layer, Layers: p.Layers, Digest: p.Digest, Bytes: p.Bytes, Total: p.Total,
				Cached: p.Cached, Done: p.Done})
		}
	}
	return opts
}

// reserve claims name for a template being made from an image, so two
// makes of one name never commit over each other's image record; done
// gives it back.
func (s *Service) reserve(ctx context.Context, name string) (done func(), err error) {
	switch err := s.rt.Validate(runtime.Spec{ID: "sb_check", Template: name}); {
	case err == nil:
		return nil, errdefs.Userf(errdefs.ErrExists, "template %q already exists", name)
	case !errors.Is(err, errdefs.ErrNotFound):
		return nil, err // a bad name
	}
	if _, err := s.st.GetTemplate(ctx, name); err == nil {
		return nil, errdefs.Userf(errdefs.ErrExists, "template %q already exists", name)
	} else if !errors.Is(err, errdefs.ErrNotFound) {
		return nil, err
	}
	s.tplMu.Lock()
	defer s.tplMu.Unlock()
	if s.adding[name] {
		return nil, errdefs.Userf(errdefs.ErrExists, "template %q is being made", name)
	}
	s.adding[name] = true
	return func() {
		s.tplMu.Lock()
		delete(s.adding, name)
		s.tplMu.Unlock()
	}, nil
}

// addImage makes template req.Name from an image.
func (s *Service) addImage(ctx context.Context, req TemplateRequest) (_ Template, retErr error) {
	images, err := s.images()
	if err != nil {
		return Template{}, err
	}
	for _, p := range []string{req.Image.OCILayout, req.Image.DockerArchive} {
		if p != "" && !filepath.IsAbs(p) {
			return Template{}, errdefs.Userf(errdefs.ErrInvalid, "%q: an OCI layout or docker archive on the server is named by an absolute path", p)
		}
	}
	done, err := s.reserve(ctx, req.Name)
	if err != nil {
		return Template{}, err
	}
	defer done()
	lease := images.Lease()
	defer s.releaseImages(ctx, lease, &retErr)
	img, err := images.Pull(ctx, lease, req.Image.image(), s.pullOptions(*req.Image, req.Pull))
	if err != nil {
		return Template{}, fmt.Errorf("template %s: %w", req.Name, err)
	}
	origin := "image " + img.Source.String()
	if img.Digest != "" {
		origin += "@" + img.Digest
	}
	return s.placeImage(ctx, req, img, lease, origin)
}

// releaseImages lets GC have what lease holds and, after a failure, runs
// one, so that a refused template leaves no layer behind.
func (s *Service) releaseImages(ctx context.Context, lease *image.Lease, err *error) {
	lease.Release()
	if *err != nil {
		s.gcImages(context.WithoutCancel(ctx))
	}
}

// placeImage makes the template of img, whose layers lease holds: the
// mount points a sandbox needs on top, the size limit, the image record
// (Commit), then the runtime template; then hooks and a build as for any
// template. The record comes first: a crash in between leaves a record
// without a template, which the next start's GC drops, never a template
// whose layers GC could take.
func (s *Service) placeImage(ctx context.Context, req TemplateRequest, img image.Image, lease *image.Lease, origin string) (_ Template, retErr error) {
	images := s.cfg.Images
	if max := s.maxTemplateBytes(); img.Size > max {
		return Template{}, errdefs.Userf(errdefs.ErrInvalid, "template %s: the image holds %d bytes, more than the limit of %d (--max-template-size)", req.Name, img.Size, max)
	}
	mp, ok, err := images.MountPointLayer(ctx, lease, img)
	if err != nil {
		return Template{}, fmt.Errorf("template %s: %w", req.Name, err)
	}
	if ok {
		img.Layers = append(img.Layers, mp)
	}
	cfg := img.Config
	src := runtime.TemplateSource{Layers: img.Dirs(), Origin: origin, SizeBytes: img.Size,
		Defaults: runtime.Defaults{User: fmt.Sprintf("%d:%d", cfg.UID, cfg.GID), Env: cfg.Env, Cwd: cfg.WorkingDir}}
	s.imgMu.RLock()
	err = images.Commit(req.Name, img)
	if err == nil {
		if _, err = s.rt.ImportTemplate(ctx, req.Name, src); err != nil {
			if ferr := images.Forget(req.Name); ferr != nil {
				s.cfg.Log.Error("forget the image of a template not made", "template", req.Name, "err", ferr)
			}
		}
	}
	s.imgMu.RUnlock()
	if err != nil {
		return Template{}, err
	}
	defer s.undoTemplate(ctx, req.Name, &retErr)
	return s.finishImport(ctx, req)
}

func (s *Service) maxTemplateBytes() int64 {
	if s.cfg.MaxTemplateBytes > 0 {
		return s.cfg.MaxTemplateBytes
	}
	return image.DefaultMaxBytes
}

// gcImages drops image records whose template is gone and the layers no
// template uses (and no pull or build under way holds). It runs at
// start, after a template is deleted and after a failed make.
func (s *Service) gcImages(ctx context.Context) {
	images := s.cfg.Images
	if images == nil {
		return
	}
	s.imgMu.Lock()
	defer s.imgMu.Unlock()
	list, err := s.rt.Templates(ctx)
	if err != nil {
		s.cfg.Log.Error("image GC: list templates", "err", err)
		return
	}
	keep := make(map[string]bool, len(list))
	for _, t := range list {
		keep[t.Name] = true
	}
	st, err := images.GC(ctx, keep)
	if err != nil {
		s.cfg.Log.Error("image GC", "err", err)
		return
	}
	if st.Owners+st.Layers+st.CacheEntries > 0 {
		s.cfg.Log.Info("image GC", "records", st.Owners, "layers", st.Layers, "bytes", st.Bytes, "cache_entries", st.CacheEntries)
	}
}

// imageInfos describes every template that has an image record.
func (s *Service) imageInfos() map[string]*TemplateImage {
	images := s.cfg.Images
	if images == nil {
		return nil
	}
	owners, err := images.Owners()
	if err != nil {
		s.cfg.Log.Warn("list image records", "err", err)
		return nil
	}
	imgs := map[string]image.Image{}
	users := map[string]int{} // diffID -> templates using it
	for _, o := range owners {
		img, err := images.Get(o)
		if err != nil {
			continue // a record being dropped
		}
		imgs[o] = img
		seen := map[string]bool{}
		for _, l := range img.Layers {
			if !seen[l.DiffID] {
				seen[l.DiffID] = true
				users[l.DiffID]++
			}
		}
	}
	out := make(map[string]*TemplateImage, len(imgs))
	for o, img := range imgs {
		c := img.Config
		ti := &TemplateImage{Digest: img.Digest, Platform: img.Platform, Layers: len(img.Layers),
			Env: c.Env, WorkingDir: c.WorkingDir, User: c.User, Entrypoint: c.Entrypoint, Cmd: c.Cmd, Labels: c.Labels}
		if img.Source != (image.Source{}) {
			ti.Source = img.Source.String()
		}
		for _, l := range img.Layers {
			if users[l.DiffID] > 1 {
				ti.SharedLayers++
			} else {
				ti.UniqueBytes += l.Size
			}
		}
		out[o] = ti
	}
	return out
}

// fromTemplates lets a Dockerfile's FROM name an image template.
type fromTemplates struct{ s *Service }

func (f fromTemplates) Template(ctx context.Context, name string, lease *image.Lease) (image.Image, bool, error) {
	s := f.s
	if err := s.rt.Validate(runtime.Spec{ID: "sb_check", Template: name}); err != nil {
		if _, derr := s.st.GetTemplate(ctx, name); derr == nil {
			return image.Image{}, false, errdefs.Userf(errdefs.ErrInvalid, "template %q is defined with hooks on another's files: FROM takes an image or a template made from one", name)
		}
		return image.Image{}, false, nil // not a template: an image reference
	}
	img, err := s.cfg.Images.Get(name)
	if errors.Is(err, errdefs.ErrNotFound) {
		return image.Image{}, false, errdefs.Userf(errdefs.ErrInvalid, "template %q is not made from an image: FROM takes an image or a template made from one", name)
	}
	if err != nil {
		return image.Image{}, false, err
	}
	for i, l := range img.Layers {
		if img.Layers[i], err = s.cfg.Images.Hold(lease, l.DiffID); err != nil {
			return image.Image{}, false, err
		}
	}
	return img, true, nil
}

// fromOf names what a Dockerfile builds on, for a template's origin.
func fromOf(instructions []string) string {
	for _, in := range instructions {
		if rest, ok := strings.CutPrefix(in, "FROM "); ok {
			return rest
		}
	}
	return ""
}
