package sandbox_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/events"
	"github.com/sandpool/sandpool/internal/image"
	it "github.com/sandpool/sandpool/internal/image/imagetest"
	"github.com/sandpool/sandpool/internal/proc"
	"github.com/sandpool/sandpool/internal/sandbox"
)

// newImageEnv is newEnv with an image store.
func newImageEnv(t *testing.T, cfg sandbox.Config) (*env, *image.Store) {
	t.Helper()
	images, err := image.Open(image.StoreConfig{Dir: filepath.Join(t.TempDir(), "images")})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Images = images
	return newEnv(t, cfg), images
}

// baseImage is a busybox image with an "app" user, in two layers: the
// second deletes, hides and links what the first has.
func baseImage(t *testing.T, cfg v1.Config) v1.Image {
	t.Helper()
	// No /proc or /dev: the template gets them in a layer of its own.
	bottom := append(slices.DeleteFunc(it.Busybox(t), func(e it.Entry) bool { return e.Name == "proc/" || e.Name == "dev/" }),
		it.File("etc/passwd", "root:x:0:0:root:/root:/bin/sh\napp:x:1001:1002:app:/home/app:/bin/sh\n", 0o644),
		it.File("etc/group", "root:x:0:\napp:x:1002:\n", 0o644),
		it.Dir("home/app/", 0o755),
		it.Dir("srv/", 0o755), it.File("srv/gone", "old", 0o644),
		it.Dir("opaque/", 0o755), it.File("opaque/hidden", "below", 0o644),
		it.Dir("srv/app/", 0o777))
	top := []it.Entry{
		it.Dir("srv/", 0o755), it.Whiteout("srv/gone"),
		it.Dir("opaque/", 0o755), it.Opaque("opaque/"), it.File("opaque/kept", "top", 0o644),
		it.Dir("data/", 0o755), it.File("data/b", "two", 0o644), it.Hardlink("data/b2", "data/b"),
		it.Symlink("data/link", "/data/b"),
		{Name: "data/suid", Body: "x", Mode: 0o4755},
		it.File("bin/hello", "#!/bin/sh\necho hello from the image \"$*\" as $(id -u) in $(pwd)\n", 0o755),
	}
	return it.Image(t, "", cfg, it.Layer(t, bottom...), it.Layer(t, top...))
}

var appConfig = v1.Config{Env: []string{"PATH=/bin", "GREETING=from-image"}, WorkingDir: "/srv/app", User: "app",
	Entrypoint: []string{"/bin/hello"}, Cmd: []string{"world"}}

// recorder collects pull progress.
type recorder struct {
	mu  sync.Mutex
	got []sandbox.PullProgress
}

func (r *recorder) add(p sandbox.PullProgress) { r.mu.Lock(); r.got = append(r.got, p); r.mu.Unlock() }

func (r *recorder) done() (layers int, cached int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.got {
		if p.Done {
			layers++
			if p.Cached {
				cached++
			}
		}
	}
	return layers, cached
}

// TestImageTemplate pulls an image from a registry and runs its command
// in a sandbox: the image's env, working directory and user apply, its
// layers' whiteouts, links and modes show, and writes stay in the
// sandbox.
func TestImageTemplate(t *testing.T) {
	e, images := newImageEnv(t, sandbox.Config{})
	ctx := context.Background()
	host := it.Registry(t, "", "")
	it.Push(t, host+"/app:1", baseImage(t, appConfig), "", "")

	var rec recorder
	tpl, err := e.svc.AddTemplate(ctx, sandbox.TemplateRequest{Name: "app", Image: &sandbox.ImageSource{Ref: host + "/app:1"}, Pull: rec.add})
	if err != nil {
		t.Fatal(err)
	}
	if n, cached := rec.done(); n != 2 || cached != 0 {
		t.Errorf("progress: %d layers done, %d cached; want 2, 0: %+v", n, cached, rec.got)
	}
	if tpl.Image == nil || tpl.Image.Source != host+"/app:1" || !strings.HasPrefix(tpl.Image.Digest, "sha256:") ||
		tpl.Image.Layers != 3 || tpl.Image.User != "app" || tpl.Image.WorkingDir != "/srv/app" ||
		!slices.Equal(tpl.Image.Cmd, []string{"world"}) || !strings.HasPrefix(tpl.Origin, "image "+host+"/app:1@sha256:") || tpl.SizeBytes == 0 {
		t.Errorf("template: %+v %+v", tpl, tpl.Image)
	}
	img, err := images.Get("app")
	if err != nil {
		t.Fatal(err)
	}
	before := map[string][]string{}
	for _, d := range img.Dirs() {
		before[d] = it.Tree(t, d)
	}

	sb := e.create(t, "a", sandbox.CreateRequest{Template: "app"})
	// The image's own command, as its entrypoint would run it.
	if out, st := e.run(t, "a", sb.ID, "hello world; echo $GREETING"); out != "hello from the image world as 1001 in /srv/app\nfrom-image\n" || st.Code != 0 {
		t.Errorf("image command: %q %+v", out, st)
	}
	for _, c := range []struct{ cmd, want string }{
		{"ls /srv; ls /opaque", "app\nkept\n"},
		{"cat /data/b /data/link", "twotwo"},
		{`[ "$(stat -c %i /data/b)" = "$(stat -c %i /data/b2)" ] && echo linked`, "linked\n"},
		{"stat -c %a /data/suid", "4755\n"},
		{"id -un; id -g", "app\n1002\n"},
	} {
		if out, _ := e.run(t, "a", sb.ID, c.cmd); out != c.want {
			t.Errorf("%s: %q, want %q", c.cmd, out, c.want)
		}
	}
	// Writes, as the user and as root, stay in this sandbox.
	if out, st := e.run(t, "a", sb.ID, "echo mine > /srv/app/new"); st.Code != 0 {
		t.Fatalf("the image's user writes in its working directory: %q", out)
	}
	p, err := e.svc.Exec(ctx, "a", sb.ID, sandbox.ExecRequest{Shell: "echo x > /data/b; rm /data/b2 /bin/hello; rm -r /opaque; chmod 700 /srv", User: "root"}, proc.Stdio{})
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := p.Wait(); st.Code != 0 {
		t.Fatalf("root's writes: %+v", st)
	}
	other := e.create(t, "a", sandbox.CreateRequest{Template: "app"})
	if out, _ := e.run(t, "a", other.ID, "cat /data/b; ls /opaque; ls /srv/app; hello"); !strings.HasPrefix(out, "twokept\nhello from the image") {
		t.Errorf("another sandbox sees the first one's writes: %q", out)
	}
	for d, tree := range before {
		if diff := cmp.Diff(tree, it.Tree(t, d)); diff != "" {
			t.Errorf("shared layer %s changed (-before +after):\n%s", d, diff)
		}
	}
	for _, id := range []string{sb.ID, other.ID} {
		if err := e.svc.Delete(ctx, "a", id); err != nil {
			t.Fatal(err)
		}
	}
}

// TestTemplatesShareLayers: two templates on one base store its layers
// once, on disk; deleting one keeps what the other uses, deleting both
// leaves nothing.
func TestTemplatesShareLayers(t *testing.T) {
	e, images := newImageEnv(t, sandbox.Config{})
	ctx := context.Background()
	host := it.Registry(t, "", "")
	base := baseImage(t, appConfig)
	for i, name := range []string{"one", "two"} {
		img := it.Image(t, "", appConfig, append(layersOf(t, base), it.Layer(t, it.File("mine", name, 0o644)))...)
		it.Push(t, host+"/"+name+":1", img, "", "")
		var rec recorder
		if _, err := e.svc.AddTemplate(ctx, sandbox.TemplateRequest{Name: name, Image: &sandbox.ImageSource{Ref: host + "/" + name + ":1"}, Pull: rec.add}); err != nil {
			t.Fatal(err)
		}
		if _, cached := rec.done(); cached != 2*i {
			t.Errorf("%s: %d layers came from the store, want %d", name, cached, 2*i)
		}
	}
	one, _ := images.Get("one")
	two, _ := images.Get("two")
	for i := range 2 {
		a, b := statOf(t, one.Layers[i].Dir), statOf(t, two.Layers[i].Dir)
		if a.Ino != b.Ino || a.Dev != b.Dev {
			t.Errorf("base layer %d stored twice: %s, %s", i, one.Layers[i].Dir, two.Layers[i].Dir)
		}
	}
	// base (2) + one's and two's own (2) + the shared mount points (1).
	if n := countLayers(t, images); n != 5 {
		t.Errorf("%d layers on disk, want 5", n)
	}
	list, err := e.svc.Templates(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, tpl := range list {
		if (tpl.Name == "one" || tpl.Name == "two") && (tpl.Image == nil || tpl.Image.SharedLayers != 3 || tpl.Image.Layers != 4) {
			t.Errorf("%s: %+v", tpl.Name, tpl.Image)
		}
	}
	for _, name := range []string{"one", "two"} {
		sb := e.create(t, "a", sandbox.CreateRequest{Template: name})
		if out, _ := e.run(t, "a", sb.ID, "cat /mine"); out != name {
			t.Errorf("%s sees %q", name, out)
		}
		if err := e.svc.Delete(ctx, "a", sb.ID); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.svc.DeleteTemplate(ctx, "one"); err != nil {
		t.Fatal(err)
	}
	if n := countLayers(t, images); n != 4 {
		t.Errorf("after deleting one: %d layers, want 4", n)
	}
	if err := e.svc.DeleteTemplate(ctx, "two"); err != nil {
		t.Fatal(err)
	}
	if n := countLayers(t, images); n != 0 {
		t.Errorf("after deleting both: %d layers, want 0", n)
	}
}

// TestImagePlatform picks the variant of a multi-platform index.
func TestImagePlatform(t *testing.T) {
	e, _ := newImageEnv(t, sandbox.Config{})
	ctx := context.Background()
	host := it.Registry(t, "", "")
	var imgs []v1.Image
	for _, p := range []string{"linux/amd64", "linux/arm64"} {
		arch := strings.TrimPrefix(p, "linux/")
		imgs = append(imgs, it.Image(t, p, v1.Config{Env: []string{"ARCH=" + arch}}, it.Layer(t, append(it.Busybox(t), it.File("arch", arch, 0o644))...)))
	}
	it.PushIndex(t, host+"/multi:1", it.Index(t, imgs...))
	for _, arch := range []string{"amd64", "arm64"} {
		tpl, err := e.svc.AddTemplate(ctx, sandbox.TemplateRequest{Name: "m-" + arch, Image: &sandbox.ImageSource{Ref: host + "/multi:1", Platform: "linux/" + arch}})
		if err != nil {
			t.Fatal(err)
		}
		if tpl.Image.Platform != "linux/"+arch {
			t.Errorf("platform %q", tpl.Image.Platform)
		}
		sb := e.create(t, "a", sandbox.CreateRequest{Template: "m-" + arch})
		// The busybox inside is the host's whatever the label says.
		if out, _ := e.run(t, "a", sb.ID, "cat /arch; echo $ARCH; id -u"); out != arch+arch+"\n0\n" {
			t.Errorf("%s: %q", arch, out)
		}
		if err := e.svc.Delete(ctx, "a", sb.ID); err != nil {
			t.Fatal(err)
		}
	}
}

// TestBadImagesLeaveNothing: every refused image is a clear error of the
// kind the API answers with a 4xx, and leaves no template, record, layer
// or temporary file.
func TestBadImagesLeaveNothing(t *testing.T) {
	e, images := newImageEnv(t, sandbox.Config{MaxTemplateBytes: 4 << 20})
	ctx := context.Background()
	host := it.Registry(t, "", "")
	secure := it.Registry(t, "alice", "secret")
	outside := t.TempDir()
	good := it.Layer(t, it.Busybox(t)...)
	plain := it.Tar(t, it.File("f", "x", 0o644))
	gz := it.Gzip(t, plain)
	big := it.Tar(t, it.File("big", strings.Repeat("x", 5<<20), 0o644))
	push := func(name string, cfg v1.Config, layers ...v1.Layer) string {
		ref := host + "/" + name + ":1"
		it.Push(t, ref, it.Image(t, "", cfg, append([]v1.Layer{good}, layers...)...), "", "")
		return ref
	}
	it.Push(t, secure+"/private:1", it.Image(t, "", v1.Config{}, good), "alice", "secret")
	it.PushIndex(t, host+"/index:1", it.Index(t, it.Image(t, "linux/arm64", v1.Config{}, good)))
	for _, c := range []struct {
		name  string
		src   sandbox.ImageSource
		kind  error
		words []string
	}{
		{"unknown reference", sandbox.ImageSource{Ref: host + "/nope:1"}, errdefs.ErrNotFound, []string{"not found"}},
		{"unparsable reference", sandbox.ImageSource{Ref: "UPPER CASE::"}, errdefs.ErrInvalid, []string{"invalid image reference"}},
		{"failed login", sandbox.ImageSource{Ref: secure + "/private:1", Username: "alice", Password: "wrong"}, errdefs.ErrInvalid, []string{"credentials"}},
		{"no login", sandbox.ImageSource{Ref: secure + "/private:1"}, errdefs.ErrInvalid, []string{"credentials"}},
		{"platform missing from the index", sandbox.ImageSource{Ref: host + "/index:1", Platform: "linux/s390x"}, errdefs.ErrInvalid, []string{"linux/s390x", "linux/arm64"}},
		{"unsupported media type", sandbox.ImageSource{Ref: push("mt", v1.Config{}, it.RawLayer(plain, gz, "application/vnd.oci.image.layer.v1.tar+bzip2"))}, errdefs.ErrInvalid, []string{"unsupported media type"}},
		{"path traversal", sandbox.ImageSource{Ref: push("dotdot", v1.Config{}, it.Layer(t, it.File("../../escape", "x", 0o644)))}, errdefs.ErrInvalid, []string{"path traversal"}},
		{"write through a symlink", sandbox.ImageSource{Ref: push("symlink", v1.Config{}, it.Layer(t, it.Symlink("evil", outside), it.File("evil/pwned", "x", 0o644)))}, errdefs.ErrInvalid, []string{"symbolic link"}},
		{"corrupt layer", sandbox.ImageSource{Ref: push("corrupt", v1.Config{}, it.RawLayer(plain, flip(gz), types.DockerLayer))}, errdefs.ErrInvalid, []string{"corrupt"}},
		{"truncated layer", sandbox.ImageSource{Ref: push("truncated", v1.Config{}, it.RawLayer(plain, gz[:len(gz)/2], types.DockerLayer))}, errdefs.ErrInvalid, []string{"corrupt"}},
		{"bigger than --max-template-size", sandbox.ImageSource{Ref: push("big", v1.Config{}, it.RawLayer(big, big, types.OCIUncompressedLayer))}, errdefs.ErrInvalid, []string{"limit"}},
		{"user the image lacks", sandbox.ImageSource{Ref: push("nouser", v1.Config{User: "ghost"}, it.Layer(t, it.File("x", "x", 0o644)))}, errdefs.ErrInvalid, []string{`user "ghost"`}},
		{"no such OCI layout", sandbox.ImageSource{OCILayout: filepath.Join(outside, "missing")}, errdefs.ErrNotFound, nil},
		{"relative docker archive", sandbox.ImageSource{DockerArchive: "image.tar"}, errdefs.ErrInvalid, []string{"absolute"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := e.svc.AddTemplate(ctx, sandbox.TemplateRequest{Name: "bad", Image: &c.src})
			if !errors.Is(err, c.kind) {
				t.Fatalf("error %v; want kind %v", err, c.kind)
			}
			for _, w := range c.words {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if _, err := e.svc.Template(ctx, "bad"); !errors.Is(err, errdefs.ErrNotFound) {
				t.Errorf("template left: %v", err)
			}
			if owners, _ := images.Owners(); len(owners) != 0 {
				t.Errorf("records left: %v", owners)
			}
			if n := countLayers(t, images); n != 0 {
				t.Errorf("%d layers left", n)
			}
			if ents, _ := os.ReadDir(filepath.Join(images.Dir(), "tmp")); len(ents) != 0 {
				t.Errorf("tmp/ holds %d entries", len(ents))
			}
			if ents, _ := os.ReadDir(outside); len(ents) != 0 {
				t.Errorf("a layer wrote outside the store: %v", ents)
			}
		})
	}
	// With the right login it works.
	if _, err := e.svc.AddTemplate(ctx, sandbox.TemplateRequest{Name: "private", Image: &sandbox.ImageSource{Ref: secure + "/private:1", Username: "alice", Password: "secret"}}); err != nil {
		t.Fatal(err)
	}
	// A name taken, and a network policy that does not exist.
	if _, err := e.svc.AddTemplate(ctx, sandbox.TemplateRequest{Name: "private", Image: &sandbox.ImageSource{Ref: secure + "/private:1"}}); !errors.Is(err, errdefs.ErrExists) {
		t.Errorf("same name again: %v", err)
	}
	if _, err := e.svc.AddTemplate(ctx, sandbox.TemplateRequest{Name: "net", Hooks: sandbox.Hooks{Network: &sandbox.Network{Egress: "bridge"}}, Image: &sandbox.ImageSource{Ref: host + "/mt:1"}}); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("network policy: %v", err)
	}
}

// usersOf is a pool manager stand-in that says a pool uses a template.
type usersOf map[string][]string

func (u usersOf) UsingTemplate(_ context.Context, template string) ([]string, error) {
	return u[template], nil
}

// TestDeleteTemplateInUse: a template a pool or a sandbox uses cannot be
// deleted; the refusal names them.
func TestDeleteTemplateInUse(t *testing.T) {
	e, images := newImageEnv(t, sandbox.Config{})
	ctx := context.Background()
	host := it.Registry(t, "", "")
	it.Push(t, host+"/app:1", baseImage(t, appConfig), "", "")
	if _, err := e.svc.AddTemplate(ctx, sandbox.TemplateRequest{Name: "app", Image: &sandbox.ImageSource{Ref: host + "/app:1"}}); err != nil {
		t.Fatal(err)
	}
	pools := usersOf{"app": {"workers"}}
	e.svc.AddTemplateUsers(pools)
	sb := e.create(t, "a", sandbox.CreateRequest{Template: "app"})
	err := e.svc.DeleteTemplate(ctx, "app")
	if !errors.Is(err, errdefs.ErrConflict) || !strings.Contains(err.Error(), `pool "workers"`) || !strings.Contains(err.Error(), sb.ID) {
		t.Fatalf("delete in use: %v", err)
	}
	delete(pools, "app")
	if err := e.svc.DeleteTemplate(ctx, "app"); !errors.Is(err, errdefs.ErrConflict) || strings.Contains(err.Error(), "pool") {
		t.Fatalf("delete in use by a sandbox: %v", err)
	}
	if err := e.svc.Delete(ctx, "a", sb.ID); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.DeleteTemplate(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	if n := countLayers(t, images); n != 0 {
		t.Errorf("%d layers left after the delete", n)
	}
}

// TestHalfMadeTemplateAfterRestart: an image record whose template was
// never placed (a crash between the two) and layers nothing uses are gone
// after a start.
func TestHalfMadeTemplateAfterRestart(t *testing.T) {
	e, images := newImageEnv(t, sandbox.Config{})
	ctx := context.Background()
	lease := images.Lease()
	l, err := images.AddLayer(ctx, lease, strings.NewReader(string(it.Tar(t, it.File("f", "x", 0o644)))), 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := images.Commit("half", image.Image{Layers: []image.Layer{l}}); err != nil {
		t.Fatal(err)
	}
	if _, err := images.AddLayer(ctx, lease, strings.NewReader(string(it.Tar(t, it.File("g", "y", 0o644)))), 0); err != nil {
		t.Fatal(err)
	}
	lease.Release()
	// What the next start's service does.
	svc := sandbox.New(e.rt, e.st, events.NewBroker(), sandbox.Config{Node: "n1", Images: images})
	if err := svc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	svc.Close()
	if owners, _ := images.Owners(); len(owners) != 0 {
		t.Errorf("records left: %v", owners)
	}
	if n := countLayers(t, images); n != 0 {
		t.Errorf("%d layers left", n)
	}
}

func flip(b []byte) []byte {
	c := slices.Clone(b)
	c[len(c)/2] ^= 0xff
	return c
}

func layersOf(t *testing.T, img v1.Image) []v1.Layer {
	t.Helper()
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	return ls
}

func statOf(t *testing.T, p string) syscall.Stat_t {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

func countLayers(t *testing.T, s *image.Store) int {
	t.Helper()
	ls, err := s.Layers()
	if err != nil {
		t.Fatal(err)
	}
	return len(ls)
}

// TestImageTemplateHooks: an image template takes hooks like any other;
// its setup runs as root and is built now with --build.
func TestImageTemplateHooks(t *testing.T) {
	e, _ := newImageEnv(t, sandbox.Config{})
	ctx := context.Background()
	host := it.Registry(t, "", "")
	it.Push(t, host+"/app:1", baseImage(t, appConfig), "", "")
	var out strings.Builder
	tpl, err := e.svc.AddTemplate(ctx, sandbox.TemplateRequest{Name: "hooked", Image: &sandbox.ImageSource{Ref: host + "/app:1"},
		Hooks: sandbox.Hooks{Setup: "echo setting up; id -u > /srv/setup-by", SessionSetup: "echo session > /tmp/session"},
		Build: true, Progress: &out})
	if err != nil {
		t.Fatal(err)
	}
	if tpl.Hooks.Setup == "" || tpl.Image == nil || !strings.Contains(out.String(), "setting up") {
		t.Errorf("template %+v, build output %q", tpl, out.String())
	}
	sb := e.create(t, "a", sandbox.CreateRequest{Template: "hooked"})
	if got, _ := e.run(t, "a", sb.ID, "cat /srv/setup-by /tmp/session; id -un"); got != "0\nsession\napp\n" {
		t.Errorf("got %q", got)
	}
	if err := e.svc.Delete(ctx, "a", sb.ID); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.DeleteTemplate(ctx, "hooked"); err != nil {
		t.Fatal(err)
	}
}
