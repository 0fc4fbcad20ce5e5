// Package imagetest builds images for tests: layers from tar entries,
// images with a platform and config, an in-process registry to serve them
// (with basic auth if asked), and a busybox base image made from the
// host's static busybox.
package imagetest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sys/unix"
)

// Entry is one tar entry of a test layer. Type defaults to a regular file
// (a directory if Name ends in "/"); Mode defaults to 0644 (0755 for
// directories).
type Entry struct {
	Name     string
	Type     byte
	Body     string
	Mode     int64
	Uid, Gid int
	Link     string
}

// Dir, File, Symlink and Hardlink make entries.
func Dir(name string, mode int64) Entry { return Entry{Name: name, Type: tar.TypeDir, Mode: mode} }
func File(name, body string, mode int64) Entry {
	return Entry{Name: name, Type: tar.TypeReg, Body: body, Mode: mode}
}
func Symlink(name, target string) Entry {
	return Entry{Name: name, Type: tar.TypeSymlink, Link: target}
}
func Hardlink(name, target string) Entry {
	return Entry{Name: name, Type: tar.TypeLink, Link: target}
}

// Whiteout deletes name (a path) of the layers below.
func Whiteout(p string) Entry {
	i := strings.LastIndex(p, "/")
	return File(p[:i+1]+".wh."+p[i+1:], "", 0)
}

// Opaque hides what the layers below have in dir.
func Opaque(dir string) Entry { return File(strings.TrimSuffix(dir, "/")+"/.wh..wh..opq", "", 0) }

// Tar writes entries as an uncompressed tar.
func Tar(tb testing.TB, entries ...Entry) []byte {
	tb.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{
			Name: e.Name, Typeflag: e.Type, Mode: e.Mode, Uid: e.Uid, Gid: e.Gid,
			Linkname: e.Link, ModTime: time.Unix(1700000000, 0), Format: tar.FormatPAX,
		}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
			if strings.HasSuffix(e.Name, "/") {
				h.Typeflag = tar.TypeDir
			}
		}
		if h.Mode == 0 {
			h.Mode = 0o644
			if h.Typeflag == tar.TypeDir {
				h.Mode = 0o755
			}
		}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.Body))
		}
		if err := tw.WriteHeader(h); err != nil {
			tb.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write([]byte(e.Body)); err != nil {
				tb.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// Layer is a gzip layer of entries.
func Layer(tb testing.TB, entries ...Entry) v1.Layer {
	tb.Helper()
	t := Tar(tb, entries...)
	return RawLayer(t, Gzip(tb, t), types.DockerLayer)
}

// Gzip compresses b.
func Gzip(tb testing.TB, b []byte) []byte {
	tb.Helper()
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	if _, err := zw.Write(b); err != nil {
		tb.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// RawLayer is a layer whose blob is exactly blob and whose diffID is the
// sha256 of uncompressed, whether or not they agree: a way to serve a
// corrupt or truncated layer.
func RawLayer(uncompressed, blob []byte, mt types.MediaType) v1.Layer {
	return &rawLayer{diffID: hash(uncompressed), blob: blob, uncompressed: uncompressed, mt: mt}
}

type rawLayer struct {
	diffID       v1.Hash
	blob         []byte
	uncompressed []byte
	mt           types.MediaType
}

func hash(b []byte) v1.Hash {
	s := sha256.Sum256(b)
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(s[:])}
}

func (l *rawLayer) Digest() (v1.Hash, error) { return hash(l.blob), nil }
func (l *rawLayer) DiffID() (v1.Hash, error) { return l.diffID, nil }
func (l *rawLayer) Compressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l.blob)), nil
}
func (l *rawLayer) Uncompressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l.uncompressed)), nil
}
func (l *rawLayer) Size() (int64, error)                { return int64(len(l.blob)), nil }
func (l *rawLayer) MediaType() (types.MediaType, error) { return l.mt, nil }

// Image stacks layers (lowest first) into an image for platform
// ("linux/amd64"; empty leaves it unset), with cfg as its config.
func Image(tb testing.TB, platform string, cfg v1.Config, layers ...v1.Layer) v1.Image {
	tb.Helper()
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		tb.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		tb.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.Config = cfg
	if platform != "" {
		p, err := v1.ParsePlatform(platform)
		if err != nil {
			tb.Fatal(err)
		}
		cf.OS, cf.Architecture, cf.Variant = p.OS, p.Architecture, p.Variant
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		tb.Fatal(err)
	}
	return img
}

// Registry serves an in-process registry on 127.0.0.1 until the test
// ends and returns its host:port. With a user, every request needs basic
// auth with user and password.
func Registry(tb testing.TB, user, password string) string {
	tb.Helper()
	var h http.Handler = registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	if user != "" {
		inner := h
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			u, p, ok := r.BasicAuth()
			if !ok || u != user || p != password {
				w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
				http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"login"}]}`, http.StatusUnauthorized)
				return
			}
			inner.ServeHTTP(w, r)
		})
	}
	srv := httptest.NewServer(h)
	tb.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// Push writes img to ref, with basic auth if user is set.
func Push(tb testing.TB, ref string, img v1.Image, user, password string) {
	tb.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		tb.Fatal(err)
	}
	if err := remote.Write(r, img, authOpt(user, password)...); err != nil {
		tb.Fatal(err)
	}
}

// PushIndex writes idx to ref.
func PushIndex(tb testing.TB, ref string, idx v1.ImageIndex) {
	tb.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		tb.Fatal(err)
	}
	if err := remote.WriteIndex(r, idx); err != nil {
		tb.Fatal(err)
	}
}

// Index makes a multi-platform index of imgs, each under its config's
// platform.
func Index(tb testing.TB, imgs ...v1.Image) v1.ImageIndex {
	tb.Helper()
	var adds []mutate.IndexAddendum
	for _, img := range imgs {
		cf, err := img.ConfigFile()
		if err != nil {
			tb.Fatal(err)
		}
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{
			Platform: &v1.Platform{OS: cf.OS, Architecture: cf.Architecture, Variant: cf.Variant},
		}})
	}
	return mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex), adds...)
}

func authOpt(user, password string) []remote.Option {
	if user == "" {
		return nil
	}
	return []remote.Option{remote.WithAuth(&authn.Basic{Username: user, Password: password})}
}

var (
	busyboxOnce sync.Once
	busyboxErr  error
)

// BusyboxPath is where Debian's busybox-static puts its binary.
const BusyboxPath = "/bin/busybox"

// Busybox returns the entries of a small root filesystem around the
// host's static busybox: /bin with busybox and its applets, /etc/passwd
// (root, user 1000, nobody), /etc/group, and the usual empty directories.
// If busybox is missing it installs busybox-static with apt-get (the test
// machines run as root); the test is skipped only if that is impossible.
func Busybox(tb testing.TB) []Entry {
	tb.Helper()
	busyboxOnce.Do(func() {
		if _, err := os.Stat(BusyboxPath); err == nil {
			return
		}
		install := exec.Command("sh", "-c", "apt-get install -y -qq busybox-static || (apt-get update -qq && apt-get install -y -qq busybox-static)")
		install.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		if out, err := install.CombinedOutput(); err != nil {
			busyboxErr = err
			tb.Logf("apt-get install busybox-static: %v\n%s", err, out)
		}
	})
	bin, err := os.ReadFile(BusyboxPath)
	if err != nil {
		tb.Skipf("no static busybox at %s and busybox-static cannot be installed (%v, %v)", BusyboxPath, err, busyboxErr)
	}
	out, err := exec.Command(BusyboxPath, "--list").Output()
	if err != nil {
		tb.Fatalf("busybox --list: %v", err)
	}
	entries := []Entry{
		Dir("bin/", 0o755), Dir("etc/", 0o755), Dir("dev/", 0o755), Dir("proc/", 0o555),
		Dir("tmp/", 0o1777), Dir("root/", 0o700), Dir("home/", 0o755),
		{Name: "home/user/", Type: tar.TypeDir, Mode: 0o755, Uid: 1000, Gid: 1000},
		File("bin/busybox", string(bin), 0o755),
		File("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n", 0o644),
		File("etc/group", "root:x:0:\nuser:x:1000:\nstaff:x:50:user\nnogroup:x:65534:\n", 0o644),
	}
	for _, applet := range strings.Fields(string(out)) {
		if applet != "busybox" {
			entries = append(entries, Symlink("bin/"+applet, "busybox"))
		}
	}
	return entries
}

// Mount mounts layer dirs (lowest first) with a writable upper in a
// temporary directory and returns the merged root.
func Mount(tb testing.TB, dirs []string) string {
	tb.Helper()
	tmp := tb.TempDir()
	upper, work, merged := filepath.Join(tmp, "upper"), filepath.Join(tmp, "work"), filepath.Join(tmp, "merged")
	for _, d := range []string{upper, work, merged} {
		if err := os.Mkdir(d, 0o755); err != nil {
			tb.Fatal(err)
		}
	}
	lower := make([]string, len(dirs))
	for i, d := range dirs {
		lower[len(dirs)-1-i] = d
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", strings.Join(lower, ":"), upper, work)
	if err := unix.Mount("overlay", merged, "overlay", 0, opts); err != nil {
		tb.Fatalf("mount overlay: %v", err)
	}
	tb.Cleanup(func() {
		if err := unix.Unmount(merged, unix.MNT_DETACH); err != nil {
			tb.Errorf("unmount: %v", err)
		}
	})
	return merged
}

// Tree describes every entry under root, one line each: path, type,
// permissions, owner and content or target.
func Tree(tb testing.TB, root string) []string {
	tb.Helper()
	var out []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		line := fmt.Sprintf("%s %s %d:%d", rel, fi.Mode().String(), st.Uid, st.Gid)
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			t, _ := os.Readlink(p)
			line += " -> " + t
		case fi.Mode().IsRegular():
			b, _ := os.ReadFile(p)
			if len(b) > 40 {
				b = b[:40]
			}
			line += fmt.Sprintf(" %q", b)
		}
		out = append(out, line)
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	sort.Strings(out)
	return out
}
