package image_test

import (
	"archive/tar"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"

	"github.com/sandpool/sandpool/internal/image"
	it "github.com/sandpool/sandpool/internal/image/imagetest"
)

func baseEntries() []it.Entry {
	return []it.Entry{
		it.Dir("bin/", 0o755),
		it.File("bin/tool", "tool", 0o4755),
		it.Hardlink("bin/tool2", "bin/tool"),
		it.Dir("etc/", 0o755),
		it.File("etc/passwd", "root:x:0:0::/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n", 0o644),
		it.File("etc/group", "root:x:0:\nuser:x:1000:\nstaff:x:50:user\n", 0o644),
		it.Dir("home/", 0o755),
		{Name: "home/user/", Type: tar.TypeDir, Mode: 0o700, Uid: 1000, Gid: 1000},
		{Name: "home/user/notes", Body: "base notes", Mode: 0o600, Uid: 1000, Gid: 1000},
		it.Dir("data/", 0o755),
		it.File("data/old1", "old1", 0o644),
		it.File("data/old2", "old2", 0o644),
		it.File("gone", "will be deleted", 0o644),
		it.Dir("usr/", 0o755),
		it.Dir("usr/lib/", 0o755),
		it.File("usr/lib/libx.so", "x", 0o644),
		it.Symlink("lib", "usr/lib"),
		it.Dir("cfg/", 0o755),
		it.File("cfg/a", "a", 0o644),
		it.File("cfg/b", "b", 0o644),
		{Name: "dev/", Type: tar.TypeDir, Mode: 0o755},
		{Name: "dev/null", Type: tar.TypeChar, Mode: 0o666},
		{Name: "fifo", Type: tar.TypeFifo, Mode: 0o644},
	}
}

func topEntries() []it.Entry {
	return []it.Entry{
		it.Whiteout("gone"),
		{Name: "home/user/", Type: tar.TypeDir, Mode: 0o700, Uid: 1000, Gid: 1000},
		it.Dir("data/", 0o755),
		it.Opaque("data"),
		it.File("data/new", "new", 0o644),
		it.File("cfg/c", "c", 0o644),
		{Name: "home/user/notes", Body: "top notes", Mode: 0o600, Uid: 1000, Gid: 1000},
		it.Whiteout("cfg/b"),
	}
}

func TestPullStacksAsOverlayLowerDirs(t *testing.T) {
	s := openStore(t)
	host := it.Registry(t, "", "")
	cfg := v1.Config{Env: []string{"PATH=/bin", "A=1"}, WorkingDir: "/home/user", User: "user",
		Entrypoint: []string{"/bin/tool"}, Cmd: []string{"--help"}}
	img := it.Image(t, "linux/amd64", cfg, it.Layer(t, baseEntries()...), it.Layer(t, topEntries()...))
	it.Push(t, host+"/app:1", img, "", "")

	var progress []image.Progress
	got := mustPull(t, s, image.Source{Ref: host + "/app:1"}, image.Options{Platform: "linux/amd64",
		Progress: func(p image.Progress) { progress = append(progress, p) }})

	want := image.Config{Env: []string{"PATH=/bin", "A=1"}, WorkingDir: "/home/user", User: "user", UID: 1000, GID: 1000,
		Entrypoint: []string{"/bin/tool"}, Cmd: []string{"--help"}}
	if diff := cmp.Diff(want, got.Config); diff != "" {
		t.Errorf("config (-want +got):\n%s", diff)
	}
	if len(got.Layers) != 2 {
		t.Fatalf("got %d layers, want 2", len(got.Layers))
	}
	d, _ := img.Digest()
	if got.Digest != d.String() || got.Platform != "linux/amd64" {
		t.Errorf("digest %s platform %s; want %s linux/amd64", got.Digest, got.Platform, d)
	}
	done := 0
	for _, p := range progress {
		if p.Layers != 2 || p.Layer < 1 || p.Layer > 2 {
			t.Errorf("bad progress %+v", p)
		}
		if p.Done {
			done++
		}
	}
	if done != 2 {
		t.Errorf("%d layers reported done, want 2: %+v", done, progress)
	}

	// The top layer in overlayfs form.
	top := got.Layers[1].Dir
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(top, "gone"), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
		t.Errorf("gone: want a 0/0 whiteout device, got mode %o rdev %d err %v", st.Mode, st.Rdev, err)
	}
	buf := make([]byte, 8)
	if n, err := unix.Lgetxattr(filepath.Join(top, "data"), "trusted.overlay.opaque", buf); err != nil || string(buf[:n]) != "y" {
		t.Errorf("data: opaque xattr %q, %v", buf[:n], err)
	}
	// Hard links within the layer share an inode; devices are skipped.
	base := got.Layers[0].Dir
	var a, b unix.Stat_t
	if err := unix.Lstat(filepath.Join(base, "bin/tool"), &a); err != nil {
		t.Fatal(err)
	}
	if err := unix.Lstat(filepath.Join(base, "bin/tool2"), &b); err != nil || a.Ino != b.Ino {
		t.Errorf("bin/tool2 is not a hard link of bin/tool (%v)", err)
	}
	for _, p := range []string{"dev/null", "fifo"} {
		if _, err := os.Lstat(filepath.Join(base, p)); !os.IsNotExist(err) {
			t.Errorf("%s: want it skipped, got %v", p, err)
		}
	}

	merged := it.Mount(t, got.Dirs())
	wantTree := []string{
		`bin drwxr-xr-x 100000:100000`,
		`bin/tool urwxr-xr-x 100000:100000 "tool"`,
		`bin/tool2 urwxr-xr-x 100000:100000 "tool"`,
		`cfg drwxr-xr-x 100000:100000`,
		`cfg/a -rw-r--r-- 100000:100000 "a"`,
		`cfg/c -rw-r--r-- 100000:100000 "c"`,
		`data drwxr-xr-x 100000:100000`,
		`data/new -rw-r--r-- 100000:100000 "new"`,
		`dev drwxr-xr-x 100000:100000`,
		`etc drwxr-xr-x 100000:100000`,
		`etc/group -rw-r--r-- 100000:100000 "root:x:0:\nuser:x:1000:\nstaff:x:50:user\n"`,
		`etc/passwd -rw-r--r-- 100000:100000 "root:x:0:0::/root:/bin/sh\nuser:x:1000:10"`,
		`home drwxr-xr-x 100000:100000`,
		`home/user drwx------ 101000:101000`,
		`home/user/notes -rw------- 101000:101000 "top notes"`,
		`lib Lrwxrwxrwx 100000:100000 -> usr/lib`,
		`usr drwxr-xr-x 100000:100000`,
		`usr/lib drwxr-xr-x 100000:100000`,
		`usr/lib/libx.so -rw-r--r-- 100000:100000 "x"`,
	}
	if diff := cmp.Diff(wantTree, it.Tree(t, merged)); diff != "" {
		t.Errorf("merged tree (-want +got):\n%s", diff)
	}
	// A layer's root never keeps the private mode of a temporary dir.
	for _, d := range got.Dirs() {
		var root unix.Stat_t
		if err := unix.Stat(d, &root); err != nil || root.Mode&0o7777 != 0o755 || root.Uid != 100000 {
			t.Errorf("layer root: mode %o uid %d (%v); want 755 owned by the sandbox's root", root.Mode&0o7777, root.Uid, err)
		}
	}
}

func TestImagesOnOneBaseShareItsLayers(t *testing.T) {
	s := openStore(t)
	host := it.Registry(t, "", "")
	baseLayer := it.Layer(t, baseEntries()...)
	for _, n := range []string{"a", "b"} {
		img := it.Image(t, "linux/amd64", v1.Config{}, baseLayer, it.Layer(t, it.File("which", n, 0o644)))
		it.Push(t, host+"/"+n+":1", img, "", "")
	}
	a := mustPull(t, s, image.Source{Ref: host + "/a:1"}, image.Options{})
	var cached []bool
	b := mustPull(t, s, image.Source{Ref: host + "/b:1"}, image.Options{Progress: func(p image.Progress) {
		if p.Done {
			cached = append(cached, p.Cached)
		}
	}})
	if a.Layers[0].Dir != b.Layers[0].Dir || a.Layers[1].Dir == b.Layers[1].Dir {
		t.Errorf("layer dirs: a %v, b %v; want the base shared, the tops apart", a.Dirs(), b.Dirs())
	}
	if diff := cmp.Diff([]bool{true, false}, cached); diff != "" {
		t.Errorf("second pull, cached per layer (-want +got):\n%s", diff)
	}
	if n := layerCount(t, s); n != 3 {
		t.Errorf("%d layers on disk, want 3", n)
	}
	// One copy: the file of the base is one inode, in one place.
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(a.Layers[0].Dir, "etc/passwd"), &st); err != nil || st.Nlink != 1 {
		t.Errorf("base etc/passwd: nlink %d, %v", st.Nlink, err)
	}
}

func TestGCRemovesWhatNoOwnerUses(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	host := it.Registry(t, "", "")
	baseLayer := it.Layer(t, baseEntries()...)
	for _, n := range []string{"a", "b", "c"} {
		img := it.Image(t, "", v1.Config{}, baseLayer, it.Layer(t, it.File("which", n, 0o644)))
		it.Push(t, host+"/"+n+":1", img, "", "")
	}
	imgs := map[string]image.Image{}
	for _, n := range []string{"a", "b", "c"} {
		lease := s.Lease()
		img, err := s.Pull(ctx, lease, image.Source{Ref: host + "/" + n + ":1"}, image.Options{})
		if err != nil {
			t.Fatal(err)
		}
		imgs[n] = img
		if n != "c" { // c is never committed: only its lease keeps it
			if err := s.Commit("tmpl-"+n, img); err != nil {
				t.Fatal(err)
			}
			lease.Release()
		} else {
			t.Cleanup(lease.Release)
			defer lease.Release()
			st, err := s.GC(ctx, nil)
			if err != nil || st.Layers != 0 {
				t.Fatalf("GC with everything held: %+v, %v", st, err)
			}
			lease.Release()
		}
	}
	// c's top is held by nothing now; b goes from the keep set.
	st, err := s.GC(ctx, map[string]bool{"tmpl-a": true})
	if err != nil {
		t.Fatal(err)
	}
	if st.Owners != 1 || st.Layers != 2 {
		t.Errorf("GC: %+v; want 1 owner and 2 layers (tops of b and c) removed", st)
	}
	if owners, _ := s.Owners(); !cmp.Equal(owners, []string{"tmpl-a"}) {
		t.Errorf("owners %v", owners)
	}
	got, err := s.Get("tmpl-a")
	if err != nil {
		t.Fatalf("a after GC: %v", err)
	}
	for _, d := range got.Dirs() {
		if _, err := os.Stat(d); err != nil {
			t.Errorf("kept layer: %v", err)
		}
	}
	for _, n := range []string{"b", "c"} {
		if _, err := os.Stat(imgs[n].Layers[1].Dir); !os.IsNotExist(err) {
			t.Errorf("top of %s still there: %v", n, err)
		}
	}
	if _, err := s.Get("tmpl-b"); err == nil {
		t.Error("b's record survived")
	}
	// Forget the last one: everything goes.
	if err := s.Forget("tmpl-a"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GC(ctx, nil); err != nil {
		t.Fatal(err)
	}
	storeEmpty(t, s)
}

func TestImageUser(t *testing.T) {
	s := openStore(t)
	host := it.Registry(t, "", "")
	base := it.Layer(t, baseEntries()...)
	for _, c := range []struct {
		user     string
		uid, gid int
		bad      string
	}{
		{user: "", uid: 0, gid: 0},
		{user: "user", uid: 1000, gid: 1000},
		{user: "user:staff", uid: 1000, gid: 50},
		{user: "4242", uid: 4242, gid: 0},
		{user: "1000:7", uid: 1000, gid: 7},
		{user: "app", bad: `user "app" is not in the image's /etc/passwd`},
		{user: "user:wheel", bad: `group "wheel" is not in the image's /etc/group`},
		{user: "70000", bad: `user "70000" is not in the image's /etc/passwd`},
	} {
		t.Run(c.user, func(t *testing.T) {
			ref := host + "/user:" + strings.NewReplacer(":", "-").Replace(c.user+"x")
			it.Push(t, ref, it.Image(t, "", v1.Config{User: c.user}, base), "", "")
			img, err := pull(t, s, image.Source{Ref: ref}, image.Options{})
			if c.bad != "" {
				wantKind(t, err, image.ErrInvalid, c.bad)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if img.Config.UID != c.uid || img.Config.GID != c.gid {
				t.Errorf("uid:gid %d:%d, want %d:%d", img.Config.UID, img.Config.GID, c.uid, c.gid)
			}
		})
	}
}

// A user in a passwd file that an upper layer replaced, or that a whiteout
// removed, is not the image's.
func TestImageUserAcrossLayers(t *testing.T) {
	s := openStore(t)
	host := it.Registry(t, "", "")
	base := it.Layer(t, baseEntries()...)
	replaced := it.Layer(t, it.File("etc/passwd", "root:x:0:0::/:/bin/sh\nsvc:x:77:77::/:/bin/sh\n", 0o644))
	removed := it.Layer(t, it.Whiteout("etc/passwd"))
	movedEtc := it.Layer(t, it.Opaque("etc"), it.Symlink("etc/passwd", "/conf/passwd"),
		it.File("conf/passwd", "web:x:33:33::/:/bin/sh\n", 0o644))

	for _, c := range []struct {
		name   string
		layers []v1.Layer
		user   string
		uid    int
		bad    bool
	}{
		{"replaced-new", []v1.Layer{base, replaced}, "svc", 77, false},
		{"replaced-old", []v1.Layer{base, replaced}, "user", 0, true},
		{"whiteout", []v1.Layer{base, removed}, "user", 0, true},
		{"symlink", []v1.Layer{base, movedEtc}, "web", 33, false},
		{"symlink-old", []v1.Layer{base, movedEtc}, "user", 0, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			ref := host + "/stack:" + c.name
			it.Push(t, ref, it.Image(t, "", v1.Config{User: c.user}, c.layers...), "", "")
			img, err := pull(t, s, image.Source{Ref: ref}, image.Options{})
			if c.bad {
				wantKind(t, err, image.ErrInvalid, "not in the image's /etc/passwd")
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if img.Config.UID != c.uid {
				t.Errorf("uid %d, want %d", img.Config.UID, c.uid)
			}
		})
	}
}
