// Package sniff reads the name a client asks for from the first bytes of a
// TCP stream: the SNI of a TLS ClientHello or the Host of an HTTP/1.x
// request. Both parsers are strict on purpose: anything that another
// parser (the server's) could read differently is Invalid, and the caller
// refuses the connection (fails closed).
package sniff

import (
	"net/netip"

	"github.com/sandpool/sandpool/internal/egress/policy"
)

// Result says what a parser made of the bytes seen so far.
type Result int

const (
	// Incomplete: more bytes are needed to decide.
	Incomplete Result = iota
	// Named: the stream asks for the returned host name.
	Named
	// Nameless: a well-formed start that names no host (a ClientHello
	// without SNI, an HTTP/1.0 request without Host, or a name that is an
	// IP address); the caller judges the connection by its address.
	Nameless
	// Invalid: malformed, ambiguous, split over TLS records, or larger
	// than the parser reads.
	Invalid
)

func (r Result) String() string {
	switch r {
	case Incomplete:
		return "incomplete"
	case Named:
		return "named"
	case Nameless:
		return "nameless"
	}
	return "invalid"
}

// MaxTLS is how many bytes ClientHello reads at most: one full TLS
// record. A hello split over records, or claiming a longer record, is
// Invalid.
const MaxTLS = 5 + 1<<14

// MaxHTTP is how many bytes HTTPHost reads at most: a request head that
// does not end within it is Invalid.
const MaxHTTP = 16 << 10

// hostName normalizes a peeked name. IP literals are Nameless: the address
// check applies to them, not the name rules.
func hostName(raw string) (string, Result) {
	if raw == "" {
		return "", Invalid
	}
	if _, err := netip.ParseAddr(raw); err == nil {
		return "", Nameless
	}
	name, reason := policy.NormalizeName(raw)
	if reason != "" {
		return "", Invalid
	}
	return name, Named
}
