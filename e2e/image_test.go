package e2e

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/sandpool/sandpool/client"
	it "github.com/sandpool/sandpool/internal/image/imagetest"
	"github.com/sandpool/sandpool/internal/latency"
)

// testImages serves, until the test ends, a registry on loopback with:
// busybox:1 (a busybox root filesystem), app:1 (busybox and a layer with
// a program, an "app" user, env and a working directory) and app:2 (app:1
// and one more layer). It returns the registry's host:port.
func testImages(t testing.TB) string {
	t.Helper()
	host := it.Registry(t, "", "")
	base := it.Layer(t, append(it.Busybox(t),
		it.File("etc/passwd", "root:x:0:0:root:/root:/bin/sh\napp:x:1001:1001:app:/home/app:/bin/sh\n", 0o644),
		it.File("etc/group", "root:x:0:\napp:x:1001:\n", 0o644),
		it.Dir("home/app/", 0o755), it.Dir("srv/", 0o777))...)
	prog := it.Layer(t, it.Dir("usr/", 0o755), it.Dir("usr/local/", 0o755), it.Dir("usr/local/bin/", 0o755),
		it.File("usr/local/bin/hello", "#!/bin/sh\necho \"hello $*, from $(id -un) in $(pwd) ($GREETING)\"\n", 0o755))
	cfg := v1.Config{Env: []string{"PATH=/usr/local/bin:/bin", "GREETING=from the image"}, WorkingDir: "/srv", User: "app",
		Entrypoint: []string{"hello"}, Cmd: []string{"world"}}
	it.Push(t, host+"/busybox:1", it.Image(t, "", v1.Config{Env: []string{"PATH=/bin"}}, base), "", "")
	platform := goruntime.GOOS + "/" + goruntime.GOARCH
	it.Push(t, host+"/app:1", it.Image(t, platform, cfg, base, prog), "", "")
	it.Push(t, host+"/app:2", it.Image(t, platform, cfg, base, prog, it.Layer(t, it.File("srv/v2", "two", 0o644))), "", "")
	return host
}

// pullLog is a progress writer that records pull reports and output.
type pullLog struct {
	mu     sync.Mutex
	pulls  []client.PullProgress
	output strings.Builder
}

func (p *pullLog) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.output.Write(b)
}

func (p *pullLog) PullProgress(pp client.PullProgress) {
	p.mu.Lock()
	p.pulls = append(p.pulls, pp)
	p.mu.Unlock()
}

func (p *pullLog) stored() (n, cached int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, pp := range p.pulls {
		if pp.Done {
			n++
			if pp.Cached {
				cached++
			}
		}
	}
	return n, cached
}

// TestImageTemplatesOverHTTP makes templates from a registry, an OCI
// layout and a docker archive through the API and the Go client, with
// and without streamed progress, builds one from a Dockerfile, and checks
// the status and code of each kind of failure.
func TestImageTemplatesOverHTTP(t *testing.T) {
	ctx := context.Background()
	host := testImages(t)
	s := startServer(t, "")
	c := s.client("")

	// From a registry, progress streamed.
	var log pullLog
	tpl, err := c.AddTemplate(ctx, client.TemplateRequest{Name: "app", ImageSource: client.ImageSource{Image: host + "/app:1"}}, &log)
	if err != nil {
		t.Fatal(err)
	}
	if n, cached := log.stored(); n != 2 || cached != 0 {
		t.Errorf("pull reports: %d layers stored, %d cached: %+v", n, cached, log.pulls)
	}
	if tpl.Image == nil || tpl.Image.User != "app" || tpl.Image.Layers != 3 || !strings.HasPrefix(tpl.Origin, "image "+host+"/app:1@sha256:") {
		t.Errorf("template %+v %+v", tpl, tpl.Image)
	}
	// From an OCI layout and a docker archive on the server's host, no
	// progress asked for: one JSON answer.
	ref, err := name.ParseReference(host + "/app:2")
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(ref)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	lp, err := layout.Write(filepath.Join(dir, "layout"), empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := lp.AppendImage(img); err != nil {
		t.Fatal(err)
	}
	if err := tarball.WriteToFile(filepath.Join(dir, "app.tar"), ref, img); err != nil {
		t.Fatal(err)
	}
	for _, src := range []client.ImageSource{{OCILayout: filepath.Join(dir, "layout")}, {DockerArchive: filepath.Join(dir, "app.tar")}} {
		// Each template has the image's layers and sandpool's skeleton
		// layer (an /etc/resolv.conf, which the image lacks). The
		// layout's shares app:1's two and the skeleton; the archive's,
		// the same image, all four.
		name, shared := "from-layout", 3
		if src.DockerArchive != "" {
			name, shared = "from-archive", 4
		}
		tpl, err := c.AddTemplate(ctx, client.TemplateRequest{Name: name, ImageSource: src}, nil)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if tpl.Image == nil || tpl.Image.Layers != 4 || tpl.Image.SharedLayers != shared {
			t.Errorf("%s: %+v", name, tpl.Image)
		}
		sb, err := c.CreateSandbox(ctx, client.CreateSandboxRequest{Template: name})
		if err != nil {
			t.Fatal(err)
		}
		res, err := c.Exec(ctx, sb.ID, client.ExecRequest{Cmd: []string{"hello", "layout"}})
		if err != nil || string(res.Stdout) != "hello layout, from app in /srv (from the image)\n" {
			t.Errorf("%s: %+v %v", name, res, err)
		}
		if err := c.DeleteSandbox(ctx, sb.ID); err != nil {
			t.Fatal(err)
		}
	}

	// A Dockerfile build, its output streamed.
	ctxTar := tarOf(t, map[string]string{"Dockerfile": "FROM app\nUSER root\nRUN echo building-$((1+1)); echo made > /made\n"})
	var out pullLog
	if _, err := c.BuildTemplate(ctx, "built", bytes.NewReader(ctxTar), client.BuildOptions{}, &out); err != nil {
		t.Fatalf("build: %v\n%s", err, out.output.String())
	}
	if !strings.Contains(out.output.String(), "building-2") {
		t.Errorf("build output: %q", out.output.String())
	}

	// Failures: a status and a stable code each, streamed or not.
	for _, c2 := range []struct {
		name   string
		do     func(progress io.Writer) error
		status int
		code   string
	}{
		{"unknown image", func(p io.Writer) error {
			_, err := c.AddTemplate(ctx, client.TemplateRequest{Name: "x", ImageSource: client.ImageSource{Image: host + "/nope:1"}}, p)
			return err
		}, 404, "not_found"},
		{"unknown platform", func(p io.Writer) error {
			_, err := c.AddTemplate(ctx, client.TemplateRequest{Name: "x", ImageSource: client.ImageSource{Image: host + "/app:1", Platform: "linux/s390x"}}, p)
			return err
		}, 422, "invalid"},
		{"network policy", func(p io.Writer) error {
			_, err := c.AddTemplate(ctx, client.TemplateRequest{Name: "x", ImageSource: client.ImageSource{Image: host + "/app:1"},
				Hooks: client.Hooks{Network: &client.Network{Egress: "bridge"}}}, p)
			return err
		}, 422, "invalid"},
		{"name taken", func(p io.Writer) error {
			_, err := c.AddTemplate(ctx, client.TemplateRequest{Name: "app", ImageSource: client.ImageSource{Image: host + "/app:1"}}, p)
			return err
		}, 409, "exists"},
		{"failing RUN", func(p io.Writer) error {
			_, err := c.BuildTemplate(ctx, "x", bytes.NewReader(tarOf(t, map[string]string{"Dockerfile": "FROM app\nRUN echo no-such-package >&2; exit 4\n"})), client.BuildOptions{}, p)
			return err
		}, 422, "build_failed"},
		{"Dockerfile that does not parse", func(p io.Writer) error {
			_, err := c.BuildTemplate(ctx, "x", bytes.NewReader(tarOf(t, map[string]string{"Dockerfile": "FROM app\nONBUILD RUN true\n"})), client.BuildOptions{}, p)
			return err
		}, 422, "invalid"},
		{"tenant key", func(p io.Writer) error {
			_, err := s.tenant("someone").BuildTemplate(ctx, "x", bytes.NewReader(tarOf(t, map[string]string{"Dockerfile": "FROM app\n"})), client.BuildOptions{}, p)
			return err
		}, 403, "forbidden"},
	} {
		for _, streamed := range []bool{false, true} {
			var p io.Writer
			if streamed {
				p = &pullLog{}
			}
			err := c2.do(p)
			var ae *client.APIError
			if !errors.As(err, &ae) || ae.Status != c2.status || ae.Code != c2.code {
				t.Errorf("%s (streamed %v): %v; want %d %s", c2.name, streamed, err, c2.status, c2.code)
			}
			if c2.code == "build_failed" && (ae == nil || !strings.Contains(ae.Message, "no-such-package")) {
				t.Errorf("%s: the error lacks the RUN's output: %v", c2.name, err)
			}
		}
	}
	list, err := c.ListTemplates(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, tpl := range list {
		if tpl.Name == "x" {
			t.Errorf("a failed template is listed: %+v", tpl)
		}
	}
	for _, name := range []string{"built", "from-layout", "from-archive", "app"} {
		if err := c.DeleteTemplate(ctx, name); err != nil {
			t.Errorf("delete %s: %v", name, err)
		}
	}
	if ents, _ := os.ReadDir(filepath.Join(s.data, "images/layers/sha256")); len(ents) != 0 {
		t.Errorf("%d layers left after every template is deleted", len(ents))
	}
}

// tarOf is a tar archive of files.
func tarOf(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var entries []it.Entry
	for name, body := range files {
		entries = append(entries, it.File(name, body, 0o644))
	}
	return it.Tar(t, entries...)
}

// BenchmarkCreateImageVsBase is create-to-ready over HTTP against the real
// binary, of an image template (busybox and a layer, the image's user, env
// and working directory) and of base, alternating; each iteration creates
// one of each (and runs `true` in it and deletes it, untimed).
func BenchmarkCreateImageVsBase(b *testing.B) {
	host := testImages(b)
	s := startServer(b, "")
	c := s.client("")
	ctx := context.Background()
	if _, err := c.AddTemplate(ctx, client.TemplateRequest{Name: "app", ImageSource: client.ImageSource{Image: host + "/app:1"}}, nil); err != nil {
		b.Fatal(err)
	}
	var base, img latency.Recorder
	i := 0
	for b.Loop() {
		for j := range 2 {
			tpl, rec := "base", &base
			if (i+j)%2 == 1 {
				tpl, rec = "app", &img
			}
			start := time.Now()
			sb, err := c.CreateSandbox(ctx, client.CreateSandboxRequest{Template: tpl})
			if err != nil {
				b.Fatal(err)
			}
			rec.Since(start)
			if _, err := c.Exec(ctx, sb.ID, client.ExecRequest{Cmd: []string{"true"}}); err != nil {
				b.Fatal(err)
			}
			if err := c.DeleteSandbox(ctx, sb.ID); err != nil {
				b.Fatal(err)
			}
		}
		i++
	}
	base.Report(b, "base_create")
	img.Report(b, "image_create")
	b.ReportMetric(img.Ms(0.5)-base.Ms(0.5), "delta_p50_ms")
	if err := c.DeleteTemplate(ctx, "app"); err != nil {
		b.Fatal(err)
	}
}
