package sniff

import (
	"bytes"
	"net"
	"strings"
)

// HTTPHost parses the host an HTTP/1.x request is for, from the start of
// a stream. It reads the request line and headers only. Bare CR or LF,
// folded headers, a missing or repeated Host, and an absolute or CONNECT
// target that disagrees with Host are Invalid.
func HTTPHost(b []byte) (string, Result) {
	end := bytes.Index(b, []byte("\r\n\r\n"))
	if end < 0 {
		if len(b) >= MaxHTTP || bytes.IndexByte(b, '\n') >= 0 && !crlfOnly(b) || !looksLikeMethod(b) {
			return "", Invalid
		}
		return "", Incomplete
	}
	head := b[:end+2]
	if end+4 > MaxHTTP || !crlfOnly(head) {
		return "", Invalid
	}
	lines := strings.Split(string(head[:len(head)-2]), "\r\n")
	method, target, proto, ok := requestLine(lines[0])
	if !ok {
		return "", Invalid
	}
	var hosts []string
	for _, l := range lines[1:] {
		if l == "" || l[0] == ' ' || l[0] == '\t' {
			return "", Invalid // obsolete line folding
		}
		k, v, ok := strings.Cut(l, ":")
		if !ok || !isToken(k) {
			return "", Invalid
		}
		if strings.EqualFold(k, "Host") {
			hosts = append(hosts, strings.Trim(v, " \t"))
		}
	}
	if len(hosts) > 1 {
		return "", Invalid
	}
	// The authority the server will use: an absolute-form or CONNECT
	// target wins over Host (RFC 9112 3.2), so both must agree.
	var authority string
	switch {
	case method == "CONNECT":
		authority = target
	case strings.HasPrefix(strings.ToLower(target), "http://") || strings.HasPrefix(strings.ToLower(target), "https://"):
		rest := target[strings.Index(target, "://")+3:]
		if i := strings.IndexAny(rest, "/?#"); i >= 0 {
			rest = rest[:i]
		}
		if strings.Contains(rest, "@") {
			return "", Invalid
		}
		authority = rest
	case target == "*" || strings.HasPrefix(target, "/"):
	default:
		return "", Invalid
	}
	switch {
	case len(hosts) == 0 && authority == "":
		if proto == "HTTP/1.0" {
			return "", Nameless
		}
		return "", Invalid
	case len(hosts) == 1 && authority != "" && !strings.EqualFold(hostOf(hosts[0]), hostOf(authority)):
		return "", Invalid
	case authority == "":
		authority = hosts[0]
	}
	return hostName(hostOf(authority))
}

// hostOf strips a port and IPv6 brackets from an authority.
func hostOf(a string) string {
	if h, _, err := net.SplitHostPort(a); err == nil {
		return h
	}
	return strings.TrimSuffix(strings.TrimPrefix(a, "["), "]")
}

func requestLine(l string) (method, target, proto string, ok bool) {
	parts := strings.Split(l, " ")
	if len(parts) != 3 || !isToken(parts[0]) || parts[1] == "" {
		return "", "", "", false
	}
	if parts[2] != "HTTP/1.1" && parts[2] != "HTTP/1.0" {
		return "", "", "", false
	}
	for i := 0; i < len(parts[1]); i++ {
		if c := parts[1][i]; c <= ' ' || c >= 0x7f {
			return "", "", "", false
		}
	}
	return parts[0], parts[1], parts[2], true
}

// crlfOnly reports whether every CR and LF in b is part of a CRLF pair
// (a trailing CR may still be waiting for its LF).
func crlfOnly(b []byte) bool {
	for i, c := range b {
		switch c {
		case '\r':
			if i+1 < len(b) && b[i+1] != '\n' {
				return false
			}
		case '\n':
			if i == 0 || b[i-1] != '\r' {
				return false
			}
		}
	}
	return true
}

// looksLikeMethod reports whether b can still be the start of a request
// line ("GET /", "POST /", ...): a token of letters, then a space.
func looksLikeMethod(b []byte) bool {
	for i, c := range b {
		if c == ' ' {
			return i > 0
		}
		if i >= 20 || !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte("\"(),/:;<=>?@[\\]{}", c) >= 0 {
			return false
		}
	}
	return true
}
