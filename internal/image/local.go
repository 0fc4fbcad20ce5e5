package image

import (
	"errors"
	"io/fs"
	"os"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func fetchLayout(dir, want string, plat v1.Platform) (v1.Image, error) {
	if _, err := os.Stat(dir); err != nil {
		return nil, notFoundf("OCI layout %s: %v", dir, err)
	}
	p, err := layout.FromPath(dir)
	if err != nil {
		return nil, invalidf("%s is not an OCI layout: %v", dir, err)
	}
	idx, err := p.ImageIndex()
	if err != nil {
		return nil, invalidf("OCI layout %s: %v", dir, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, invalidf("OCI layout %s: %v", dir, err)
	}
	ds := im.Manifests
	if want != "" {
		ds = slices.DeleteFunc(slices.Clone(ds), func(d v1.Descriptor) bool {
			return d.Annotations["org.opencontainers.image.ref.name"] != want
		})
		if len(ds) == 0 {
			return nil, notFoundf("OCI layout %s has no image named %q", dir, want)
		}
	}
	what := "in OCI layout " + dir
	switch {
	case len(ds) == 0:
		return nil, invalidf("OCI layout %s holds no image", dir)
	case len(ds) == 1 && ds[0].MediaType.IsIndex():
		child, err := idx.ImageIndex(ds[0].Digest)
		if err != nil {
			return nil, invalidf("OCI layout %s: %v", dir, err)
		}
		return selectPlatform(child, what, plat)
	case len(ds) == 1 && ds[0].MediaType.IsImage():
		img, err := idx.Image(ds[0].Digest)
		if err != nil {
			return nil, invalidf("OCI layout %s: %v", dir, err)
		}
		return img, nil
	case len(ds) == 1:
		return nil, invalidf("OCI layout %s: unsupported manifest media type %q", dir, ds[0].MediaType)
	}
	// Several: pick by platform among them, as in an index.
	var have []string
	for _, d := range ds {
		if d.MediaType.IsImage() && d.Platform != nil {
			have = append(have, d.Platform.String())
			if platformMatches(*d.Platform, plat) {
				return idx.Image(d.Digest)
			}
		}
	}
	if len(have) == 0 {
		return nil, invalidf("OCI layout %s holds %d images; name one", dir, len(ds))
	}
	slices.Sort(have)
	return nil, invalidf("OCI layout %s has no image for platform %s (it has: %s)", dir, plat.String(), strings.Join(have, ", "))
}

func fetchArchive(file, want string) (v1.Image, error) {
	if _, err := os.Stat(file); err != nil {
		return nil, notFoundf("docker archive %s: %v", file, err)
	}
	var tag *name.Tag
	if want != "" {
		t, err := name.NewTag(want)
		if err != nil {
			return nil, invalidf("invalid image name %q: %v", want, err)
		}
		tag = &t
	}
	img, err := tarball.ImageFromPath(file, tag)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, notFoundf("docker archive %s: %v", file, err)
		}
		return nil, invalidf("docker archive %s: %v", file, err)
	}
	// tarball reads lazily: read the manifest now, so a bad archive fails
	// here and not halfway through.
	if _, err := img.Manifest(); err != nil {
		return nil, invalidf("docker archive %s: %v", file, err)
	}
	return img, nil
}
