package image_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/sandpool/sandpool/internal/image"
	it "github.com/sandpool/sandpool/internal/image/imagetest"
)

// FuzzUnpack feeds arbitrary tar streams to the layer unpacker: whatever
// they say, nothing is written outside the store, nothing is left in tmp/,
// and a refusal is an error of kind invalid.
func FuzzUnpack(f *testing.F) {
	seeds := [][]it.Entry{
		baseEntries(),
		topEntries(),
		{it.File("../escape", "x", 0o644)},
		{it.Symlink("evil", "/"), it.File("evil/tmp/pwned", "x", 0o644)},
		{it.Symlink("evil", "../.."), it.Dir("evil/x/", 0o755)},
		{it.Symlink("a", "b"), it.Symlink("b", "a"), it.Hardlink("c", "a")},
		{it.Hardlink("x", "../../etc/passwd")},
		{it.File("d/f", "x", 0o644), it.File("d", "y", 0o644), it.Dir("d/", 0o700)},
		{it.Whiteout("a/b"), it.Opaque("a"), it.File("a/.wh..wh..opq", "", 0o644)},
		{{Name: "dev/sda", Type: tar.TypeBlock}, {Name: "f", Body: "x", Uid: 65536}},
		{it.Entry{Name: "./", Type: tar.TypeDir, Mode: 0o7777}},
	}
	for _, s := range seeds {
		f.Add(it.Tar(f, s...))
	}
	f.Add([]byte("garbage"))
	// One store for all inputs: a temporary directory per input makes
	// the fuzzer spend its time in cleanup.
	root := f.TempDir()
	outside := filepath.Join(root, "outside")
	if err := os.Mkdir(outside, 0o755); err != nil {
		f.Fatal(err)
	}
	s, err := image.Open(image.StoreConfig{Dir: filepath.Join(root, "store")})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		lease := s.Lease()
		l, err := s.AddLayer(context.Background(), lease, bytes.NewReader(data), 16<<20)
		if err != nil {
			var ie *image.Error
			if !errors.As(err, &ie) {
				t.Fatalf("refused with an error that is not the input's: %v", err)
			}
		} else if _, serr := os.Stat(l.Dir); serr != nil {
			t.Fatalf("stored layer missing: %v", serr)
		}
		lease.Release()
		if ents, _ := os.ReadDir(outside); len(ents) != 0 {
			t.Fatalf("wrote outside the store: %v", ents)
		}
		if ents, _ := os.ReadDir(filepath.Join(root, "store", "tmp")); len(ents) != 0 {
			t.Fatalf("left %d entries in tmp/", len(ents))
		}
		if ents, _ := os.ReadDir(root); len(ents) != 2 {
			t.Fatalf("the temp dir holds %d entries, want store and outside", len(ents))
		}
		if _, err := s.GC(context.Background(), nil); err != nil {
			t.Fatalf("GC: %v", err)
		}
	})
}
