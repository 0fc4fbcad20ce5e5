package buildinfo

import (
	"strings"
	"testing"
)

func TestGet(t *testing.T) {
	in := Get()
	// A test binary has no VCS stamp, but Go records its own version.
	if in.Version == "" || !strings.HasPrefix(in.GoVersion, "go1.") {
		t.Fatalf("build info %+v", in)
	}
	Version = "v9.9.9"
	defer func() { Version = "" }()
	if got := Get().Version; got != "v9.9.9" {
		t.Fatalf("link-time version ignored: %q", got)
	}
}

func TestString(t *testing.T) {
	in := Info{Version: "(devel)", Revision: "0123456789abcdef0123", Modified: true, Time: "2026-11-28T10:00:00Z", GoVersion: "go1.26.8"}
	if got, want := in.String(), "(devel) (revision 0123456789ab, modified, 2026-11-28T10:00:00Z, go1.26.8)"; got != want {
		t.Fatalf("%q, want %q", got, want)
	}
	if got := (Info{Version: "v1"}).String(); got != "v1" {
		t.Fatalf("%q", got)
	}
}
