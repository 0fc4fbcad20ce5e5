package agent

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestLookupUser(t *testing.T) {
	etc := t.TempDir()
	os.WriteFile(filepath.Join(etc, "passwd"), []byte("root:x:0:0:root:/root:/bin/sh\n# comment\nbroken line\nuser:x:1000:1000::/home/user:/bin/bash\n"), 0o644)
	os.WriteFile(filepath.Join(etc, "group"), []byte("root:x:0:\nusers:x:100:user,other\nwheel:x:10:user\nuser:x:1000:\n"), 0o644)
	tests := []struct {
		who  string
		want account
		bad  bool
	}{
		{who: "", want: account{Name: "user", UID: 1000, GID: 1000, Groups: []uint32{100, 10}, Home: "/home/user", Shell: "/bin/bash"}},
		{who: "root", want: account{Name: "root", UID: 0, GID: 0, Home: "/root", Shell: "/bin/sh"}},
		{who: "1000", want: account{Name: "user", UID: 1000, GID: 1000, Groups: []uint32{100, 10}, Home: "/home/user", Shell: "/bin/bash"}},
		{who: "4242", want: account{Name: "4242", UID: 4242, GID: 4242, Home: "/", Shell: "/bin/sh"}},
		{who: "1000:1000", want: account{Name: "user", UID: 1000, GID: 1000, Groups: []uint32{100, 10}, Home: "/home/user", Shell: "/bin/bash"}},
		{who: "1000:50", want: account{Name: "user", UID: 1000, GID: 50, Home: "/home/user", Shell: "/bin/bash"}},
		{who: "4242:7", want: account{Name: "4242", UID: 4242, GID: 7, Home: "/", Shell: "/bin/sh"}},
		{who: "1000:staff", bad: true},
		{who: "user:0", bad: true},
		{who: "1000:65536", bad: true},
		{who: "nobody-here", bad: true},
		{who: "-1", bad: true},
		{who: "65536", bad: true},
	}
	for _, tc := range tests {
		got, err := lookupUser(etc, tc.who)
		if tc.bad {
			if err == nil {
				t.Errorf("lookupUser(%q) = %+v, want error", tc.who, got)
			}
			continue
		}
		if err != nil {
			t.Errorf("lookupUser(%q): %v", tc.who, err)
			continue
		}
		if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(account{})); diff != "" {
			t.Errorf("lookupUser(%q) (-want +got):\n%s", tc.who, diff)
		}
	}
}

func TestBuildEnv(t *testing.T) {
	env, err := buildEnv(account{Name: "user", Home: "/home/user", Shell: "/bin/sh"}, map[string]string{"PATH": "/x", "A": "b"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"A=b", "HOME=/home/user", "LANG=C.UTF-8", "LOGNAME=user", "PATH=/x", "SHELL=/bin/sh", "USER=user"}
	if diff := cmp.Diff(want, env); diff != "" {
		t.Fatalf("(-want +got):\n%s", diff)
	}
	for _, bad := range []map[string]string{{"": "x"}, {"A=B": "x"}, {"A": "x\x00y"}} {
		if _, err := buildEnv(account{}, bad); err == nil {
			t.Errorf("buildEnv(%q) accepted", bad)
		}
	}
}

type rw struct {
	io.Reader
	io.Writer
}

func (rw) Close() error { return nil }

func TestFrames(t *testing.T) {
	var buf bytes.Buffer
	c := newConn(rw{&buf, &buf})
	big := bytes.Repeat([]byte("x"), 100000)
	for _, p := range [][]byte{nil, []byte("hi"), big} {
		if err := c.send(frameData, p); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range [][]byte{nil, []byte("hi"), big} {
		typ, got, err := c.recv(nil)
		if err != nil || typ != frameData || !bytes.Equal(got, want) {
			t.Fatalf("recv: %q %d bytes %v", typ, len(got), err)
		}
	}
	if err := c.send(frameData, make([]byte, maxFrame+1)); err == nil {
		t.Fatal("sent an oversized frame")
	}
}

// FuzzRecv: a hostile peer's bytes never panic the decoder.
func FuzzRecv(f *testing.F) {
	f.Add([]byte{'R', 0, 0, 0, 2, '{', '}'})
	f.Add([]byte{'d', 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{'x', 0, 0, 0, 5, 'a'})
	f.Fuzz(func(t *testing.T, data []byte) {
		c := newConn(rw{bytes.NewReader(data), io.Discard})
		for i := 0; i < 100; i++ {
			if _, _, err := c.recv(nil); err != nil {
				return
			}
		}
		var req request
		_ = c.recvJSON(frameRequest, &req)
	})
}

func TestLookPath(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "prog")
	os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755)
	os.WriteFile(filepath.Join(dir, "data"), nil, 0o644)
	if got, err := lookPath("prog", "/", "/nope:"+dir); err != nil || got != exe {
		t.Fatalf("lookPath = %q, %v", got, err)
	}
	if got, err := lookPath("./prog", dir, ""); err != nil || got != dir+"/./prog" {
		t.Fatalf("relative: %q, %v", got, err)
	}
	for _, bad := range []string{"data", "missing", dir} {
		if _, err := lookPath(bad, "/", dir); err == nil {
			t.Errorf("lookPath(%q) found something", bad)
		}
	}
}
