// Package agent is the in-sandbox agent that runs as PID 1 and serves the
// host over a Unix socket, and the host-side client that talks to it.
//
// The protocol is one connection per operation. Both sides send frames: one
// type byte, a big-endian uint32 length, then the payload. The host opens
// with a request frame (JSON); the agent answers with a reply frame (JSON),
// then, depending on the operation, data, output and exit frames follow.
package agent

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
)

// Frame types.
const (
	frameRequest  = 'R' // host -> agent: JSON request
	frameReply    = 'r' // agent -> host: JSON reply (ok or error)
	frameStdin    = 'i' // host -> agent: bytes for the process's stdin
	frameStdinEOF = 'I' // host -> agent: close stdin
	frameSignal   = 's' // host -> agent: one byte, a signal number
	frameStdout   = 'o' // agent -> host
	frameStderr   = 'e' // agent -> host
	frameExit     = 'x' // agent -> host: JSON exitStatus
	frameData     = 'd' // file bytes, either way
	frameDataEnd  = 'D' // end of file bytes, either way
	frameEvent    = 'w' // agent -> host: JSON watchEvent
)

// maxFrame bounds a frame's payload; data is sent in chunks of chunkSize.
const (
	maxFrame  = 1 << 20
	chunkSize = 64 << 10
)

// request is the first frame of every connection.
type request struct {
	Op string `json:"op"`

	// exec
	Cmd        []string          `json:"cmd,omitempty"`
	Env        map[string]string `json:"env,omitempty"`
	Cwd        string            `json:"cwd,omitempty"`
	User       string            `json:"user,omitempty"`
	TimeoutMs  int64             `json:"timeout_ms,omitempty"`
	Background bool              `json:"background,omitempty"`
	Stdin      bool              `json:"stdin,omitempty"`
	NoStdin    bool              `json:"no_stdin,omitempty"` // background without a stdin pipe
	Tag        string            `json:"tag,omitempty"`
	// PTY runs the process on a terminal of this size (exec); resize
	// gives the terminal this size.
	PTY *termSize `json:"pty,omitempty"`

	// attach, signal, stdin, resize: a process id, "pid:N" or "tag:T"
	Proc   string `json:"proc,omitempty"`
	Live   bool   `json:"live,omitempty"` // attach: no replay of kept output
	Signal int    `json:"signal,omitempty"`
	EOF    bool   `json:"eof,omitempty"` // stdin: close it after the data

	// files
	Path      string `json:"path,omitempty"`
	To        string `json:"to,omitempty"`
	Mode      uint32 `json:"mode,omitempty"`
	Parents   bool   `json:"parents,omitempty"`
	Recursive bool   `json:"recursive,omitempty"`
	Depth     int    `json:"depth,omitempty"` // list

	// dial
	Port int `json:"port,omitempty"`
}

// termSize is a terminal's size.
type termSize struct {
	Rows uint16 `json:"rows"`
	Cols uint16 `json:"cols"`
}

// reply answers a request.
type reply struct {
	Error *wireError `json:"error,omitempty"`

	Proc  string        `json:"proc,omitempty"`
	Pid   int           `json:"pid,omitempty"`
	Procs []processInfo `json:"procs,omitempty"`
	File  *fileInfo     `json:"file,omitempty"`
	Files []fileInfo    `json:"files,omitempty"`
	N     int64         `json:"n,omitempty"`
	// Dirty (reset) names session state only a restart clears.
	Dirty string `json:"dirty,omitempty"`
}

// Error codes on the wire.
const (
	codeNotFound = "not_found"
	codeInvalid  = "invalid"
	codeExists   = "exists"
	// codePermission: the user may not (EACCES, EPERM, EROFS).
	codePermission = "permission"
	// codeExhausted: a limit of the sandbox is reached (fork: EAGAIN).
	codeExhausted = "exhausted"
	// codePortClosed: nothing listens on the port to dial.
	codePortClosed = "port_closed"
	codeInternal   = "internal"
)

type wireError struct {
	Code string `json:"code"`
	Msg  string `json:"msg"`
}

type exitStatus struct {
	Code     int    `json:"code"`
	Signal   string `json:"signal,omitempty"`
	TimedOut bool   `json:"timed_out,omitempty"`
}

type processInfo struct {
	ID         string      `json:"id"`
	Pid        int         `json:"pid"`
	Tag        string      `json:"tag,omitempty"`
	Cmd        []string    `json:"cmd"`
	Cwd        string      `json:"cwd,omitempty"`
	PTY        bool        `json:"pty,omitempty"`
	Background bool        `json:"background"`
	Running    bool        `json:"running"`
	StartedAt  int64       `json:"started_at"` // unix nanoseconds
	Exit       *exitStatus `json:"exit,omitempty"`
}

type fileInfo struct {
	Name    string `json:"name"`
	Path    string `json:"path"`
	Type    string `json:"type"`
	Size    int64  `json:"size"`
	Mode    uint32 `json:"mode"`
	ModTime int64  `json:"mtime"` // unix nanoseconds
	UID     int    `json:"uid"`
	GID     int    `json:"gid"`
	Target  string `json:"target,omitempty"`
}

// conn frames a stream. Writes are serialised so several goroutines may
// send; reads belong to one goroutine.
type conn struct {
	rw  io.ReadWriteCloser
	br  *bufio.Reader
	wmu sync.Mutex
	hdr [5]byte
}

func newConn(rw io.ReadWriteCloser) *conn {
	return &conn{rw: rw, br: bufio.NewReaderSize(rw, 64<<10)}
}

func (c *conn) Close() error { return c.rw.Close() }

// send writes one frame.
func (c *conn) send(typ byte, payload []byte) error {
	if len(payload) > maxFrame {
		return fmt.Errorf("frame of %d bytes exceeds %d", len(payload), maxFrame)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	var hdr [5]byte
	hdr[0] = typ
	binary.BigEndian.PutUint32(hdr[1:], uint32(len(payload)))
	if len(payload) > 0 && len(payload) <= 4096 {
		// One write for small frames: fewer syscalls on the hot path.
		buf := make([]byte, 5+len(payload))
		copy(buf, hdr[:])
		copy(buf[5:], payload)
		_, err := c.rw.Write(buf)
		return err
	}
	if _, err := c.rw.Write(hdr[:]); err != nil {
		return err
	}
	if len(payload) > 0 {
		_, err := c.rw.Write(payload)
		return err
	}
	return nil
}

func (c *conn) sendJSON(typ byte, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return c.send(typ, b)
}

// recv reads one frame. The payload is valid until the next recv.
func (c *conn) recv(buf []byte) (byte, []byte, error) {
	if _, err := io.ReadFull(c.br, c.hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(c.hdr[1:])
	if n > maxFrame {
		return 0, nil, fmt.Errorf("frame of %d bytes exceeds %d", n, maxFrame)
	}
	if cap(buf) < int(n) {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(c.br, buf); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	return c.hdr[0], buf, nil
}

// recvJSON reads one frame of type want and decodes it into v.
func (c *conn) recvJSON(want byte, v any) error {
	typ, p, err := c.recv(nil)
	if err != nil {
		return err
	}
	if typ != want {
		return fmt.Errorf("protocol: got frame %q, want %q", typ, want)
	}
	return json.Unmarshal(p, v)
}
