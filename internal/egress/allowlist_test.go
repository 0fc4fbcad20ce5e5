package egress

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

var allowlist = []string{"allowed.test", "*.pkg.test", "other.test", "cname.allowed.test", "198.51.100.200/29"}

func TestAllowlistByName(t *testing.T) {
	e, _ := newEngine(t)
	sb, l := attach(t, e, false, "allowlist", allowlist, nil)
	w := getWorld(t)
	gw := e.Gateway()

	// Names on the list work end to end (DNS, then SNI or Host).
	for _, u := range []string{"https://allowed.test/", "https://a.pkg.test/", "http://allowed.test/", "https://cname.allowed.test/"} {
		if out, err := sb.curl(t, gw, u); err != nil || !strings.Contains(out, "host=") {
			t.Errorf("curl %s: %v %s", u, err, out)
		}
	}
	// The apex of a wildcard and unlisted names do not resolve, and the
	// upstream resolver never hears of them.
	mark := w.Mark()
	for _, u := range []string{"https://pkg.test/", "https://denied.test/"} {
		if out, err := sb.curl(t, gw, u); err == nil {
			t.Errorf("curl %s succeeded: %s", u, out)
		}
	}
	if w.SawQuery(mark, "pkg.test") || w.SawQuery(mark, "denied.test") {
		t.Error("a query for an unlisted name reached upstream")
	}
	// HTTP by Host: the same allowed address with an unlisted Host.
	if _, err := sb.httpGet("198.51.100.10:80", "denied.test"); err == nil {
		t.Error("HTTP with an unlisted Host passed")
	}
	if body, err := sb.httpGet("198.51.100.10:80", "allowed.test"); err != nil || !strings.Contains(body, "host=allowed.test") {
		t.Errorf("HTTP with a listed Host: %v %q", err, body)
	}
	// Other TCP by resolved address: other.test was never resolved in
	// this sandbox, so its address is refused until it is.
	mustRefuse(t, sb, l, "203.0.113.20:7000")
	if got := sb.resolve(t, gw, "other.test"); len(got) != 1 || got[0] != "203.0.113.20" {
		t.Fatalf("resolve other.test: %v", got)
	}
	echo(t, sb, "203.0.113.20:7000")
	// Addresses and CIDRs on the list need no name.
	echo(t, sb, "198.51.100.201:7000")
	// An address on no list is refused, by IP or with any name.
	mustRefuse(t, sb, l, "203.0.113.99:80")
	mustRefuse(t, sb, l, "198.51.100.11:7000")
	if _, err := sb.tlsGet("203.0.113.99:443", "allowed.test"); err == nil {
		t.Error("allowed SNI to an unrelated address passed")
	}
}

// TestSNISpoof: a listed name pointed at another address (curl --resolve)
// never reaches that address.
func TestSNISpoof(t *testing.T) {
	e, _ := newEngine(t)
	sb, _ := attach(t, e, false, "allowlist", allowlist, nil)
	w := getWorld(t)
	sb.resolve(t, e.Gateway(), "allowed.test")
	mark := w.Mark()
	for _, args := range [][]string{
		{"--resolve", "allowed.test:443:198.51.100.11", "https://allowed.test/"},
		{"--resolve", "allowed.test:80:198.51.100.11", "http://allowed.test/"},
		{"-k", "https://198.51.100.11/"},
		{"http://198.51.100.11/"},
	} {
		if out, err := sb.curl(t, e.Gateway(), args...); err == nil {
			t.Errorf("curl %v succeeded: %s", args, out)
		}
	}
	if w.SawAddr(mark, "198.51.100.11") {
		t.Fatal("the denied server saw a connection")
	}
	// Sanity: the same curl without the spoof works.
	if out, err := sb.curl(t, e.Gateway(), "https://allowed.test/"); err != nil {
		t.Fatalf("curl allowed.test: %v %s", err, out)
	}
}

// TestSplitClientHello: a hello split over two TLS records, or claiming
// a longer record than TLS allows, is refused even for a listed name.
func TestSplitClientHello(t *testing.T) {
	e, _ := newEngine(t)
	sb, l := attach(t, e, false, "allowlist", allowlist, nil)
	w := getWorld(t)
	sb.resolve(t, e.Gateway(), "allowed.test")
	hello := captureHello(t, "allowed.test")
	first, second := hello[5:len(hello)-40], hello[len(hello)-40:]
	split := append(record(first), record(second)...)
	for _, b := range [][]byte{split, append([]byte{0x16, 3, 1, 0x40, 0x01}, make([]byte, 3000)...)} {
		mark, before := w.Mark(), l.Stats().Refused
		c, err := sb.dial(context.Background(), "198.51.100.10:443")
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		_, _ = c.Write(b)
		if n, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatalf("server answered a malformed hello (%d bytes)", n)
		}
		c.Close()
		waitFor(t, "refusal", func() bool { return l.Stats().Refused > before })
		if w.SawAddr(mark, "198.51.100.10") {
			t.Fatal("the server saw the malformed hello")
		}
	}
}

func record(b []byte) []byte {
	r := []byte{0x16, 3, 1, 0, 0}
	binary.BigEndian.PutUint16(r[3:], uint16(len(b)))
	return append(r, b...)
}

// captureHello returns the ClientHello crypto/tls sends for sni.
func captureHello(t *testing.T, sni string) []byte {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	go func() {
		_ = tls.Client(a, &tls.Config{ServerName: sni}).Handshake()
	}()
	var buf bytes.Buffer
	_ = b.SetReadDeadline(time.Now().Add(2 * time.Second))
	hdr := make([]byte, 5)
	if _, err := io.ReadFull(b, hdr); err != nil {
		t.Fatal(err)
	}
	body := make([]byte, binary.BigEndian.Uint16(hdr[3:]))
	if _, err := io.ReadFull(b, body); err != nil {
		t.Fatal(err)
	}
	b.Close()
	buf.Write(hdr)
	buf.Write(body)
	return buf.Bytes()
}

// echo checks that a connection to addr's echo server works.
func echo(t *testing.T, sb *sandboxNS, addr string) {
	t.Helper()
	c, err := sb.dial(context.Background(), addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatalf("write %s: %v", addr, err)
	}
	b := make([]byte, 4)
	if _, err := io.ReadFull(c, b); err != nil || string(b) != "ping" {
		t.Fatalf("echo %s: %q %v", addr, b, err)
	}
}
