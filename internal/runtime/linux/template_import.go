package linux

import (
	"archive/tar"
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/fsys"
	"github.com/sandpool/sandpool/internal/runtime"
)

// ImportTemplate registers a root filesystem as a template. Owners are
// shifted into the sandbox id range; device nodes are skipped (sandboxes
// get their own /dev); nothing in the source can write outside the new
// template, whatever its names and symlinks say.
func (r *Runtime) ImportTemplate(ctx context.Context, name string, src runtime.TemplateSource) (_ runtime.Template, retErr error) {
	if !templateName.MatchString(name) {
		return runtime.Template{}, errdefs.Userf(errdefs.ErrInvalid, "invalid template name %q: use a-z, 0-9, '.', '_' and '-', at most 63", name)
	}
	n := 0
	for _, set := range []bool{src.Dir != "", src.Tar != nil, len(src.Layers) > 0} {
		if set {
			n++
		}
	}
	if n != 1 {
		return runtime.Template{}, errdefs.Userf(errdefs.ErrInvalid, "give one of a directory, a tar stream and layers")
	}
	if _, err := os.Stat(r.templateDir(name)); err == nil {
		return runtime.Template{}, errdefs.Userf(errdefs.ErrExists, "template %q already exists", name)
	}
	tmp, err := os.MkdirTemp(filepath.Join(r.cfg.DataDir, "templates"), ".import-")
	if err != nil {
		return runtime.Template{}, err
	}
	defer os.RemoveAll(tmp) // gone already after a successful rename
	if len(src.Layers) > 0 {
		if err := checkLayers(src.Layers); err != nil {
			return runtime.Template{}, err
		}
		meta := templateMeta{Name: name, CreatedAt: time.Now().UTC(), SizeBytes: src.SizeBytes, Origin: src.Origin,
			Layers: src.Layers, Defaults: src.Defaults}
		return r.placeTemplate(tmp, name, meta)
	}
	root := filepath.Join(tmp, "rootfs")
	if err := os.Mkdir(root, 0o755); err != nil {
		return runtime.Template{}, err
	}
	im, err := newImporter(root, int(r.cfg.UIDBase))
	if err != nil {
		return runtime.Template{}, err
	}
	defer im.close()
	if src.Dir != "" {
		err = im.fromDir(ctx, src.Dir)
	} else {
		err = im.fromTar(ctx, src.Tar)
	}
	if err != nil {
		return runtime.Template{}, err
	}
	if err := im.finish(); err != nil {
		return runtime.Template{}, fmt.Errorf("prepare template: %w", err)
	}
	meta := templateMeta{Name: name, CreatedAt: time.Now().UTC(), SizeBytes: im.size, Origin: src.Origin, Defaults: src.Defaults}
	return r.placeTemplate(tmp, name, meta)
}

// placeTemplate writes meta.json into tmp, a template made under a
// temporary name, and renames it into place: a crash before leaves a
// dot-directory the next Open removes, never a half template.
func (r *Runtime) placeTemplate(tmp, name string, meta templateMeta) (runtime.Template, error) {
	if err := writeJSON(filepath.Join(tmp, "meta.json"), meta); err != nil {
		return runtime.Template{}, err
	}
	if err := os.Rename(tmp, r.templateDir(name)); err != nil {
		if errors.Is(err, os.ErrExist) || errors.Is(err, syscall.ENOTEMPTY) {
			return runtime.Template{}, errdefs.Userf(errdefs.ErrExists, "template %q already exists", name)
		}
		return runtime.Template{}, err
	}
	r.forgetTemplate(name)
	layers := max(len(meta.Layers), 1)
	return runtime.Template{Name: name, CreatedAt: meta.CreatedAt, SizeBytes: meta.SizeBytes, Origin: meta.Origin,
		Layers: layers, Defaults: meta.Defaults}, nil
}

// importer writes entries under a root directory, resolving every path
// with RESOLVE_IN_ROOT so symlinks in the image stay inside it.
type importer struct {
	root    *os.File
	base    int
	size    int64
	links   int
	skipped int
}

func newImporter(root string, base int) (*importer, error) {
	f, err := os.OpenFile(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	return &importer{root: f, base: base}, nil
}

func (im *importer) close() { im.root.Close() }

// openDir opens (creating as needed) directory rel inside the root.
func (im *importer) openDir(rel string) (int, error) {
	how := &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	}
	fd, err := unix.Openat2(int(im.root.Fd()), "/"+rel, how)
	if err == nil || !errors.Is(err, unix.ENOENT) || rel == "" || rel == "." {
		return fd, err
	}
	parent, err := im.openDir(path.Dir(rel))
	if err != nil {
		return -1, err
	}
	err = unix.Mkdirat(parent, path.Base(rel), 0o755)
	if err == nil {
		_ = unix.Fchownat(parent, path.Base(rel), im.base, im.base, unix.AT_SYMLINK_NOFOLLOW) // best effort for implied dirs
	}
	unix.Close(parent)
	if err != nil && !errors.Is(err, unix.EEXIST) {
		return -1, err
	}
	// Once, not recursively: a dangling symlink in the way stays in the
	// way, and is reported.
	return unix.Openat2(int(im.root.Fd()), "/"+rel, how)
}

// shift maps an id from the image into the host range of sandbox ids.
func (im *importer) shift(id int) int {
	if id < 0 || id > 65535 {
		id = 65534
	}
	return im.base + id
}

// entry writes one entry. rel is clean and relative.
func (im *importer) entry(hdr *tar.Header, rel string, body io.Reader) error {
	base := path.Base(rel)
	if strings.HasPrefix(base, ".wh.") {
		im.skipped++ // layer whiteouts mean nothing in a flat root filesystem
		return nil
	}
	parent, err := im.openDir(path.Dir(rel))
	if err != nil {
		return fmt.Errorf("%s: %w", rel, err)
	}
	defer unix.Close(parent)
	mode := uint32(hdr.Mode & 0o7777)
	switch hdr.Typeflag {
	case tar.TypeDir:
		if err := unix.Mkdirat(parent, base, 0o700); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("%s: %w", rel, err)
		}
	case tar.TypeReg:
		_ = unix.Unlinkat(parent, base, 0) // replace an earlier entry of the same name
		fd, err := unix.Openat(parent, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		f := os.NewFile(uintptr(fd), rel)
		n, err := io.Copy(f, body)
		cerr := f.Close()
		im.size += n
		if err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		if cerr != nil {
			return fmt.Errorf("%s: %w", rel, cerr)
		}
	case tar.TypeSymlink:
		_ = unix.Unlinkat(parent, base, 0) // likewise
		if err := unix.Symlinkat(hdr.Linkname, parent, base); err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
	case tar.TypeLink:
		target, err := cleanRel(hdr.Linkname)
		if err != nil {
			return err
		}
		tfd, err := unix.Openat2(int(im.root.Fd()), "/"+target, &unix.OpenHow{
			Flags: unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC, Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
		})
		if err != nil {
			return fmt.Errorf("%s: hard link to %s: %w", rel, hdr.Linkname, err)
		}
		_ = unix.Unlinkat(parent, base, 0) // likewise
		err = unix.Linkat(tfd, "", parent, base, unix.AT_EMPTY_PATH)
		unix.Close(tfd)
		if err != nil {
			return fmt.Errorf("%s: hard link: %w", rel, err)
		}
		im.links++
		return nil // owner and mode are the target's
	default:
		im.skipped++ // devices, fifos: sandboxes get their own /dev
		return nil
	}
	if err := unix.Fchownat(parent, base, im.shift(hdr.Uid), im.shift(hdr.Gid), unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("%s: chown: %w", rel, err)
	}
	if hdr.Typeflag != tar.TypeSymlink {
		if err := unix.Fchmodat(parent, base, mode, 0); err != nil {
			return fmt.Errorf("%s: chmod: %w", rel, err)
		}
	}
	return nil
}

// cleanRel turns an archive name into a clean relative path, refusing
// names that climb out.
func cleanRel(name string) (string, error) {
	p, err := fsys.CleanPath("/" + strings.TrimPrefix(name, "/"))
	if err != nil {
		return "", errdefs.Userf(errdefs.ErrInvalid, "archive entry %q escapes the root", name)
	}
	return strings.TrimPrefix(p, "/"), nil
}

func (im *importer) fromTar(ctx context.Context, r io.Reader) error {
	tr := tar.NewReader(bufio.NewReaderSize(r, 1<<20))
	n := 0
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			if n == 0 {
				return errdefs.Userf(errdefs.ErrInvalid, "the archive is empty")
			}
			return nil
		}
		if err != nil {
			return errdefs.Userf(errdefs.ErrInvalid, "read archive: %v", err)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := cleanRel(hdr.Name)
		if err != nil {
			return err
		}
		n++
		if rel == "" {
			continue
		}
		if err := im.entry(hdr, rel, tr); err != nil {
			return err
		}
	}
}

func (im *importer) fromDir(ctx context.Context, dir string) error {
	if !filepath.IsAbs(dir) {
		return errdefs.Userf(errdefs.ErrInvalid, "template directory %q must be absolute", dir)
	}
	st, err := os.Stat(dir)
	if err != nil || !st.IsDir() {
		return errdefs.Userf(errdefs.ErrNotFound, "template directory %q does not exist", dir)
	}
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil || rel == "." {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		var link string
		if fi.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		}
		hdr, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			im.skipped++ // sockets and the like
			return nil
		}
		if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
			hdr.Uid, hdr.Gid = int(sys.Uid), int(sys.Gid)
		}
		var body io.Reader
		if fi.Mode().IsRegular() {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			defer f.Close()
			body = f
		}
		return im.entry(hdr, filepath.ToSlash(rel), body)
	})
}

// finish makes sure what every sandbox needs exists: mount points for
// /proc and /dev, a /tmp, and the `user` account with its home. Like the
// import, it resolves every path inside the root: the image's own symlinks
// (an /etc pointing at the host's, say) cannot redirect these writes.
func (im *importer) finish() error {
	for _, d := range []struct {
		name string
		mode uint32
	}{{"proc", 0o555}, {"dev", 0o755}, {"tmp", 0o1777}, {"etc", 0o755}, {"home", 0o755}} {
		if err := im.mkdirOwned("", d.name, d.mode, 0); err != nil {
			return err
		}
	}
	etc, err := im.openDir("etc")
	if err != nil {
		return err
	}
	defer unix.Close(etc)
	var b []byte
	if fd, err := unix.Openat(etc, "passwd", unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0); err == nil {
		f := os.NewFile(uintptr(fd), "passwd")
		b, err = io.ReadAll(io.LimitReader(f, 1<<20))
		f.Close()
		if err != nil {
			return err
		}
	} else if !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("etc/passwd: %w", err)
	}
	if !hasUser(string(b), "root") {
		b = append([]byte("root:x:0:0:root:/root:/bin/sh\n"), b...)
	}
	if !hasUser(string(b), "user") {
		if len(b) > 0 && b[len(b)-1] != '\n' {
			b = append(b, '\n')
		}
		b = append(b, "user:x:1000:1000:sandbox user:/home/user:/bin/sh\n"...)
		if err := im.mkdirOwned("home", "user", 0o750, 1000); err != nil {
			return err
		}
	}
	_ = unix.Unlinkat(etc, "passwd", 0) // replaced below; a symlink there is dropped, not followed
	fd, err := unix.Openat(etc, "passwd", unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return fmt.Errorf("etc/passwd: %w", err)
	}
	f := os.NewFile(uintptr(fd), "passwd")
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return unix.Fchownat(etc, "passwd", im.base, im.base, unix.AT_SYMLINK_NOFOLLOW)
}

// mkdirOwned creates dir/name inside the root unless something is there.
func (im *importer) mkdirOwned(dir, name string, mode uint32, owner int) error {
	parent, err := im.openDir(dir)
	if err != nil {
		return err
	}
	defer unix.Close(parent)
	if err := unix.Mkdirat(parent, name, 0o700); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return nil
		}
		return fmt.Errorf("%s: %w", path.Join(dir, name), err)
	}
	if err := unix.Fchownat(parent, name, im.base+owner, im.base+owner, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return err
	}
	return unix.Fchmodat(parent, name, mode, 0)
}

func hasUser(passwd, name string) bool {
	for _, line := range strings.Split(passwd, "\n") {
		if strings.HasPrefix(line, name+":") {
			return true
		}
	}
	return false
}
