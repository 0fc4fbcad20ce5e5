package policy

import "net/netip"

// blockedPrefixes are the ranges no sandbox reaches whatever its policy,
// unless the operator lists them as allowed private ranges: private,
// shared (CGNAT), loopback, link-local (cloud metadata), "this network",
// benchmarking, multicast and reserved space, and their IPv6 equivalents,
// including the forms that embed an IPv4 address (NAT64, 6to4, Teredo).
// The documentation ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24,
// 2001:db8::/32) are not listed: nothing real lives there, and tests use
// them as the fake internet.
var blockedPrefixes = func() []netip.Prefix {
	var out []netip.Prefix
	for _, s := range []string{
		"0.0.0.0/8",      // "this network"
		"10.0.0.0/8",     // RFC 1918
		"100.64.0.0/10",  // shared address space (CGNAT); sandboxes' own link
		"127.0.0.0/8",    // loopback
		"169.254.0.0/16", // link-local, cloud metadata
		"172.16.0.0/12",  // RFC 1918
		"192.0.0.0/24",   // IETF protocol assignments
		"192.88.99.0/24", // 6to4 relay anycast (deprecated)
		"192.168.0.0/16", // RFC 1918
		"198.18.0.0/15",  // benchmarking
		"224.0.0.0/4",    // multicast
		"240.0.0.0/4",    // reserved, and 255.255.255.255
		"::/128",         // unspecified
		"::1/128",        // loopback
		"::/96",          // IPv4-compatible (deprecated)
		"64:ff9b::/96",   // NAT64
		"64:ff9b:1::/48", // local NAT64
		"100::/64",       // discard
		"2001::/23",      // IETF protocol assignments, Teredo included
		"2002::/16",      // 6to4
		"fc00::/7",       // unique local
		"fe80::/10",      // link-local
		"fec0::/10",      // site-local (deprecated)
		"ff00::/8",       // multicast
	} {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}()

// Blocked reports whether ip lies in a range that is always refused (see
// blockedPrefixes). IPv4-mapped IPv6 addresses are judged as the IPv4
// address they carry; an invalid address is blocked.
func Blocked(ip netip.Addr) bool {
	if !ip.IsValid() {
		return true
	}
	ip = ip.Unmap()
	for _, p := range blockedPrefixes {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// BlockedPrefixes returns the always-refused ranges, for documentation and
// for operators deciding what to list as allowed private ranges.
func BlockedPrefixes() []netip.Prefix { return append([]netip.Prefix(nil), blockedPrefixes...) }
