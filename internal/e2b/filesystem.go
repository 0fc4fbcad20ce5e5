package e2b

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"strconv"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/sandpool/sandpool/internal/e2b/envd/filesystem"
	"github.com/sandpool/sandpool/internal/e2b/envd/filesystem/filesystemconnect"
	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/fsys"
)

// filesystemService is envd's filesystem.Filesystem on the sandbox's
// files, which the agent serves from inside the sandbox as the user:
// paths resolve as envd resolves them, and never out of the sandbox.
type filesystemService struct{ s *Server }

var _ filesystemconnect.FilesystemHandler = filesystemService{}

// fsCall is what every filesystem call needs: the sandbox's files, the
// user (Basic auth), and the path resolved for that user.
type fsCall struct {
	t    target
	fs   fsys.Files
	user user
	acc  *accounts
}

func (f filesystemService) open(ctx context.Context, h http.Header, paths ...string) (fsCall, []string, error) {
	t := targetOf(ctx)
	name, err := basicUser(h)
	if err != nil {
		return fsCall{}, nil, err
	}
	needHome := false
	for _, p := range paths {
		needHome = needHome || needsHome(p)
	}
	u, err := f.s.userFor(ctx, t.sb, name, needHome)
	if err != nil {
		return fsCall{}, nil, err
	}
	resolved := make([]string, len(paths))
	for i, p := range paths {
		if resolved[i], err = resolvePath(p, u); err != nil {
			return fsCall{}, nil, err
		}
	}
	fs, err := f.s.svc.Files(ctx, t.sb.Tenant, t.sb.ID)
	if err != nil {
		return fsCall{}, nil, err
	}
	return fsCall{t: t, fs: fs, user: u}, resolved, nil
}

// entry is a file as envd describes it, owners by name.
func (f filesystemService) entry(ctx context.Context, c *fsCall, fi fsys.Info) *pb.EntryInfo {
	if c.acc == nil {
		c.acc, _ = f.s.accounts(ctx, c.t.sb) // unreadable: owners by number
	}
	mode := os.FileMode(fi.Mode & 0o777)
	typ := pb.FileType_FILE_TYPE_UNSPECIFIED
	switch fi.Type {
	case "file":
		typ = pb.FileType_FILE_TYPE_FILE
	case "dir":
		typ, mode = pb.FileType_FILE_TYPE_DIRECTORY, mode|os.ModeDir
	case "symlink":
		typ, mode = pb.FileType_FILE_TYPE_SYMLINK, mode|os.ModeSymlink
	}
	e := &pb.EntryInfo{Name: fi.Name, Type: typ, Path: fi.Path, Size: fi.Size, Mode: uint32(mode),
		Permissions: mode.String(), Owner: strconv.Itoa(fi.Owner), Group: strconv.Itoa(fi.Group),
		ModifiedTime: timestamppb.New(fi.ModTime)}
	if c.acc != nil {
		if n, ok := c.acc.users[fi.Owner]; ok {
			e.Owner = n
		}
		if n, ok := c.acc.groups[fi.Group]; ok {
			e.Group = n
		}
	}
	if fi.Target != "" {
		e.SymlinkTarget = &fi.Target
	}
	return e
}

func (f filesystemService) Stat(ctx context.Context, req *connect.Request[pb.StatRequest]) (*connect.Response[pb.StatResponse], error) {
	c, p, err := f.open(ctx, req.Header(), req.Msg.GetPath())
	if err != nil {
		return nil, rpcError(f.s.log, err)
	}
	fi, err := c.fs.Stat(ctx, p[0], fsys.Options{User: c.user.name})
	if err != nil {
		return nil, rpcError(f.s.log, err)
	}
	return connect.NewResponse(&pb.StatResponse{Entry: f.entry(ctx, &c, fi)}), nil
}

func (f filesystemService) ListDir(ctx context.Context, req *connect.Request[pb.ListDirRequest]) (*connect.Response[pb.ListDirResponse], error) {
	c, p, err := f.open(ctx, req.Header(), req.Msg.GetPath())
	if err != nil {
		return nil, rpcError(f.s.log, err)
	}
	list, err := c.fs.List(ctx, p[0], fsys.ListOptions{User: c.user.name, Depth: int(max(req.Msg.GetDepth(), 1))})
	if err != nil {
		return nil, rpcError(f.s.log, err)
	}
	out := &pb.ListDirResponse{Entries: make([]*pb.EntryInfo, 0, len(list))}
	for _, fi := range list {
		out.Entries = append(out.Entries, f.entry(ctx, &c, fi))
	}
	return connect.NewResponse(out), nil
}

// MakeDir makes a directory and its missing parents; one that exists is
// already_exists (the SDK's false), a file in the way invalid_argument.
func (f filesystemService) MakeDir(ctx context.Context, req *connect.Request[pb.MakeDirRequest]) (*connect.Response[pb.MakeDirResponse], error) {
	c, p, err := f.open(ctx, req.Header(), req.Msg.GetPath())
	if err != nil {
		return nil, rpcError(f.s.log, err)
	}
	opts := fsys.MkdirOptions{User: c.user.name}
	err = c.fs.Mkdir(ctx, p[0], opts)
	if errors.Is(err, errdefs.ErrNotFound) { // a parent is missing
		opts.Parents = true
		err = c.fs.Mkdir(ctx, p[0], opts)
	}
	if errors.Is(err, errdefs.ErrExists) {
		fi, serr := c.fs.Stat(ctx, p[0], fsys.Options{User: c.user.name})
		if serr == nil && fi.Type == "dir" {
			return nil, connect.NewError(connect.CodeAlreadyExists, fmt.Errorf("directory %s already exists", p[0]))
		}
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("%s exists and is not a directory", p[0]))
	}
	if err != nil {
		return nil, rpcError(f.s.log, err)
	}
	fi, err := c.fs.Stat(ctx, p[0], fsys.Options{User: c.user.name})
	if err != nil {
		return nil, rpcError(f.s.log, err)
	}
	return connect.NewResponse(&pb.MakeDirResponse{Entry: f.entry(ctx, &c, fi)}), nil
}

// Move renames, making the destination's missing parents.
func (f filesystemService) Move(ctx context.Context, req *connect.Request[pb.MoveRequest]) (*connect.Response[pb.MoveResponse], error) {
	c, p, err := f.open(ctx, req.Header(), req.Msg.GetSource(), req.Msg.GetDestination())
	if err != nil {
		return nil, rpcError(f.s.log, err)
	}
	opts := fsys.Options{User: c.user.name}
	if _, err := c.fs.Stat(ctx, p[0], opts); err != nil {
		return nil, rpcError(f.s.log, err) // a missing source changes nothing
	}
	if dir := path.Dir(p[1]); dir != "/" {
		if err := c.fs.Mkdir(ctx, dir, fsys.MkdirOptions{User: c.user.name, Parents: true}); err != nil {
			return nil, rpcError(f.s.log, err)
		}
	}
	if err := c.fs.Rename(ctx, p[0], p[1], opts); err != nil {
		return nil, rpcError(f.s.log, err)
	}
	fi, err := c.fs.Stat(ctx, p[1], opts)
	if err != nil {
		return nil, rpcError(f.s.log, err)
	}
	return connect.NewResponse(&pb.MoveResponse{Entry: f.entry(ctx, &c, fi)}), nil
}

// Remove removes a file or a directory with all it holds; a missing one is
// not an error (rm -rf).
func (f filesystemService) Remove(ctx context.Context, req *connect.Request[pb.RemoveRequest]) (*connect.Response[pb.RemoveResponse], error) {
	c, p, err := f.open(ctx, req.Header(), req.Msg.GetPath())
	if err != nil {
		return nil, rpcError(f.s.log, err)
	}
	err = c.fs.Remove(ctx, p[0], fsys.RemoveOptions{User: c.user.name, Recursive: true})
	if err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		return nil, rpcError(f.s.log, err)
	}
	return connect.NewResponse(&pb.RemoveResponse{}), nil
}

// WatchDir streams the changes in a directory: start once the watch is
// armed, then each change, keepalives when there is none.
func (f filesystemService) WatchDir(ctx context.Context, req *connect.Request[pb.WatchDirRequest], stream *connect.ServerStream[pb.WatchDirResponse]) error {
	c, p, err := f.open(ctx, req.Header(), req.Msg.GetPath())
	if err != nil {
		return rpcError(f.s.log, err)
	}
	w, err := c.fs.Watch(ctx, p[0], fsys.WatchOptions{User: c.user.name, Recursive: req.Msg.GetRecursive()})
	if err != nil {
		return rpcError(f.s.log, err)
	}
	defer w.Close()
	if err := stream.Send(&pb.WatchDirResponse{Event: &pb.WatchDirResponse_Start{Start: &pb.WatchDirResponse_StartEvent{}}}); err != nil {
		return err
	}
	events := make(chan fsys.Event)
	ended := make(chan error, 1)
	go func() {
		for {
			ev, err := w.Next()
			if err != nil {
				ended <- err
				return
			}
			select {
			case events <- ev:
			case <-ctx.Done():
				ended <- ctx.Err()
				return
			}
		}
	}()
	every := keepaliveInterval(req.Header())
	ka := time.NewTicker(every)
	defer ka.Stop()
	for {
		select {
		case ev := <-events:
			fe := &pb.FilesystemEvent{Name: ev.Name, Type: eventType(ev.Op)}
			if req.Msg.GetIncludeEntry() && ev.Op != fsys.OpRemove && ev.Op != fsys.OpRename {
				if fi, err := c.fs.Stat(ctx, path.Join(p[0], ev.Name), fsys.Options{User: c.user.name}); err == nil {
					fe.Entry = f.entry(ctx, &c, fi)
				}
			}
			if err := stream.Send(&pb.WatchDirResponse{Event: &pb.WatchDirResponse_Filesystem{Filesystem: fe}}); err != nil {
				return err
			}
			ka.Reset(every)
		case <-ka.C:
			if err := stream.Send(&pb.WatchDirResponse{Event: &pb.WatchDirResponse_Keepalive{Keepalive: &pb.WatchDirResponse_KeepAlive{}}}); err != nil {
				return err
			}
		case err := <-ended:
			w.Close()
			if errors.Is(err, io.EOF) {
				return nil // the directory is gone
			}
			if ctx.Err() != nil {
				return rpcError(f.s.log, ctx.Err())
			}
			return rpcError(f.s.log, err)
		case <-ctx.Done():
			w.Close()
			return rpcError(f.s.log, ctx.Err())
		}
	}
}

func eventType(op string) pb.EventType {
	switch op {
	case fsys.OpCreate:
		return pb.EventType_EVENT_TYPE_CREATE
	case fsys.OpWrite:
		return pb.EventType_EVENT_TYPE_WRITE
	case fsys.OpRemove:
		return pb.EventType_EVENT_TYPE_REMOVE
	case fsys.OpRename:
		return pb.EventType_EVENT_TYPE_RENAME
	case fsys.OpChmod:
		return pb.EventType_EVENT_TYPE_CHMOD
	}
	return pb.EventType_EVENT_TYPE_UNSPECIFIED
}
