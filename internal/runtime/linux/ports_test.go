package linux_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/proc"
	"github.com/sandpool/sandpool/internal/runtime"
)

// dialWhenUp dials port until a server in the sandbox listens on it,
// failing after a minute.
func dialWhenUp(tb testing.TB, r runtime.Runtime, id string, port int) net.Conn {
	tb.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		c, err := r.DialPort(context.Background(), id, port)
		if err == nil {
			return c
		}
		if !errors.Is(err, errdefs.ErrUnavailable) || time.Now().After(deadline) {
			tb.Fatalf("dial port %d: %v", port, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestDialPort(t *testing.T) {
	r := openRuntime(t)
	id := createSandbox(t, r, runtime.Spec{Template: "base"})
	other := createSandbox(t, r, runtime.Spec{Template: "base"})
	ctx := context.Background()

	if _, err := r.DialPort(ctx, id, 8000); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("a port nothing listens on: %v", err)
	}
	for _, bad := range []int{0, -1, 65536} {
		if _, err := r.DialPort(ctx, id, bad); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("port %d: %v", bad, err)
		}
	}

	// A server on the sandbox's loopback that reads the whole request (to
	// the client's half-close) and answers it upper-cased: both halves of
	// the connection end on their own.
	server := `import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 9000)); s.listen()
while True:
    c, _ = s.accept(); data = b""
    while True:
        b = c.recv(65536)
        if not b: break
        data += b
    c.sendall(data.upper()); c.close()
`
	p, err := r.Exec(ctx, id, proc.Spec{Cmd: []string{"python3", "-c", server}, Background: true}, proc.Stdio{})
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	for i := 0; i < 3; i++ {
		c := dialWhenUp(t, r, id, 9000)
		big := strings.Repeat("hello through the agent ", 20000)
		go func() {
			_, _ = io.WriteString(c, big)
			_ = c.(interface{ CloseWrite() error }).CloseWrite()
		}()
		got, err := io.ReadAll(c)
		c.Close()
		if err != nil || string(got) != strings.ToUpper(big) {
			t.Fatalf("round %d: %d bytes back (%v), want %d", i, len(got), err, len(big))
		}
	}
	// Another sandbox's loopback is its own.
	if _, err := r.DialPort(ctx, other, 9000); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("port of one sandbox reached through another: %v", err)
	}

	// An HTTP server on the IPv6 loopback only.
	h, err := r.Exec(ctx, id, proc.Spec{Cmd: []string{"python3", "-c",
		`import http.server, socket
class S(http.server.ThreadingHTTPServer): address_family = socket.AF_INET6
S(("::1", 8080), http.server.SimpleHTTPRequestHandler).serve_forever()`}, Cwd: "/etc", Background: true}, proc.Stdio{})
	if err != nil {
		t.Fatal(err)
	}
	h.Close()
	c := dialWhenUp(t, r, id, 8080)
	defer c.Close()
	io.WriteString(c, "GET /hostname HTTP/1.0\r\n\r\n")
	status, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || !strings.HasPrefix(status, "HTTP/1.0 200") {
		t.Fatalf("HTTP over the dialed port: %q %v", status, err)
	}
}
