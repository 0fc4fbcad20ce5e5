package image_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/sandpool/sandpool/internal/image"
	it "github.com/sandpool/sandpool/internal/image/imagetest"
)

const crashHelperEnv = "SANDPOOL_IMAGE_CRASH_HELPER"

// crashHelper is the test binary started as a pulling server: it pulls
// the image named in the environment into the store there, and is killed
// halfway.
func crashHelper() {
	s, err := image.Open(image.StoreConfig{Dir: os.Getenv("CRASH_STORE")})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	lease := s.Lease()
	img, err := s.Pull(context.Background(), lease, image.Source{Ref: os.Getenv("CRASH_REF")}, image.Options{})
	if err == nil {
		err = s.Commit("crash", img)
	}
	fmt.Fprintln(os.Stderr, "pull ended:", err)
	os.Exit(3)
}

// Killing the process in the middle of a pull leaves no half layer: after
// Open, the store has only whole layers and nothing in tmp/.
func TestKillDuringPullLeavesNoHalfLayer(t *testing.T) {
	big := make([]byte, 4<<20)
	_, _ = rand.Read(big)
	first := it.Layer(t, it.File("small", "small", 0o644))
	second := it.Layer(t, it.File("big", string(big), 0o644))
	stallOn, _ := second.Digest()

	stalled := make(chan struct{})
	release := make(chan struct{})
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, "/blobs/"+stallOn.String()) {
			reg.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		reg.ServeHTTP(rec, r)
		body := rec.Body.Bytes()
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(body[:len(body)/2])
		w.(http.Flusher).Flush()
		close(stalled)
		<-release
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) }) // runs before srv.Close
	host := strings.TrimPrefix(srv.URL, "http://")
	it.Push(t, host+"/crash:1", it.Image(t, "", v1.Config{}, first, second), "", "")

	dir := filepath.Join(t.TempDir(), "images")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashHelperEnv+"=1", "CRASH_STORE="+dir, "CRASH_REF="+host+"/crash:1")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait() // killed below: its status says so
		close(exited)
	}()
	<-stalled // the registry sent half the second layer...
	// ...and the helper is writing it out: wait for its file to appear.
	for {
		if m, _ := filepath.Glob(filepath.Join(dir, "tmp", "layer-*", "rootfs", "big")); len(m) > 0 {
			break
		}
		select {
		case <-exited:
			t.Fatalf("the helper exited: %s", stderr.String())
		case <-time.After(5 * time.Millisecond):
		}
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-exited
	if strings.Contains(stderr.String(), "pull ended") {
		t.Fatalf("the helper finished before it was killed: %s", stderr.String())
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(ents) == 0 {
		t.Fatal("the helper left no temporary layer: the test did not catch it mid-unpack")
	}

	s, err := image.Open(image.StoreConfig{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(ents) != 0 {
		t.Errorf("tmp/ after Open: %d entries", len(ents))
	}
	layers, err := s.Layers()
	if err != nil {
		t.Fatal(err)
	}
	firstID, _ := first.DiffID()
	if len(layers) != 1 || layers[0].DiffID != firstID.String() {
		t.Errorf("layers after the crash: %+v; want only the first, whole", layers)
	}
	if owners, _ := s.Owners(); len(owners) != 0 {
		t.Errorf("owners %v", owners)
	}
	// The first layer is unreferenced: GC takes it.
	if st, err := s.GC(context.Background(), nil); err != nil || st.Layers != 1 {
		t.Errorf("GC: %+v %v", st, err)
	}
	storeEmpty(t, s)
}
