package agent

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/sandpool/sandpool/internal/fsys"
)

// maxWatchDirs bounds the directories one recursive watch follows.
const maxWatchDirs = 8192

// watchEvent is one change, as sent in a frameEvent.
type watchEvent struct {
	Name string `json:"name"`
	Op   string `json:"op"`
}

// watch reports changes in a directory (and below it, if recursive) with
// inotify until the host hangs up or the directory is gone. Directories
// are watched as the user, so one the user may not read is not watched.
func (s *Server) watch(c *conn, req *request) error {
	root, err := checkPath(c, req.Path, false)
	if root == "" {
		return err
	}
	acc, err := lookupUser(s.etc, req.User)
	if err != nil {
		return replyErr(c, codeInvalid, "%v", err)
	}
	w, err := newInotify(root, req.Recursive, acc)
	if err != nil {
		var ve validationError
		if errors.As(err, &ve) {
			return replyErr(c, codeInvalid, "%s", ve)
		}
		return fileErr(c, root, err)
	}
	defer w.close()
	if err := c.sendJSON(frameReply, reply{}); err != nil {
		return err
	}
	// The host ends the watch by closing the connection.
	go func() {
		for {
			if _, _, err := c.recv(nil); err != nil {
				w.close()
				return
			}
		}
	}()
	for {
		evs, err := w.read()
		for _, ev := range evs {
			if serr := c.sendJSON(frameEvent, ev); serr != nil {
				return serr
			}
		}
		if err != nil {
			if errors.Is(err, errWatchEnded) {
				return c.send(frameDataEnd, nil) // the directory is gone: a clean end
			}
			return err // closed by the host
		}
	}
}

var errWatchEnded = errors.New("watched directory is gone")

// inotify is one recursive (or not) watch of a directory tree.
type inotify struct {
	f         *os.File
	root      string
	recursive bool
	acc       account
	// dirs maps a watch descriptor to its directory, relative to root
	// ("" for root itself).
	dirs map[int32]string
	// moved holds directories moved away in the batch being read, by
	// cookie, until their arrival (a rename within the tree) is seen.
	moved map[uint32]string
}

const watchMask = unix.IN_CREATE | unix.IN_MODIFY | unix.IN_DELETE | unix.IN_MOVED_FROM | unix.IN_MOVED_TO |
	unix.IN_ATTRIB | unix.IN_DELETE_SELF | unix.IN_MOVE_SELF | unix.IN_ONLYDIR

func newInotify(root string, recursive bool, acc account) (*inotify, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("inotify: %w", err)
	}
	w := &inotify{f: os.NewFile(uintptr(fd), "inotify"), root: root, recursive: recursive, acc: acc,
		dirs: map[int32]string{}, moved: map[uint32]string{}}
	err = asUser(acc, func() error {
		// The root itself may be a symlink to a directory: followed.
		wd, err := w.addWatch(root, watchMask)
		if err != nil {
			return &fs.PathError{Op: "watch", Path: root, Err: err}
		}
		w.dirs[int32(wd)] = ""
		if recursive {
			_, err := w.addBelow("", false)
			return err
		}
		return nil
	})
	if err != nil {
		w.close()
		return nil, err
	}
	return w, nil
}

func (w *inotify) close() { w.f.Close() }

// addWatch adds a watch through the file's descriptor, which a concurrent
// close cannot pull away meanwhile (f.Fd would also make it blocking).
func (w *inotify) addWatch(p string, mask uint32) (int, error) {
	rc, err := w.f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var wd int
	var werr error
	if err := rc.Control(func(fd uintptr) { wd, werr = unix.InotifyAddWatch(int(fd), p, mask) }); err != nil {
		return 0, err
	}
	return wd, werr
}

func (w *inotify) rmWatch(wd int32) {
	rc, err := w.f.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) { _, _ = unix.InotifyRmWatch(int(fd), uint32(wd)) }) // it may be gone already
}

// addBelow watches the directories below rel (already watched), as the
// user; the caller runs it as asUser. With report, it returns a create
// event for every entry found (made before its directory was watched).
func (w *inotify) addBelow(rel string, report bool) ([]watchEvent, error) {
	ents, err := os.ReadDir(path.Join(w.root, rel))
	if err != nil {
		return nil, nil // gone or unreadable meanwhile: nothing to watch
	}
	var evs []watchEvent
	for _, e := range ents {
		child := path.Join(rel, e.Name())
		if report {
			evs = append(evs, watchEvent{Name: child, Op: fsys.OpCreate})
		}
		if !e.IsDir() {
			continue
		}
		if len(w.dirs) >= maxWatchDirs {
			return evs, validationError(fmt.Sprintf("%s: more than %d directories to watch; watch less", w.root, maxWatchDirs))
		}
		wd, err := w.addWatch(path.Join(w.root, child), watchMask|unix.IN_DONT_FOLLOW)
		if err != nil {
			continue // gone, or not readable by the user
		}
		w.dirs[int32(wd)] = child
		more, err := w.addBelow(child, report)
		evs = append(evs, more...)
		if err != nil {
			return evs, err
		}
	}
	return evs, nil
}

// read waits for the next batch of inotify events and returns them as
// watch events. It returns errWatchEnded when the root is gone, and the
// read's error when the watch was closed.
func (w *inotify) read() ([]watchEvent, error) {
	buf := make([]byte, 64<<10)
	n, err := w.f.Read(buf)
	if err != nil {
		return nil, err
	}
	var evs []watchEvent
	var ended bool
	for off := 0; off+unix.SizeofInotifyEvent <= n; {
		raw := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
		name := ""
		if raw.Len > 0 {
			b := buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(raw.Len)]
			name = string(bytes.TrimRight(b, "\x00"))
		}
		off += unix.SizeofInotifyEvent + int(raw.Len)
		more, end := w.handle(raw.Wd, raw.Mask, raw.Cookie, name)
		evs = append(evs, more...)
		ended = ended || end
	}
	// Directories moved away whose arrival was not in this batch left
	// the tree: stop watching them.
	for cookie, rel := range w.moved {
		w.forget(rel)
		delete(w.moved, cookie)
	}
	if ended {
		return evs, errWatchEnded
	}
	return evs, nil
}

// handle turns one inotify event into watch events, keeping the watched
// directories in step. It reports whether the root is gone.
func (w *inotify) handle(wd int32, mask, cookie uint32, name string) ([]watchEvent, bool) {
	if mask&unix.IN_Q_OVERFLOW != 0 {
		return nil, false // events were lost; nothing names them
	}
	dir, ok := w.dirs[wd]
	if !ok {
		return nil, false
	}
	if mask&unix.IN_IGNORED != 0 {
		delete(w.dirs, wd)
		return nil, dir == ""
	}
	if name == "" {
		// About a watched directory itself: its parent reports it, unless
		// it is the root.
		if dir == "" && mask&(unix.IN_DELETE_SELF|unix.IN_MOVE_SELF) != 0 {
			return []watchEvent{{Name: "", Op: fsys.OpRemove}}, true
		}
		return nil, false
	}
	rel := path.Join(dir, name)
	isDir := mask&unix.IN_ISDIR != 0
	var evs []watchEvent
	switch {
	case mask&unix.IN_CREATE != 0:
		evs = append(evs, watchEvent{rel, fsys.OpCreate})
		if isDir && w.recursive {
			evs = append(evs, w.addDir(rel)...)
		}
	case mask&unix.IN_MOVED_TO != 0:
		evs = append(evs, watchEvent{rel, fsys.OpCreate})
		if isDir && w.recursive {
			from, ok := w.moved[cookie]
			delete(w.moved, cookie)
			// A directory moved within the tree keeps its watches, unless
			// it was never watched (gone from its first name before its
			// creation was read): then it is new here.
			if !ok || !w.rename(from, rel) {
				evs = append(evs, w.addDir(rel)...)
			}
		}
	case mask&unix.IN_MOVED_FROM != 0:
		evs = append(evs, watchEvent{rel, fsys.OpRename})
		if isDir && w.recursive {
			w.moved[cookie] = rel
		}
	case mask&unix.IN_DELETE != 0:
		evs = append(evs, watchEvent{rel, fsys.OpRemove})
	case mask&unix.IN_MODIFY != 0:
		evs = append(evs, watchEvent{rel, fsys.OpWrite})
	case mask&unix.IN_ATTRIB != 0:
		evs = append(evs, watchEvent{rel, fsys.OpChmod})
	}
	return evs, false
}

// addDir watches a directory that appeared in the tree, and what is
// below it, reporting what was made in it before it was watched.
func (w *inotify) addDir(rel string) []watchEvent {
	var evs []watchEvent
	_ = asUser(w.acc, func() error { // failures leave the directory unwatched, as for one the user cannot read
		if len(w.dirs) >= maxWatchDirs {
			return nil
		}
		wd, err := w.addWatch(path.Join(w.root, rel), watchMask|unix.IN_DONT_FOLLOW)
		if err != nil {
			return err
		}
		w.dirs[int32(wd)] = rel
		evs, err = w.addBelow(rel, true)
		return err
	})
	return evs
}

// rename moves the watched directories under from to under to. It
// reports whether from itself was watched.
func (w *inotify) rename(from, to string) (watched bool) {
	for wd, d := range w.dirs {
		if d == from || strings.HasPrefix(d, from+"/") {
			w.dirs[wd] = to + d[len(from):]
			watched = watched || d == from
		}
	}
	return watched
}

// forget stops watching rel and what is below it.
func (w *inotify) forget(rel string) {
	for wd, d := range w.dirs {
		if d == rel || strings.HasPrefix(d, rel+"/") {
			w.rmWatch(wd)
			delete(w.dirs, wd)
		}
	}
}
