package image_test

import (
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/sandpool/sandpool/internal/image"
	it "github.com/sandpool/sandpool/internal/image/imagetest"
)

func archImage(t *testing.T, platform string) v1.Image {
	arch := strings.Split(platform, "/")[1]
	return it.Image(t, platform, v1.Config{Env: []string{"ARCH=" + arch}},
		it.Layer(t, it.File("arch", arch, 0o644)))
}

func TestMultiPlatformIndex(t *testing.T) {
	host := it.Registry(t, "", "")
	it.PushIndex(t, host+"/multi:1", it.Index(t,
		archImage(t, "linux/amd64"), archImage(t, "linux/arm64/v8"), archImage(t, "linux/arm/v7")))
	for _, c := range []struct {
		platform, want string
	}{
		{"linux/amd64", "amd64"},
		{"linux/arm64", "arm64"},
		{"linux/arm64/v8", "arm64"},
		{"linux/arm/v7", "arm"},
		{"", goruntime.GOARCH},
	} {
		t.Run(c.platform, func(t *testing.T) {
			s := openStore(t)
			img := mustPull(t, s, image.Source{Ref: host + "/multi:1"}, image.Options{Platform: c.platform})
			b, err := os.ReadFile(filepath.Join(img.Layers[0].Dir, "arch"))
			if err != nil || string(b) != c.want {
				t.Errorf("arch file %q (%v), want %q", b, err, c.want)
			}
		})
	}
	s := openStore(t)
	_, err := pull(t, s, image.Source{Ref: host + "/multi:1"}, image.Options{Platform: "linux/s390x"})
	wantKind(t, err, image.ErrInvalid, "no variant for platform linux/s390x", "linux/amd64", "linux/arm64/v8")
	_, err = pull(t, s, image.Source{Ref: host + "/multi:1"}, image.Options{Platform: "linux"})
	wantKind(t, err, image.ErrInvalid, "invalid platform")

	// A single-platform image for another architecture is refused too.
	it.Push(t, host+"/armonly:1", archImage(t, "linux/arm64"), "", "")
	_, err = pull(t, s, image.Source{Ref: host + "/armonly:1"}, image.Options{Platform: "linux/amd64"})
	wantKind(t, err, image.ErrInvalid, "is for platform linux/arm64, not linux/amd64")
	storeEmpty(t, s)
}

func TestUnknownReferences(t *testing.T) {
	s := openStore(t)
	host := it.Registry(t, "", "")
	it.Push(t, host+"/there:1", archImage(t, "linux/amd64"), "", "")
	for _, c := range []struct {
		ref   string
		kind  error
		words []string
	}{
		{host + "/there:2", image.ErrNotFound, []string{"not found"}},
		{host + "/nothere:1", image.ErrNotFound, []string{"not found"}},
		{host + "/there@sha256:" + strings.Repeat("0", 64), image.ErrNotFound, []string{"not found"}},
		{"UPPER/case:tag", image.ErrInvalid, []string{"invalid image reference"}},
		{"127.0.0.1:1/closed:1", image.ErrInvalid, []string{"cannot reach the registry"}},
	} {
		_, err := pull(t, s, image.Source{Ref: c.ref}, image.Options{Platform: "linux/amd64"})
		wantKind(t, err, c.kind, c.words...)
	}
	_, err := pull(t, s, image.Source{}, image.Options{})
	wantKind(t, err, image.ErrInvalid, "exactly one")
	storeEmpty(t, s)
}

func TestRegistryAuth(t *testing.T) {
	host := it.Registry(t, "alice", "s3cret")
	it.Push(t, host+"/private:1", archImage(t, "linux/amd64"), "alice", "s3cret")
	src := image.Source{Ref: host + "/private:1"}
	opts := image.Options{Platform: "linux/amd64"}

	// No Docker config at all: anonymous, refused.
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	s := openStore(t)
	_, err := pull(t, s, src, opts)
	wantKind(t, err, image.ErrInvalid, "refused access", "credentials")

	bad := opts
	bad.Username, bad.Password = "alice", "wrong"
	_, err = pull(t, s, src, bad)
	wantKind(t, err, image.ErrInvalid, "refused access")
	storeEmpty(t, s)

	good := opts
	good.Username, good.Password = "alice", "s3cret"
	mustPull(t, s, src, good)

	// From the Docker config file, as `docker login` writes it.
	dir := t.TempDir()
	auth := base64.StdEncoding.EncodeToString([]byte("alice:s3cret"))
	cfg := fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, host, auth)
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DOCKER_CONFIG", dir)
	mustPull(t, openStore(t), src, opts)
}

func TestOCILayoutSource(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "layout")
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	amd, arm := archImage(t, "linux/amd64"), archImage(t, "linux/arm64")
	if err := p.AppendImage(amd, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": "v1"})); err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(arm, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": "v1-arm"}),
		layout.WithPlatform(v1.Platform{OS: "linux", Architecture: "arm64"})); err != nil {
		t.Fatal(err)
	}
	s := openStore(t)
	img := mustPull(t, s, image.Source{OCILayout: dir, Name: "v1"}, image.Options{Platform: "linux/amd64"})
	if v, _ := image.Getenv(img.Config.Env, "ARCH"); v != "amd64" {
		t.Errorf("ARCH=%q", v)
	}
	img = mustPull(t, s, image.Source{OCILayout: dir, Name: "v1-arm"}, image.Options{Platform: "linux/arm64"})
	if v, _ := image.Getenv(img.Config.Env, "ARCH"); v != "arm64" {
		t.Errorf("ARCH=%q", v)
	}
	_, err = pull(t, s, image.Source{OCILayout: dir, Name: "v2"}, image.Options{})
	wantKind(t, err, image.ErrNotFound, `no image named "v2"`)
	_, err = pull(t, s, image.Source{OCILayout: filepath.Join(dir, "nope")}, image.Options{})
	wantKind(t, err, image.ErrNotFound)

	// A blob changed on disk is caught by its digest.
	s = openStore(t)
	ls, _ := amd.Layers()
	d, _ := ls[0].Digest()
	blob := filepath.Join(dir, "blobs", d.Algorithm, d.Hex)
	b, err := os.ReadFile(blob)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-5] ^= 0x55 // the gzip trailer: decompression may not notice, the digest does
	if err := os.WriteFile(blob, b, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = pull(t, s, image.Source{OCILayout: dir, Name: "v1"}, image.Options{Platform: "linux/amd64"})
	wantKind(t, err, image.ErrInvalid, "corrupt")
	storeEmpty(t, s)
}

func TestDockerArchiveSource(t *testing.T) {
	file := filepath.Join(t.TempDir(), "saved.tar")
	tag, _ := name.NewTag("example.com/app:1")
	img := it.Image(t, "linux/amd64", v1.Config{User: "user"},
		it.Layer(t, baseEntries()...), it.Layer(t, topEntries()...))
	if err := tarball.WriteToFile(file, tag, img); err != nil {
		t.Fatal(err)
	}
	s := openStore(t)
	got := mustPull(t, s, image.Source{DockerArchive: file}, image.Options{Platform: "linux/amd64"})
	if len(got.Layers) != 2 || got.Config.UID != 1000 {
		t.Fatalf("got %+v", got)
	}
	// The same layers as from a registry: the same diffIDs, stored once.
	host := it.Registry(t, "", "")
	it.Push(t, host+"/app:1", img, "", "")
	again := mustPull(t, s, image.Source{Ref: host + "/app:1"}, image.Options{Platform: "linux/amd64"})
	if again.Layers[0].Dir != got.Layers[0].Dir || layerCount(t, s) != 2 {
		t.Errorf("registry and archive layers differ: %v vs %v", again.Dirs(), got.Dirs())
	}

	// Two images in one archive: name one.
	two := filepath.Join(t.TempDir(), "two.tar")
	tag2, _ := name.NewTag("example.com/other:2")
	refs := map[name.Reference]v1.Image{tag: img, tag2: archImage(t, "linux/amd64")}
	if err := tarball.MultiRefWriteToFile(two, refs); err != nil {
		t.Fatal(err)
	}
	_, err := pull(t, s, image.Source{DockerArchive: two}, image.Options{})
	wantKind(t, err, image.ErrInvalid, "docker archive")
	other := mustPull(t, s, image.Source{DockerArchive: two, Name: "example.com/other:2"}, image.Options{Platform: "linux/amd64"})
	if v, _ := image.Getenv(other.Config.Env, "ARCH"); v != "amd64" {
		t.Errorf("ARCH=%q", v)
	}
	_, err = pull(t, s, image.Source{DockerArchive: filepath.Join(t.TempDir(), "missing.tar")}, image.Options{})
	wantKind(t, err, image.ErrNotFound)
}
