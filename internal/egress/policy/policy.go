// Package policy parses and matches a sandbox's egress rules: a mode
// (none, open, allowlist) and allow and deny lists whose entries are CIDRs,
// IP addresses, host names and "*." wildcards.
//
// A Policy is immutable once parsed, so one value may be shared by any
// number of goroutines and swapped atomically on a running sandbox.
//
// Rules never open the addresses that are always blocked (private,
// loopback, link-local and the like, see Blocked): that list belongs to
// the operator, not to whoever writes a sandbox's policy.
package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"golang.org/x/net/idna"
)

// Mode says what a sandbox may reach before the allow and deny lists apply.
type Mode string

const (
	// ModeNone refuses every connection and answers every DNS query with
	// NXDOMAIN. It is the zero value's mode.
	ModeNone Mode = "none"
	// ModeOpen allows every public address except those the deny list
	// names.
	ModeOpen Mode = "open"
	// ModeAllowlist allows only what the allow list names, less what the
	// deny list names.
	ModeAllowlist Mode = "allowlist"
)

// MaxEntries bounds each list, so a policy stays cheap to match and store.
const MaxEntries = 1024

// ErrInvalid is wrapped by every error Parse returns; callers map it to a
// user error (HTTP 400).
var ErrInvalid = errors.New("invalid egress policy")

// EntryError names one bad entry of an allow or deny list.
type EntryError struct {
	List   string // "allow" or "deny"
	Index  int    // position in that list
	Entry  string // the entry as given
	Reason string
}

func (e *EntryError) Error() string {
	return fmt.Sprintf("egress %s[%d] %q: %s", e.List, e.Index, e.Entry, e.Reason)
}

// Unwrap makes errors.Is(err, ErrInvalid) true.
func (e *EntryError) Unwrap() error { return ErrInvalid }

// Policy is a parsed egress policy. The zero value is ModeNone.
type Policy struct {
	mode        Mode
	allow, deny rules
	allowSrc    []string
	denySrc     []string
}

// rules is one list, split by kind of entry.
type rules struct {
	prefixes []netip.Prefix  // CIDRs, and addresses as /32 or /128
	exact    map[string]bool // "pkg.test"
	suffixes map[string]bool // "*.pkg.test" is stored as ".pkg.test"
	names    int             // len(exact) + len(suffixes)
}

// Parse validates and compiles a policy. mode "" means ModeNone. The
// error, if any, wraps ErrInvalid and (for a bad entry) is an *EntryError
// naming the list, position and entry.
func Parse(mode string, allow, deny []string) (*Policy, error) {
	p := &Policy{}
	switch Mode(strings.ToLower(strings.TrimSpace(mode))) {
	case "", ModeNone:
		p.mode = ModeNone
	case ModeOpen:
		p.mode = ModeOpen
	case ModeAllowlist:
		p.mode = ModeAllowlist
	default:
		return nil, fmt.Errorf("%w: egress mode %q: want none, open or allowlist", ErrInvalid, mode)
	}
	if len(allow) > 0 && p.mode != ModeAllowlist {
		return nil, fmt.Errorf("%w: allow entries need egress mode allowlist (mode is %s)", ErrInvalid, p.mode)
	}
	var err error
	if p.allow, err = compile("allow", allow); err != nil {
		return nil, err
	}
	if p.deny, err = compile("deny", deny); err != nil {
		return nil, err
	}
	p.allowSrc = append([]string(nil), allow...)
	p.denySrc = append([]string(nil), deny...)
	return p, nil
}

// MustParse is Parse for tests and constants; it panics on error.
func MustParse(mode string, allow, deny []string) *Policy {
	p, err := Parse(mode, allow, deny)
	if err != nil {
		panic(err)
	}
	return p
}

func compile(list string, entries []string) (rules, error) {
	r := rules{exact: map[string]bool{}, suffixes: map[string]bool{}}
	if len(entries) > MaxEntries {
		return r, fmt.Errorf("%w: egress %s has %d entries, at most %d allowed", ErrInvalid, list, len(entries), MaxEntries)
	}
	for i, e := range entries {
		bad := func(reason string) error {
			return &EntryError{List: list, Index: i, Entry: e, Reason: reason}
		}
		kind, v, reason := parseEntry(e)
		switch kind {
		case kindInvalid:
			return r, bad(reason)
		case kindPrefix:
			r.prefixes = append(r.prefixes, v.(netip.Prefix))
		case kindName:
			r.exact[v.(string)] = true
		case kindWildcard:
			r.suffixes[v.(string)] = true
		}
	}
	r.names = len(r.exact) + len(r.suffixes)
	return r, nil
}

type entryKind int

const (
	kindInvalid entryKind = iota
	kindPrefix
	kindName
	kindWildcard
)

// parseEntry classifies one entry; for kindInvalid the string is why.
func parseEntry(e string) (entryKind, any, string) {
	s := strings.TrimSpace(e)
	switch {
	case s == "":
		return kindInvalid, nil, "empty entry"
	case strings.Contains(s, "://"):
		return kindInvalid, nil, "a URL is not an entry; give the host name only"
	}
	if addr, _, ok := strings.Cut(s, "/"); ok {
		if _, err := netip.ParseAddr(addr); err != nil {
			return kindInvalid, nil, "neither a CIDR nor a host name (a path is not allowed)"
		}
		pfx, err := netip.ParsePrefix(s)
		if err != nil {
			return kindInvalid, nil, "not a CIDR: " + err.Error()
		}
		if pfx.Addr().Zone() != "" {
			return kindInvalid, nil, "zoned addresses are not allowed"
		}
		if pfx.Addr().Is4In6() {
			bits := pfx.Bits() - 96
			if bits < 0 {
				return kindInvalid, nil, "an IPv4-mapped prefix needs at least 96 bits"
			}
			pfx = netip.PrefixFrom(pfx.Addr().Unmap(), bits)
		}
		if pfx.Masked() != pfx {
			return kindInvalid, nil, fmt.Sprintf("host bits set; did you mean %s?", pfx.Masked())
		}
		return kindPrefix, pfx, ""
	}
	if ip, err := netip.ParseAddr(strings.Trim(s, "[]")); err == nil {
		if ip.Zone() != "" {
			return kindInvalid, nil, "zoned addresses are not allowed"
		}
		ip = ip.Unmap()
		return kindPrefix, netip.PrefixFrom(ip, ip.BitLen()), ""
	}
	if _, _, err := splitPort(s); err == nil {
		return kindInvalid, nil, "ports are not supported; give the host name or address only"
	}
	wild := false
	if strings.HasPrefix(s, "*.") {
		wild = true
		s = s[2:]
	}
	if strings.Contains(s, "*") {
		return kindInvalid, nil, `a wildcard is only allowed as a leading "*." (as in *.example.com)`
	}
	name, reason := NormalizeName(s)
	if reason != "" {
		return kindInvalid, nil, reason
	}
	if wild {
		return kindWildcard, "." + name, ""
	}
	return kindName, name, ""
}

// splitPort reports whether s looks like host:port (a name with a port).
func splitPort(s string) (string, string, error) {
	i := strings.LastIndexByte(s, ':')
	if i <= 0 || i == len(s)-1 {
		return "", "", errors.New("no port")
	}
	for _, c := range s[i+1:] {
		if c < '0' || c > '9' {
			return "", "", errors.New("no port")
		}
	}
	return s[:i], s[i+1:], nil
}

// NormalizeName returns the canonical form of a host name: ASCII (IDNA),
// lower case, without a trailing dot. On failure the second result says
// why and the first is empty. DNS query names and peeked TLS/HTTP names
// go through it before they are matched, so the two sides agree.
func NormalizeName(s string) (string, string) {
	s = strings.TrimSuffix(s, ".")
	if s == "" {
		return "", "empty host name"
	}
	ascii := true
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			ascii = false
			break
		}
	}
	if !ascii {
		a, err := idna.Lookup.ToASCII(s)
		if err != nil {
			return "", "not a valid internationalized host name: " + err.Error()
		}
		s = a
	}
	s = strings.ToLower(s)
	if len(s) > 253 {
		return "", "host name longer than 253 characters"
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" {
			return "", "empty label in host name"
		}
		if len(label) > 63 {
			return "", "label longer than 63 characters"
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			ok := c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' ||
				c == '-' && i != 0 && i != len(label)-1
			if !ok {
				return "", fmt.Sprintf("invalid character %q in host name", c)
			}
		}
	}
	return s, ""
}

// Mode returns the policy's mode.
func (p *Policy) Mode() Mode {
	if p == nil || p.mode == "" {
		return ModeNone
	}
	return p.mode
}

// Allow returns the allow list as given to Parse.
func (p *Policy) Allow() []string { return append([]string(nil), p.allowSrc...) }

// Deny returns the deny list as given to Parse.
func (p *Policy) Deny() []string { return append([]string(nil), p.denySrc...) }

// String describes the policy for logs and errors.
func (p *Policy) String() string {
	return fmt.Sprintf("egress %s allow=%v deny=%v", p.Mode(), p.allowSrc, p.denySrc)
}
