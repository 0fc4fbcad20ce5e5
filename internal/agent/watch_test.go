package agent

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/sandpool/sandpool/internal/fsys"
)

// TestWatchDirectoryMovedBeforeRead: a directory made and renamed before
// the watcher reads of it is watched under its new name, and what is
// inside it is reported, as for a directory moved in from outside.
func TestWatchDirectoryMovedBeforeRead(t *testing.T) {
	root := t.TempDir()
	w, err := newInotify(root, true, account{Name: "root"})
	if err != nil {
		t.Fatal(err)
	}
	defer w.close()
	// A bound for a hang (an unwatched directory reports nothing), not a
	// timing assertion.
	if err := w.f.SetReadDeadline(time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	// All of it happens before the first read.
	script := "mkdir -p new/deep && echo b > new/deep/b && mv new moved && echo y > moved/deep/y"
	cmd := exec.Command("sh", "-c", script)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", script, err, out)
	}
	evs, err := w.read()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []watchEvent{{"moved", fsys.OpCreate}, {"moved/deep/y", fsys.OpCreate}} {
		if !slices.Contains(evs, want) {
			t.Errorf("no %v in %v", want, evs)
		}
	}
	// And the tree stays watched: a file made now is reported.
	if err := os.WriteFile(filepath.Join(root, "moved/deep/z"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	evs, err = w.read()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(evs, watchEvent{"moved/deep/z", fsys.OpCreate}) {
		t.Errorf("no create of moved/deep/z in %v", evs)
	}
}
