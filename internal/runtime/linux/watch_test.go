package linux_test

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/fsys"
	"github.com/sandpool/sandpool/internal/runtime"
)

// collect reads events until every one of want has been seen, failing
// after a minute (a bound for a hang, not a timing assertion).
func collect(tb testing.TB, w fsys.Watcher, want ...fsys.Event) []fsys.Event {
	tb.Helper()
	missing := map[fsys.Event]bool{}
	for _, ev := range want {
		missing[ev] = true
	}
	type result struct {
		ev  fsys.Event
		err error
	}
	var got []fsys.Event
	for len(missing) > 0 {
		ch := make(chan result, 1)
		go func() { ev, err := w.Next(); ch <- result{ev, err} }()
		select {
		case res := <-ch:
			if res.err != nil {
				tb.Fatalf("watch ended (%v) before %v; got %v", res.err, missing, got)
			}
			got = append(got, res.ev)
			delete(missing, res.ev)
		case <-time.After(time.Minute):
			tb.Fatalf("no events %v; got %v", missing, got)
		}
	}
	return got
}

func TestWatch(t *testing.T) {
	r := openRuntime(t)
	id := createSandbox(t, r, runtime.Spec{Template: "base"})
	ctx := context.Background()
	fs := r.Files(id)
	sh(t, r, id, "mkdir -p /home/user/w/old")

	w, err := fs.Watch(ctx, "/home/user/w", fsys.WatchOptions{Recursive: true})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	// Made with a shell inside, so the events are the sandbox's own; in
	// two steps, since a directory made and renamed before the watcher
	// reads of it cannot be reported under its first name.
	sh(t, r, id, "cd /home/user/w && echo a > a && mkdir -p new/deep && echo b > new/deep/b && chmod 600 a && mv a c && rm c && echo x > old/x")
	got := collect(t, w,
		fsys.Event{Name: "a", Op: fsys.OpCreate},
		fsys.Event{Name: "a", Op: fsys.OpWrite},
		fsys.Event{Name: "a", Op: fsys.OpChmod},
		fsys.Event{Name: "a", Op: fsys.OpRename},
		fsys.Event{Name: "c", Op: fsys.OpCreate},
		fsys.Event{Name: "c", Op: fsys.OpRemove},
		fsys.Event{Name: "new", Op: fsys.OpCreate},
		fsys.Event{Name: "new/deep/b", Op: fsys.OpCreate},
		fsys.Event{Name: "old/x", Op: fsys.OpCreate},
	)
	sh(t, r, id, "cd /home/user/w && mv new moved && echo y > moved/deep/y")
	got = append(got, collect(t, w,
		fsys.Event{Name: "moved", Op: fsys.OpCreate},
		fsys.Event{Name: "moved/deep/y", Op: fsys.OpCreate},
	)...)
	for _, ev := range got {
		if ev.Name == "" || ev.Name[0] == '/' {
			t.Errorf("event %+v: names are relative to the watched directory", ev)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Next(); err != io.EOF {
		t.Fatalf("Next after Close: %v", err)
	}

	// Not recursive: changes below are not reported, changes in it are.
	w2, err := fs.Watch(ctx, "/home/user/w", fsys.WatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w2.Close()
	sh(t, r, id, "echo z > /home/user/w/old/z && echo top > /home/user/w/top")
	for _, ev := range collect(t, w2, fsys.Event{Name: "top", Op: fsys.OpCreate}) {
		if ev.Name == "old/z" {
			t.Errorf("a non-recursive watch reported %+v", ev)
		}
	}

	// The watch ends when its directory goes.
	sh(t, r, id, "mkdir /tmp/gone")
	w3, err := fs.Watch(ctx, "/tmp/gone", fsys.WatchOptions{Recursive: true})
	if err != nil {
		t.Fatal(err)
	}
	defer w3.Close()
	sh(t, r, id, "rmdir /tmp/gone")
	for {
		_, err := w3.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("watch of a removed directory: %v", err)
		}
	}

	// Bad requests.
	for _, tc := range []struct {
		path, user string
		kind       error
	}{
		{"/nope", "", errdefs.ErrNotFound},
		{"/etc/passwd", "", errdefs.ErrInvalid},
		{"/root", "", errdefs.ErrPermission},
		{"relative", "", errdefs.ErrInvalid},
		{"/../..", "", errdefs.ErrInvalid},
	} {
		if w, err := fs.Watch(ctx, tc.path, fsys.WatchOptions{User: tc.user}); !errors.Is(err, tc.kind) {
			if w != nil {
				w.Close()
			}
			t.Errorf("watch %s: %v, want %v", tc.path, err, tc.kind)
		}
	}
}
