package image

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"
)

// AddUpperDir stores the writable layer of an overlayfs mount made on
// layers of this store (a build step's RUN) as a new layer held in lease.
// Overlay whiteouts become OCI whiteouts and back, opaque directories stay
// opaque, owners are shifted back by the store's UIDBase and forward again,
// devices, fifos and sockets are left out. The layer is the tar DiffTar
// writes, so its diffID is that of an exportable layer.
func (s *Store) AddUpperDir(ctx context.Context, lease *Lease, dir string, maxBytes int64) (Layer, error) {
	pr, pw := io.Pipe()
	var g errgroup.Group
	g.Go(func() error {
		err := DiffTar(ctx, pw, dir, s.base)
		pw.CloseWithError(err)
		return err
	})
	l, err := s.AddLayer(ctx, lease, pr, maxBytes)
	pr.CloseWithError(errors.New("layer stored")) // unblocks the writer if AddLayer stopped early
	if werr := g.Wait(); err == nil && werr != nil {
		err = werr
	}
	return l, err
}

// DiffTar writes dir, an overlayfs upper dir whose owners are shifted by
// base, to w as an OCI layer tar.
func DiffTar(ctx context.Context, w io.Writer, dir string, base int) error {
	tw := tar.NewWriter(w)
	links := map[uint64]string{} // inode -> first name, for hard links
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
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
		rel = filepath.ToSlash(rel)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		mode := fi.Mode()
		switch {
		case mode&fs.ModeCharDevice != 0 && st.Rdev == 0:
			return tw.WriteHeader(&tar.Header{
				Name: whiteoutName(rel), Typeflag: tar.TypeReg, Mode: 0o600, ModTime: fi.ModTime(), Format: tar.FormatPAX,
			})
		case mode&(fs.ModeDevice|fs.ModeNamedPipe|fs.ModeSocket) != 0:
			return nil // sandboxes get their own /dev; nothing else survives a boot
		}
		hdr, err := tar.FileInfoHeader(fi, "")
		if err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		hdr.Name, hdr.Format = rel, tar.FormatPAX
		hdr.Uname, hdr.Gname = "", ""
		hdr.Uid, hdr.Gid = unshift(int(st.Uid), base), unshift(int(st.Gid), base)
		hdr.AccessTime, hdr.ChangeTime = fi.ModTime(), fi.ModTime()
		switch {
		case mode.IsDir():
			hdr.Name += "/"
			if err := tw.WriteHeader(hdr); err != nil {
				return err
			}
			if isOpaque(p) {
				return tw.WriteHeader(&tar.Header{
					Name: rel + "/" + opaqueMarker, Typeflag: tar.TypeReg, Mode: 0o600, ModTime: fi.ModTime(), Format: tar.FormatPAX,
				})
			}
			return nil
		case mode&fs.ModeSymlink != 0:
			if hdr.Linkname, err = os.Readlink(p); err != nil {
				return err
			}
			return tw.WriteHeader(hdr)
		case mode.IsRegular():
			if st.Nlink > 1 {
				if first, ok := links[st.Ino]; ok {
					hdr.Typeflag, hdr.Linkname, hdr.Size = tar.TypeLink, first, 0
					return tw.WriteHeader(hdr)
				}
				links[st.Ino] = rel
			}
			if err := tw.WriteHeader(hdr); err != nil {
				return err
			}
			fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err != nil {
				return err
			}
			f := os.NewFile(uintptr(fd), rel)
			_, err = io.Copy(tw, f)
			f.Close()
			return err
		}
		return nil
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

func whiteoutName(rel string) string {
	dir, name := filepath.Split(rel)
	return dir + whiteoutPrefix + name
}

// unshift maps a host id of the sandbox range back to the sandbox's own;
// ids outside it (files overlayfs made as host root) become nobody, or
// root for host root itself.
func unshift(id, base int) int {
	switch {
	case id >= base && id < base+maxID:
		return id - base
	case id == 0:
		return 0
	default:
		return 65534
	}
}

// Extract unpacks an uncompressed tar stream into dir (which must exist)
// with the layer unpacker's rules: nothing escapes dir, owners are shifted
// by base, at most maxBytes of content. It is for build contexts uploaded
// as a tar; whiteout entries are applied as overlay whiteouts.
func Extract(ctx context.Context, dir string, r io.Reader, base int, maxBytes int64) error {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBytes
	}
	_, err := unpackLayer(ctx, dir, r, base, newBudget(maxBytes))
	return err
}

// Discard releases lease and removes those of diffIDs (layers a failed
// build made) that no owner names and no other lease holds.
func (s *Store) Discard(lease *Lease, diffIDs []string) { s.discard(lease, diffIDs) }
