package sandbox_test

import (
	"bytes"
	"context"
	"errors"
	"regexp"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/sandpool/sandpool/internal/dockerfile"
	"github.com/sandpool/sandpool/internal/errdefs"
	it "github.com/sandpool/sandpool/internal/image/imagetest"
	"github.com/sandpool/sandpool/internal/sandbox"
	"github.com/sandpool/sandpool/internal/store"
)

// buildDockerfile uses every instruction sandpool builds.
const buildDockerfile = `# syntax=docker/dockerfile:1
ARG TAG=1
FROM {{REGISTRY}}/busybox:${TAG}
ARG VERSION=7
ENV GREETING="hello world" NAME=v${VERSION}
LABEL org.example.name=demo
WORKDIR /app
COPY --chown=user:user app.txt ./
ADD dir/ /opt/dir/
RUN echo "ran-shell-form $GREETING $NAME" && echo "$GREETING $NAME" > built.txt && id -u >> built.txt
RUN ["/bin/sh", "-c", "echo ran-exec-form; echo exec > /app/exec.txt"]
USER user
RUN echo ran-as-user; id -un > /home/user/who
WORKDIR sub
SHELL ["/bin/sh", "-e", "-c"]
ENTRYPOINT ["/bin/cat"]
CMD ["/app/app.txt"]
`

// contextTar is a build context: the Dockerfile and the files it copies.
func contextTar(t *testing.T, registry, app string) []byte {
	t.Helper()
	return it.Tar(t,
		it.File("Dockerfile", strings.ReplaceAll(buildDockerfile, "{{REGISTRY}}", registry), 0o644),
		it.File("app.txt", app, 0o600),
		it.Dir("dir/", 0o755), it.File("dir/a", "A", 0o644), it.Dir("dir/sub/", 0o755), it.File("dir/sub/b", "B", 0o755))
}

func busyboxRegistry(t *testing.T) string {
	t.Helper()
	host := it.Registry(t, "", "")
	it.Push(t, host+"/busybox:1", it.Image(t, "", v1.Config{Env: []string{"PATH=/bin"}, Cmd: []string{"sh"}}, it.Layer(t, it.Busybox(t)...)), "", "")
	return host
}

func build(t *testing.T, e *env, req sandbox.BuildRequest, ctxTar []byte) (sandbox.Template, string, error) {
	t.Helper()
	var out bytes.Buffer
	req.Context = bytes.NewReader(ctxTar)
	req.Output = &out
	tpl, err := e.svc.BuildTemplate(context.Background(), req)
	return tpl, out.String(), err
}

// TestBuildTemplate builds a Dockerfile with every supported instruction
// into a template whose sandboxes show each one's work.
func TestBuildTemplate(t *testing.T) {
	e, _ := newImageEnv(t, sandbox.Config{})
	ctx := context.Background()
	host := busyboxRegistry(t)
	tpl, out, err := build(t, e, sandbox.BuildRequest{Name: "built", Args: map[string]string{"VERSION": "9"}}, contextTar(t, host, "app v1"))
	if err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	for _, w := range []string{"Step 1/16 : ARG TAG=1", "ran-shell-form hello world v9", "ran-exec-form", "ran-as-user"} {
		if !strings.Contains(out, w) {
			t.Errorf("build output lacks %q:\n%s", w, out)
		}
	}
	if tpl.Origin != "Dockerfile (FROM "+host+"/busybox:1)" || tpl.Image == nil || tpl.Image.User != "user" ||
		tpl.Image.WorkingDir != "/app/sub" || tpl.Image.Labels["org.example.name"] != "demo" || len(tpl.Image.Entrypoint) != 1 {
		t.Errorf("template: %+v %+v", tpl, tpl.Image)
	}
	sb := e.create(t, "a", sandbox.CreateRequest{Template: "built"})
	for _, c := range []struct{ cmd, want string }{
		{"id -un; pwd; echo $GREETING $NAME", "user\n/app/sub\nhello world v9\n"},
		{"cat /app/app.txt; stat -c '%U %a' /app/app.txt", "app v1user 600\n"},
		{"cat /opt/dir/a /opt/dir/sub/b; stat -c %a /opt/dir/sub/b", "AB755\n"},
		{"cat /app/built.txt /app/exec.txt /home/user/who", "hello world v9\n0\nexec\nuser\n"},
	} {
		if got, _ := e.run(t, "a", sb.ID, c.cmd); got != c.want {
			t.Errorf("%s: %q, want %q", c.cmd, got, c.want)
		}
	}
	if err := e.svc.Delete(ctx, "a", sb.ID); err != nil {
		t.Fatal(err)
	}
	// FROM a template made from an image.
	_, out, err = build(t, e, sandbox.BuildRequest{Name: "child"}, it.Tar(t, it.File("Dockerfile", "FROM built\nUSER root\nRUN cat /app/built.txt > /app/copy\nUSER user\n", 0o644)))
	if err != nil {
		t.Fatalf("FROM a template: %v\n%s", err, out)
	}
	sb = e.create(t, "a", sandbox.CreateRequest{Template: "child"})
	if got, _ := e.run(t, "a", sb.ID, "cat /app/copy; id -un"); got != "hello world v9\n0\nuser\n" {
		t.Errorf("child: %q", got)
	}
	if err := e.svc.Delete(ctx, "a", sb.ID); err != nil {
		t.Fatal(err)
	}
	noBuildSandboxes(t, e)
}

// ran matches what the RUN steps print when they run.
var ran = regexp.MustCompile(`(?m)^ran-`)

// TestBuildCache: a second build of the same context runs nothing; one
// with a changed COPY source reruns only the steps after it.
func TestBuildCache(t *testing.T) {
	e, _ := newImageEnv(t, sandbox.Config{})
	host := busyboxRegistry(t)
	if _, out, err := build(t, e, sandbox.BuildRequest{Name: "first"}, contextTar(t, host, "v1")); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	_, out, err := build(t, e, sandbox.BuildRequest{Name: "second"}, contextTar(t, host, "v1"))
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if ran.MatchString(out) || strings.Count(out, "Using cache") != 7 {
		t.Errorf("an unchanged build ran steps (want its 7 layers from the cache):\n%s", out)
	}
	// A changed app.txt: its COPY and every step after it run again, the
	// steps before come from the cache.
	_, out, err = build(t, e, sandbox.BuildRequest{Name: "third"}, contextTar(t, host, "v2"))
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	before, after, _ := strings.Cut(out, "COPY --chown")
	if ran.MatchString(before) || !strings.Contains(before, "Using cache") {
		t.Errorf("steps before the changed COPY ran:\n%s", before)
	}
	if strings.Contains(after, "Using cache") || len(ran.FindAllString(after, -1)) != 3 {
		t.Errorf("steps after the changed COPY came from the cache:\n%s", after)
	}
	// --no-cache runs everything.
	_, out, err = build(t, e, sandbox.BuildRequest{Name: "fourth", NoCache: true}, contextTar(t, host, "v1"))
	if err != nil || strings.Contains(out, "Using cache") || len(ran.FindAllString(out, -1)) != 3 {
		t.Errorf("no cache: %v\n%s", err, out)
	}
	sb := e.create(t, "a", sandbox.CreateRequest{Template: "third"})
	if got, _ := e.run(t, "a", sb.ID, "cat /app/app.txt"); got != "v2" {
		t.Errorf("third: %q", got)
	}
	if err := e.svc.Delete(context.Background(), "a", sb.ID); err != nil {
		t.Fatal(err)
	}
}

// TestBuildFailures: a failing RUN fails the build with its output and
// leaves no template, layer, record or sandbox; so do a Dockerfile that
// does not parse and an instruction sandpool does not build.
func TestBuildFailures(t *testing.T) {
	e, images := newImageEnv(t, sandbox.Config{})
	ctx := context.Background()
	host := busyboxRegistry(t)
	for _, c := range []struct {
		name, dockerfile string
		kind             error
		words            []string
	}{
		{"failing RUN", "FROM " + host + "/busybox:1\nRUN echo made > /made\nRUN echo boom-output; echo on-stderr >&2; exit 3\n",
			dockerfile.ErrRunFailed, []string{"line 3", "exit code 3", "boom-output", "on-stderr"}},
		{"missing command", "FROM " + host + "/busybox:1\nRUN [\"/no/such/program\"]\n",
			dockerfile.ErrRunFailed, []string{"line 2", "exit code 127"}},
		{"unsupported instruction", "FROM " + host + "/busybox:1\nRUN true\nEXPOSE 80\n",
			errdefs.ErrInvalid, []string{"line 3", "EXPOSE"}},
		{"does not parse", "FROM " + host + "/busybox:1\nRUN [\"unterminated\n",
			errdefs.ErrInvalid, []string{"line 2"}},
		{"no FROM", "RUN true\n", errdefs.ErrInvalid, []string{"line 1"}},
		{"unknown base", "FROM " + host + "/nope:1\n", errdefs.ErrNotFound, []string{"not found"}},
		{"FROM a template not made from an image", "FROM base\n", errdefs.ErrInvalid, []string{`"base"`}},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, out, err := build(t, e, sandbox.BuildRequest{Name: "broken"}, it.Tar(t, it.File("Dockerfile", c.dockerfile, 0o644)))
			if !errors.Is(err, c.kind) {
				t.Fatalf("error %v; want kind %v\n%s", err, c.kind, out)
			}
			for _, w := range c.words {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if _, err := e.svc.Template(ctx, "broken"); !errors.Is(err, errdefs.ErrNotFound) {
				t.Errorf("template left: %v", err)
			}
			if n := countLayers(t, images); n != 0 {
				t.Errorf("%d layers left", n)
			}
			if owners, _ := images.Owners(); len(owners) != 0 {
				t.Errorf("records left: %v", owners)
			}
			noBuildSandboxes(t, e)
		})
	}
	if _, _, err := build(t, e, sandbox.BuildRequest{Name: "nodockerfile"}, it.Tar(t, it.File("other", "x", 0o644))); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("no Dockerfile in the context: %v", err)
	}
	if _, _, err := build(t, e, sandbox.BuildRequest{Name: "escape", Dockerfile: "../../etc/passwd"}, it.Tar(t, it.File("Dockerfile", "FROM x\n", 0o644))); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("a Dockerfile outside the context: %v", err)
	}
	if _, _, err := build(t, e, sandbox.BuildRequest{Name: "net", Hooks: sandbox.Hooks{Network: &sandbox.Network{Egress: "bridge"}}}, it.Tar(t, it.File("Dockerfile", "FROM x\n", 0o644))); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("a network policy: %v", err)
	}
}

// noBuildSandboxes fails if a build step's sandbox is left in the
// runtime or recorded as active.
func noBuildSandboxes(t *testing.T, e *env) {
	t.Helper()
	ctx := context.Background()
	rows, err := e.st.ListSandboxes(ctx, store.Filter{Tenant: "_build"})
	if err != nil {
		t.Fatal(err)
	}
	build := map[string]bool{}
	for _, r := range rows {
		build[r.ID] = true
		if r.Status != "stopped" {
			t.Errorf("build sandbox %s recorded as %s", r.ID, r.Status)
		}
	}
	list, err := e.rt.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range list {
		if build[in.ID] {
			t.Errorf("build sandbox %s left in the runtime (%s)", in.ID, in.Status)
		}
	}
}
