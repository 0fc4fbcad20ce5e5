package agent

import (
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// dialTimeout bounds connecting to a port inside the sandbox.
const dialTimeout = 5 * time.Second

// dial connects to a TCP port on the sandbox's own loopback and, once the
// reply is sent, copies bytes both ways between it and the host's
// connection until both sides are done. Ports are reached this way
// whatever network the sandbox has (none, by default).
func (s *Server) dial(c *conn, req *request) error {
	if req.Port <= 0 || req.Port > 65535 {
		return replyErr(c, codeInvalid, "port %d out of range 1-65535", req.Port)
	}
	port := strconv.Itoa(req.Port)
	tcp, err := net.DialTimeout("tcp", "127.0.0.1:"+port, dialTimeout)
	if err != nil {
		// A server may listen on the IPv6 loopback only.
		if tcp6, err6 := net.DialTimeout("tcp", "[::1]:"+port, dialTimeout); err6 == nil {
			tcp, err = tcp6, nil
		}
	}
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) {
			return replyErr(c, codePortClosed, "nothing listens on port %d in the sandbox", req.Port)
		}
		return replyErr(c, codePortClosed, "port %d: %v", req.Port, err)
	}
	defer tcp.Close()
	if err := c.sendJSON(frameReply, reply{}); err != nil {
		return err
	}
	splice(c, tcp.(*net.TCPConn))
	return nil
}

// splice copies between the host's connection (what its reader has
// buffered first) and tcp, passing each side's end of input on as a
// half-close, and returns when both directions are done.
func splice(c *conn, tcp *net.TCPConn) {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		_, _ = io.Copy(tcp, c.br) // ends at the host's half-close, or an error
		_ = tcp.CloseWrite()      // the server sees the end of the request
	}()
	go func() {
		defer wg.Done()
		_, _ = io.Copy(c.rw, tcp) // ends when the server is done, or an error
		if cw, ok := c.rw.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
	}()
	wg.Wait()
}
