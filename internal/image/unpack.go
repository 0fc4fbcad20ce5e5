package image

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// How OCI layers mark deletions, and how overlayfs reads them in a lower
// layer: a whiteout is a 0/0 character device, an opaque directory carries
// the trusted.overlay.opaque xattr.
const (
	whiteoutPrefix = ".wh."
	whiteoutMeta   = ".wh..wh."
	opaqueMarker   = ".wh..wh..opq"
	opaqueXattr    = "trusted.overlay.opaque"
	// maxID bounds the uids and gids a layer may use: a sandbox's user
	// namespace maps 65536 ids.
	maxID = 1 << 16
	// entryCost is what each entry counts against the size budget on top
	// of its content, so a layer of millions of empty files is refused too.
	entryCost = 512
)

// budget is what is left of an image's size limit, shared by its layers.
type budget struct {
	limit, left int64
}

func newBudget(limit int64) *budget { return &budget{limit: limit, left: limit} }

func (b *budget) take(n int64) error {
	if n > b.left {
		return invalidf("the image is larger than the limit of %d bytes", b.limit)
	}
	b.left -= n
	return nil
}

// layerStats counts what an unpack wrote.
type layerStats struct {
	Bytes   int64 // file content
	Entries int
	Skipped int // devices, fifos, sockets: sandboxes get their own /dev
}

// unpacker writes one layer's tar stream into an empty directory laid out
// as an overlayfs lower layer. Every path is resolved beneath the layer's
// root with no symlink followed (openat2 RESOLVE_BENEATH |
// RESOLVE_NO_SYMLINKS), so a name or link in the layer can neither leave
// it nor write through a symlink, whatever order its entries come in.
type unpacker struct {
	root   int // O_DIRECTORY descriptor of the layer's root
	base   int // added to every uid and gid
	budget *budget
	stats  layerStats
	dirs   []dirTime
	buf    []byte
}

type dirTime struct {
	rel   string
	mtime time.Time
}

// unpackLayer reads a whole uncompressed layer tar from r into dir, which
// must exist and be empty. Owners are shifted by base; content counts
// against b. The caller removes dir on error.
func unpackLayer(ctx context.Context, dir string, r io.Reader, base int, b *budget) (layerStats, error) {
	root, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return layerStats{}, fmt.Errorf("open layer dir: %w", err)
	}
	defer unix.Close(root)
	u := &unpacker{root: root, base: base, budget: b, buf: make([]byte, 256<<10)}
	// The root of the top-most layer is the root of the sandbox: it must
	// not keep the private mode of a temporary directory.
	if err := u.setAttrs(root, base, base, 0o755); err != nil {
		return layerStats{}, err
	}
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return u.stats, corrupt(err)
		}
		if err := ctx.Err(); err != nil {
			return u.stats, err
		}
		if err := u.entry(hdr, tr); err != nil {
			return u.stats, err
		}
	}
	return u.stats, u.dirTimes()
}

// corrupt reports a tar or decompression error as bad input, unless it
// came from reading the source (a network failure is not the image's).
func corrupt(err error) error {
	var se *sourceError
	if errors.As(err, &se) {
		return se.err
	}
	var ie *Error
	if errors.As(err, &ie) {
		return err
	}
	return invalidf("corrupt or truncated layer: %v", err)
}

// cleanName turns a name in a layer into a clean relative path ("." for
// the root), refusing any ".." component: a layer names nothing outside
// itself.
func cleanName(name string) (string, error) {
	parts := strings.Split(name, "/")
	out := parts[:0]
	for _, p := range parts {
		switch p {
		case "", ".":
		case "..":
			return "", invalidf("layer entry %q: path traversal (..) is not allowed", name)
		default:
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		return ".", nil
	}
	return strings.Join(out, "/"), nil
}

func (u *unpacker) entry(hdr *tar.Header, body io.Reader) error {
	rel, err := cleanName(hdr.Name)
	if err != nil {
		return err
	}
	if err := u.budget.take(entryCost); err != nil {
		return err
	}
	u.stats.Entries++
	if rel == "." {
		if hdr.Typeflag != tar.TypeDir {
			return invalidf("layer entry %q: the root must be a directory", hdr.Name)
		}
		uid, gid, err := u.ids(hdr, rel)
		if err != nil {
			return err
		}
		u.dirs = append(u.dirs, dirTime{rel, hdr.ModTime})
		return u.setAttrs(u.root, uid, gid, uint32(hdr.Mode&0o7777))
	}
	dir, name := path.Split(rel)
	if strings.HasPrefix(name, whiteoutPrefix) {
		return u.whiteout(dir, name, rel)
	}
	parent, err := u.openDir(dir, true)
	if err != nil {
		return fmt.Errorf("layer entry %q: %w", hdr.Name, err)
	}
	defer unix.Close(parent)
	switch hdr.Typeflag {
	case tar.TypeDir:
		return u.dir(parent, name, rel, hdr)
	case tar.TypeReg, tar.TypeRegA, tar.TypeGNUSparse:
		return u.file(parent, name, rel, hdr, body)
	case tar.TypeSymlink:
		return u.symlink(parent, name, rel, hdr)
	case tar.TypeLink:
		return u.hardlink(parent, name, rel, hdr)
	default:
		u.stats.Skipped++ // devices, fifos; pax and GNU metadata
		return nil
	}
}

// ids shifts the entry's owner into the sandbox range.
func (u *unpacker) ids(hdr *tar.Header, rel string) (int, int, error) {
	if hdr.Uid < 0 || hdr.Uid >= maxID || hdr.Gid < 0 || hdr.Gid >= maxID {
		return 0, 0, invalidf("layer entry %q: owner %d:%d is out of range (ids must be below %d)", rel, hdr.Uid, hdr.Gid, maxID)
	}
	return u.base + hdr.Uid, u.base + hdr.Gid, nil
}

// openDir opens directory rel beneath the root, refusing symlinks on the
// way; with create, missing directories are made (root-owned, 0755), as
// tar implies.
func (u *unpacker) openDir(rel string, create bool) (int, error) {
	rel = strings.TrimSuffix(rel, "/")
	if rel == "" {
		rel = "."
	}
	how := &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	}
	for try := 0; ; try++ {
		fd, err := unix.Openat2(u.root, rel, how)
		switch {
		case err == nil:
			return fd, nil
		case errors.Is(err, unix.ELOOP), errors.Is(err, unix.ENOTDIR):
			return -1, u.notDir(rel)
		case !errors.Is(err, unix.ENOENT) || !create || rel == "." || try > 0:
			return -1, fmt.Errorf("%s: %w", rel, err)
		}
		parent, err := u.openDir(path.Dir(rel), true)
		if err != nil {
			return -1, err
		}
		name := path.Base(rel)
		err = unix.Mkdirat(parent, name, 0o755)
		if err == nil {
			err = u.fixDir(parent, name, u.base, u.base, 0o755)
		} else if errors.Is(err, unix.EEXIST) {
			err = nil
		}
		unix.Close(parent)
		if err != nil {
			return -1, fmt.Errorf("%s: %w", rel, err)
		}
	}
}

// notDir says which component of rel is in the way: a symlink (the layer
// would write through it) or something else that is not a directory.
func (u *unpacker) notDir(rel string) error {
	parts := strings.Split(rel, "/")
	for i := range parts {
		prefix := strings.Join(parts[:i+1], "/")
		var st unix.Stat_t
		// Each shorter prefix is a real directory, so nothing is
		// followed on the way.
		if err := unix.Fstatat(u.root, prefix, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			break
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			continue
		case unix.S_IFLNK:
			return invalidf("%s: writes through a symbolic link (%s)", rel, prefix)
		default:
			return invalidf("%s: %s is not a directory", rel, prefix)
		}
	}
	return invalidf("%s: not a directory", rel)
}

// clear removes what is at parent/name, unless it is a directory and
// keepDir. It reports whether a directory was kept.
func (u *unpacker) clear(parent int, name string, keepDir bool) (bool, error) {
	var st unix.Stat_t
	if err := unix.Fstatat(parent, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return false, nil
		}
		return false, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return false, unix.Unlinkat(parent, name, 0)
	}
	if keepDir {
		return true, nil
	}
	// RemoveAll never follows a symlink below its argument, and the
	// argument is reached through our own descriptor.
	return false, os.RemoveAll(fdPath(parent) + "/" + name)
}

func (u *unpacker) dir(parent int, name, rel string, hdr *tar.Header) error {
	uid, gid, err := u.ids(hdr, rel)
	if err != nil {
		return err
	}
	kept, err := u.clear(parent, name, true)
	if err != nil {
		return fmt.Errorf("%s: %w", rel, err)
	}
	if !kept {
		if err := unix.Mkdirat(parent, name, 0o700); err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
	}
	u.dirs = append(u.dirs, dirTime{rel, hdr.ModTime})
	return u.fixDir(parent, name, uid, gid, uint32(hdr.Mode&0o7777))
}

// fixDir sets the owner and mode of directory parent/name.
func (u *unpacker) fixDir(parent int, name string, uid, gid int, mode uint32) error {
	fd, err := unix.Openat(parent, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return u.setAttrs(fd, uid, gid, mode)
}

// setAttrs sets owner then mode (chown clears setuid bits, so mode last).
func (u *unpacker) setAttrs(fd, uid, gid int, mode uint32) error {
	if err := unix.Fchown(fd, uid, gid); err != nil {
		return fmt.Errorf("chown: %w", err)
	}
	if err := unix.Fchmod(fd, mode); err != nil {
		return fmt.Errorf("chmod: %w", err)
	}
	return nil
}

func (u *unpacker) file(parent int, name, rel string, hdr *tar.Header, body io.Reader) error {
	uid, gid, err := u.ids(hdr, rel)
	if err != nil {
		return err
	}
	if hdr.Size < 0 {
		return invalidf("layer entry %q: negative size", rel)
	}
	if err := u.budget.take(hdr.Size); err != nil {
		return err
	}
	if _, err := u.clear(parent, name, false); err != nil {
		return fmt.Errorf("%s: %w", rel, err)
	}
	fd, err := unix.Openat(parent, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("%s: %w", rel, err)
	}
	f := os.NewFile(uintptr(fd), rel)
	defer f.Close() // a second Close after the checked one below is harmless
	n, err := io.CopyBuffer(writerOnly{f}, body, u.buf)
	u.stats.Bytes += n
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) && pe.Path == rel {
			return fmt.Errorf("write %s: %w", rel, err)
		}
		return corrupt(err)
	}
	if err := u.setAttrs(fd, uid, gid, uint32(hdr.Mode&0o7777)); err != nil {
		return fmt.Errorf("%s: %w", rel, err)
	}
	if err := unix.Futimes(fd, timevals(hdr.ModTime)); err != nil {
		return fmt.Errorf("%s: %w", rel, err)
	}
	return f.Close()
}

func (u *unpacker) symlink(parent int, name, rel string, hdr *tar.Header) error {
	uid, gid, err := u.ids(hdr, rel)
	if err != nil {
		return err
	}
	if hdr.Linkname == "" {
		return invalidf("layer entry %q: symbolic link with an empty target", rel)
	}
	if _, err := u.clear(parent, name, false); err != nil {
		return fmt.Errorf("%s: %w", rel, err)
	}
	// Stored as is: the target is resolved inside the sandbox's root.
	if err := unix.Symlinkat(hdr.Linkname, parent, name); err != nil {
		return fmt.Errorf("%s: %w", rel, err)
	}
	if err := unix.Fchownat(parent, name, uid, gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("%s: chown: %w", rel, err)
	}
	ts := []unix.Timespec{unix.NsecToTimespec(hdr.ModTime.UnixNano()), unix.NsecToTimespec(hdr.ModTime.UnixNano())}
	if err := unix.UtimesNanoAt(parent, name, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("%s: %w", rel, err)
	}
	return nil
}

// hardlink links rel to an entry earlier in the same layer; a link to
// anything else (a lower layer, the host) is refused.
func (u *unpacker) hardlink(parent int, name, rel string, hdr *tar.Header) error {
	target, err := cleanName(hdr.Linkname)
	if err != nil {
		return invalidf("layer entry %q: hard link target %q: path traversal (..) is not allowed", rel, hdr.Linkname)
	}
	if target == "." || target == rel {
		return invalidf("layer entry %q: hard link to %q", rel, hdr.Linkname)
	}
	tdir, tname := path.Split(target)
	tparent, err := u.openDir(tdir, false)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return invalidf("layer entry %q: hard link to %q, which is not in this layer", rel, hdr.Linkname)
		}
		return fmt.Errorf("layer entry %q: hard link: %w", rel, err)
	}
	defer unix.Close(tparent)
	var st unix.Stat_t
	if err := unix.Fstatat(tparent, tname, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return invalidf("layer entry %q: hard link to %q, which is not in this layer", rel, hdr.Linkname)
		}
		return fmt.Errorf("layer entry %q: %w", rel, err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return invalidf("layer entry %q: hard link to directory %q", rel, hdr.Linkname)
	}
	if _, err := u.clear(parent, name, false); err != nil {
		return fmt.Errorf("%s: %w", rel, err)
	}
	// Flags 0: a link to a symlink links the symlink, never its target.
	if err := unix.Linkat(tparent, tname, parent, name, 0); err != nil {
		return fmt.Errorf("layer entry %q: hard link: %w", rel, err)
	}
	return nil
}

// whiteout turns an OCI whiteout entry into its overlayfs form.
func (u *unpacker) whiteout(dir, name, rel string) error {
	parent, err := u.openDir(dir, true)
	if err != nil {
		return fmt.Errorf("layer entry %q: %w", rel, err)
	}
	defer unix.Close(parent)
	switch {
	case name == opaqueMarker:
		// Everything below in lower layers is hidden; what this layer
		// itself puts in the directory stays.
		if err := unix.Fsetxattr(parent, opaqueXattr, []byte("y"), 0); err != nil {
			return fmt.Errorf("%s: mark opaque: %w", rel, err)
		}
		return nil
	case strings.HasPrefix(name, whiteoutMeta):
		u.stats.Skipped++ // aufs bookkeeping (.wh..wh.plnk and the like)
		return nil
	}
	target := strings.TrimPrefix(name, whiteoutPrefix)
	if target == "" || target == "." || target == ".." {
		return invalidf("layer entry %q: bad whiteout", rel)
	}
	if _, err := u.clear(parent, target, false); err != nil {
		return fmt.Errorf("%s: %w", rel, err)
	}
	if err := unix.Mknodat(parent, target, unix.S_IFCHR, 0); err != nil {
		return fmt.Errorf("%s: whiteout: %w", rel, err)
	}
	return nil
}

// dirTimes sets directory mtimes once nothing more is written in them.
func (u *unpacker) dirTimes() error {
	for i := len(u.dirs) - 1; i >= 0; i-- {
		d := u.dirs[i]
		fd, err := u.openDir(d.rel, false)
		if err != nil {
			continue // replaced by a later entry
		}
		err = unix.Futimes(fd, timevals(d.mtime))
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("%s: %w", d.rel, err)
		}
	}
	return nil
}

func timevals(t time.Time) []unix.Timeval {
	tv := unix.NsecToTimeval(t.UnixNano())
	return []unix.Timeval{tv, tv}
}

func fdPath(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }

// writerOnly hides *os.File's ReadFrom so io.CopyBuffer uses our buffer.
type writerOnly struct{ io.Writer }
