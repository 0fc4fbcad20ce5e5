package sniff

import "encoding/binary"

// ClientHello parses the server name of a TLS ClientHello from the start
// of a stream. It accepts only a ClientHello that fits whole in the first
// TLS record, with at most one server_name extension carrying one
// host_name.
func ClientHello(b []byte) (string, Result) {
	// Record header: handshake, version 3.x, length.
	if len(b) > 0 && b[0] != 0x16 || len(b) > 1 && b[1] != 3 || len(b) > 2 && b[2] > 4 {
		return "", Invalid
	}
	if len(b) < 5 {
		return "", Incomplete
	}
	n := int(binary.BigEndian.Uint16(b[3:5]))
	if n == 0 || n > 1<<14 {
		return "", Invalid
	}
	if len(b) < 5+n {
		return "", Incomplete
	}
	rec := b[5 : 5+n]
	// Handshake header: client_hello, 24-bit length, whole in this record.
	if len(rec) < 4 || rec[0] != 1 {
		return "", Invalid
	}
	hl := int(rec[1])<<16 | int(rec[2])<<8 | int(rec[3])
	if 4+hl > len(rec) {
		return "", Invalid // split over records
	}
	return parseHello(reader(rec[4 : 4+hl]))
}

func parseHello(r reader) (string, Result) {
	if !r.skip(2+32) || // legacy_version, random
		!r.skip8() || // legacy_session_id
		!r.skip16() || // cipher_suites
		!r.skip8() { // legacy_compression_methods
		return "", Invalid
	}
	if len(r) == 0 {
		return "", Nameless // no extensions at all
	}
	exts, ok := r.vec16()
	if !ok || len(r) != 0 {
		return "", Invalid
	}
	var name string
	found := false
	for len(exts) > 0 {
		typ, ok1 := exts.u16()
		body, ok2 := exts.vec16()
		if !ok1 || !ok2 {
			return "", Invalid
		}
		if typ != 0 { // server_name
			continue
		}
		if found {
			return "", Invalid // two server_name extensions
		}
		found = true
		list, ok := body.vec16()
		if !ok || len(body) != 0 || len(list) == 0 {
			return "", Invalid
		}
		for len(list) > 0 {
			kind, ok1 := list.u8()
			host, ok2 := list.vec16()
			if !ok1 || !ok2 || kind != 0 || name != "" {
				return "", Invalid // not host_name, or more than one
			}
			name = string(host)
			if name == "" {
				return "", Invalid
			}
		}
	}
	if !found {
		return "", Nameless
	}
	return hostName(name)
}

// reader consumes a TLS-encoded byte string from the front.
type reader []byte

func (r *reader) skip(n int) bool {
	if len(*r) < n {
		return false
	}
	*r = (*r)[n:]
	return true
}

func (r *reader) u8() (byte, bool) {
	if len(*r) < 1 {
		return 0, false
	}
	v := (*r)[0]
	*r = (*r)[1:]
	return v, true
}

func (r *reader) u16() (uint16, bool) {
	if len(*r) < 2 {
		return 0, false
	}
	v := binary.BigEndian.Uint16(*r)
	*r = (*r)[2:]
	return v, true
}

func (r *reader) skip8() bool {
	n, ok := r.u8()
	return ok && r.skip(int(n))
}

func (r *reader) skip16() bool {
	_, ok := r.vec16()
	return ok
}

func (r *reader) vec16() (reader, bool) {
	n, ok := r.u16()
	if !ok || len(*r) < int(n) {
		return nil, false
	}
	v := (*r)[:n]
	*r = (*r)[n:]
	return v, true
}
