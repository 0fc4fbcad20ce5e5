package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/sandpool/sandpool/internal/fsys"
)

// Files returns the sandbox filesystem behind this agent.
func (cl *Client) Files() fsys.Files { return files{cl} }

type files struct{ cl *Client }

var _ fsys.Files = files{}

func toInfo(f fileInfo) fsys.Info {
	return fsys.Info{Name: f.Name, Path: f.Path, Type: f.Type, Size: f.Size, Mode: f.Mode,
		ModTime: time.Unix(0, f.ModTime).UTC(), Owner: f.UID, Group: f.GID, Target: f.Target}
}

func (fs files) Read(ctx context.Context, path string, opts fsys.Options) (io.ReadCloser, fsys.Info, error) {
	c, rep, stop, err := fs.cl.open(ctx, request{Op: "read", Path: path, User: opts.User})
	if err != nil {
		return nil, fsys.Info{}, err
	}
	if rep.File == nil {
		stop()
		c.Close()
		return nil, fsys.Info{}, errors.New("agent: read reply without file info")
	}
	return &fileReader{c: c, stop: stop, ctx: ctx}, toInfo(*rep.File), nil
}

// fileReader yields the data frames of a read.
type fileReader struct {
	c    *conn
	ctx  context.Context
	stop func() bool
	buf  []byte // unread part of the current frame
	done bool
	err  error
}

func (r *fileReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		if r.done {
			return 0, io.EOF
		}
		if r.err != nil {
			return 0, r.err
		}
		typ, b, err := r.c.recv(nil)
		switch {
		case err != nil:
			if r.ctx.Err() != nil {
				r.err = r.ctx.Err()
			} else {
				r.err = fmt.Errorf("%w: file stream cut short: %v", ErrUnreachable, err)
			}
		case typ == frameDataEnd:
			r.done = true
		case typ == frameData:
			r.buf = b
		default:
			r.err = fmt.Errorf("agent: unexpected frame %q in file stream", typ)
		}
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

func (r *fileReader) Close() error {
	r.stop()
	return r.c.Close()
}

func (fs files) Write(ctx context.Context, path string, src io.Reader, opts fsys.WriteOptions) (int64, error) {
	return fs.cl.upload(ctx, request{Op: "write", Path: path, Mode: opts.Mode, User: opts.User, Parents: opts.MakeParents}, src)
}

// WriteStdin copies r to a tracked process's stdin.
func (cl *Client) WriteStdin(ctx context.Context, procID string, r io.Reader, eof bool) error {
	_, err := cl.upload(ctx, request{Op: "stdin", Proc: procID, EOF: eof}, r)
	return err
}

// upload sends src as data frames after req and returns the count the
// agent reports.
func (cl *Client) upload(ctx context.Context, req request, src io.Reader) (int64, error) {
	c, _, stop, err := cl.open(ctx, req)
	if err != nil {
		return 0, err
	}
	defer func() { stop(); c.Close() }()

	// Send from a goroutine and read the reply here: if the agent fails
	// mid-way (disk limit), its error arrives while we are still sending.
	var srcErr error // the caller's reader failed: its error, not ours
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		buf := make([]byte, chunkSize)
		for {
			n, err := src.Read(buf)
			if n > 0 && c.send(frameData, buf[:n]) != nil {
				return // the agent hung up; its reply says why
			}
			if err == io.EOF {
				_ = c.send(frameDataEnd, nil) // likewise
				return
			}
			if err != nil {
				srcErr = fmt.Errorf("read upload: %w", err)
				c.Close() // abort: the agent must not take a truncated stream as complete
				return
			}
		}
	}()
	var rep reply
	rerr := c.recvJSON(frameReply, &rep)
	<-sent
	switch {
	case rerr == nil && rep.Error != nil:
		return 0, wireToErr(rep.Error)
	case rerr == nil:
		return rep.N, nil
	case srcErr != nil:
		return 0, srcErr
	case ctx.Err() != nil:
		return 0, ctx.Err()
	}
	return 0, fmt.Errorf("%w: upload cut short: %v", ErrUnreachable, rerr)
}

func (fs files) List(ctx context.Context, path string, opts fsys.ListOptions) ([]fsys.Info, error) {
	rep, err := fs.cl.call(ctx, request{Op: "list", Path: path, User: opts.User, Depth: opts.Depth})
	if err != nil {
		return nil, err
	}
	out := make([]fsys.Info, len(rep.Files))
	for i, f := range rep.Files {
		out[i] = toInfo(f)
	}
	return out, nil
}

func (fs files) Stat(ctx context.Context, path string, opts fsys.Options) (fsys.Info, error) {
	rep, err := fs.cl.call(ctx, request{Op: "stat", Path: path, User: opts.User})
	if err != nil {
		return fsys.Info{}, err
	}
	if rep.File == nil {
		return fsys.Info{}, errors.New("agent: stat reply without file info")
	}
	return toInfo(*rep.File), nil
}

func (fs files) Mkdir(ctx context.Context, path string, opts fsys.MkdirOptions) error {
	_, err := fs.cl.call(ctx, request{Op: "mkdir", Path: path, Mode: opts.Mode, User: opts.User, Parents: opts.Parents})
	return err
}

func (fs files) Remove(ctx context.Context, path string, opts fsys.RemoveOptions) error {
	_, err := fs.cl.call(ctx, request{Op: "remove", Path: path, User: opts.User, Recursive: opts.Recursive})
	return err
}

func (fs files) Rename(ctx context.Context, from, to string, opts fsys.Options) error {
	_, err := fs.cl.call(ctx, request{Op: "rename", Path: from, To: to, User: opts.User})
	return err
}
