package mcpserver

import (
	"bytes"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

// want is what headTail must show for out written to one of size max.
func wantHeadTail(out []byte, max int) (string, bool) {
	max = max / 2 * 2
	if len(out) <= max {
		return string(out), false
	}
	return "", true
}

func TestHeadTail(t *testing.T) {
	for _, tc := range []struct {
		name   string
		writes []string
		max    int
		want   string // "" to check the cut form below
	}{
		{name: "empty", writes: nil, max: 10, want: ""},
		{name: "short", writes: []string{"hello"}, max: 10, want: "hello"},
		{name: "exactly max, in pieces", writes: []string{"abc", "defg", "hij"}, max: 10, want: "abcdefghij"},
		{name: "exactly max, one write", writes: []string{"abcdefghij"}, max: 10, want: "abcdefghij"},
		{name: "odd max keeps an even number", writes: []string{"abcdefghij"}, max: 11, want: "abcdefghij"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newHeadTail(tc.max)
			for _, w := range tc.writes {
				if n, err := b.Write([]byte(w)); n != len(w) || err != nil {
					t.Fatalf("write: %d %v", n, err)
				}
			}
			if got := b.String(); got != tc.want || b.Truncated() {
				t.Fatalf("got %q (truncated %v), want %q", got, b.Truncated(), tc.want)
			}
		})
	}
}

// checkCut checks a truncated output: its first and last half, and a
// note saying how much was left out.
func checkCut(t *testing.T, got string, out []byte, max int) {
	t.Helper()
	head, rest, ok := strings.Cut(got, "\n[... ")
	if !ok {
		t.Fatalf("no note in %q", got)
	}
	note, tail, ok := strings.Cut(rest, " ...]\n")
	if !ok {
		t.Fatalf("note not closed in %q", got)
	}
	half := max / 2
	if !bytes.HasPrefix(out, []byte(head)) || len(head) > half || len(head) < half-utf8.UTFMax+1 {
		t.Errorf("head %q is not the first %d bytes of the output", head, half)
	}
	if !bytes.HasSuffix(out, []byte(tail)) || len(tail) > half || len(tail) < half-utf8.UTFMax+1 {
		t.Errorf("tail %q is not the last %d bytes of the output", tail, half)
	}
	if !utf8.ValidString(head) || !utf8.ValidString(tail) {
		t.Errorf("a rune was cut in two: %q ... %q", head, tail)
	}
	if !strings.Contains(note, "bytes left out") || !strings.Contains(note, "the output was "+strconv.Itoa(len(out))+" bytes") {
		t.Errorf("note %q", note)
	}
}

func TestHeadTailCuts(t *testing.T) {
	long := []byte(strings.Repeat("0123456789", 1000) + "THE END")
	for _, chunk := range []int{1, 3, 7, 100, 4999, 5000, len(long)} {
		b := newHeadTail(2048)
		for p := long; len(p) > 0; {
			n := min(chunk, len(p))
			b.Write(p[:n])
			p = p[n:]
		}
		if !b.Truncated() {
			t.Fatalf("chunk %d: not truncated", chunk)
		}
		got := b.String()
		checkCut(t, got, long, 2048)
		if !strings.HasSuffix(got, "THE END") || !strings.HasPrefix(got, "0123456789") {
			t.Fatalf("chunk %d: lost an end: %.40q ... %.40q", chunk, got, got[len(got)-40:])
		}
	}
	// Runes are not cut in two at either cut.
	runes := []byte(strings.Repeat("é€😀", 500))
	b := newHeadTail(1001)
	b.Write(runes)
	checkCut(t, b.String(), runes, 1000)
}

// FuzzHeadTail: whatever is written, in whatever pieces, the result is
// the whole output when it fits, else its two ends and a note.
func FuzzHeadTail(f *testing.F) {
	f.Add([]byte("hello world"), uint8(3), uint16(8))
	f.Add([]byte(strings.Repeat("x", 3000)), uint8(200), uint16(1024))
	f.Fuzz(func(t *testing.T, out []byte, chunk uint8, max uint16) {
		m := int(max)%4096 + 8
		b := newHeadTail(m)
		for p := out; len(p) > 0; {
			n := min(int(chunk)+1, len(p))
			b.Write(p[:n])
			p = p[n:]
		}
		want, cut := wantHeadTail(out, m)
		if b.Truncated() != cut {
			t.Fatalf("truncated %v, want %v", b.Truncated(), cut)
		}
		if !cut {
			if got := b.String(); got != strings.ToValidUTF8(want, "\uFFFD") {
				t.Fatalf("got %q, want %q", got, want)
			}
			return
		}
		if !utf8.Valid(out) {
			return // the ends are shown with U+FFFD: checkCut compares bytes
		}
		checkCut(t, b.String(), out, m/2*2)
	})
}
