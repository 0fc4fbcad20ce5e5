package agent

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
	"syscall"

	"github.com/sandpool/sandpool/internal/runtime"
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
	case errors.Is(err, syscall.EROFS), errors.Is(err, fs.ErrPermission):
		return replyErr(c, codeInvalid, "%s: read-only or not permitted", p)
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return replyErr(c, codeInvalid, "%s: disk limit reached", p)
	}
	return replyErr(c, codeInternal, "%s: %v", p, err)
}

// checkPath cleans p and, for a change, refuses the pseudo-filesystems.
func checkPath(c *conn, p string, change bool) (string, error) {
	clean, err := runtime.CleanPath(p)
	if err != nil {
		return "", replyErr(c, codeInvalid, "%v", err)
	}
	if change {
		for _, ro := range []string{"/proc", "/dev", "/sys"} {
			if clean == ro || strings.HasPrefix(clean, ro+"/") {
				return "", replyErr(c, codeInvalid, "%s: %s cannot be changed through the files API", clean, ro)
			}
		}
		if clean == "/" {
			return "", replyErr(c, codeInvalid, "the root directory cannot be changed")
		}
	}
	return clean, nil
}

func (s *Server) readFile(c *conn, req *request) error {
	p, err := checkPath(c, req.Path, false)
	if p == "" {
		return err
	}
	f, err := os.Open(p)
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
	if req.Parents {
		if err := mkdirAll(path.Dir(p), 0o755, acc); err != nil {
			return fileErr(c, path.Dir(p), err)
		}
	}
	// O_NOFOLLOW on the last element: writing through a symlink is refused
	// rather than surprising (the link would still resolve inside).
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return replyErr(c, codeInvalid, "%s: is a symbolic link", p)
		}
		return fileErr(c, p, err)
	}
	defer f.Close()
	if err := f.Chown(acc.UID, acc.GID); err != nil {
		return fileErr(c, p, err)
	}
	if err := syscall.Fchmod(int(f.Fd()), mode); err != nil { // raw bits: umask-free, setuid and sticky kept
		return fileErr(c, p, err)
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
	switch req.Op {
	case "stat":
		st, err := os.Lstat(p)
		if err != nil {
			return fileErr(c, p, err)
		}
		fi := infoOf(p, st)
		return c.sendJSON(frameReply, reply{File: &fi})
	case "list":
		ents, err := os.ReadDir(p)
		if err != nil {
			return fileErr(c, p, err)
		}
		out := make([]fileInfo, 0, len(ents))
		for _, e := range ents {
			st, err := e.Info()
			if err != nil {
				continue // removed while listing
			}
			out = append(out, infoOf(path.Join(p, e.Name()), st))
		}
		return c.sendJSON(frameReply, reply{Files: out})
	case "mkdir":
		acc, err := lookupUser(s.etc, req.User)
		if err != nil {
			return replyErr(c, codeInvalid, "%v", err)
		}
		mode := req.Mode & 0o7777
		if mode == 0 {
			mode = 0o755
		}
		if req.Parents {
			err = mkdirAll(p, mode, acc)
		} else {
			err = mkdirOwned(p, mode, acc)
		}
		if err != nil {
			return fileErr(c, p, err)
		}
		return c.sendJSON(frameReply, reply{})
	case "remove":
		st, err := os.Lstat(p)
		if err != nil {
			return fileErr(c, p, err)
		}
		if st.IsDir() && req.Recursive {
			err = os.RemoveAll(p)
		} else {
			err = os.Remove(p)
		}
		if err != nil {
			return fileErr(c, p, err)
		}
		return c.sendJSON(frameReply, reply{})
	case "rename":
		to, err := checkPath(c, req.To, true)
		if to == "" {
			return err
		}
		if err := os.Rename(p, to); err != nil {
			return fileErr(c, p, err)
		}
		return c.sendJSON(frameReply, reply{})
	}
	return replyErr(c, codeInvalid, "unknown operation %q", req.Op)
}

func mkdirOwned(p string, mode uint32, acc account) error {
	if err := syscall.Mkdir(p, 0o700); err != nil {
		return &fs.PathError{Op: "mkdir", Path: p, Err: err}
	}
	if err := syscall.Chmod(p, mode); err != nil {
		return err
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
