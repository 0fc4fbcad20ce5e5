package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"log"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/sandpool/sandpool/client"
	it "github.com/sandpool/sandpool/internal/image/imagetest"
	"github.com/sandpool/sandpool/internal/runtime/linux/linuxtest"
)

// slowRegistry is a loopback registry that serves blobs slowly once
// armed, and says when it has sent half of one.
type slowRegistry struct {
	host    string
	armed   atomic.Bool
	halfway chan struct{}
	once    sync.Once
}

func newSlowRegistry(t *testing.T) *slowRegistry {
	t.Helper()
	r := &slowRegistry{halfway: make(chan struct{})}
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if !r.armed.Load() || req.Method != http.MethodGet || !strings.Contains(req.URL.Path, "/blobs/sha256:") {
			reg.ServeHTTP(w, req)
			return
		}
		rec := httptest.NewRecorder()
		reg.ServeHTTP(rec, req)
		body := rec.Body.Bytes()
		if len(body) < 4<<20 { // configs and small layers go at once
			for k, v := range rec.Header() {
				w.Header()[k] = v
			}
			w.WriteHeader(rec.Code)
			w.Write(body)
			return
		}
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		for i := 0; i < len(body); i += 64 << 10 {
			if _, err := w.Write(body[i:min(i+64<<10, len(body))]); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			if i >= len(body)/2 {
				r.once.Do(func() { close(r.halfway) })
			}
			select {
			case <-req.Context().Done():
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}))
	t.Cleanup(srv.Close)
	r.host = strings.TrimPrefix(srv.URL, "http://")
	return r
}

// imageLeftovers lists what a half-made template could leave: records,
// layers, work in progress, build cache entries, half-imported templates.
func imageLeftovers(t *testing.T, data string) []string {
	t.Helper()
	var left []string
	for _, d := range []string{"images/owners", "images/layers/sha256", "images/tmp", "images/cache"} {
		ents, _ := os.ReadDir(filepath.Join(data, d))
		for _, e := range ents {
			left = append(left, filepath.Join(d, e.Name()))
		}
	}
	ents, _ := os.ReadDir(filepath.Join(data, "templates"))
	for _, e := range ents {
		if e.Name() != "base" {
			left = append(left, filepath.Join("templates", e.Name()))
		}
	}
	return left
}

// TestKilledDuringPull kills `sandpool serve` with SIGKILL halfway through
// a layer of an image pull (another layer already stored): after a
// restart there is no template, record or layer of it, and the same add
// then works.
func TestKilledDuringPull(t *testing.T) {
	data := t.TempDir()
	reg := newSlowRegistry(t)
	small := it.Layer(t, it.Busybox(t)...)
	noise := make([]byte, 8<<20) // random: stays big compressed
	rand.NewChaCha8([32]byte{1}).Read(noise)
	big := it.Layer(t, it.File("big", string(noise), 0o644))
	it.Push(t, reg.host+"/big:1", it.Image(t, "", v1.Config{}, small, big), "", "")

	s := startServer(t, data)
	reg.armed.Store(true)
	done := make(chan error, 1)
	go func() {
		_, err := s.client("", client.WithRetryBudget(0)).AddTemplate(context.Background(),
			client.TemplateRequest{Name: "big", ImageSource: client.ImageSource{Image: reg.host + "/big:1"}}, nil)
		done <- err
	}()
	select {
	case <-reg.halfway:
	case err := <-done:
		t.Fatalf("the add ended before the kill: %v", err)
	case <-time.After(time.Minute):
		t.Fatal("the pull never got halfway")
	}
	// The small layer is stored, the big one half unpacked.
	if left := imageLeftovers(t, data); !slices.ContainsFunc(left, func(p string) bool { return strings.HasPrefix(p, "images/layers/") }) ||
		!slices.ContainsFunc(left, func(p string) bool { return strings.HasPrefix(p, "images/tmp/") }) {
		t.Fatalf("before the kill: %v; want a stored layer and one being unpacked", left)
	}
	s.cmd.Process.Kill()
	<-s.exited
	if err := <-done; err == nil {
		t.Fatal("the add succeeded")
	}
	reg.armed.Store(false)

	s = startServer(t, data)
	if left := imageLeftovers(t, data); len(left) > 0 {
		t.Errorf("after a restart, the killed pull left %v", left)
	}
	c := s.client("")
	list, err := c.ListTemplates(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, tpl := range list {
		if tpl.Name == "big" {
			t.Errorf("a half-pulled template is listed: %+v", tpl)
		}
	}
	if _, err := c.AddTemplate(context.Background(), client.TemplateRequest{Name: "big", ImageSource: client.ImageSource{Image: reg.host + "/big:1"}}, nil); err != nil {
		t.Fatalf("the add after the restart: %v", err)
	}
	if err := c.DeleteTemplate(context.Background(), "big"); err != nil {
		t.Fatal(err)
	}
	if left := imageLeftovers(t, data); len(left) > 0 {
		t.Errorf("after deleting the template: %v", left)
	}
}

// TestKilledDuringBuild kills `sandpool serve` with SIGKILL while a
// Dockerfile's RUN step runs in its sandbox: after a restart there is no
// template, layer, cache entry, context or build sandbox left, on disk or
// running.
func TestKilledDuringBuild(t *testing.T) {
	data := t.TempDir()
	host := testImages(t)
	s := startServer(t, data)
	var ctxTar bytes.Buffer
	tw := tar.NewWriter(&ctxTar)
	df := "FROM " + host + "/busybox:1\nCOPY f /f\nRUN echo running-$((40+2)); sleep 600\n"
	for name, body := range map[string]string{"Dockerfile": df, "f": "context file"} {
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg})
		tw.Write([]byte(body))
	}
	tw.Close()

	out := &watchWriter{want: "running-42", seen: make(chan struct{})}
	done := make(chan error, 1)
	go func() {
		_, err := s.client("", client.WithRetryBudget(0)).BuildTemplate(context.Background(), "crashy", &ctxTar, client.BuildOptions{}, out)
		done <- err
	}()
	select {
	case <-out.seen:
	case err := <-done:
		t.Fatalf("the build ended before the kill: %v\n%s", err, out.String())
	case <-time.After(2 * time.Minute):
		t.Fatalf("the RUN step never started:\n%s", out.String())
	}
	rows := buildSandboxes(t, data)
	if len(rows) == 0 {
		t.Fatal("no build sandbox on disk while a RUN step runs")
	}
	s.cmd.Process.Kill()
	<-s.exited
	if err := <-done; err == nil {
		t.Fatal("the build succeeded")
	}

	s = startServer(t, data)
	if left := imageLeftovers(t, data); len(left) > 0 {
		t.Errorf("after a restart, the killed build left %v", left)
	}
	if left := linuxtest.Leftovers(data, rows); len(left) > 0 {
		t.Errorf("after a restart, its build sandbox left %v", left)
	}
	list, err := s.client("").ListTemplates(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, tpl := range list {
		if tpl.Name == "crashy" {
			t.Errorf("a half-built template is listed: %+v", tpl)
		}
	}
}

// buildSandboxes lists the sandbox directories in data.
func buildSandboxes(t *testing.T, data string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(data, "sandboxes"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// watchWriter closes seen once what is written to it contains want.
type watchWriter struct {
	mu   sync.Mutex
	buf  strings.Builder
	want string
	seen chan struct{}
	once sync.Once
}

func (w *watchWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if strings.Contains(w.buf.String(), w.want) {
		w.once.Do(func() { close(w.seen) })
	}
	return len(p), nil
}

func (w *watchWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}
