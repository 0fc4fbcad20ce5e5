package dockerfile

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

	"github.com/sandpool/sandpool/internal/image"
)

// entry is one entry of a layer the builder writes itself (COPY, ADD,
// WORKDIR), with owners as the sandbox sees them.
type entry struct {
	name     string // relative to the root
	typ      byte
	mode     int64
	uid, gid int
	mtime    time.Time
	link     string
	src      string // regular files: where the content is read from
	size     int64
}

// addEntries stores entries as a new layer.
func (b *Builder) addEntries(ctx context.Context, lease *image.Lease, entries []entry, maxBytes int64) (image.Layer, error) {
	pr, pw := io.Pipe()
	var g errgroup.Group
	g.Go(func() error {
		err := writeEntries(pw, entries)
		pw.CloseWithError(err)
		return err
	})
	l, err := b.Store.AddLayer(ctx, lease, pr, maxBytes)
	pr.CloseWithError(errors.New("layer stored")) // unblocks the writer if AddLayer stopped early
	if werr := g.Wait(); err == nil && werr != nil {
		err = werr
	}
	return l, err
}

func writeEntries(w io.Writer, entries []entry) error {
	tw := tar.NewWriter(w)
	for _, e := range entries {
		hdr := &tar.Header{
			Name: e.name, Typeflag: e.typ, Mode: e.mode, Uid: e.uid, Gid: e.gid,
			ModTime: e.mtime, Linkname: e.link, Size: e.size, Format: tar.FormatPAX,
		}
		if e.typ == tar.TypeDir {
			hdr.Name += "/"
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if e.typ != tar.TypeReg {
			continue
		}
		f, err := openNoFollow(e.src)
		if err != nil {
			return err
		}
		n, err := io.Copy(tw, io.LimitReader(f, e.size))
		f.Close()
		if err != nil {
			return err
		}
		if n != e.size {
			return fmt.Errorf("%s changed while it was copied", e.src)
		}
	}
	return tw.Close()
}

func openNoFollow(p string) (*os.File, error) {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: p, Err: err}
	}
	return os.NewFile(uintptr(fd), p), nil
}

// parents returns directory entries for dir (a real path in the image,
// symlinks resolved) and each directory above it: as the image has them
// where they exist, so the new layer does not change their owner or mode,
// and owned by uid:gid, 0755, where they do not.
func parents(s image.Stack, dir string, base, uid, gid int) ([]entry, error) {
	var out []entry
	parts := strings.Split(strings.Trim(dir, "/"), "/")
	for i := range parts {
		if parts[0] == "" {
			break
		}
		p := "/" + strings.Join(parts[:i+1], "/")
		fi, err := s.Stat(p)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			out = append(out, entry{name: p[1:], typ: tar.TypeDir, mode: 0o755, uid: uid, gid: gid, mtime: time.Now()})
		case err != nil:
			return nil, err
		case !fi.IsDir():
			return nil, image.Invalidf("%s is not a directory in the image", p)
		default:
			st := fi.Sys().(*syscall.Stat_t)
			out = append(out, entry{
				name: p[1:], typ: tar.TypeDir, mode: int64(st.Mode & 0o7777),
				uid: int(st.Uid) - base, gid: int(st.Gid) - base, mtime: fi.ModTime(),
			})
		}
	}
	return out, nil
}

// workdir makes WORKDIR's directory if the image lacks it.
func (b *Builder) workdir(ctx context.Context, lease *image.Lease, st *state, dir string, opts Options) (Step, error) {
	instr := "WORKDIR " + dir
	s := st.stack()
	real, err := s.Resolve(dir, true)
	if err != nil {
		return Step{}, err
	}
	key := st.chain("WORKDIR", dir)
	fi, err := s.Stat(real)
	switch {
	case err == nil && fi.IsDir():
		return Step{Instruction: instr}, nil
	case err == nil:
		return Step{}, image.Invalidf("WORKDIR %s is not a directory in the image", dir)
	case !errors.Is(err, fs.ErrNotExist):
		return Step{}, err
	}
	if e, ok := b.cached(lease, key, opts); ok {
		return b.addCached(lease, st, e, instr)
	}
	entries, err := parents(s, real, b.Store.UIDBase(), st.config.UID, st.config.GID)
	if err != nil {
		return Step{}, err
	}
	l, err := b.addEntries(ctx, lease, entries, opts.MaxLayerBytes)
	if err != nil {
		return Step{}, err
	}
	if err := b.Store.CachePut(key, image.CacheEntry{Layer: l.DiffID}); err != nil {
		return Step{}, err
	}
	st.layers = append(st.layers, l)
	return Step{Instruction: instr, Layer: l.DiffID}, nil
}

// copy runs COPY and ADD of files of the build context.
func (b *Builder) copy(ctx context.Context, lease *image.Lease, st *state, in Instruction, opts Options) (Step, error) {
	bad := func(format string, args ...any) error { return errorf(in.Line, in.Cmd, format, args...) }
	lx := st.lex()
	words := in.Args
	if !in.JSON {
		var err error
		if words, err = rawWords(in.Args[0], st.escape); err != nil {
			return Step{}, bad("%v", err)
		}
	}
	expanded := make([]string, len(words))
	for i, w := range words {
		expand := lx.word
		if in.JSON {
			expand = lx.vars // variables expand in the JSON form too; quotes are JSON's
		}
		v, err := expand(w)
		if err != nil {
			return Step{}, bad("%v", err)
		}
		expanded[i] = v
	}
	srcs, dest := expanded[:len(expanded)-1], expanded[len(expanded)-1]

	uid, gid := 0, 0
	chown, hasChown := in.Flag("chown")
	if hasChown {
		c, err := lx.word(chown)
		if err != nil {
			return Step{}, bad("%v", err)
		}
		if uid, gid, err = image.ResolveUser(st.stack(), c); err != nil {
			return Step{}, bad("--chown=%s: %v", c, err)
		}
		if !strings.Contains(c, ":") {
			gid = uid // Docker: a user without a group gets the same number as group
		}
		chown = c
	}
	var chmod int64 = -1
	if m, ok := in.Flag("chmod"); ok {
		v, err := strconv.ParseUint(m, 8, 32)
		if err != nil || v > 0o7777 {
			return Step{}, bad("--chmod=%s: want an octal mode", m)
		}
		chmod = int64(v)
	}
	if opts.Context == "" {
		return Step{}, bad("no build context to copy from")
	}
	files, err := collect(opts.Context, srcs, in.Cmd == "ADD")
	if err != nil {
		return Step{}, bad("%v", err)
	}

	// Where to: relative to WORKDIR, through the image's symlinks.
	intoDir := strings.HasSuffix(dest, "/") || dest == "." || len(srcs) > 1 || len(files) != 1 || files[0].isDir
	if !path.IsAbs(dest) {
		wd := st.config.WorkingDir
		if wd == "" {
			wd = "/"
		}
		dest = path.Join(wd, dest)
	}
	s := st.stack()
	realDest, err := s.Resolve(dest, true)
	if err != nil {
		return Step{}, err
	}
	if fi, err := s.Stat(realDest); err == nil && fi.IsDir() {
		intoDir = true
	}
	destDir := realDest
	if !intoDir {
		destDir = path.Dir(realDest)
	}
	entries, err := parents(s, destDir, b.Store.UIDBase(), uid, gid)
	if err != nil {
		return Step{}, err
	}
	// A directory's contents copied into the destination give it the
	// --chown owner even where it exists, as Docker does; a destination
	// that only receives files keeps its owner.
	if intoDir && len(entries) > 0 && hasChown && slices.ContainsFunc(files, func(f source) bool { return f.isDir }) {
		last := &entries[len(entries)-1]
		last.uid, last.gid = uid, gid
	}
	for _, f := range files {
		for _, e := range f.entries {
			name := path.Join(strings.TrimPrefix(destDir, "/"), e.name)
			if !intoDir {
				name = strings.TrimPrefix(realDest, "/")
			}
			e.name = name
			e.uid, e.gid = uid, gid
			if chmod >= 0 && e.typ != tar.TypeSymlink {
				e.mode = chmod
			}
			entries = append(entries, e)
		}
	}
	sum, err := contentHash(entries)
	if err != nil {
		return Step{}, err
	}
	instr := in.Cmd + " " + strings.Join(expanded, " ")
	key := st.chain(in.Cmd, expanded, chown, chmod, sum)
	if e, ok := b.cached(lease, key, opts); ok {
		return b.addCached(lease, st, e, instr)
	}
	l, err := b.addEntries(ctx, lease, entries, opts.MaxLayerBytes)
	if err != nil {
		return Step{}, err
	}
	if err := b.Store.CachePut(key, image.CacheEntry{Layer: l.DiffID}); err != nil {
		return Step{}, err
	}
	st.layers = append(st.layers, l)
	return Step{Instruction: instr, Layer: l.DiffID}, nil
}

// source is what one COPY source names: a file or the contents of a
// directory, as entries named relative to where they go.
type source struct {
	isDir   bool
	entries []entry
}

// collect reads the sources named (relative to the context, wildcards
// allowed) with every path confined to the context: a symlink in the
// context cannot reach outside it.
func collect(contextDir string, srcs []string, add bool) ([]source, error) {
	root, err := unix.Open(contextDir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("build context: %w", err)
	}
	defer unix.Close(root)
	var out []source
	for _, src := range srcs {
		if add && (strings.Contains(src, "://") || strings.HasPrefix(src, "git@")) {
			return nil, fmt.Errorf("ADD of a URL (%s) is not supported: download it in a RUN step", src)
		}
		rel := strings.TrimPrefix(path.Clean("/"+src), "/")
		names := []string{rel}
		if strings.ContainsAny(rel, "*?[") {
			if names, err = glob(contextDir, rel); err != nil {
				return nil, err
			}
			if len(names) == 0 {
				return nil, fmt.Errorf("no file in the build context matches %s", src)
			}
		}
		for _, name := range names {
			s, err := readSource(root, name, add)
			if err != nil {
				return nil, err
			}
			out = append(out, s)
		}
	}
	return out, nil
}

// glob matches pattern against the context's paths (not following
// symlinked directories).
func glob(contextDir, pattern string) ([]string, error) {
	var out []string
	if _, err := path.Match(pattern, ""); err != nil {
		return nil, fmt.Errorf("bad pattern %q: %v", pattern, err)
	}
	err := filepath.WalkDir(contextDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(contextDir, p)
		rel = filepath.ToSlash(rel)
		if rel == "." {
			return nil
		}
		if ok, _ := path.Match(pattern, rel); ok {
			out = append(out, rel)
		}
		if d.IsDir() && strings.Count(rel, "/") >= strings.Count(pattern, "/") {
			return fs.SkipDir // deeper than the pattern reaches
		}
		return nil
	})
	return out, err
}

// readSource opens name in the context (symlinks resolved inside it) and
// lists what it copies.
func readSource(root int, name string, add bool) (source, error) {
	if name == "" {
		name = "."
	}
	fd, err := unix.Openat2(root, name, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return source{}, fmt.Errorf("file not found in build context: %s", name)
		}
		return source{}, fmt.Errorf("%s: %w", name, err)
	}
	defer unix.Close(fd)
	// Where it really is: inside the context, by RESOLVE_IN_ROOT.
	real, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	if err != nil {
		return source{}, err
	}
	fi, err := os.Lstat(real)
	if err != nil {
		return source{}, err
	}
	if !fi.IsDir() {
		e, ok, err := fileEntry(real, path.Base(name), fi)
		if err != nil || !ok {
			return source{}, err
		}
		if add {
			if kind := archiveKind(real); kind != "" {
				return source{}, fmt.Errorf("ADD of a local %s archive (%s) would extract it, which this builder does not do: COPY it and extract it in a RUN step", kind, name)
			}
		}
		return source{entries: []entry{e}}, nil
	}
	// A directory: its contents, symlinks inside copied as symlinks.
	src := source{isDir: true}
	err = filepath.WalkDir(real, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(real, p)
		if rel == "." {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		e, ok, err := fileEntry(p, filepath.ToSlash(rel), fi)
		if ok {
			src.entries = append(src.entries, e)
		}
		return err
	})
	return src, err
}

// fileEntry describes one file of the context; devices, fifos and
// sockets are skipped.
func fileEntry(p, name string, fi fs.FileInfo) (entry, bool, error) {
	e := entry{name: name, mode: int64(fi.Mode().Perm()), mtime: fi.ModTime(), src: p}
	if fi.Mode()&fs.ModeSetuid != 0 {
		e.mode |= 0o4000
	}
	if fi.Mode()&fs.ModeSetgid != 0 {
		e.mode |= 0o2000
	}
	if fi.Mode()&fs.ModeSticky != 0 {
		e.mode |= 0o1000
	}
	switch {
	case fi.Mode().IsRegular():
		e.typ, e.size = tar.TypeReg, fi.Size()
	case fi.IsDir():
		e.typ = tar.TypeDir
	case fi.Mode()&fs.ModeSymlink != 0:
		t, err := os.Readlink(p)
		if err != nil {
			return e, false, err
		}
		e.typ, e.link = tar.TypeSymlink, t
	default:
		return e, false, nil
	}
	return e, true, nil
}

// archiveKind tells a file Docker's ADD would extract.
func archiveKind(p string) string {
	f, err := openNoFollow(p)
	if err != nil {
		return ""
	}
	defer f.Close()
	b := make([]byte, 512)
	n, _ := io.ReadFull(f, b)
	b = b[:n]
	switch {
	case len(b) >= 2 && b[0] == 0x1f && b[1] == 0x8b:
		return "gzip"
	case len(b) >= 3 && string(b[:3]) == "BZh":
		return "bzip2"
	case len(b) >= 6 && string(b[:6]) == "\xfd7zXZ\x00":
		return "xz"
	case len(b) >= 4 && string(b[:4]) == "\x28\xb5\x2f\xfd":
		return "zstd"
	case len(b) >= 262 && string(b[257:262]) == "ustar":
		return "tar"
	}
	return ""
}

// contentHash hashes what a COPY writes: names, types, modes, owners,
// link targets and file contents (not mtimes), for the cache key.
func contentHash(entries []entry) (string, error) {
	h := sha256.New()
	for _, e := range entries {
		fmt.Fprintf(h, "%q %c %o %d:%d %q %d\n", e.name, e.typ, e.mode, e.uid, e.gid, e.link, e.size)
		if e.typ != tar.TypeReg {
			continue
		}
		f, err := openNoFollow(e.src)
		if err != nil {
			return "", err
		}
		_, err = io.Copy(h, f)
		f.Close()
		if err != nil {
			return "", err
		}
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}
