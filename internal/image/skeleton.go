package image

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io/fs"
	"time"
)

// mountPoints are the directories a sandbox's init mounts over: an image
// that lacks one cannot boot.
var mountPoints = []struct {
	name string
	mode int64
}{{"proc", 0o555}, {"dev", 0o755}, {"tmp", 0o1777}}

// ResolvConf is what a sandbox of an image that brings no resolver
// configuration (most images: docker writes one at run time) gets as its
// /etc/resolv.conf: sandpool's gateway, whose DNS answers as the sandbox's
// network policy allows (any address on port 53 reaches it; a loopback one
// would stay inside the sandbox).
const ResolvConf = "nameserver 100.64.253.1\n"

// MountPointLayer stores a layer with what img lacks to boot as a
// sandbox: the mount points (/proc, /dev, /tmp), root-owned, and an
// /etc/resolv.conf (ResolvConf) where img has none or an empty one; it
// holds the layer in lease. ok is false when img lacks nothing. Put it on
// top of the image's layers for a template (and a build step: it is a
// lower layer there, so nothing of it reaches a built layer). It is
// content-addressed like any layer: every image lacking the same shares
// it.
func (s *Store) MountPointLayer(ctx context.Context, lease *Lease, img Image) (l Layer, ok bool, err error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	stack := Stack(img.Dirs())
	// missing reports whether p is not in the image (or is a dangling
	// symlink, which ours shadows).
	missing := func(p string) (fs.FileInfo, bool, error) {
		fi, err := stack.Stat(p)
		if err == nil {
			return fi, false, nil
		}
		var ie *Error
		if !errors.Is(err, fs.ErrNotExist) && !errors.As(err, &ie) {
			return nil, false, err
		}
		return nil, true, nil
	}
	for _, m := range mountPoints {
		_, miss, err := missing("/" + m.name)
		if err != nil {
			return Layer{}, false, err
		}
		if !miss {
			continue
		}
		hdr := &tar.Header{Name: m.name + "/", Typeflag: tar.TypeDir, Mode: m.mode, ModTime: time.Unix(0, 0), Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return Layer{}, false, err
		}
		ok = true
	}
	etc, noEtc, err := missing("/etc")
	if err != nil {
		return Layer{}, false, err
	}
	if noEtc || etc.IsDir() {
		fi, miss, err := missing("/etc/resolv.conf")
		if err != nil {
			return Layer{}, false, err
		}
		if miss || (fi.Mode().IsRegular() && fi.Size() == 0) {
			if noEtc {
				if err := tw.WriteHeader(&tar.Header{Name: "etc/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: time.Unix(0, 0), Format: tar.FormatPAX}); err != nil {
					return Layer{}, false, err
				}
			}
			hdr := &tar.Header{Name: "etc/resolv.conf", Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(ResolvConf)),
				ModTime: time.Unix(0, 0), Format: tar.FormatPAX}
			if err := tw.WriteHeader(hdr); err != nil {
				return Layer{}, false, err
			}
			if _, err := tw.Write([]byte(ResolvConf)); err != nil {
				return Layer{}, false, err
			}
			ok = true
		}
	}
	if !ok {
		return Layer{}, false, nil
	}
	if err := tw.Close(); err != nil {
		return Layer{}, false, err
	}
	l, err = s.AddLayer(ctx, lease, &buf, 0)
	return l, err == nil, err
}
