package image_test

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/sandpool/sandpool/internal/image"
	it "github.com/sandpool/sandpool/internal/image/imagetest"
)

// Every hostile or broken layer is refused with an error of kind invalid
// that says why, writes nothing outside the store, and leaves nothing in
// it.
func TestHostileLayersAreRefused(t *testing.T) {
	outside := t.TempDir() // what a layer must never reach
	good := it.Tar(t, it.File("ok", "ok", 0o644))
	bomb := func() []byte {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		_ = tw.WriteHeader(&tar.Header{Name: "zeros", Mode: 0o644, Size: 32 << 20, Typeflag: tar.TypeReg})
		_, _ = tw.Write(make([]byte, 32<<20))
		_ = tw.Close()
		return buf.Bytes()
	}()
	gz := it.Gzip(t, good)
	flipped := bytes.Clone(gz)
	flipped[len(flipped)/2] ^= 0xff
	for _, c := range []struct {
		name  string
		layer v1.Layer
		max   int64
		words []string
	}{
		{"dotdot name", it.Layer(t, it.File("../escape", "x", 0o644)), 0, []string{"path traversal"}},
		{"dotdot deep", it.Layer(t, it.File("a/../../../escape", "x", 0o644)), 0, []string{"path traversal"}},
		{"absolute symlink then write through it", it.Layer(t, it.Symlink("evil", outside), it.File("evil/pwned", "x", 0o644)), 0,
			[]string{"writes through a symbolic link"}},
		{"relative symlink then write through it", it.Layer(t, it.Symlink("evil", "../../../../.."), it.File("evil/tmp/pwned", "x", 0o644)), 0,
			[]string{"writes through a symbolic link"}},
		{"symlink then directory through it", it.Layer(t, it.Symlink("evil", outside), it.Dir("evil/sub/", 0o755)), 0,
			[]string{"writes through a symbolic link"}},
		{"whiteout through a symlink", it.Layer(t, it.Symlink("evil", outside), it.Whiteout("evil/x")), 0,
			[]string{"writes through a symbolic link"}},
		{"hard link out", it.Layer(t, it.Hardlink("passwd", "../../../../etc/passwd")), 0, []string{"path traversal"}},
		{"hard link to a file not in the layer", it.Layer(t, it.Hardlink("passwd", "etc/passwd")), 0,
			[]string{"not in this layer"}},
		{"hard link through a symlink", it.Layer(t, it.Symlink("etc", "/etc"), it.Hardlink("passwd", "etc/passwd")), 0,
			[]string{"symbolic link"}},
		{"uid out of range", it.Layer(t, it.Entry{Name: "f", Body: "x", Uid: 70000}), 0, []string{"out of range"}},
		{"gzip bomb over the limit", it.RawLayer(bomb, it.Gzip(t, bomb), types.DockerLayer), 1 << 20,
			[]string{"larger than the limit"}},
		{"truncated gzip", it.RawLayer(good, gz[:len(gz)/2], types.DockerLayer), 0, []string{"corrupt or truncated"}},
		{"corrupt gzip", it.RawLayer(good, flipped, types.DockerLayer), 0, []string{"corrupt"}},
		{"content not matching its diffID", it.RawLayer(it.Tar(t, it.File("other", "x", 0o644)), gz, types.DockerLayer), 0,
			[]string{"corrupt", "hashes to"}},
		{"garbage", it.RawLayer([]byte("not a tar at all, not gzip either"), []byte("not a tar at all, not gzip either"), types.OCIUncompressedLayer), 0,
			[]string{"corrupt"}},
		{"unsupported media type", it.RawLayer(good, gz, "application/vnd.oci.image.layer.v1.tar+bzip2"), 0,
			[]string{"unsupported media type"}},
		{"foreign layer", it.RawLayer(good, gz, types.DockerForeignLayer), 0, []string{"foreign layer"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := openStore(t)
			host := it.Registry(t, "", "")
			// A good layer first: what the failed pull stored goes too.
			img := it.Image(t, "", v1.Config{}, it.Layer(t, it.File("first", c.name, 0o644)), c.layer)
			it.Push(t, host+"/bad:1", img, "", "")
			_, err := pull(t, s, image.Source{Ref: host + "/bad:1"}, image.Options{MaxBytes: c.max})
			wantKind(t, err, image.ErrInvalid, c.words...)
			storeEmpty(t, s)
			if ents, _ := os.ReadDir(outside); len(ents) != 0 {
				t.Errorf("the layer wrote outside: %v", ents)
			}
		})
	}
}

// The whole image counts against the size limit, even when no single
// layer is over it, and before anything is fetched when the manifest
// says so.
func TestImageOverTheSizeLimit(t *testing.T) {
	s := openStore(t)
	host := it.Registry(t, "", "")
	big := strings.Repeat("x", 600<<10)
	img := it.Image(t, "", v1.Config{},
		it.Layer(t, it.File("a", big, 0o644)), it.Layer(t, it.File("b", big, 0o644)))
	it.Push(t, host+"/big:1", img, "", "")
	_, err := pull(t, s, image.Source{Ref: host + "/big:1"}, image.Options{MaxBytes: 1 << 20})
	wantKind(t, err, image.ErrInvalid, "larger than the limit")
	storeEmpty(t, s)
	_, err = pull(t, s, image.Source{Ref: host + "/big:1"}, image.Options{MaxBytes: 1 << 10})
	wantKind(t, err, image.ErrInvalid, "compressed, over the limit")
}

// Odd but harmless layers unpack.
func TestUnusualLayers(t *testing.T) {
	s := openStore(t)
	host := it.Registry(t, "", "")
	img := it.Image(t, "", v1.Config{}, it.Layer(t,
		it.Entry{Name: "./", Type: tar.TypeDir, Mode: 0o755},
		it.File("/abs/name", "leading slash", 0o644), // as old tools write
		it.File("dup", "first", 0o644),
		it.File("dup", "second", 0o600), // the later entry wins
		it.File("d/x", "x", 0o644),
		it.File("d", "a file replaces a directory", 0o644),
		it.Symlink("dangling", "/nowhere"),
		it.Symlink("loop", "loop"),
		it.File("sticky/f", "", 0o644),
		it.Dir("sticky/", 0o1777),
		it.Entry{Name: "g", Body: "setgid", Mode: 0o2755, Uid: 5, Gid: 6},
		it.File(".wh..wh.plnk", "", 0o644), // aufs bookkeeping
	))
	it.Push(t, host+"/odd:1", img, "", "")
	got := mustPull(t, s, image.Source{Ref: host + "/odd:1"}, image.Options{})
	want := []string{
		`abs drwxr-xr-x 100000:100000`,
		`abs/name -rw-r--r-- 100000:100000 "leading slash"`,
		`d -rw-r--r-- 100000:100000 "a file replaces a directory"`,
		`dangling Lrwxrwxrwx 100000:100000 -> /nowhere`,
		`dup -rw------- 100000:100000 "second"`,
		`g grwxr-xr-x 100005:100006 "setgid"`,
		`loop Lrwxrwxrwx 100000:100000 -> loop`,
		`sticky dtrwxrwxrwx 100000:100000`,
		`sticky/f -rw-r--r-- 100000:100000 ""`,
	}
	gotTree := it.Tree(t, got.Layers[0].Dir)
	if strings.Join(gotTree, "\n") != strings.Join(want, "\n") {
		t.Errorf("layer:\n%s\nwant:\n%s", strings.Join(gotTree, "\n"), strings.Join(want, "\n"))
	}
	if _, err := os.Stat(filepath.Join(got.Layers[0].Dir, "..", "layer.json")); err != nil {
		t.Error(err)
	}
}
