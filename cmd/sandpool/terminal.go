package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/sandpool/sandpool/client"
)

// execTerminal runs req on a terminal in the sandbox: a background
// process with a PTY the size of ours, our keystrokes sent as its input
// (our terminal in raw mode, so Ctrl-C and friends reach it), its output
// shown as it comes, and our window's size changes passed on. It returns
// the process's exit status.
func (c *cli) execTerminal(ctx context.Context, cl *client.Client, id string, req client.ExecRequest) (client.ExitStatus, error) {
	in, _ := c.stdin.(*os.File)
	out, _ := c.stdout.(*os.File)
	size := client.TermSize{Rows: 24, Cols: 80}
	if out != nil {
		if ws, err := unix.IoctlGetWinsize(int(out.Fd()), unix.TIOCGWINSZ); err == nil && ws.Row > 0 && ws.Col > 0 {
			size = client.TermSize{Rows: ws.Row, Cols: ws.Col}
		}
	}
	req.PTY = &size
	if term := os.Getenv("TERM"); term != "" {
		if req.Env == nil {
			req.Env = map[string]string{}
		}
		if _, set := req.Env["TERM"]; !set {
			req.Env["TERM"] = term
		}
	}
	p, err := cl.StartProcess(ctx, id, req)
	if err != nil {
		return client.ExitStatus{}, err
	}
	stream, err := cl.Attach(ctx, id, p.ID)
	if err != nil {
		_ = cl.Signal(context.WithoutCancel(ctx), id, p.ID, "KILL") // best effort: nobody can reach it
		return client.ExitStatus{}, err
	}
	defer stream.Close()
	if in != nil {
		if restore, err := rawMode(int(in.Fd())); err == nil {
			defer restore()
		}
	}

	inputCtx, stopInput := context.WithCancel(ctx)
	defer stopInput()
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := c.stdin.Read(buf)
			if n > 0 {
				if cl.WriteStdin(inputCtx, id, p.ID, bytes.NewReader(buf[:n]), false) != nil {
					return // the process has gone; its exit ends the stream
				}
			}
			if err != nil {
				if errors.Is(err, io.EOF) {
					// A terminal's input has no end: what a user types
					// for one is Ctrl-D.
					_ = cl.WriteStdin(inputCtx, id, p.ID, bytes.NewReader([]byte{4}), false)
				}
				return
			}
		}
	}()
	if out != nil {
		winch := make(chan os.Signal, 1)
		signal.Notify(winch, syscall.SIGWINCH)
		defer signal.Stop(winch)
		go func() {
			for {
				select {
				case <-inputCtx.Done():
					return
				case <-winch:
					if ws, err := unix.IoctlGetWinsize(int(out.Fd()), unix.TIOCGWINSZ); err == nil && ws.Row > 0 && ws.Col > 0 {
						_ = cl.ResizePTY(inputCtx, id, p.ID, client.TermSize{Rows: ws.Row, Cols: ws.Col}) // a window resized as it exits
					}
				}
			}
		}()
	}
	st, err := stream.Wait(c.stdout, c.stderr)
	if err != nil {
		return st, fmt.Errorf("terminal: %w", err)
	}
	return st, nil
}

// rawMode puts a terminal in raw mode and returns what restores it; an
// error if fd is not a terminal.
func rawMode(fd int) (func(), error) {
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil, err
	}
	raw := *old
	// What cfmakeraw does.
	raw.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	raw.Oflag &^= unix.OPOST
	raw.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	raw.Cflag &^= unix.CSIZE | unix.PARENB
	raw.Cflag |= unix.CS8
	raw.Cc[unix.VMIN], raw.Cc[unix.VTIME] = 1, 0
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &raw); err != nil {
		return nil, err
	}
	return func() { _ = unix.IoctlSetTermios(fd, unix.TCSETS, old) }, nil // best effort on the way out
}
