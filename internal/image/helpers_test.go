package image_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/sandpool/sandpool/internal/image"
)

func TestMain(m *testing.M) {
	if os.Getenv(crashHelperEnv) != "" {
		crashHelper()
		return
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

func openStore(tb testing.TB) *image.Store {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Fatal("image tests need root (chown, mknod, trusted xattrs, mounts); CI runs as root")
	}
	s, err := image.Open(image.StoreConfig{Dir: filepath.Join(tb.TempDir(), "images")})
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// pull pulls src with opts and holds the result until the test ends.
func pull(tb testing.TB, s *image.Store, src image.Source, opts image.Options) (image.Image, error) {
	tb.Helper()
	lease := s.Lease()
	tb.Cleanup(lease.Release)
	return s.Pull(context.Background(), lease, src, opts)
}

func mustPull(tb testing.TB, s *image.Store, src image.Source, opts image.Options) image.Image {
	tb.Helper()
	img, err := pull(tb, s, src, opts)
	if err != nil {
		tb.Fatalf("pull %s: %v", src, err)
	}
	return img
}

// wantKind fails unless err is an *image.Error of kind whose message has
// every one of words.
func wantKind(tb testing.TB, err, kind error, words ...string) {
	tb.Helper()
	if err == nil {
		tb.Fatalf("no error; want %v", kind)
	}
	var ie *image.Error
	if !errors.As(err, &ie) || !errors.Is(err, kind) {
		tb.Fatalf("error %q (%T) is not an *image.Error of kind %v", err, err, kind)
	}
	for _, w := range words {
		if !strings.Contains(err.Error(), w) {
			tb.Errorf("error %q does not mention %q", err, w)
		}
	}
}

// storeEmpty fails if the store has any layer or anything in tmp/.
func storeEmpty(tb testing.TB, s *image.Store) {
	tb.Helper()
	for _, d := range []string{"layers/sha256", "tmp"} {
		ents, err := os.ReadDir(filepath.Join(s.Dir(), d))
		if err != nil {
			tb.Fatal(err)
		}
		if len(ents) != 0 {
			var names []string
			for _, e := range ents {
				names = append(names, e.Name())
			}
			tb.Errorf("%s not empty: %v", d, names)
		}
	}
}

// layerCount is the number of layer directories on disk.
func layerCount(tb testing.TB, s *image.Store) int {
	tb.Helper()
	ents, err := os.ReadDir(filepath.Join(s.Dir(), "layers/sha256"))
	if err != nil {
		tb.Fatal(err)
	}
	return len(ents)
}
