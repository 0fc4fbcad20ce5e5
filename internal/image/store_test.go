package image_test

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sync/errgroup"

	"github.com/sandpool/sandpool/internal/image"
	it "github.com/sandpool/sandpool/internal/image/imagetest"
)

// Open removes what a crash left: temporary layers, half-written records,
// layer directories without their layer.json.
func TestOpenSweepsLeftovers(t *testing.T) {
	s := openStore(t)
	dir := s.Dir()
	for _, p := range []string{"tmp/layer-123/rootfs/etc", "tmp/gc-abc/rootfs", "layers/sha256/" + strings.Repeat("a", 64) + "/rootfs/bin"} {
		if err := os.MkdirAll(filepath.Join(dir, p), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{"owners/x.json.tmp", "cache/y.json.tmp"} {
		if err := os.WriteFile(filepath.Join(dir, p), []byte("{"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := image.Open(image.StoreConfig{Dir: dir}); err != nil {
		t.Fatal(err)
	}
	storeEmpty(t, s)
	for _, d := range []string{"owners", "cache"} {
		if ents, _ := os.ReadDir(filepath.Join(dir, d)); len(ents) != 0 {
			t.Errorf("%s: %d entries left", d, len(ents))
		}
	}
}

// Pulls, commits and GCs running at once never lose a layer that a
// committed owner or a lease uses.
func TestConcurrentPullsAndGC(t *testing.T) {
	s := openStore(t)
	host := it.Registry(t, "", "")
	base := it.Layer(t, baseEntries()...)
	const n = 4
	for i := 0; i < n; i++ {
		it.Push(t, host+"/c:"+string(rune('a'+i)), it.Image(t, "", v1.Config{}, base,
			it.Layer(t, it.File("which", string(rune('a'+i)), 0o644))), "", "")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var gcs sync.WaitGroup
	gcs.Add(1)
	go func() {
		defer gcs.Done()
		for ctx.Err() == nil {
			if _, err := s.GC(ctx, nil); err != nil && ctx.Err() == nil {
				t.Errorf("GC: %v", err)
				return
			}
		}
	}()
	var g errgroup.Group
	for i := 0; i < n; i++ {
		for round := 0; round < 3; round++ {
			g.Go(func() error {
				tag := string(rune('a' + i))
				lease := s.Lease()
				defer lease.Release()
				img, err := s.Pull(ctx, lease, image.Source{Ref: host + "/c:" + tag}, image.Options{})
				if err != nil {
					return err
				}
				if _, err := os.Stat(filepath.Join(img.Layers[0].Dir, "etc/passwd")); err != nil {
					t.Errorf("held base layer: %v", err)
				}
				if b, err := os.ReadFile(filepath.Join(img.Layers[1].Dir, "which")); err != nil || string(b) != tag {
					t.Errorf("held layer of %s: %q %v", tag, b, err)
				}
				return s.Commit("owner-"+tag, img)
			})
		}
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	cancel()
	gcs.Wait()
	if _, err := s.GC(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		img, err := s.Get("owner-" + string(rune('a'+i)))
		if err != nil {
			t.Fatalf("committed image lost: %v", err)
		}
		if _, err := os.Stat(filepath.Join(img.Layers[0].Dir, "etc/passwd")); err != nil {
			t.Errorf("base layer of a committed image: %v", err)
		}
	}
	if got := layerCount(t, s); got != n+1 {
		t.Errorf("%d layers, want %d", got, n+1)
	}
}

func TestMountPointLayer(t *testing.T) {
	s := openStore(t)
	host := it.Registry(t, "", "")
	it.Push(t, host+"/bare:1", it.Image(t, "", v1.Config{}, it.Layer(t, it.Dir("proc/", 0o555), it.File("bin/x", "x", 0o755))), "", "")
	it.Push(t, host+"/full:1", it.Image(t, "", v1.Config{}, it.Layer(t, it.Dir("proc/", 0o555), it.Dir("dev/", 0o755), it.Dir("tmp/", 0o1777),
		it.File("etc/resolv.conf", "nameserver 192.0.2.53\n", 0o644))), "", "")
	// An image with /etc and an empty resolv.conf gets sandpool's.
	it.Push(t, host+"/empty:1", it.Image(t, "", v1.Config{}, it.Layer(t, it.Dir("proc/", 0o555), it.Dir("dev/", 0o755), it.Dir("tmp/", 0o1777),
		it.File("etc/resolv.conf", "", 0o644))), "", "")
	lease := s.Lease()
	defer lease.Release()
	bare := mustPull(t, s, image.Source{Ref: host + "/bare:1"}, image.Options{})
	l, ok, err := s.MountPointLayer(context.Background(), lease, bare)
	if err != nil || !ok {
		t.Fatalf("bare: %v %v", ok, err)
	}
	want := []string{`dev drwxr-xr-x 100000:100000`, `etc drwxr-xr-x 100000:100000`,
		`etc/resolv.conf -rw-r--r-- 100000:100000 ` + strconv.Quote(image.ResolvConf), `tmp dtrwxrwxrwx 100000:100000`}
	if got := it.Tree(t, l.Dir); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("mount point layer: %q", got)
	}
	full := mustPull(t, s, image.Source{Ref: host + "/full:1"}, image.Options{})
	if _, ok, err := s.MountPointLayer(context.Background(), lease, full); ok || err != nil {
		t.Errorf("full: %v %v; want no layer", ok, err)
	}
	empty := mustPull(t, s, image.Source{Ref: host + "/empty:1"}, image.Options{})
	l, ok, err = s.MountPointLayer(context.Background(), lease, empty)
	want = []string{`etc drwxr-xr-x 100000:100000`, `etc/resolv.conf -rw-r--r-- 100000:100000 ` + strconv.Quote(image.ResolvConf)}
	if err != nil || !ok {
		t.Fatalf("empty: %v %v", ok, err)
	}
	if got := it.Tree(t, l.Dir); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("layer for an empty resolv.conf: %q", got)
	}
}
