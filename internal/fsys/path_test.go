package fsys_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/fsys"
)

func TestCleanPath(t *testing.T) {
	tests := []struct {
		in, want string
		bad      bool
	}{
		{in: "/", want: "/"},
		{in: "/a/b/../c", want: "/a/c"},
		{in: "//a///b/./", want: "/a/b"},
		{in: "/a/..", want: "/"},
		{in: "", bad: true},
		{in: "a/b", bad: true},
		{in: "/..", bad: true},
		{in: "/a/../../b", bad: true},
		{in: "/a\x00b", bad: true},
		{in: "/" + strings.Repeat("a", 5000), bad: true},
	}
	for _, tc := range tests {
		got, err := fsys.CleanPath(tc.in)
		if tc.bad {
			if !errors.Is(err, errdefs.ErrInvalid) {
				t.Errorf("CleanPath(%q) = %q, %v; want an invalid-argument error", tc.in, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("CleanPath(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

// FuzzCleanPath: whatever comes in, what comes out is absolute, clean and
// never climbs.
func FuzzCleanPath(f *testing.F) {
	for _, s := range []string{"/", "/a/../b", "../x", "/a/./b//c", "/..", "\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out, err := fsys.CleanPath(in)
		if err != nil {
			return
		}
		if !strings.HasPrefix(out, "/") || strings.Contains(out, "//") || strings.Contains(out, "\x00") {
			t.Fatalf("CleanPath(%q) = %q", in, out)
		}
		for _, el := range strings.Split(out, "/") {
			if el == ".." || el == "." {
				t.Fatalf("CleanPath(%q) = %q keeps %q", in, out, el)
			}
		}
	})
}
