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

func TestMetrics(t *testing.T) {
	r := openRuntime(t)
	id := createSandbox(t, r, runtime.Spec{Template: "base", Limits: runtime.Limits{CPUs: 1.5, MemoryBytes: 256 << 20}})
	ctx := context.Background()

	before, err := r.Metrics(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if before.CPUCount != 2 || before.MemTotalBytes != 256<<20 || before.DiskTotalBytes <= 0 || before.Timestamp.IsZero() {
		t.Fatalf("metrics %+v", before)
	}
	// Busy for a while, 16 MiB written, 32 MiB held in memory by a process
	// still running.
	sh(t, r, id, "end=$(($(date +%s)+1)); while [ $(date +%s) -lt $end ]; do :; done; head -c 16777216 /dev/urandom > /home/user/f")
	p, err := r.Exec(ctx, id, proc.Spec{Cmd: []string{"python3", "-c", "import sys,time; b = bytearray(32 << 20); b[::4096] = b'x' * len(b[::4096]); print('held', flush=True); time.sleep(100)"}, Background: true}, proc.Stdio{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Signal(ctx, id, p.ID(), 9)
	var out syncBuffer
	a, err := r.Attach(ctx, id, p.ID(), proc.Stdio{Stdout: &out})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	out.waitFor(t, "held")
	after, err := r.Metrics(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if after.CPUUsedPct <= 0 || after.CPUUsedPct > 100 {
		t.Errorf("CPU %.1f%% after a busy loop", after.CPUUsedPct)
	}
	if after.DiskUsedBytes < 16<<20 || after.DiskUsedBytes-before.DiskUsedBytes < 16<<20 {
		t.Errorf("disk used %d before, %d after writing 16 MiB", before.DiskUsedBytes, after.DiskUsedBytes)
	}
	if after.MemUsedBytes < 32<<20 || after.MemUsedBytes > after.MemTotalBytes {
		t.Errorf("memory used %d with 32 MiB held (limit %d)", after.MemUsedBytes, after.MemTotalBytes)
	}
	if _, err := r.Metrics(ctx, "sb_nope"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("metrics of a missing sandbox: %v", err)
	}
}
