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

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/fsys"
	"github.com/sandpool/sandpool/internal/proc"
	"github.com/sandpool/sandpool/internal/runtime"
)

func TestFilesRoundTrip(t *testing.T) {
	r := openRuntime(t)
	id := createSandbox(t, r, runtime.Spec{Template: "base"})
	ctx := context.Background()
	fs := r.Files(id)

	data := make([]byte, 8<<20+123)
	rand.Read(data)
	n, err := fs.Write(ctx, "/home/user/data.bin", bytes.NewReader(data), fsys.WriteOptions{})
	if err != nil || n != int64(len(data)) {
		t.Fatalf("write: %d %v", n, err)
	}
	rc, fi, err := fs.Read(ctx, "/home/user/data.bin", fsys.Options{})
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
	if err := fs.Mkdir(ctx, "/home/user/work/a/b", fsys.MkdirOptions{Parents: true}); err != nil {
		t.Fatal(err)
	}
	if err := fs.Mkdir(ctx, "/home/user/work/a/b", fsys.MkdirOptions{Parents: true}); err != nil {
		t.Fatalf("mkdir -p of an existing directory: %v", err)
	}
	if err := fs.Mkdir(ctx, "/home/user/work/a/b", fsys.MkdirOptions{}); !errors.Is(err, errdefs.ErrExists) {
		t.Fatalf("mkdir of an existing directory: %v", err)
	}
	if _, err := fs.Write(ctx, "/home/user/work/x/y/run.sh", strings.NewReader("#!/bin/sh\necho ran\n"), fsys.WriteOptions{Mode: 0o755, MakeParents: true}); err != nil {
		t.Fatal(err)
	}
	if out := sh(t, r, id, "/home/user/work/x/y/run.sh").Stdout; out != "ran\n" {
		t.Fatalf("uploaded script: %q", out)
	}
	list, err := fs.List(ctx, "/home/user/work", fsys.ListOptions{})
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
	if err := fs.Rename(ctx, "/home/user/work/x/y/run.sh", "/home/user/work/a/run.sh", fsys.Options{}); err != nil {
		t.Fatal(err)
	}
	if st, err := fs.Stat(ctx, "/home/user/work/a/run.sh", fsys.Options{}); err != nil || st.Mode != 0o755 || st.Owner != 1000 {
		t.Fatalf("stat after rename: %+v %v", st, err)
	}
	if err := fs.Remove(ctx, "/home/user/work/a", fsys.RemoveOptions{Recursive: false}); err == nil {
		t.Fatal("removed a non-empty directory without recursive")
	}
	if err := fs.Remove(ctx, "/home/user/work", fsys.RemoveOptions{Recursive: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := fs.Stat(ctx, "/home/user/work", fsys.Options{}); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("stat after remove: %v", err)
	}
	// Files written by root stay root's when asked.
	if _, err := fs.Write(ctx, "/etc/app.conf", strings.NewReader("x=1\n"), fsys.WriteOptions{User: "root", Mode: 0o600}); err != nil {
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
	run(t, r, id, proc.Spec{User: "root", Shell: "echo secret > /etc/shadow-test && chmod 600 /etc/shadow-test"})

	write := func(p string) error {
		_, err := fs.Write(ctx, p, strings.NewReader("x"), fsys.WriteOptions{})
		return err
	}
	read := func(p string) error {
		rc, _, err := fs.Read(ctx, p, fsys.Options{})
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
		{"relative", func() error { return read("etc/passwd") }, errdefs.ErrInvalid},
		{"escaping", func() error { return read("/../../etc/passwd") }, errdefs.ErrInvalid},
		{"nul byte", func() error { return read("/etc/pa\x00sswd") }, errdefs.ErrInvalid},
		{"empty", func() error { return read("") }, errdefs.ErrInvalid},
		{"missing", func() error { return read("/nope") }, errdefs.ErrNotFound},
		{"directory", func() error { return read("/etc") }, errdefs.ErrInvalid},
		{"write to proc", func() error { return write("/proc/sys/kernel/hostname") }, errdefs.ErrInvalid},
		{"write to dev", func() error { return write("/dev/null") }, errdefs.ErrInvalid},
		{"write through symlink", func() error { return write("/tmp/link") }, errdefs.ErrInvalid},
		{"write read-only host dir", func() error { return write("/usr/bin/evil") }, errdefs.ErrPermission},
		{"write as the user where only root may", func() error { return write("/etc/passwd") }, errdefs.ErrPermission},
		{"read as the user what only root may", func() error { return read("/etc/shadow-test") }, errdefs.ErrPermission},
		{"rename a directory into itself", func() error { return fs.Rename(ctx, "/tmp", "/tmp/x", fsys.Options{User: "root"}) }, errdefs.ErrInvalid},
		{"list deeper than allowed", func() error { _, err := fs.List(ctx, "/", fsys.ListOptions{Depth: 1000}); return err }, errdefs.ErrInvalid},
		{"write missing parent", func() error { return write("/no/such/dir/f") }, errdefs.ErrNotFound},
		{"remove root", func() error { return fs.Remove(ctx, "/", fsys.RemoveOptions{Recursive: true}) }, errdefs.ErrInvalid},
		{"rename escaping", func() error { return fs.Rename(ctx, "/tmp/link", "/../x", fsys.Options{}) }, errdefs.ErrInvalid},
		{"list missing", func() error { _, err := fs.List(ctx, "/nope", fsys.ListOptions{}); return err }, errdefs.ErrNotFound},
		{"unknown owner", func() error {
			_, err := fs.Write(ctx, "/tmp/f", strings.NewReader("x"), fsys.WriteOptions{User: "mallory"})
			return err
		}, errdefs.ErrInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.do()
			if !errors.Is(err, tc.kind) || errdefs.IsStateError(err) {
				t.Fatalf("got %v, want a user error of kind %v", err, tc.kind)
			}
		})
	}
	// Nothing changed: /etc/passwd is intact, the host's /usr untouched.
	if out := sh(t, r, id, "head -1 /etc/passwd; test -e /usr/bin/evil && echo EVIL; true").Stdout; out != "root:x:0:0:root:/root:/bin/sh\n" {
		t.Fatalf("after bad requests: %q", out)
	}
}
