package image

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Stack is layer directories, lowest first, read as overlayfs would merge
// them: whiteouts hide, opaque directories stop the look below, the
// top-most entry wins. It reads the image's own files (its /etc/passwd)
// without mounting anything.
type Stack []string

// maxHops bounds symlink resolution, as the kernel's 40.
const maxHops = 40

// find reports the top-most layer that shows rel (clean, relative; its
// ancestors are directories in the merged tree), and its stat.
func (s Stack) find(rel string) (int, unix.Stat_t, bool, error) {
	var ancestors []string
	for d := path.Dir(rel); d != "."; d = path.Dir(d) {
		ancestors = append([]string{d}, ancestors...)
	}
layers:
	for i := len(s) - 1; i >= 0; i-- {
		opaque := false
		for _, a := range ancestors {
			var st unix.Stat_t
			if err := unix.Lstat(filepath.Join(s[i], a), &st); err != nil {
				if errors.Is(err, unix.ENOENT) {
					continue layers // nothing of this subtree here
				}
				return 0, st, false, err
			}
			if st.Mode&unix.S_IFMT != unix.S_IFDIR {
				// A whiteout, or a non-directory hidden by the directory
				// above: nothing further down shows.
				return 0, st, false, nil
			}
			if isOpaque(filepath.Join(s[i], a)) {
				opaque = true
			}
		}
		var st unix.Stat_t
		err := unix.Lstat(filepath.Join(s[i], rel), &st)
		switch {
		case err == nil && isWhiteout(st):
			return 0, st, false, nil
		case err == nil:
			return i, st, true, nil
		case !errors.Is(err, unix.ENOENT):
			return 0, st, false, err
		}
		if opaque {
			return 0, st, false, nil
		}
	}
	return 0, unix.Stat_t{}, false, nil
}

func isWhiteout(st unix.Stat_t) bool {
	return st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == 0
}

func isOpaque(dir string) bool {
	buf := make([]byte, 4)
	n, err := unix.Lgetxattr(dir, opaqueXattr, buf)
	return err == nil && n == 1 && buf[0] == 'y'
}

// Resolve returns p (absolute, in the image) with every symlink on the way
// resolved inside the image's root, as a path in the image. The last
// component need not exist; follow says whether a symlink there is
// resolved too.
func (s Stack) Resolve(p string, follow bool) (string, error) {
	rest := splitPath(p)
	var cur []string
	hops := 0
	for len(rest) > 0 {
		c := rest[0]
		rest = rest[1:]
		if c == ".." {
			if len(cur) > 0 {
				cur = cur[:len(cur)-1]
			}
			continue
		}
		next := strings.Join(append(cur[:len(cur):len(cur)], c), "/")
		i, st, ok, err := s.find(next)
		if err != nil {
			return "", err
		}
		if !ok {
			cur = append(cur, c)
			if len(rest) > 0 {
				// Missing directories are made by whoever writes there.
				continue
			}
			break
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFLNK:
			if len(rest) == 0 && !follow {
				cur = append(cur, c)
				continue
			}
			if hops++; hops > maxHops {
				return "", invalidf("%s: too many levels of symbolic links", p)
			}
			target, err := os.Readlink(filepath.Join(s[i], next))
			if err != nil {
				return "", err
			}
			if strings.HasPrefix(target, "/") {
				cur = nil
			}
			rest = append(splitPath(target), rest...)
		case unix.S_IFDIR:
			cur = append(cur, c)
		default:
			if len(rest) > 0 {
				return "", invalidf("%s: %s is not a directory", p, "/"+next)
			}
			cur = append(cur, c)
		}
	}
	return "/" + strings.Join(cur, "/"), nil
}

func splitPath(p string) []string {
	var out []string
	for _, c := range strings.Split(p, "/") {
		if c != "" && c != "." {
			out = append(out, c)
		}
	}
	return out
}

// Stat reports what the merged tree shows at p, following symlinks;
// fs.ErrNotExist if nothing.
func (s Stack) Stat(p string) (fs.FileInfo, error) {
	real, err := s.Resolve(p, true)
	if err != nil {
		return nil, err
	}
	rel := strings.TrimPrefix(real, "/")
	if rel == "" {
		if len(s) == 0 {
			return nil, fs.ErrNotExist
		}
		return os.Lstat(s[len(s)-1])
	}
	i, _, ok, err := s.find(rel)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("%s: %w", p, fs.ErrNotExist)
	}
	return os.Lstat(filepath.Join(s[i], rel))
}

// ReadFile reads file p of the merged tree, at most max bytes of it;
// fs.ErrNotExist if it is not there.
func (s Stack) ReadFile(p string, max int64) ([]byte, error) {
	real, err := s.Resolve(p, true)
	if err != nil {
		return nil, err
	}
	rel := strings.TrimPrefix(real, "/")
	i, st, ok, err := s.find(rel)
	if err != nil {
		return nil, err
	}
	if !ok || rel == "" {
		return nil, fmt.Errorf("%s: %w", p, fs.ErrNotExist)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, invalidf("%s is not a regular file", p)
	}
	root, err := unix.Open(s[i], unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(root)
	fd, err := unix.Openat2(root, rel, &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	f := os.NewFile(uintptr(fd), p)
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, max))
}
