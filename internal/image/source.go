package image

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	goruntime "runtime"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Source is where an image comes from: exactly one of Ref, OCILayout and
// DockerArchive.
type Source struct {
	// Ref is a registry reference ("debian:12", "127.0.0.1:5000/app@sha256:...").
	Ref string `json:"ref,omitempty"`
	// OCILayout is a directory in the OCI image layout.
	OCILayout string `json:"oci_layout,omitempty"`
	// DockerArchive is a file written by `docker save`.
	DockerArchive string `json:"docker_archive,omitempty"`
	// Name picks one image of a layout (its org.opencontainers.image.ref.name
	// annotation) or of an archive (its repo:tag) holding several.
	Name string `json:"name,omitempty"`
}

func (s Source) String() string {
	var out string
	switch {
	case s.Ref != "":
		return s.Ref
	case s.OCILayout != "":
		out = "oci-layout:" + s.OCILayout
	case s.DockerArchive != "":
		out = "docker-archive:" + s.DockerArchive
	}
	if s.Name != "" {
		out += ":" + s.Name
	}
	return out
}

// Options says how to fetch an image.
type Options struct {
	// Platform is os/arch[/variant]; empty means the host's.
	Platform string
	// Username and Password log in to the registry; empty means the
	// credentials of Keychain.
	Username, Password string
	// Keychain finds credentials per registry; nil means
	// authn.DefaultKeychain (the Docker config file, $DOCKER_CONFIG).
	Keychain authn.Keychain
	// Insecure allows plain HTTP. Registries on localhost and loopback
	// addresses are reached over plain HTTP anyway.
	Insecure bool
	// MaxBytes bounds the image: its compressed layers and what they
	// unpack to. Zero means DefaultMaxBytes.
	MaxBytes int64
	// Transport for registry requests; nil means http.DefaultTransport.
	Transport http.RoundTripper
	// Progress, if set, is told how the pull goes, from the pulling
	// goroutine.
	Progress func(Progress)
}

// DefaultMaxBytes is the size limit of Options{}.
const DefaultMaxBytes = 16 << 30

// Progress is a report on a pull.
type Progress struct {
	// Layer is the 1-based index of the layer this is about; Layers is
	// how many the image has.
	Layer, Layers int
	Digest        string
	// Bytes of this layer read so far and its compressed size (0 when
	// unknown).
	Bytes, Total int64
	// Cached: the store had it; nothing was fetched.
	Cached bool
	// Done: the layer is stored.
	Done bool
}

// Remote is a resolved image: its manifest and config are read, its layers
// not yet.
type Remote struct {
	Source   Source
	Digest   string // of the manifest
	Platform string
	Config   Config
	Layers   []LayerInfo // lowest first
	// CompressedSize is the sum of the layers' sizes.
	CompressedSize int64

	layers []v1.Layer
	// fromArchive: layers are read uncompressed and checked against their
	// diffID only (docker archives compute compressed digests by
	// compressing).
	fromArchive bool
}

// LayerInfo describes one layer of a Remote.
type LayerInfo struct {
	Digest    string `json:"digest"`
	DiffID    string `json:"diff_id"`
	MediaType string `json:"media_type"`
	Size      int64  `json:"size"`
}

// Fetch resolves src to one image for opts.Platform and reads its manifest
// and config. Errors for bad input wrap ErrInvalid or ErrNotFound.
func Fetch(ctx context.Context, src Source, opts Options) (*Remote, error) {
	want, err := parsePlatform(opts.Platform)
	if err != nil {
		return nil, err
	}
	n := 0
	for _, s := range []string{src.Ref, src.OCILayout, src.DockerArchive} {
		if s != "" {
			n++
		}
	}
	if n != 1 {
		return nil, invalidf("give exactly one of an image reference, an OCI layout and a docker archive")
	}
	var img v1.Image
	switch {
	case src.Ref != "":
		img, err = fetchRegistry(ctx, src.Ref, want, opts)
	case src.OCILayout != "":
		img, err = fetchLayout(src.OCILayout, src.Name, want)
	default:
		img, err = fetchArchive(src.DockerArchive, src.Name)
	}
	if err != nil {
		return nil, err
	}
	r, err := describe(img, src, want)
	if err != nil {
		return nil, err
	}
	r.fromArchive = src.DockerArchive != ""
	if limit := maxBytes(opts); r.CompressedSize > limit {
		return nil, invalidf("image %s is %d bytes compressed, over the limit of %d bytes", src, r.CompressedSize, limit)
	}
	return r, nil
}

func maxBytes(opts Options) int64 {
	if opts.MaxBytes > 0 {
		return opts.MaxBytes
	}
	return DefaultMaxBytes
}

func parsePlatform(s string) (v1.Platform, error) {
	if s == "" {
		p := v1.Platform{OS: goruntime.GOOS, Architecture: goruntime.GOARCH}
		if p.Architecture == "arm64" {
			p.Variant = "v8"
		}
		return p, nil
	}
	p, err := v1.ParsePlatform(s)
	if err != nil || p.OS == "" || p.Architecture == "" {
		return v1.Platform{}, invalidf("invalid platform %q: want os/arch[/variant], like linux/amd64", s)
	}
	return *p, nil
}

// platformMatches reports whether an image for have runs where want is
// asked for. A missing variant matches any; arm64 is v8 unless it says.
func platformMatches(have, want v1.Platform) bool {
	if have.OS != want.OS || have.Architecture != want.Architecture {
		return false
	}
	hv, wv := have.Variant, want.Variant
	if have.Architecture == "arm64" {
		if hv == "" {
			hv = "v8"
		}
		if wv == "" {
			wv = "v8"
		}
	}
	return hv == "" || wv == "" || hv == wv
}

func fetchRegistry(ctx context.Context, ref string, want v1.Platform, opts Options) (v1.Image, error) {
	var nopts []name.Option
	if opts.Insecure {
		nopts = append(nopts, name.Insecure)
	}
	r, err := name.ParseReference(ref, nopts...)
	if err != nil {
		return nil, invalidf("invalid image reference %q: %v", ref, err)
	}
	ropts := []remote.Option{remote.WithContext(ctx), remote.WithPlatform(want)}
	switch {
	case opts.Username != "" || opts.Password != "":
		ropts = append(ropts, remote.WithAuth(&authn.Basic{Username: opts.Username, Password: opts.Password}))
	case opts.Keychain != nil:
		ropts = append(ropts, remote.WithAuthFromKeychain(opts.Keychain))
	default:
		ropts = append(ropts, remote.WithAuthFromKeychain(authn.DefaultKeychain))
	}
	if opts.Transport != nil {
		ropts = append(ropts, remote.WithTransport(opts.Transport))
	}
	desc, err := remote.Get(r, ropts...)
	if err != nil {
		return nil, registryError(ref, err)
	}
	switch {
	case desc.MediaType.IsIndex():
		idx, err := desc.ImageIndex()
		if err != nil {
			return nil, registryError(ref, err)
		}
		img, err := selectPlatform(idx, ref, want)
		if err != nil {
			return nil, registryError(ref, err)
		}
		return img, nil
	case desc.MediaType.IsImage():
		img, err := desc.Image()
		if err != nil {
			return nil, registryError(ref, err)
		}
		return img, nil
	case desc.MediaType.IsSchema1():
		return nil, invalidf("image %s uses the Docker schema 1 manifest, which is not supported", ref)
	default:
		return nil, invalidf("image %s: unsupported manifest media type %q", ref, desc.MediaType)
	}
}

// registryError turns a registry's answer into an error kind a user can
// act on.
func registryError(ref string, err error) error {
	var ie *Error
	if errors.As(err, &ie) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	var te *transport.Error
	if errors.As(err, &te) {
		for _, d := range te.Errors {
			switch d.Code {
			case transport.ManifestUnknownErrorCode, transport.NameUnknownErrorCode, transport.BlobUnknownErrorCode:
				return notFoundf("image %s not found: %v", ref, err)
			case transport.UnauthorizedErrorCode, transport.DeniedErrorCode:
				return invalidf("registry refused access to %s (check the credentials): %v", ref, err)
			}
		}
		switch te.StatusCode {
		case http.StatusNotFound:
			return notFoundf("image %s not found: %v", ref, err)
		case http.StatusUnauthorized, http.StatusForbidden:
			return invalidf("registry refused access to %s (check the credentials): %v", ref, err)
		}
		return fmt.Errorf("image %s: %w", ref, err)
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return invalidf("cannot reach the registry of %s: %v", ref, err)
	}
	return fmt.Errorf("image %s: %w", ref, err)
}

// selectPlatform picks the image for want out of an index, recursing into
// nested indexes; none is a clear error listing what there is.
func selectPlatform(idx v1.ImageIndex, what string, want v1.Platform) (v1.Image, error) {
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	var have []string
	for _, d := range im.Manifests {
		switch {
		case d.MediaType.IsIndex():
			child, err := idx.ImageIndex(d.Digest)
			if err != nil {
				return nil, err
			}
			img, err := selectPlatform(child, what, want)
			if err == nil {
				return img, nil
			}
			var ie *Error
			if !errors.As(err, &ie) {
				return nil, err
			}
		case d.MediaType.IsImage():
			if d.Platform == nil {
				if len(im.Manifests) == 1 {
					return idx.Image(d.Digest) // checked against its config later
				}
				continue
			}
			if d.Platform.OS == "unknown" { // attestations
				continue
			}
			have = append(have, d.Platform.String())
			if platformMatches(*d.Platform, want) {
				return idx.Image(d.Digest)
			}
		}
	}
	slices.Sort(have)
	return nil, invalidf("image %s has no variant for platform %s (it has: %s)", what, want.String(), strings.Join(have, ", "))
}

// layerTypes are the layer media types we unpack.
var layerTypes = []types.MediaType{
	types.DockerLayer, types.DockerUncompressedLayer,
	types.OCILayer, types.OCIUncompressedLayer, types.OCILayerZStd,
}

// describe reads what Fetch reports of img, refusing what we cannot use.
func describe(img v1.Image, src Source, want v1.Platform) (*Remote, error) {
	m, err := img.Manifest()
	if err != nil {
		return nil, invalidf("image %s: manifest: %v", src, err)
	}
	if mt := m.Config.MediaType; mt != "" && mt != types.DockerConfigJSON && mt != types.OCIConfigJSON {
		return nil, invalidf("image %s: unsupported config media type %q (not a container image)", src, mt)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, invalidf("image %s: config: %v", src, err)
	}
	have := v1.Platform{OS: cf.OS, Architecture: cf.Architecture, Variant: cf.Variant}
	if cf.OS != "" && !platformMatches(have, want) {
		return nil, invalidf("image %s is for platform %s, not %s", src, have.String(), want.String())
	}
	if len(cf.RootFS.DiffIDs) != len(m.Layers) {
		return nil, invalidf("image %s: config lists %d layers, manifest %d", src, len(cf.RootFS.DiffIDs), len(m.Layers))
	}
	layers, err := img.Layers()
	if err != nil {
		return nil, invalidf("image %s: layers: %v", src, err)
	}
	if len(layers) != len(m.Layers) {
		return nil, invalidf("image %s: %d layers, manifest %d", src, len(layers), len(m.Layers))
	}
	digest, err := img.Digest()
	if err != nil {
		return nil, invalidf("image %s: %v", src, err)
	}
	r := &Remote{Source: src, Digest: digest.String(), layers: layers}
	if cf.OS != "" {
		r.Platform = have.String()
	}
	for i, d := range m.Layers {
		if !slices.Contains(layerTypes, d.MediaType) {
			if d.MediaType == types.DockerForeignLayer || strings.Contains(string(d.MediaType), "nondistributable") {
				return nil, invalidf("image %s: layer %d is a foreign layer (%s), which is not supported", src, i+1, d.MediaType)
			}
			return nil, invalidf("image %s: layer %d has unsupported media type %q", src, i+1, d.MediaType)
		}
		if d.Size < 0 {
			return nil, invalidf("image %s: layer %d has a negative size", src, i+1)
		}
		r.Layers = append(r.Layers, LayerInfo{
			Digest: d.Digest.String(), DiffID: cf.RootFS.DiffIDs[i].String(),
			MediaType: string(d.MediaType), Size: d.Size,
		})
		r.CompressedSize += d.Size
		if !digestRE.MatchString(cf.RootFS.DiffIDs[i].String()) {
			return nil, invalidf("image %s: layer %d: unsupported diffID %q", src, i+1, cf.RootFS.DiffIDs[i])
		}
	}
	c := cf.Config
	r.Config = Config{
		Env: c.Env, WorkingDir: c.WorkingDir, User: c.User,
		Entrypoint: c.Entrypoint, Cmd: c.Cmd, Labels: c.Labels,
	}
	return r, nil
}

// open returns layer i's stream, uncompressed, and a check to run once it
// is read whole.
func (r *Remote) open(i int, report func(int64)) (io.ReadCloser, func() error, error) {
	l := r.layers[i]
	if r.fromArchive {
		rc, err := l.Uncompressed()
		if err != nil {
			return nil, nil, invalidf("layer %d: %v", i+1, err)
		}
		return readCloser{&sourceReader{r: rc, report: report}, rc}, nil, nil
	}
	rc, err := l.Compressed()
	if err != nil {
		return nil, nil, registryError(r.Source.String(), err)
	}
	h := newHash()
	src := &sourceReader{r: rc, report: report}
	tee := io.TeeReader(src, h)
	zr, err := decompress(tee)
	if err != nil {
		rc.Close()
		return nil, nil, err
	}
	want := r.Layers[i].Digest
	check := func() error { return drainCheck(tee, h, want) }
	return readCloser{zr, multiCloser{zr, rc}}, check, nil
}

type readCloser struct {
	io.Reader
	io.Closer
}

type multiCloser []io.Closer

func (m multiCloser) Close() error {
	var errs []error
	for _, c := range m {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}
