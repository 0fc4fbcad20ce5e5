package agent

import (
	"context"
	"net"
)

// DialPort connects to a TCP port on the sandbox's loopback, through the
// agent: the connection's bytes are the port's. ErrPortClosed if nothing
// listens there.
func (cl *Client) DialPort(ctx context.Context, port int) (net.Conn, error) {
	c, _, stop, err := cl.open(ctx, request{Op: "dial", Port: port})
	if err != nil {
		return nil, err
	}
	stop()
	return &portConn{Conn: c.rw.(net.Conn), c: c}, nil
}

// portConn is the agent connection after a dial: reads come from what its
// frame reader has buffered first.
type portConn struct {
	net.Conn
	c *conn
}

func (p *portConn) Read(b []byte) (int, error) { return p.c.br.Read(b) }

// CloseWrite tells the port's server the request is complete.
func (p *portConn) CloseWrite() error {
	if cw, ok := p.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
