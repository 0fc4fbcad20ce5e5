package pattern_test

import (
	"regexp"
	"strings"
	"testing"

	"github.com/sandpool/sandpool/internal/pattern"
)

// TestSameAsCounted: a Pattern accepts exactly what the counted regular
// expression it stands for accepts.
func TestSameAsCounted(t *testing.T) {
	counted := regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)
	p := pattern.New(`^[a-z0-9][a-z0-9._-]*$`, 1, 63)
	for _, s := range []string{"", "a", "a-b.c_d", "-a", "A", strings.Repeat("a", 63), strings.Repeat("a", 64),
		"a b", "a/b", "é", strings.Repeat("x", 62) + "é"} {
		if got, want := p.MatchString(s), counted.MatchString(s); got != want {
			t.Errorf("%q: %v, the counted expression says %v", s, got, want)
		}
	}
	digest := pattern.New(`^sha256:[0-9a-f]+$`, 71, 71)
	for s, want := range map[string]bool{"sha256:" + strings.Repeat("a", 64): true, "sha256:" + strings.Repeat("a", 63): false,
		"sha256:" + strings.Repeat("a", 65): false, "sha256:" + strings.Repeat("g", 64): false} {
		if digest.MatchString(s) != want {
			t.Errorf("digest %q: want %v", s, want)
		}
	}
}

// BenchmarkCompile compares what loading one name pattern costs.
func BenchmarkCompile(b *testing.B) {
	b.Run("counted", func(b *testing.B) {
		for b.Loop() {
			regexp.MustCompile(`^(lib64|bin)/[A-Za-z0-9][A-Za-z0-9._+-]{0,200}$`)
		}
	})
	b.Run("pattern", func(b *testing.B) {
		for b.Loop() {
			pattern.New(`^(lib64|bin)/[A-Za-z0-9][A-Za-z0-9._+-]*$`, 6, 207)
		}
	})
}
