package linux_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/image"
	"github.com/sandpool/sandpool/internal/image/imagetest"
	"github.com/sandpool/sandpool/internal/proc"
	"github.com/sandpool/sandpool/internal/runtime"
	"github.com/sandpool/sandpool/internal/runtime/linux"
)

// layeredTemplate stores each entry list as a layer (lowest first) in an
// image store beside the runtime's data and registers them as template
// name; it returns the layer directories, lowest first.
func layeredTemplate(t testing.TB, r *linux.Runtime, name string, defaults runtime.Defaults, layers ...[]imagetest.Entry) []string {
	t.Helper()
	st, err := image.Open(image.StoreConfig{Dir: filepath.Join(r.DataDir(), "images"), UIDBase: r.UIDBase()})
	if err != nil {
		t.Fatal(err)
	}
	lease := st.Lease()
	defer lease.Release()
	var dirs []string
	for _, entries := range layers {
		l, err := st.AddLayer(context.Background(), lease, bytes.NewReader(imagetest.Tar(t, entries...)), 0)
		if err != nil {
			t.Fatal(err)
		}
		dirs = append(dirs, l.Dir)
	}
	if _, err := r.ImportTemplate(context.Background(), name, runtime.TemplateSource{Layers: dirs, Defaults: defaults, Origin: "test"}); err != nil {
		t.Fatal(err)
	}
	return dirs
}

// TestImageTemplate boots a sandbox on stacked layers (whiteouts, an
// opaque directory, hard links, symlinks, a setuid file) and checks what
// it sees, that the template's defaults apply, and that its writes stay
// in its own writable layer.
func TestImageTemplate(t *testing.T) {
	r := openRuntime(t)
	ctx := context.Background()
	base := append(imagetest.Busybox(t),
		imagetest.File("etc/passwd", "root:x:0:0:root:/root:/bin/sh\napp:x:1001:1002:app:/home/app:/bin/sh\n", 0o644),
		imagetest.File("etc/group", "root:x:0:\napp:x:1002:\nextra:x:1500:app\n", 0o644),
		imagetest.Dir("home/app/", 0o755),
		imagetest.Dir("srv/", 0o755), imagetest.File("srv/gone", "old", 0o644),
		imagetest.Dir("opaque/", 0o755), imagetest.File("opaque/hidden", "below", 0o644),
		imagetest.File("data/a", "one", 0o644))
	top := []imagetest.Entry{
		imagetest.Dir("srv/", 0o755), imagetest.Whiteout("srv/gone"),
		imagetest.Dir("opaque/", 0o755), imagetest.Opaque("opaque/"), imagetest.File("opaque/kept", "top", 0o644),
		imagetest.Dir("data/", 0o755), imagetest.File("data/b", "two", 0o644), imagetest.Hardlink("data/b2", "data/b"),
		imagetest.Symlink("data/link", "/data/b"),
		{Name: "data/suid", Body: "x", Mode: 0o4755},
		imagetest.Dir("work/", 0o777),
	}
	defaults := runtime.Defaults{User: "1001:1002", Env: []string{"PATH=/bin", "FROM_IMAGE=yes", "SHADOWED=image"}, Cwd: "/work"}
	dirs := layeredTemplate(t, r, "img", defaults, base, top)
	before := make([][]string, len(dirs))
	for i, d := range dirs {
		before[i] = imagetest.Tree(t, d)
	}

	id := createSandbox(t, r, runtime.Spec{Template: "img"})
	got := run(t, r, id, proc.Spec{Shell: "id -u; id -g; id -G; pwd; echo $FROM_IMAGE $SHADOWED $HOME",
		Env: map[string]string{"SHADOWED": "call"}})
	if want := "1001\n1002\n1002 1500\n/work\nyes call /home/app\n"; got.Stdout != want || got.Code != 0 {
		t.Errorf("defaults: got %q (%s, exit %d), want %q", got.Stdout, got.Stderr, got.Code, want)
	}
	checks := []struct{ cmd, want string }{
		{"ls /srv; ls /opaque", "kept\n"},
		{"cat /data/a /data/b /data/link", "onetwotwo"},
		{`[ "$(stat -c %i /data/b)" = "$(stat -c %i /data/b2)" ] && echo same`, "same\n"},
		{"stat -c %a /data/suid", "4755\n"},
		{"id -u", "1001\n"},
	}
	for _, c := range checks {
		if got := run(t, r, id, proc.Spec{Shell: c.cmd}); got.Stdout != c.want {
			t.Errorf("%s: got %q (%s), want %q", c.cmd, got.Stdout, got.Stderr, c.want)
		}
	}
	// A call's own user still works, and root can change anything: in
	// its own writable layer only.
	if got := run(t, r, id, proc.Spec{User: "root", Shell: "id -u; echo changed > /data/a; echo new > /data/new; rm /data/b; rm -r /opaque; chmod 700 /srv"}); got.Stdout != "0\n" || got.Code != 0 {
		t.Fatalf("root writes: %+v", got)
	}
	other := createSandbox(t, r, runtime.Spec{Template: "img"})
	if got := run(t, r, other, proc.Spec{Shell: "cat /data/a; ls /data; ls /opaque"}); got.Stdout != "onea\nb\nb2\nlink\nsuid\nkept\n" {
		t.Errorf("another sandbox sees the first one's writes: %q %s", got.Stdout, got.Stderr)
	}
	for i, d := range dirs {
		if diff := cmp.Diff(before[i], imagetest.Tree(t, d)); diff != "" {
			t.Errorf("layer %d changed (-before +after):\n%s", i, diff)
		}
	}
	list, err := r.Templates(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, tpl := range list {
		if tpl.Name == "img" {
			found = true
			if tpl.Layers != 2 || tpl.Origin != "test" || !cmp.Equal(tpl.Defaults, defaults) {
				t.Errorf("listed as %+v", tpl)
			}
		}
	}
	if !found {
		t.Errorf("img not listed: %+v", list)
	}
}

// TestImageTemplateNoShell: the agent needs nothing of the image; a
// command runs in an image that has no shell.
func TestImageTemplateNoShell(t *testing.T) {
	r := openRuntime(t)
	bin, err := os.ReadFile(imagetest.BusyboxPath)
	if err != nil {
		t.Skipf("no busybox: %v", err)
	}
	// The mount points init needs, and one program.
	layeredTemplate(t, r, "noshell", runtime.Defaults{}, []imagetest.Entry{imagetest.Dir("proc/", 0o555), imagetest.Dir("dev/", 0o755),
		imagetest.File("busybox", string(bin), 0o755)})
	id := createSandbox(t, r, runtime.Spec{Template: "noshell"})
	// No /etc/passwd either: run as a numeric user.
	if got := run(t, r, id, proc.Spec{Cmd: []string{"/busybox", "echo", "hi"}, User: "0"}); got.Stdout != "hi\n" {
		t.Errorf("got %+v", got)
	}
	if _, err := tryRun(r, id, proc.Spec{Shell: "true", User: "0"}, nil); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("a shell command without a shell: %v, want not found", err)
	}
}

// TestManyLayers: a template of many layers boots; their joined paths
// are far past the 256 bytes a single lowerdir string may have.
func TestManyLayers(t *testing.T) {
	r := openRuntime(t)
	layers := [][]imagetest.Entry{imagetest.Busybox(t)}
	for i := range 30 {
		layers = append(layers, []imagetest.Entry{imagetest.Dir("n/", 0o755), imagetest.File(fmt.Sprintf("n/%02d", i), "x", 0o644)})
	}
	dirs := layeredTemplate(t, r, "many", runtime.Defaults{User: "0:0"}, layers...)
	if n := len(strings.Join(dirs, ":")); n < 1000 {
		t.Fatalf("layer paths only %d bytes long", n)
	}
	id := createSandbox(t, r, runtime.Spec{Template: "many"})
	if got := run(t, r, id, proc.Spec{Shell: "ls /n | wc -l"}); strings.TrimSpace(got.Stdout) != "30" {
		t.Errorf("got %+v", got)
	}
	// Sealed layers stack on top of them.
	run(t, r, id, proc.Spec{Shell: "echo sealed > /n/s"})
	if err := r.Seal(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Reset(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	if got := run(t, r, id, proc.Spec{Shell: "cat /n/s"}); got.Stdout != "sealed\n" {
		t.Errorf("after seal and reset: %+v", got)
	}
}

// TestLayersSandbox: a sandbox made on layers (a build step) leaves a
// plain writable layer: a renamed lower directory is copied, not a
// redirect.
func TestLayersSandbox(t *testing.T) {
	r := openRuntime(t)
	ctx := context.Background()
	dirs := layeredTemplate(t, r, "unused", runtime.Defaults{},
		append(imagetest.Busybox(t), imagetest.Dir("d/", 0o755), imagetest.File("d/f", "in d", 0o644)))
	info, err := r.Create(ctx, runtime.Spec{Layers: dirs})
	if err != nil {
		t.Fatal(err)
	}
	if got := run(t, r, info.ID, proc.Spec{User: "0", Shell: "mv /d /moved && cat /moved/f"}); got.Stdout != "in d" {
		t.Fatalf("mv: %+v", got)
	}
	if _, err := r.UpperDir(info.ID); !errors.Is(err, errdefs.ErrConflict) {
		t.Errorf("UpperDir of a running sandbox: %v, want conflict", err)
	}
	if err := r.Stop(ctx, info.ID); err != nil {
		t.Fatal(err)
	}
	upper, err := r.UpperDir(info.ID)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(upper, "moved", "f"))
	if err != nil || string(b) != "in d" {
		t.Errorf("moved/f in the writable layer: %q, %v (want a copy, not a redirect)", b, err)
	}
	if _, err := r.Create(ctx, runtime.Spec{Layers: []string{"relative/dir"}}); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("relative layer: %v", err)
	}
	if _, err := r.Create(ctx, runtime.Spec{Layers: []string{filepath.Join(t.TempDir(), "missing")}}); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("missing layer: %v", err)
	}
}
