package dockerfile_test

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"github.com/sandpool/sandpool/internal/dockerfile"
	"github.com/sandpool/sandpool/internal/dockerfile/localrun"
	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/image"
	it "github.com/sandpool/sandpool/internal/image/imagetest"
)

func TestMain(m *testing.M) {
	if localrun.IsHelper() {
		localrun.Helper()
	}
	code := m.Run()
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	if code == 0 {
		if err := goleak.Find(
			goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
			goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		); err != nil {
			fmt.Fprintln(os.Stderr, "goroutines leaked:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// countingRunner counts the RUN steps the real runner ran.
type countingRunner struct {
	localrun.Runner
	runs atomic.Int32
}

func (c *countingRunner) Run(ctx context.Context, s dockerfile.RunStep) (dockerfile.RunResult, error) {
	c.runs.Add(1)
	return c.Runner.Run(ctx, s)
}

// ownerTemplates serves the store's owner records as templates.
type ownerTemplates struct{ s *image.Store }

func (o ownerTemplates) Template(ctx context.Context, name string, lease *image.Lease) (image.Image, bool, error) {
	img, err := o.s.Get(name)
	if errors.Is(err, image.ErrNotFound) || errors.Is(err, image.ErrInvalid) {
		return image.Image{}, false, nil
	}
	if err != nil {
		return image.Image{}, false, err
	}
	for i, l := range img.Layers {
		if img.Layers[i], err = o.s.Hold(lease, l.DiffID); err != nil {
			return image.Image{}, false, err
		}
	}
	return img, true, nil
}

type env struct {
	store   *image.Store
	runner  *countingRunner
	builder *dockerfile.Builder
	host    string // registry with busybox:1
	runDir  string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("build tests need root (namespaces, overlayfs); CI runs as root")
	}
	entries := append(it.Busybox(t), it.File("etc/remove-me", "gone soon", 0o644))
	host := it.Registry(t, "", "")
	it.Push(t, host+"/busybox:1", it.Image(t, "linux/amd64", v1.Config{Env: []string{"PATH=/bin"}, Cmd: []string{"sh"}},
		it.Layer(t, entries...)), "", "")
	s, err := image.Open(image.StoreConfig{Dir: filepath.Join(t.TempDir(), "images")})
	if err != nil {
		t.Fatal(err)
	}
	runDir := t.TempDir()
	r := &countingRunner{Runner: localrun.Runner{Dir: runDir, UIDBase: s.UIDBase()}}
	return &env{
		store: s, runner: r, host: host, runDir: runDir,
		builder: &dockerfile.Builder{Store: s, Runner: r, Templates: ownerTemplates{s}, Pull: image.Options{Platform: "linux/amd64"}},
	}
}

// build parses and builds src, committing the result under owner when it
// is not empty.
func (e *env) build(t *testing.T, src, owner string, opts dockerfile.Options) (dockerfile.Result, string, error) {
	t.Helper()
	df, err := dockerfile.Parse(strings.NewReader(src))
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	opts.Output = &out
	lease := e.store.Lease()
	defer lease.Release()
	res, err := e.builder.Build(context.Background(), lease, df, opts)
	if err == nil && owner != "" {
		if err := e.store.Commit(owner, res.Image); err != nil {
			t.Fatal(err)
		}
	}
	return res, out.String(), err
}

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

const everything = `# syntax=docker/dockerfile:1
ARG REG
ARG NAME=busybox
FROM ${REG}/${NAME}:${TAG:-1}
ARG GREETING=hello
ARG REG
ENV APP_HOME=/opt/app \
    MSG="${GREETING} world"
# comments and blank lines between steps

LABEL org.example.name="demo app" reg=$REG
WORKDIR $APP_HOME
COPY --chown=user:staff app/ ./
COPY conf.txt /etc/demo/conf.txt
ADD --chmod=600 notes.txt notes/
RUN echo "$MSG from $(id -u):$(id -g) in $(pwd), arg $GREETING" > /tmp/out.txt && cat /tmp/out.txt
RUN ["/bin/sh", "-c", "ls /opt/app > /opt/app/listing && rm /etc/remove-me && echo > /dev/null"]
USER user
WORKDIR sub
RUN id > /home/user/id.txt && touch /opt/app/sub/owned-by-user && pwd
USER root
SHELL ["/bin/sh", "-ec"]
CMD ["/bin/sh"]
ENTRYPOINT /opt/app/main.sh
`

func TestBuildEveryInstruction(t *testing.T) {
	e := newEnv(t)
	ctxDir := t.TempDir()
	writeFiles(t, ctxDir, map[string]string{
		"app/main.sh": "#!/bin/sh\necho main\n", "app/lib/util.sh": "util", "conf.txt": "conf", "notes.txt": "notes",
	})
	if err := os.Chmod(filepath.Join(ctxDir, "app/main.sh"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("main.sh", filepath.Join(ctxDir, "app/run")); err != nil {
		t.Fatal(err)
	}
	res, out, err := e.build(t, everything, "demo", dockerfile.Options{Context: ctxDir, Args: map[string]string{"REG": e.host}})
	if err != nil {
		t.Fatalf("build: %v\noutput:\n%s", err, out)
	}
	for _, w := range []string{"Step 3/20 : FROM ${REG}/${NAME}:${TAG:-1}", "hello world from 0:0 in /opt/app, arg hello", "/opt/app/sub"} {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
	if got := res.Steps[2].Instruction; got != "FROM "+e.host+"/busybox:1" {
		t.Errorf("FROM step %q", got)
	}
	cfg := res.Image.Config
	want := image.Config{
		Env:        []string{"PATH=/bin", "APP_HOME=/opt/app", "MSG=hello world"},
		WorkingDir: "/opt/app/sub", User: "root", UID: 0, GID: 0,
		Cmd: []string{"/bin/sh"}, Entrypoint: []string{"/bin/sh", "-ec", "/opt/app/main.sh"},
		Labels: map[string]string{"org.example.name": "demo app", "reg": e.host},
	}
	if diff := cmp.Diff(want, cfg); diff != "" {
		t.Errorf("config (-want +got):\n%s", diff)
	}

	merged := it.Mount(t, res.Image.Dirs())
	read := func(p string) string {
		b, err := os.ReadFile(filepath.Join(merged, p))
		if err != nil {
			t.Errorf("%s: %v", p, err)
		}
		return string(b)
	}
	if got := read("tmp/out.txt"); got != "hello world from 0:0 in /opt/app, arg hello\n" {
		t.Errorf("tmp/out.txt %q", got)
	}
	if got := read("home/user/id.txt"); !strings.HasPrefix(got, "uid=1000(user) gid=1000(user)") {
		t.Errorf("id as USER user: %q", got)
	}
	if got := read("opt/app/listing"); got != "lib\nlisting\nmain.sh\nnotes\nrun\n" {
		t.Errorf("listing %q", got)
	}
	if _, err := os.Lstat(filepath.Join(merged, "etc/remove-me")); !os.IsNotExist(err) {
		t.Errorf("etc/remove-me: deleted by a RUN, still there (%v)", err)
	}
	tree := strings.Join(it.Tree(t, filepath.Join(merged, "opt")), "\n")
	for _, w := range []string{
		`app drwxr-xr-x 101000:100050`,
		`app/lib drwxr-xr-x 101000:100050`,
		`app/lib/util.sh -rw-r--r-- 101000:100050 "util"`,
		`app/main.sh -rwxr-xr-x 101000:100050 "#!/bin/sh\necho main\n"`,
		`app/run Lrwxrwxrwx 101000:100050 -> main.sh`,
		`app/notes drwxr-xr-x 100000:100000`,
		`app/notes/notes.txt -rw------- 100000:100000 "notes"`,
		`app/sub drwxr-xr-x 101000:101000`, // WORKDIR after USER: the user's, as BuildKit
		`app/sub/owned-by-user -rw-r--r-- 101000:101000 ""`,
	} {
		if !strings.Contains(tree, w) {
			t.Errorf("/opt lacks %q:\n%s", w, tree)
		}
	}
	etc := strings.Join(it.Tree(t, filepath.Join(merged, "etc")), "\n")
	if !strings.Contains(etc, `demo/conf.txt -rw-r--r-- 100000:100000 "conf"`) {
		t.Errorf("/etc:\n%s", etc)
	}
	if e.runner.runs.Load() != 3 {
		t.Errorf("%d RUN steps ran, want 3", e.runner.runs.Load())
	}
	// FROM a sandpool template.
	res2, out, err := e.build(t, "FROM demo\nRUN cat /tmp/out.txt > /from-template\n", "", dockerfile.Options{})
	if err != nil {
		t.Fatalf("FROM template: %v\n%s", err, out)
	}
	if len(res2.Image.Layers) != len(res.Image.Layers)+1 || res2.Image.Layers[0] != res.Image.Layers[0] {
		t.Errorf("FROM demo: %d layers; want demo's %d and one more", len(res2.Image.Layers), len(res.Image.Layers))
	}
}

// A second build reuses every step; after one changed COPY it reruns only
// the steps from that one on.
func TestBuildCache(t *testing.T) {
	e := newEnv(t)
	ctxDir := t.TempDir()
	writeFiles(t, ctxDir, map[string]string{"a.txt": "a", "b.txt": "b1"})
	src := fmt.Sprintf(`FROM %s/busybox:1
RUN echo one > /one
COPY a.txt /a.txt
RUN cat /a.txt > /two
COPY b.txt /b.txt
RUN cat /b.txt > /three
ENV X=1
RUN echo $X > /four
`, e.host)
	cachedSteps := func(res dockerfile.Result) []bool {
		var out []bool
		for _, s := range res.Steps[1:] {
			out = append(out, s.Cached)
		}
		return out
	}
	first, _, err := e.build(t, src, "t1", dockerfile.Options{Context: ctxDir})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]bool{false, false, false, false, false, false, false}, cachedSteps(first)); diff != "" {
		t.Errorf("first build, cached steps (-want +got):\n%s", diff)
	}
	if e.runner.runs.Load() != 4 {
		t.Fatalf("first build ran %d RUN steps, want 4", e.runner.runs.Load())
	}
	again, out, err := e.build(t, src, "t2", dockerfile.Options{Context: ctxDir})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]bool{true, true, true, true, true, false, true}, cachedSteps(again)); diff != "" {
		t.Errorf("same build, cached steps (-want +got):\n%s", diff)
	}
	if e.runner.runs.Load() != 4 || !strings.Contains(out, "Using cache") {
		t.Errorf("same build ran %d RUN steps in all, want 4", e.runner.runs.Load())
	}
	if diff := cmp.Diff(first.Image.Layers, again.Image.Layers); diff != "" {
		t.Errorf("same build, different layers:\n%s", diff)
	}

	writeFiles(t, ctxDir, map[string]string{"b.txt": "b2"})
	changed, _, err := e.build(t, src, "t3", dockerfile.Options{Context: ctxDir})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]bool{true, true, true, false, false, false, false}, cachedSteps(changed)); diff != "" {
		t.Errorf("after changing b.txt, cached steps (-want +got):\n%s", diff)
	}
	if n := e.runner.runs.Load(); n != 6 {
		t.Errorf("%d RUN steps in all, want 6 (the two after the changed COPY)", n)
	}
	merged := it.Mount(t, changed.Image.Dirs())
	if b, _ := os.ReadFile(filepath.Join(merged, "three")); string(b) != "b2" {
		t.Errorf("/three %q", b)
	}
	// A mode change is a change too.
	if err := os.Chmod(filepath.Join(ctxDir, "a.txt"), 0o600); err != nil {
		t.Fatal(err)
	}
	mode, _, err := e.build(t, src, "", dockerfile.Options{Context: ctxDir})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]bool{true, false, false, false, false, false, false}, cachedSteps(mode)); diff != "" {
		t.Errorf("after chmod a.txt, cached steps (-want +got):\n%s", diff)
	}
	// Build args that RUN sees are inputs as well.
	argSrc := fmt.Sprintf("FROM %s/busybox:1\nARG V\nRUN echo $V > /v\n", e.host)
	_, _, _ = e.build(t, argSrc, "", dockerfile.Options{Args: map[string]string{"V": "1"}})
	n := e.runner.runs.Load()
	_, _, _ = e.build(t, argSrc, "", dockerfile.Options{Args: map[string]string{"V": "2"}})
	if e.runner.runs.Load() != n+1 {
		t.Error("a changed build arg did not rerun the RUN that uses it")
	}
}

// A failing RUN fails the build with its output and line, and leaves
// no layer, no template and no temporary file behind.
func TestBuildFailingRun(t *testing.T) {
	e := newEnv(t)
	ctxDir := t.TempDir()
	writeFiles(t, ctxDir, map[string]string{"f": "x"})
	src := fmt.Sprintf("FROM %s/busybox:1\nCOPY f /f\nRUN echo made > /made\n\nRUN echo boom-output; echo to-stderr >&2; exit 3\n", e.host)
	_, _, err := e.build(t, src, "", dockerfile.Options{Context: ctxDir})
	var de *dockerfile.Error
	if !errors.As(err, &de) || !errors.Is(err, dockerfile.ErrRunFailed) || !errors.Is(err, errdefs.ErrFailed) || de.Line != 5 {
		t.Fatalf("error %v; want a *dockerfile.Error of kind ErrRunFailed on line 5", err)
	}
	for _, w := range []string{"exit code 3", "boom-output", "to-stderr", "line 5"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q lacks %q", err, w)
		}
	}
	if ls, _ := e.store.Layers(); len(ls) != 0 {
		t.Errorf("%d layers left; want none (the base was pulled for this build only)", len(ls))
	}
	if owners, _ := e.store.Owners(); len(owners) != 0 {
		t.Errorf("owners %v", owners)
	}
	for _, d := range []string{filepath.Join(e.store.Dir(), "tmp"), e.runDir} {
		if ents, _ := os.ReadDir(d); len(ents) != 0 {
			t.Errorf("%s not empty: %d entries", d, len(ents))
		}
	}
	// A command that does not exist is a failure of the step too.
	_, _, err = e.build(t, fmt.Sprintf("FROM %s/busybox:1\nRUN [\"/no/such\"]\n", e.host), "", dockerfile.Options{})
	if !errors.As(err, &de) || de.Line != 2 || !strings.Contains(err.Error(), "exit code 127") {
		t.Errorf("missing command: %v", err)
	}
}

func TestBuildStepErrors(t *testing.T) {
	e := newEnv(t)
	ctxDir := t.TempDir()
	writeFiles(t, ctxDir, map[string]string{"f": "x"})
	arc := it.Tar(t, it.File("inside", "x", 0o644))
	if err := os.WriteFile(filepath.Join(ctxDir, "a.tar"), arc, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/shadow", filepath.Join(ctxDir, "escape")); err != nil {
		t.Fatal(err)
	}
	from := "FROM " + e.host + "/busybox:1\n"
	for _, c := range []struct {
		name, src string
		line      int
		words     []string
	}{
		{"missing user", from + "USER nobody2\n", 2, []string{"USER", `user "nobody2" is not in the image's /etc/passwd`}},
		{"missing chown user", from + "COPY --chown=ghost f /f\n", 2, []string{"--chown=ghost"}},
		{"missing source", from + "COPY nope /x\n", 2, []string{"file not found in build context: nope"}},
		{"source outside the context", from + "COPY ../../etc/passwd /x\n", 2, []string{"file not found in build context"}},
		{"symlink out of the context", from + "COPY escape /x\n", 2, []string{"file not found in build context"}},
		{"add url", from + "ADD https://example.com/x /x\n", 2, []string{"ADD of a URL"}},
		{"add archive", from + "ADD a.tar /x/\n", 2, []string{"archive", "COPY it"}},
		{"unknown image", "FROM " + e.host + "/nothere:1\n", 1, []string{"not found"}},
		{"workdir on a file", from + "WORKDIR /etc/passwd\n", 2, []string{"not a directory"}},
		{"bad substitution", from + "ENV A=${B:?is required}\n", 2, []string{"B: is required"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := e.build(t, c.src, "", dockerfile.Options{Context: ctxDir})
			var de *dockerfile.Error
			if !errors.As(err, &de) || de.Line != c.line {
				t.Fatalf("error %v (%T); want a *dockerfile.Error on line %d", err, err, c.line)
			}
			kind := image.ErrInvalid
			if c.name == "unknown image" {
				kind = image.ErrNotFound
			}
			if !errors.Is(err, kind) && !(c.name == "unknown image" && errors.Is(err, image.ErrInvalid)) {
				t.Errorf("error %v is not of kind %v", err, kind)
			}
			for _, w := range c.words {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%q lacks %q", err, w)
				}
			}
		})
	}
	if ls, _ := e.store.Layers(); len(ls) != 0 {
		t.Errorf("%d layers left after failed builds", len(ls))
	}
}

// An uploaded context (a tar) is extracted with the unpacker's rules.
func TestExtractContext(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	ctxTar := it.Tar(t, it.File("app/x", "from tar", 0o644), it.Symlink("app/up", "../../../../etc"))
	if err := image.Extract(context.Background(), dir, strings.NewReader(string(ctxTar)), 0, 0); err != nil {
		t.Fatal(err)
	}
	res, out, err := e.build(t, "FROM "+e.host+"/busybox:1\nCOPY app /app\n", "", dockerfile.Options{Context: dir})
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	tree := it.Tree(t, res.Image.Layers[len(res.Image.Layers)-1].Dir)
	want := []string{
		`app drwxr-xr-x 100000:100000`,
		`app/up Lrwxrwxrwx 100000:100000 -> ../../../../etc`,
		`app/x -rw-r--r-- 100000:100000 "from tar"`,
	}
	if diff := cmp.Diff(want, tree); diff != "" {
		t.Errorf("COPY layer (-want +got):\n%s", diff)
	}
	bad := it.Tar(t, it.Entry{Name: "../x", Type: tar.TypeReg, Body: "x"})
	err = image.Extract(context.Background(), t.TempDir(), strings.NewReader(string(bad)), 0, 0)
	if !errors.Is(err, image.ErrInvalid) {
		t.Errorf("hostile context: %v", err)
	}
}

// What a RUN deletes, renames or replaces comes out right in the layer
// made from its upper dir: whiteouts, opaque directories, renamed
// directories (copied, since the runner turns overlayfs redirects off).
func TestBuildRunDeletesRenamesReplaces(t *testing.T) {
	e := newEnv(t)
	src := fmt.Sprintf(`FROM %s/busybox:1
RUN mkdir -p /d/sub && echo x > /d/sub/f && echo keep > /d/keep && mkdir /e && echo old > /e/old
RUN mv /d /moved && rm /moved/keep && rm -rf /e && mkdir /e && echo new > /e/new && ln /e/new /e/hard && ln -s new /e/soft
`, e.host)
	res, out, err := e.build(t, src, "", dockerfile.Options{})
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	merged := it.Mount(t, res.Image.Dirs())
	var got []string
	for _, l := range it.Tree(t, merged) {
		name, _, _ := strings.Cut(l, " ")
		if top, _, _ := strings.Cut(name, "/"); top == "d" || top == "e" || top == "moved" {
			got = append(got, l)
		}
	}
	want := []string{
		`e drwxr-xr-x 100000:100000`,
		`e/hard -rw-r--r-- 100000:100000 "new\n"`,
		`e/new -rw-r--r-- 100000:100000 "new\n"`,
		`e/soft Lrwxrwxrwx 100000:100000 -> new`,
		`moved drwxr-xr-x 100000:100000`,
		`moved/sub drwxr-xr-x 100000:100000`,
		`moved/sub/f -rw-r--r-- 100000:100000 "x\n"`,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("merged tree (-want +got):\n%s", diff)
	}
	// The last layer carries them as a lower layer would: a whiteout for
	// /d and an opaque /e.
	top := res.Image.Layers[len(res.Image.Layers)-1].Dir
	var st syscall.Stat_t
	if err := syscall.Lstat(filepath.Join(top, "d"), &st); err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFCHR || st.Rdev != 0 {
		t.Errorf("d in the top layer: mode %o rdev %d %v; want a whiteout", st.Mode, st.Rdev, err)
	}
	buf := make([]byte, 4)
	if n, err := unix.Lgetxattr(filepath.Join(top, "e"), "trusted.overlay.opaque", buf); err != nil || string(buf[:n]) != "y" {
		t.Errorf("e in the top layer is not opaque: %q %v", buf[:n], err)
	}
	var a, b syscall.Stat_t
	_ = syscall.Lstat(filepath.Join(top, "e/new"), &a)
	_ = syscall.Lstat(filepath.Join(top, "e/hard"), &b)
	if a.Ino == 0 || a.Ino != b.Ino {
		t.Error("e/hard is not a hard link of e/new in the layer")
	}
}
