package linux

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/sandpool/sandpool/internal/runtime"
)

// Snapshot writes the sandbox's writable layer to w as a tar stream, with
// owners as the sandbox sees them and overlayfs whiteouts kept (character
// devices 0:0, opaque directories as user.overlay.opaque). A running sandbox
// is frozen while the layer is read, so the copy is consistent.
func (r *Runtime) Snapshot(ctx context.Context, id string, w io.Writer) error {
	sb, err := r.lookup(id)
	if err != nil {
		return err
	}
	sb.life.Lock()
	defer sb.life.Unlock()
	if sb.getStatus() == runtime.StatusRunning {
		cg := r.cg.group(id)
		if err := cg.freeze(ctx); err != nil {
			return fmt.Errorf("snapshot %s: %w", id, err)
		}
		defer func() { _ = cg.thaw() }() // a thaw failure shows at the next exec as a state error
	}
	return r.tarLayer(ctx, filepath.Join(r.sandboxDir(id), "upper"), w)
}

func (r *Runtime) tarLayer(ctx context.Context, root string, w io.Writer) error {
	tw := tar.NewWriter(w)
	base := int(r.cfg.UIDBase)
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
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
			return err
		}
		hdr.Name = rel
		if fi.IsDir() {
			hdr.Name += "/"
		}
		hdr.Uname, hdr.Gname = "", ""
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			hdr.Uid, hdr.Gid = int(st.Uid)-base, int(st.Gid)-base
			if hdr.Uid < 0 || hdr.Uid > 65535 {
				hdr.Uid = 65534
			}
			if hdr.Gid < 0 || hdr.Gid > 65535 {
				hdr.Gid = 65534
			}
		}
		if fi.IsDir() {
			buf := make([]byte, 8)
			if n, err := unix.Lgetxattr(p, "user.overlay.opaque", buf); err == nil {
				hdr.PAXRecords = map[string]string{"SCHILY.xattr.user.overlay.opaque": string(buf[:n])}
			}
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if fi.Mode().IsRegular() {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			_, err = io.Copy(tw, f)
			f.Close()
			return err
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	return tw.Close()
}
