package mcpserver

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// headTail keeps the first and the last max/2 bytes written to it and
// counts the rest: a command's output shown to a model whole when it is
// short, and as its beginning and end (where errors usually are) when it
// is long, in bounded memory whatever the command prints.
type headTail struct {
	max   int
	head  []byte
	tail  []byte // the last bytes; up to twice max/2 between compactions
	total int64
}

func newHeadTail(max int) *headTail { return &headTail{max: max / 2 * 2} }

func (b *headTail) Write(p []byte) (int, error) {
	n := len(p)
	b.total += int64(n)
	half := b.max / 2
	if room := half - len(b.head); room > 0 && len(b.tail) == 0 {
		k := min(room, len(p))
		b.head = append(b.head, p[:k]...)
		p = p[k:]
	}
	if len(p) == 0 {
		return n, nil
	}
	if len(p) >= half {
		b.tail = append(b.tail[:0], p[len(p)-half:]...)
		return n, nil
	}
	b.tail = append(b.tail, p...)
	if len(b.tail) > 2*half {
		b.tail = append(b.tail[:0], b.tail[len(b.tail)-half:]...)
	}
	return n, nil
}

// Truncated reports whether bytes were left out. Up to max bytes are all
// kept: the first half in head, the rest in tail.
func (b *headTail) Truncated() bool { return b.total > int64(b.max) }

// String is the output as text: whole, or its beginning and end with a
// note of how much was left out between them. Bytes that are not UTF-8
// are shown as U+FFFD.
func (b *headTail) String() string {
	if !b.Truncated() {
		return strings.ToValidUTF8(string(b.head)+string(b.tail), "\uFFFD")
	}
	half := b.max / 2
	tail := b.tail
	if len(tail) > half {
		tail = tail[len(tail)-half:]
	}
	head := trimPartialRuneEnd(b.head)
	tail = trimPartialRuneStart(tail)
	omitted := b.total - int64(len(head)) - int64(len(tail))
	return fmt.Sprintf("%s\n[... %d bytes left out: the output was %d bytes; this shows its first %d and last %d ...]\n%s",
		strings.ToValidUTF8(string(head), "\uFFFD"), omitted, b.total, len(head), len(tail),
		strings.ToValidUTF8(string(tail), "\uFFFD"))
}

// trimPartialRuneEnd drops a rune cut in two at the end of b.
func trimPartialRuneEnd(b []byte) []byte {
	for i := 1; i <= utf8.UTFMax && i <= len(b); i++ {
		c := b[len(b)-i]
		if c < utf8.RuneSelf {
			return b // ASCII: nothing is cut
		}
		if utf8.RuneStart(c) {
			if r, _ := utf8.DecodeRune(b[len(b)-i:]); r == utf8.RuneError {
				return b[:len(b)-i]
			}
			return b
		}
	}
	return b
}

// trimPartialRuneStart drops the continuation bytes of a rune cut in two
// at the start of b.
func trimPartialRuneStart(b []byte) []byte {
	for i := 0; i < utf8.UTFMax && i < len(b); i++ {
		if utf8.RuneStart(b[i]) {
			return b[i:]
		}
	}
	return b
}
