package linux_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/sandpool/sandpool/internal/runtime"
)

func TestFilesRoundTrip(t *testing.T) {
	r := openRuntime(t)
	id := createSandbox(t, r, runtime.Spec{Template: "base"})
	ctx := context.Background()
	fs := r.Files(id)

	data := make([]byte, 8<<20+123)
	rand.Read(data)
	n, err := fs.Write(ctx, "/home/user/data.bin", bytes.NewReader(data), runtime.WriteOptions{})
	if err != nil || n != int64(len(data)) {
		t.Fatalf("write: %d %v", n, err)
	}
	rc, fi, err := fs.Read(ctx, "/home/user/data.bin")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes (%v), want %d", len(got), err, len(data))
	}
	if fi.Size != int64(len(data)) || fi.Owner != 1000 || fi.Mode != 0o644 || fi.Type != "file" {
		t.Fatalf("info %+v", fi)
	}
	// The sandbox sees the same bytes, owned by its user.
	sum := sha256.Sum256(data)
	res := sh(t, r, id, "sha256sum /home/user/data.bin; stat -c '%U %a' /home/user/data.bin")
	if !strings.HasPrefix(res.Stdout, hex.EncodeToString(sum[:])) || !strings.Contains(res.Stdout, "user 644") {
		t.Fatalf("inside: %q", res.Stdout)
	}

	// mkdir -p, write with parents and mode, list, stat, rename, remove.
	if err := fs.Mkdir(ctx, "/work/a/b", runtime.MkdirOptions{Parents: true}); err != nil {
		t.Fatal(err)
	}
	if err := fs.Mkdir(ctx, "/work/a/b", runtime.MkdirOptions{Parents: true}); err != nil {
		t.Fatalf("mkdir -p of an existing directory: %v", err)
	}
	if err := fs.Mkdir(ctx, "/work/a/b", runtime.MkdirOptions{}); !errors.Is(err, runtime.ErrExists) {
		t.Fatalf("mkdir of an existing directory: %v", err)
	}
	if _, err := fs.Write(ctx, "/work/x/y/run.sh", strings.NewReader("#!/bin/sh\necho ran\n"), runtime.WriteOptions{Mode: 0o755, MakeParents: true}); err != nil {
		t.Fatal(err)
	}
	if out := sh(t, r, id, "/work/x/y/run.sh").Stdout; out != "ran\n" {
		t.Fatalf("uploaded script: %q", out)
	}
	list, err := fs.List(ctx, "/work")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range list {
		names = append(names, f.Name+":"+f.Type)
	}
	sort.Strings(names)
	if diff := cmp.Diff([]string{"a:dir", "x:dir"}, names); diff != "" {
		t.Fatalf("list (-want +got):\n%s", diff)
	}
	if err := fs.Rename(ctx, "/work/x/y/run.sh", "/work/a/run.sh"); err != nil {
		t.Fatal(err)
	}
	if st, err := fs.Stat(ctx, "/work/a/run.sh"); err != nil || st.Mode != 0o755 || st.Owner != 1000 {
		t.Fatalf("stat after rename: %+v %v", st, err)
	}
	if err := fs.Remove(ctx, "/work/a", false); err == nil {
		t.Fatal("removed a non-empty directory without recursive")
	}
	if err := fs.Remove(ctx, "/work", true); err != nil {
		t.Fatal(err)
	}
	if _, err := fs.Stat(ctx, "/work"); !errors.Is(err, runtime.ErrNotFound) {
		t.Fatalf("stat after remove: %v", err)
	}
	// Files written by root stay root's when asked.
	if _, err := fs.Write(ctx, "/etc/app.conf", strings.NewReader("x=1\n"), runtime.WriteOptions{User: "root", Mode: 0o600}); err != nil {
		t.Fatal(err)
	}
	if out := sh(t, r, id, "stat -c '%U %a' /etc/app.conf").Stdout; out != "root 600\n" {
		t.Fatalf("root file: %q", out)
	}
}

func TestFilesBadPaths(t *testing.T) {
	r := openRuntime(t)
	id := createSandbox(t, r, runtime.Spec{Template: "base"})
	ctx := context.Background()
	fs := r.Files(id)
	sh(t, r, id, "ln -s /etc/passwd /tmp/link")

	write := func(p string) error {
		_, err := fs.Write(ctx, p, strings.NewReader("x"), runtime.WriteOptions{})
		return err
	}
	read := func(p string) error {
		rc, _, err := fs.Read(ctx, p)
		if err == nil {
			rc.Close()
		}
		return err
	}
	tests := []struct {
		name string
		do   func() error
		kind error
	}{
		{"relative", func() error { return read("etc/passwd") }, runtime.ErrInvalid},
		{"escaping", func() error { return read("/../../etc/passwd") }, runtime.ErrInvalid},
		{"nul byte", func() error { return read("/etc/pa\x00sswd") }, runtime.ErrInvalid},
		{"empty", func() error { return read("") }, runtime.ErrInvalid},
		{"missing", func() error { return read("/nope") }, runtime.ErrNotFound},
		{"directory", func() error { return read("/etc") }, runtime.ErrInvalid},
		{"write to proc", func() error { return write("/proc/sys/kernel/hostname") }, runtime.ErrInvalid},
		{"write to dev", func() error { return write("/dev/null") }, runtime.ErrInvalid},
		{"write through symlink", func() error { return write("/tmp/link") }, runtime.ErrInvalid},
		{"write read-only host dir", func() error { return write("/usr/bin/evil") }, runtime.ErrInvalid},
		{"write missing parent", func() error { return write("/no/such/dir/f") }, runtime.ErrNotFound},
		{"remove root", func() error { return fs.Remove(ctx, "/", true) }, runtime.ErrInvalid},
		{"rename escaping", func() error { return fs.Rename(ctx, "/tmp/link", "/../x") }, runtime.ErrInvalid},
		{"list missing", func() error { _, err := fs.List(ctx, "/nope"); return err }, runtime.ErrNotFound},
		{"unknown owner", func() error {
			_, err := fs.Write(ctx, "/tmp/f", strings.NewReader("x"), runtime.WriteOptions{User: "mallory"})
			return err
		}, runtime.ErrInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.do()
			if !errors.Is(err, tc.kind) || runtime.IsStateError(err) {
				t.Fatalf("got %v, want a user error of kind %v", err, tc.kind)
			}
		})
	}
	// Nothing changed: /etc/passwd is intact, the host's /usr untouched.
	if out := sh(t, r, id, "head -1 /etc/passwd; test -e /usr/bin/evil && echo EVIL; true").Stdout; out != "root:x:0:0:root:/root:/bin/sh\n" {
		t.Fatalf("after bad requests: %q", out)
	}
}
