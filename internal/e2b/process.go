package e2b

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"syscall"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/sys/unix"

	pb "github.com/sandpool/sandpool/internal/e2b/envd/process"
	"github.com/sandpool/sandpool/internal/e2b/envd/process/processconnect"
	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/fsys"
	"github.com/sandpool/sandpool/internal/proc"
)

// processService is envd's process.Process on sandpool's agent. Every
// process it starts is a background one of the sandbox's: a client that
// goes away (a command "disconnected") leaves it running; the
// Connect-Timeout-Ms deadline of the Start call kills it (with what it
// started), as envd does.
type processService struct{ s *Server }

var _ processconnect.ProcessHandler = processService{}

func (p processService) Start(ctx context.Context, req *connect.Request[pb.StartRequest], stream *connect.ServerStream[pb.StartResponse]) error {
	s := p.s
	t := targetOf(ctx)
	spec, err := s.startSpec(ctx, t, req.Msg, req.Header())
	if err != nil {
		return rpcError(s.log, err)
	}
	out := newProcStream(func(ev *pb.ProcessEvent) error { return stream.Send(&pb.StartResponse{Event: ev}) })
	pr, err := s.svc.Exec(ctx, t.sb.Tenant, t.sb.ID, spec, out.stdio(spec.PTY != nil))
	if err != nil {
		return rpcError(s.log, err)
	}
	return s.follow(ctx, out, pr, req.Header())
}

// startSpec turns a Start into the process to run: exactly cmd and args,
// as the user named by Basic auth (default: the sandbox's), in cwd
// resolved as envd does, with E2B's variables and the call's.
func (s *Server) startSpec(ctx context.Context, t target, msg *pb.StartRequest, h http.Header) (proc.Spec, error) {
	cfg := msg.GetProcess()
	if cfg.GetCmd() == "" {
		return proc.Spec{}, fmt.Errorf("%w: process.cmd is required", errBadRequest)
	}
	name, err := basicUser(h)
	if err != nil {
		return proc.Spec{}, err
	}
	u, err := s.userFor(ctx, t.sb, name, cfg.Cwd != nil && needsHome(cfg.GetCwd()))
	if err != nil {
		return proc.Spec{}, err
	}
	env := map[string]string{"E2B_SANDBOX": "true", "E2B_SANDBOX_ID": toE2B(t.sb.ID), "E2B_TEMPLATE_ID": t.sb.Template}
	for k, v := range cfg.GetEnvs() {
		env[k] = v
	}
	spec := proc.Spec{Cmd: append([]string{cfg.GetCmd()}, cfg.GetArgs()...), Env: env, User: name, Background: true, Tag: msg.GetTag()}
	if cfg.Cwd != nil {
		if spec.Cwd, err = resolvePath(cfg.GetCwd(), u); err != nil {
			return proc.Spec{}, err
		}
		if err := s.checkCwd(ctx, t, spec.Cwd, name); err != nil {
			return proc.Spec{}, err
		}
	}
	if msg.Pty != nil {
		size := msg.GetPty().GetSize()
		if size.GetRows() == 0 || size.GetCols() == 0 || size.GetRows() > 65535 || size.GetCols() > 65535 {
			return proc.Spec{}, fmt.Errorf("%w: pty size %dx%d", errBadRequest, size.GetCols(), size.GetRows())
		}
		spec.PTY = &proc.Size{Rows: uint16(size.GetRows()), Cols: uint16(size.GetCols())}
	} else if msg.Stdin != nil && !msg.GetStdin() {
		spec.NoStdin = true // older SDKs leave stdin out, meaning open
	}
	if deadline, ok := ctx.Deadline(); ok {
		if spec.Timeout = time.Until(deadline); spec.Timeout <= 0 {
			return proc.Spec{}, context.DeadlineExceeded
		}
	}
	return spec, nil
}

// checkCwd refuses a working directory that is not one, as envd does
// (invalid_argument).
func (s *Server) checkCwd(ctx context.Context, t target, cwd, user string) error {
	fs, err := s.svc.Files(ctx, t.sb.Tenant, t.sb.ID)
	if err != nil {
		return err
	}
	fi, err := fs.Stat(ctx, cwd, fsys.Options{User: user})
	switch {
	case errors.Is(err, errdefs.ErrNotFound):
		return fmt.Errorf("%w: cwd '%s' does not exist", errBadRequest, cwd)
	case err != nil:
		return err
	case fi.Type != "dir" && fi.Type != "symlink":
		return fmt.Errorf("%w: cwd '%s' is not a directory", errBadRequest, cwd)
	}
	return nil
}

func (p processService) Connect(ctx context.Context, req *connect.Request[pb.ConnectRequest], stream *connect.ServerStream[pb.ConnectResponse]) error {
	s := p.s
	t := targetOf(ctx)
	info, err := s.findProcess(ctx, t, req.Msg.GetProcess(), false)
	if err != nil {
		return rpcError(s.log, err)
	}
	out := newProcStream(func(ev *pb.ProcessEvent) error { return stream.Send(&pb.ConnectResponse{Event: ev}) })
	// Live output only: what the SDK was sent before is not sent again.
	pr, err := s.svc.AttachLive(ctx, t.sb.Tenant, t.sb.ID, info.ID, out.stdio(info.PTY))
	if err != nil {
		return rpcError(s.log, err)
	}
	return s.follow(ctx, out, pr, req.Header())
}

// follow sends a process's start, its output as it comes (keepalives when
// there is none), and its end. The call's deadline ends the stream with
// deadline_exceeded (Start gave the process the same deadline); a client
// that goes away leaves the process running.
func (s *Server) follow(ctx context.Context, out *procStream, pr proc.Process, h http.Header) error {
	if err := out.start(pr.Pid()); err != nil {
		pr.Close()
		return err
	}
	type result struct {
		st  proc.ExitStatus
		err error
	}
	done := make(chan result, 1)
	go func() {
		st, err := pr.Wait()
		done <- result{st, err}
	}()
	every := keepaliveInterval(h)
	ka := time.NewTicker(every)
	defer ka.Stop()
	for {
		select {
		case res := <-done:
			pr.Close()
			switch {
			case res.err != nil:
				return rpcError(s.log, fmt.Errorf("%w: %v", errGone, res.err))
			case res.st.TimedOut:
				return connect.NewError(connect.CodeDeadlineExceeded, errors.New("the command ran past its deadline and was killed"))
			}
			return out.end(res.st)
		case <-ka.C:
			if err := out.keepalive(every); err != nil {
				out.close()
				pr.Close()
				<-done
				return err
			}
		case <-ctx.Done():
			out.close()
			pr.Close() // detach: the process goes on (a deadline kills it in the agent)
			<-done
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return connect.NewError(connect.CodeDeadlineExceeded, errors.New("the command ran past its deadline and was killed"))
			}
			return connect.NewError(connect.CodeCanceled, ctx.Err())
		}
	}
}

func (p processService) List(ctx context.Context, req *connect.Request[pb.ListRequest]) (*connect.Response[pb.ListResponse], error) {
	t := targetOf(ctx)
	ps, err := p.s.svc.Processes(ctx, t.sb.Tenant, t.sb.ID)
	if err != nil {
		return nil, rpcError(p.s.log, err)
	}
	out := &pb.ListResponse{Processes: []*pb.ProcessInfo{}}
	for _, pi := range ps {
		if !pi.Running || len(pi.Cmd) == 0 {
			continue
		}
		cfg := &pb.ProcessConfig{Cmd: pi.Cmd[0], Args: pi.Cmd[1:]}
		if pi.Cwd != "" {
			cfg.Cwd = &pi.Cwd
		}
		info := &pb.ProcessInfo{Config: cfg, Pid: uint32(pi.Pid)}
		if pi.Tag != "" {
			info.Tag = &pi.Tag
		}
		out.Processes = append(out.Processes, info)
	}
	return connect.NewResponse(out), nil
}

func (p processService) SendInput(ctx context.Context, req *connect.Request[pb.SendInputRequest]) (*connect.Response[pb.SendInputResponse], error) {
	t := targetOf(ctx)
	info, err := p.s.findProcess(ctx, t, req.Msg.GetProcess(), true)
	if err != nil {
		return nil, rpcError(p.s.log, err)
	}
	in := req.Msg.GetInput()
	data := in.GetStdin()
	if in.GetPty() != nil {
		data = in.GetPty()
	}
	if err := p.s.svc.WriteStdin(ctx, t.sb.Tenant, t.sb.ID, info.ID, bytes.NewReader(data), false); err != nil {
		return nil, rpcError(p.s.log, err)
	}
	return connect.NewResponse(&pb.SendInputResponse{}), nil
}

func (p processService) SendSignal(ctx context.Context, req *connect.Request[pb.SendSignalRequest]) (*connect.Response[pb.SendSignalResponse], error) {
	var sig syscall.Signal
	switch req.Msg.GetSignal() {
	case pb.Signal_SIGNAL_SIGKILL:
		sig = syscall.SIGKILL
	case pb.Signal_SIGNAL_SIGTERM:
		sig = syscall.SIGTERM
	default:
		return nil, connect.NewError(connect.CodeUnimplemented, fmt.Errorf("signal %v: only SIGTERM and SIGKILL", req.Msg.GetSignal()))
	}
	t := targetOf(ctx)
	info, err := p.s.findProcess(ctx, t, req.Msg.GetProcess(), true)
	if err != nil {
		return nil, rpcError(p.s.log, err)
	}
	if err := p.s.svc.Signal(ctx, t.sb.Tenant, t.sb.ID, info.ID, sig); err != nil {
		return nil, rpcError(p.s.log, err)
	}
	return connect.NewResponse(&pb.SendSignalResponse{}), nil
}

func (p processService) CloseStdin(ctx context.Context, req *connect.Request[pb.CloseStdinRequest]) (*connect.Response[pb.CloseStdinResponse], error) {
	t := targetOf(ctx)
	info, err := p.s.findProcess(ctx, t, req.Msg.GetProcess(), true)
	if err != nil {
		return nil, rpcError(p.s.log, err)
	}
	if info.PTY {
		return nil, connect.NewError(connect.CodeFailedPrecondition, errors.New("a terminal's input does not close: send Ctrl-D (0x04)"))
	}
	if err := p.s.svc.WriteStdin(ctx, t.sb.Tenant, t.sb.ID, info.ID, bytes.NewReader(nil), true); err != nil {
		return nil, rpcError(p.s.log, err)
	}
	return connect.NewResponse(&pb.CloseStdinResponse{}), nil
}

func (p processService) Update(ctx context.Context, req *connect.Request[pb.UpdateRequest]) (*connect.Response[pb.UpdateResponse], error) {
	size := req.Msg.GetPty().GetSize()
	if size == nil {
		return connect.NewResponse(&pb.UpdateResponse{}), nil // nothing to change
	}
	if size.GetRows() == 0 || size.GetCols() == 0 || size.GetRows() > 65535 || size.GetCols() > 65535 {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("pty size %dx%d", size.GetCols(), size.GetRows()))
	}
	t := targetOf(ctx)
	info, err := p.s.findProcess(ctx, t, req.Msg.GetProcess(), true)
	if err != nil {
		return nil, rpcError(p.s.log, err)
	}
	if err := p.s.svc.ResizePTY(ctx, t.sb.Tenant, t.sb.ID, info.ID, proc.Size{Rows: uint16(size.GetRows()), Cols: uint16(size.GetCols())}); err != nil {
		return nil, rpcError(p.s.log, err)
	}
	return connect.NewResponse(&pb.UpdateResponse{}), nil
}

func (p processService) StreamInput(context.Context, *connect.ClientStream[pb.StreamInputRequest]) (*connect.Response[pb.StreamInputResponse], error) {
	return nil, connect.NewError(connect.CodeUnimplemented, errors.New("StreamInput is not offered: use SendInput"))
}

// findProcess finds the process a selector names (by pid or tag), the
// running one first; with running, one that has exited is not found (as
// envd forgets them).
func (s *Server) findProcess(ctx context.Context, t target, sel *pb.ProcessSelector, running bool) (proc.Info, error) {
	var match func(proc.Info) bool
	var what string
	switch v := sel.GetSelector().(type) {
	case *pb.ProcessSelector_Pid:
		match, what = func(pi proc.Info) bool { return pi.Pid == int(v.Pid) }, "pid "+strconv.Itoa(int(v.Pid))
	case *pb.ProcessSelector_Tag:
		match, what = func(pi proc.Info) bool { return pi.Tag == v.Tag }, "tag "+strconv.Quote(v.Tag)
	default:
		return proc.Info{}, fmt.Errorf("%w: name the process by pid or tag", errBadRequest)
	}
	ps, err := s.svc.Processes(ctx, t.sb.Tenant, t.sb.ID)
	if err != nil {
		return proc.Info{}, err
	}
	var best *proc.Info
	for i := range ps {
		pi := &ps[i]
		if !match(*pi) || (running && !pi.Running) {
			continue
		}
		if best == nil || pi.Running && !best.Running || pi.Running == best.Running && pi.StartedAt.After(best.StartedAt) {
			best = pi
		}
	}
	if best == nil {
		return proc.Info{}, errdefs.Userf(errdefs.ErrNotFound, "process with %s not found", what)
	}
	return *best, nil
}

// procStream sends a process's events on one RPC stream: output that
// comes before the start event waits for it; keepalives are sent only
// when nothing else was; nothing is sent once the handler has returned.
type procStream struct {
	send func(*pb.ProcessEvent) error

	mu      sync.Mutex
	started bool
	pending []*pb.ProcessEvent
	closed  bool
	err     error
	last    time.Time
}

func newProcStream(send func(*pb.ProcessEvent) error) *procStream { return &procStream{send: send} }

func (o *procStream) emit(ev *pb.ProcessEvent) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	switch {
	case o.closed:
		return errors.New("stream closed")
	case o.err != nil:
		return o.err
	case !o.started:
		o.pending = append(o.pending, ev)
		return nil
	}
	o.last = time.Now()
	o.err = o.send(ev)
	return o.err
}

// start sends the start event, then what came before it.
func (o *procStream) start(pid int) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.started, o.last = true, time.Now()
	if o.err = o.send(&pb.ProcessEvent{Event: &pb.ProcessEvent_Start{Start: &pb.ProcessEvent_StartEvent{Pid: uint32(pid)}}}); o.err != nil {
		return o.err
	}
	for _, ev := range o.pending {
		if o.err = o.send(ev); o.err != nil {
			return o.err
		}
	}
	o.pending = nil
	return nil
}

func (o *procStream) keepalive(every time.Duration) error {
	o.mu.Lock()
	idle := time.Since(o.last) >= every/2
	o.mu.Unlock()
	if !idle {
		return nil
	}
	return o.emit(&pb.ProcessEvent{Event: &pb.ProcessEvent_Keepalive{Keepalive: &pb.ProcessEvent_KeepAlive{}}})
}

// end sends how the process ended, as envd reports it: the exit code (or
// -1 when a signal killed it), Go's wording of the status, and that
// wording as the error when it did not exit 0.
func (o *procStream) end(st proc.ExitStatus) error {
	ev := &pb.ProcessEvent_EndEvent{ExitCode: int32(st.Code), Exited: true, Status: "exit status " + strconv.Itoa(st.Code)}
	if st.Signal != "" {
		ev.ExitCode, ev.Exited = -1, false
		ev.Status = "signal: " + syscall.Signal(unix.SignalNum(st.Signal)).String()
	}
	if ev.ExitCode != 0 {
		ev.Error = &ev.Status
	}
	return o.emit(&pb.ProcessEvent{Event: &pb.ProcessEvent_End{End: ev}})
}

func (o *procStream) close() {
	o.mu.Lock()
	o.closed = true
	o.mu.Unlock()
}

// stdio is where the process's output goes: data events, stdout and
// stderr apart, or pty for a process on a terminal.
func (o *procStream) stdio(pty bool) proc.Stdio {
	if pty {
		return proc.Stdio{Stdout: dataWriter{o, func(b []byte) *pb.ProcessEvent_DataEvent {
			return &pb.ProcessEvent_DataEvent{Output: &pb.ProcessEvent_DataEvent_Pty{Pty: b}}
		}}}
	}
	return proc.Stdio{
		Stdout: dataWriter{o, func(b []byte) *pb.ProcessEvent_DataEvent {
			return &pb.ProcessEvent_DataEvent{Output: &pb.ProcessEvent_DataEvent_Stdout{Stdout: b}}
		}},
		Stderr: dataWriter{o, func(b []byte) *pb.ProcessEvent_DataEvent {
			return &pb.ProcessEvent_DataEvent{Output: &pb.ProcessEvent_DataEvent_Stderr{Stderr: b}}
		}},
	}
}

// dataWriter sends what is written to it as data events.
type dataWriter struct {
	o    *procStream
	data func([]byte) *pb.ProcessEvent_DataEvent
}

func (d dataWriter) Write(b []byte) (int, error) {
	// The agent's client reuses b once Write returns, and an event may
	// wait for the start: copy.
	ev := &pb.ProcessEvent{Event: &pb.ProcessEvent_Data{Data: d.data(bytes.Clone(b))}}
	if err := d.o.emit(ev); err != nil {
		return 0, err
	}
	return len(b), nil
}
