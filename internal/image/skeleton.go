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

// MountPointLayer stores a layer with the mount points (/proc, /dev,
// /tmp) that img lacks, root-owned, and holds it in lease; ok is false
// when img has them all. Put it on top of the image's layers for a
// template. It is content-addressed like any layer: every image lacking
// the same ones shares it.
func (s *Store) MountPointLayer(ctx context.Context, lease *Lease, img Image) (l Layer, ok bool, err error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	stack := Stack(img.Dirs())
	for _, m := range mountPoints {
		_, err := stack.Stat("/" + m.name)
		if err == nil {
			continue
		}
		var ie *Error
		if !errors.Is(err, fs.ErrNotExist) && !errors.As(err, &ie) {
			return Layer{}, false, err
		}
		// Missing, or a dangling symlink: ours shadows it.
		hdr := &tar.Header{Name: m.name + "/", Typeflag: tar.TypeDir, Mode: m.mode, ModTime: time.Unix(0, 0), Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return Layer{}, false, err
		}
		ok = true
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
