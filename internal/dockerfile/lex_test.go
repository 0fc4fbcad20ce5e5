package dockerfile

import (
	"strings"
	"testing"
)

func TestWordExpansion(t *testing.T) {
	env := map[string]string{"A": "one", "EMPTY": "", "SP": "x y"}
	lx := lexer{escape: '\\', lookup: func(n string) (string, bool) { v, ok := env[n]; return v, ok }}
	for _, c := range []struct{ in, want, bad string }{
		{in: "$A", want: "one"},
		{in: "${A}x", want: "onex"},
		{in: "$A_B", want: ""},
		{in: "pre-$A-post", want: "pre-one-post"},
		{in: `'$A'`, want: "$A"},
		{in: `"$A and \$A"`, want: "one and $A"},
		{in: `\$A`, want: "$A"},
		{in: `a\ b`, want: "a b"},
		{in: "${NOPE:-def}", want: "def"},
		{in: "${EMPTY:-def}", want: "def"},
		{in: "${EMPTY-def}", want: ""},
		{in: "${A:+alt}", want: "alt"},
		{in: "${NOPE:+alt}", want: ""},
		{in: "${NOPE:-${A}}", want: "one"},
		{in: "${SP}", want: "x y"},
		{in: "$", want: "$"},
		{in: "$1", want: "$1"},
		{in: "${NOPE:?must be set}", bad: "NOPE: must be set"},
		{in: "${A", bad: "missing }"},
		{in: "${}", bad: "bad substitution"},
		{in: `"open`, bad: "unterminated"},
	} {
		got, err := lx.word(c.in)
		switch {
		case c.bad != "" && (err == nil || !strings.Contains(err.Error(), c.bad)):
			t.Errorf("word(%q) = %q, %v; want error %q", c.in, got, err, c.bad)
		case c.bad == "" && (err != nil || got != c.want):
			t.Errorf("word(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
}

func TestRawWords(t *testing.T) {
	got, err := rawWords(`a=1 b="x y" c='p q' d=\ e  f`, '\\')
	want := []string{"a=1", `b="x y"`, `c='p q'`, `d=\ e`, "f"}
	if err != nil || len(got) != len(want) {
		t.Fatalf("%q %v", got, err)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("word %d: %q, want %q", i, got[i], want[i])
		}
	}
}

// FuzzWord: expansion and splitting never panic, whatever the input.
func FuzzWord(f *testing.F) {
	for _, s := range []string{`$A ${B:-x} "q $A" 'l' \$`, "${A:?m}", "${${A}}", `a\`, "${A:-${B:+${C}}}"} {
		f.Add(s)
	}
	lx := lexer{escape: '\\', lookup: func(n string) (string, bool) { return n + "-value", len(n)%2 == 0 }}
	f.Fuzz(func(t *testing.T, s string) {
		_, _ = lx.word(s)
		_, _ = lx.vars(s)
		_, _ = rawWords(s, '\\')
		_, _ = rawWords(s, '`')
	})
}
