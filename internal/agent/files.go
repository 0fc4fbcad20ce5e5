package agent

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
	"syscall"

	"github.com/sandpool/sandpool/internal/fsys"
)

// The agent runs in the sandbox's own root, so every path it resolves,
// symlinks included, stays inside the sandbox. Paths are still checked
// (absolute, no climbing above /) so a wrong request gets a clear error,
// and the kernel's pseudo-filesystems are not writable through the API.

// fileErr turns a filesystem error into a reply.
func fileErr(c *conn, p string, err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return replyErr(c, codeNotFound, "%s: no such file or directory", p)
	case errors.Is(err, fs.ErrExist):
		return replyErr(c, codeExists, "%s: already exists", p)
	case errors.Is(err, syscall.ENOTDIR):
		return replyErr(c, codeInvalid, "%s: a parent is not a directory", p)
	case errors.Is(err, syscall.EISDIR):
		return replyErr(c, codeInvalid, "%s: is a directory", p)
	case errors.Is(err, syscall.ENOTEMPTY):
		return replyErr(c, codeInvalid, "%s: directory not empty", p)
	case errors.Is(err, syscall.EROFS):
		return replyErr(c, codePermission, "%s: read-only file system", p)
	case errors.Is(err, fs.ErrPermission):
		return replyErr(c, codePermission, "%s: permission denied", p)
	case errors.Is(err, syscall.EINVAL):
		return replyErr(c, codeInvalid, "%s: invalid (a directory cannot move into itself)", p)
	case errors.Is(err, syscall.EXDEV):
		return replyErr(c, codeInvalid, "%s: cannot move across file systems", p)
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return replyErr(c, codeInvalid, "%s: disk limit reached", p)
	}
	return replyErr(c, codeInternal, "%s: %v", p, err)
}

// checkPath cleans p and, for a change, refuses the pseudo-filesystems.
func checkPath(c *conn, p string, change bool) (string, error) {
	clean, err := fsys.CleanPath(p)
	if err != nil {
		return "", replyErr(c, codeInvalid, "%v", err)
	}
	if change {
		if msg := readOnlyArea(clean); msg != "" {
			return "", replyErr(c, codeInvalid, "%s", msg)
		}
	}
	return clean, nil
}

// readOnlyArea says why the files API may not change p, or "".
func readOnlyArea(p string) string {
	for _, ro := range []string{"/proc", "/dev", "/sys"} {
		if p == ro || strings.HasPrefix(p, ro+"/") {
			return fmt.Sprintf("%s: %s cannot be changed through the files API", p, ro)
		}
	}
	if p == "/" {
		return "the root directory cannot be changed"
	}
	return ""
}

func (s *Server) readFile(c *conn, req *request) error {
	p, err := checkPath(c, req.Path, false)
	if p == "" {
		return err
	}
	acc, err := lookupUser(s.etc, req.User)
	if err != nil {
		return replyErr(c, codeInvalid, "%v", err)
	}
	var f *os.File
	err = asUser(acc, func() (err error) {
		f, err = os.Open(p)
		return err
	})
	if err != nil {
		return fileErr(c, p, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fileErr(c, p, err)
	}
	if !st.Mode().IsRegular() {
		return replyErr(c, codeInvalid, "%s: not a regular file", p)
	}
	fi := infoOf(p, st)
	if err := c.sendJSON(frameReply, reply{File: &fi}); err != nil {
		return err
	}
	buf := make([]byte, chunkSize)
	for {
		n, err := f.Read(buf)
		if n > 0 {
			if err := c.send(frameData, buf[:n]); err != nil {
				return err
			}
		}
		if err == io.EOF {
			return c.send(frameDataEnd, nil)
		}
		if err != nil {
			// The host sees the stream end without frameDataEnd and reports it.
			return err
		}
	}
}

func (s *Server) writeFile(c *conn, req *request) error {
	p, err := checkPath(c, req.Path, true)
	if p == "" {
		return err
	}
	acc, err := lookupUser(s.etc, req.User)
	if err != nil {
		return replyErr(c, codeInvalid, "%v", err)
	}
	mode := req.Mode & 0o7777
	if mode == 0 {
		mode = 0o644
	}
	var f *os.File
	failedAt := p
	err = asUser(acc, func() error {
		if req.Parents {
			if err := mkdirAll(path.Dir(p), 0o755, acc); err != nil {
				failedAt = path.Dir(p)
				return err
			}
		}
		_, statErr := os.Lstat(p)
		existed := statErr == nil
		// O_NOFOLLOW on the last element: writing through a symlink is
		// refused rather than surprising (the link would still resolve
		// inside).
		var err error
		if f, err = os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|syscall.O_NOFOLLOW, 0o600); err != nil {
			return err
		}
		if acc.UID == 0 {
			if err := f.Chown(acc.UID, acc.GID); err != nil {
				return err
			}
		}
		// A file the user made gets the mode asked for (or 0644); one
		// that was there keeps its own unless a mode is given.
		if !existed || req.Mode != 0 {
			if err := syscall.Fchmod(int(f.Fd()), mode); err != nil { // raw bits: umask-free, setuid and sticky kept
				return err
			}
		}
		return nil
	})
	if f != nil {
		defer f.Close()
	}
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return replyErr(c, codeInvalid, "%s: is a symbolic link", p)
		}
		return fileErr(c, failedAt, err)
	}
	if err := c.sendJSON(frameReply, reply{}); err != nil {
		return err
	}
	var n int64
	var werr error
	for {
		typ, b, err := c.recv(nil)
		if err != nil {
			return err // host gone mid-upload; the partial file stays, as with any interrupted write
		}
		if typ == frameDataEnd {
			break
		}
		if typ != frameData {
			return replyErr(c, codeInvalid, "protocol: unexpected frame %q during upload", typ)
		}
		if werr != nil {
			continue // drain, then report
		}
		m, err := f.Write(b)
		n += int64(m)
		werr = err
	}
	if werr != nil {
		return fileErr(c, p, werr)
	}
	if err := f.Close(); err != nil {
		return fileErr(c, p, err)
	}
	return c.sendJSON(frameReply, reply{N: n})
}

func (s *Server) fileOp(c *conn, req *request) error {
	change := req.Op != "list" && req.Op != "stat"
	p, err := checkPath(c, req.Path, change)
	if p == "" {
		return err
	}
	acc, err := lookupUser(s.etc, req.User)
	if err != nil {
		return replyErr(c, codeInvalid, "%v", err)
	}
	var rep reply
	failedAt := p
	err = asUser(acc, func() error {
		var err error
		rep, failedAt, err = s.fileOpAs(req, p, acc)
		return err
	})
	if err != nil {
		var ve validationError
		if errors.As(err, &ve) {
			return replyErr(c, codeInvalid, "%s", ve)
		}
		return fileErr(c, failedAt, err)
	}
	return c.sendJSON(frameReply, rep)
}

// validationError is a refusal to be reported as it is.
type validationError string

func (e validationError) Error() string { return string(e) }

// fileOpAs does one of the small file operations, already acting as acc.
// It returns the reply, or the path the error is about and the error.
func (s *Server) fileOpAs(req *request, p string, acc account) (reply, string, error) {
	switch req.Op {
	case "stat":
		st, err := os.Lstat(p)
		if err != nil {
			return reply{}, p, err
		}
		fi := infoOf(p, st)
		return reply{File: &fi}, "", nil
	case "list":
		depth := req.Depth
		if depth <= 0 {
			depth = 1
		}
		if depth > maxListDepth {
			return reply{}, p, validationError(fmt.Sprintf("depth %d: at most %d", req.Depth, maxListDepth))
		}
		var out []fileInfo
		if err := listDir(p, depth, &out); err != nil {
			return reply{}, p, err
		}
		if out == nil {
			out = []fileInfo{}
		}
		return reply{Files: out}, "", nil
	case "mkdir":
		mode := req.Mode & 0o7777
		if mode == 0 {
			mode = 0o755
		}
		var err error
		if req.Parents {
			err = mkdirAll(p, mode, acc)
		} else {
			err = mkdirOwned(p, mode, acc)
		}
		return reply{}, p, err
	case "remove":
		st, err := os.Lstat(p)
		if err != nil {
			return reply{}, p, err
		}
		if st.IsDir() && req.Recursive {
			err = os.RemoveAll(p)
		} else {
			err = os.Remove(p)
		}
		return reply{}, p, err
	case "rename":
		to, err := fsys.CleanPath(req.To)
		if err != nil {
			return reply{}, req.To, validationError(err.Error())
		}
		if roErr := readOnlyArea(to); roErr != "" {
			return reply{}, to, validationError(roErr)
		}
		if to == p || strings.HasPrefix(to, p+"/") {
			return reply{}, p, validationError(fmt.Sprintf("cannot move %s into itself (%s)", p, to))
		}
		return reply{}, p, os.Rename(p, to)
	}
	return reply{}, p, validationError(fmt.Sprintf("unknown operation %q", req.Op))
}

// maxListDepth bounds a recursive listing.
const maxListDepth = 64

// maxListEntries bounds how many entries one listing returns.
const maxListEntries = 100_000

// listDir appends the entries of dir, and of its subdirectories down to
// depth levels, to out. Symlinks are listed, not followed.
func listDir(dir string, depth int, out *[]fileInfo) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if len(*out) >= maxListEntries {
			return validationError(fmt.Sprintf("%s: more than %d entries; list less deep", dir, maxListEntries))
		}
		st, err := e.Info()
		if err != nil {
			continue // removed while listing
		}
		p := path.Join(dir, e.Name())
		*out = append(*out, infoOf(p, st))
		if depth > 1 && st.IsDir() {
			if err := listDir(p, depth-1, out); err != nil && !errors.Is(err, fs.ErrPermission) {
				var ve validationError
				if errors.As(err, &ve) {
					return err
				}
			}
		}
	}
	return nil
}

func mkdirOwned(p string, mode uint32, acc account) error {
	if err := syscall.Mkdir(p, 0o700); err != nil {
		return &fs.PathError{Op: "mkdir", Path: p, Err: err}
	}
	if err := syscall.Chmod(p, mode); err != nil {
		return err
	}
	if acc.UID != 0 {
		return nil // made by the user (asUser): already theirs
	}
	return os.Lchown(p, acc.UID, acc.GID)
}

// mkdirAll is os.MkdirAll giving each new directory to acc.
func mkdirAll(p string, mode uint32, acc account) error {
	st, err := os.Stat(p)
	if err == nil {
		if st.IsDir() {
			return nil
		}
		return syscall.ENOTDIR
	}
	if parent := path.Dir(p); parent != p {
		if err := mkdirAll(parent, mode, acc); err != nil {
			return err
		}
	}
	if err := mkdirOwned(p, mode, acc); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return nil
}

func infoOf(p string, st fs.FileInfo) fileInfo {
	fi := fileInfo{Name: st.Name(), Path: p, Size: st.Size(), Mode: uint32(st.Mode().Perm()),
		ModTime: st.ModTime().UnixNano()}
	if p == "/" {
		fi.Name = "/"
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		fi.UID, fi.GID = int(sys.Uid), int(sys.Gid)
	}
	switch {
	case st.Mode().IsRegular():
		fi.Type = "file"
	case st.IsDir():
		fi.Type = "dir"
	case st.Mode()&fs.ModeSymlink != 0:
		fi.Type = "symlink"
		fi.Target, _ = os.Readlink(p) // a link removed meanwhile shows no target
	default:
		fi.Type = "other"
	}
	return fi
}
