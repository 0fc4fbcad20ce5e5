package sniff

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// clientHello returns the first flight crypto/tls sends for sni.
func clientHello(t testing.TB, sni string) []byte {
	t.Helper()
	c := &captureConn{}
	_ = tls.Client(c, &tls.Config{ServerName: sni, InsecureSkipVerify: sni == ""}).Handshake()
	if len(c.buf.Bytes()) == 0 {
		t.Fatal("no ClientHello captured")
	}
	return c.buf.Bytes()
}

type captureConn struct {
	net.Conn
	buf bytes.Buffer
}

func (c *captureConn) Write(b []byte) (int, error)      { return c.buf.Write(b) }
func (c *captureConn) Read([]byte) (int, error)         { return 0, io.EOF }
func (c *captureConn) Close() error                     { return nil }
func (c *captureConn) SetDeadline(time.Time) error      { return nil }
func (c *captureConn) SetReadDeadline(time.Time) error  { return nil }
func (c *captureConn) SetWriteDeadline(time.Time) error { return nil }

// splitRecord moves the last n bytes of the handshake into a second
// record.
func splitRecord(hello []byte, n int) []byte {
	body := hello[5:]
	first, second := body[:len(body)-n], body[len(body)-n:]
	out := []byte{0x16, 3, 1, 0, 0}
	binary.BigEndian.PutUint16(out[3:], uint16(len(first)))
	out = append(out, first...)
	out = append(out, 0x16, 3, 1, 0, 0)
	binary.BigEndian.PutUint16(out[len(out)-2:], uint16(len(second)))
	return append(out, second...)
}

func TestClientHello(t *testing.T) {
	h := clientHello(t, "Allowed.Test")
	for i := 0; i < len(h); i++ {
		if _, res := ClientHello(h[:i]); res != Incomplete {
			t.Fatalf("prefix of %d bytes: %v, want incomplete", i, res)
		}
	}
	if name, res := ClientHello(h); res != Named || name != "allowed.test" {
		t.Fatalf("ClientHello = %q %v", name, res)
	}
	if _, res := ClientHello(clientHello(t, "")); res != Nameless {
		t.Errorf("hello without SNI: %v, want nameless", res)
	}
	if _, res := ClientHello(splitRecord(h, 40)); res != Invalid {
		t.Errorf("split hello: %v, want invalid", res)
	}
	big := append([]byte{0x16, 3, 1, 0x40, 0x01}, make([]byte, 1<<14+1)...)
	if _, res := ClientHello(big); res != Invalid {
		t.Errorf("record over 16 KiB: %v, want invalid", res)
	}
	for _, b := range [][]byte{[]byte("GET / HTTP/1.1\r\n"), {0x16, 2, 0}, {0x16, 3, 1, 0, 0}, {0x17, 3, 3, 0, 5, 1, 2, 3, 4, 5}} {
		if _, res := ClientHello(b); res != Invalid {
			t.Errorf("ClientHello(%q) = %v, want invalid", b, res)
		}
	}
}

// helloWith builds a minimal ClientHello record with the given extensions.
func helloWith(exts ...[]byte) []byte {
	var body []byte
	body = append(body, 3, 3)
	body = append(body, make([]byte, 32)...)
	body = append(body, 0)                // session id
	body = append(body, 0, 2, 0x13, 0x01) // one suite
	body = append(body, 1, 0)             // null compression
	var e []byte
	for _, x := range exts {
		e = append(e, x...)
	}
	body = binary.BigEndian.AppendUint16(body, uint16(len(e)))
	body = append(body, e...)
	hs := append([]byte{1, byte(len(body) >> 16), byte(len(body) >> 8), byte(len(body))}, body...)
	rec := []byte{0x16, 3, 1}
	rec = binary.BigEndian.AppendUint16(rec, uint16(len(hs)))
	return append(rec, hs...)
}

func ext(typ uint16, data []byte) []byte {
	b := binary.BigEndian.AppendUint16(nil, typ)
	b = binary.BigEndian.AppendUint16(b, uint16(len(data)))
	return append(b, data...)
}

func sni(names ...string) []byte {
	var list []byte
	for _, n := range names {
		list = append(list, 0)
		list = binary.BigEndian.AppendUint16(list, uint16(len(n)))
		list = append(list, n...)
	}
	return ext(0, append(binary.BigEndian.AppendUint16(nil, uint16(len(list))), list...))
}

func TestClientHelloCrafted(t *testing.T) {
	pad := ext(21, make([]byte, 10000)) // padded, still one record
	for _, tc := range []struct {
		desc string
		b    []byte
		name string
		res  Result
	}{
		{"one name", helloWith(sni("a.test")), "a.test", Named},
		{"padded within a record", helloWith(pad, sni("a.test")), "a.test", Named},
		{"trailing dot", helloWith(sni("a.test.")), "a.test", Named},
		{"two names", helloWith(sni("a.test", "b.test")), "", Invalid},
		{"two extensions", helloWith(sni("a.test"), sni("b.test")), "", Invalid},
		{"empty name", helloWith(sni("")), "", Invalid},
		{"bad name", helloWith(sni("a\x00.test")), "", Invalid},
		{"ip literal", helloWith(sni("203.0.113.5")), "", Nameless},
		{"no sni", helloWith(ext(10, []byte{0, 2, 0, 29})), "", Nameless},
	} {
		name, res := ClientHello(tc.b)
		if name != tc.name || res != tc.res {
			t.Errorf("%s: %q %v, want %q %v", tc.desc, name, res, tc.name, tc.res)
		}
	}
}

func TestHTTPHost(t *testing.T) {
	for _, tc := range []struct {
		req  string
		name string
		res  Result
	}{
		{"GET / HTTP/1.1\r\nHost: Allowed.Test\r\n\r\n", "allowed.test", Named},
		{"GET / HTTP/1.1\r\nUser-Agent: x\r\nhost:a.test:8080 \r\n\r\nbody", "a.test", Named},
		{"GET http://a.test/x HTTP/1.1\r\nHost: a.test\r\n\r\n", "a.test", Named},
		{"GET http://b.test/x HTTP/1.1\r\nHost: a.test\r\n\r\n", "", Invalid},
		{"GET http://a.test@b.test/ HTTP/1.1\r\nHost: b.test\r\n\r\n", "", Invalid},
		{"CONNECT a.test:443 HTTP/1.1\r\nHost: a.test:443\r\n\r\n", "a.test", Named},
		{"GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n", "", Invalid},
		{"GET / HTTP/1.1\r\nX: y\r\n Host: b.test\r\n\r\n", "", Invalid},
		{"GET / HTTP/1.1\r\nX: y\nHost: b.test\r\nHost: a.test\r\n\r\n", "", Invalid},
		{"GET / HTTP/1.1\r\n\r\n", "", Invalid},
		{"GET / HTTP/1.0\r\n\r\n", "", Nameless},
		{"GET / HTTP/1.1\r\nHost: 203.0.113.5\r\n\r\n", "", Nameless},
		{"GET / HTTP/1.1\r\nHost: [2001:db8::1]:80\r\n\r\n", "", Nameless},
		{"GET / HTTP/2.0\r\nHost: a.test\r\n\r\n", "", Invalid},
		{"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "", Invalid},
		{"\x16\x03\x01", "", Invalid},
		{"GET / HTTP/1.1\r\nHost: a.test\r\n", "", Incomplete},
		{"GET /", "", Incomplete},
		{"", "", Incomplete},
		{"GET / HTTP/1.1\r\nX: " + strings.Repeat("a", MaxHTTP), "", Invalid},
	} {
		name, res := HTTPHost([]byte(tc.req))
		if name != tc.name || res != tc.res {
			t.Errorf("HTTPHost(%.60q) = %q %v, want %q %v", tc.req, name, res, tc.name, tc.res)
		}
	}
}

// FuzzClientHello checks that whenever both this parser and crypto/tls
// read a name from the same bytes, it is the same name.
func FuzzClientHello(f *testing.F) {
	f.Add(clientHello(f, "a.test"))
	f.Add(helloWith(sni("a.test")))
	f.Add(helloWith(sni("a.test"), sni("b.test")))
	f.Add(splitRecord(clientHello(f, "a.test"), 30))
	f.Fuzz(func(t *testing.T, b []byte) {
		name, res := ClientHello(b)
		if res != Named {
			return
		}
		var seen string
		got := false
		srv := tls.Server(&replayConn{r: bytes.NewReader(b)}, &tls.Config{
			GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
				seen, got = h.ServerName, true
				return nil, errors.New("stop")
			},
		})
		_ = srv.Handshake()
		if got && !strings.EqualFold(strings.TrimSuffix(seen, "."), name) {
			t.Fatalf("sniff read %q, crypto/tls read %q", name, seen)
		}
	})
}

func FuzzHTTPHost(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1\r\nHost: a.test\r\n\r\n"))
	f.Add([]byte("GET http://a.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		name, res := HTTPHost(b)
		if res == Named && name == "" {
			t.Fatal("named without a name")
		}
	})
}

type replayConn struct {
	net.Conn
	r io.Reader
}

func (c *replayConn) Read(b []byte) (int, error)       { return c.r.Read(b) }
func (c *replayConn) Write(b []byte) (int, error)      { return len(b), nil }
func (c *replayConn) Close() error                     { return nil }
func (c *replayConn) SetDeadline(time.Time) error      { return nil }
func (c *replayConn) SetReadDeadline(time.Time) error  { return nil }
func (c *replayConn) SetWriteDeadline(time.Time) error { return nil }
