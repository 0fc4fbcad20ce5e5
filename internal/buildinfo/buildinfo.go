// Package buildinfo says which build of sandpool is running: the module
// version, the VCS revision and whether the tree had changes, as Go embeds
// them in the binary, so an operator can tell nodes' builds apart.
package buildinfo

import (
	"fmt"
	"runtime/debug"
	"strings"
)

// Version, if set at link time (-ldflags "-X
// github.com/sandpool/sandpool/internal/buildinfo.Version=v1.2.3"),
// overrides the module version Go recorded.
var Version string

// Info describes a build.
type Info struct {
	// Version of the module ("(devel)" for a build from a checkout).
	Version string `json:"version"`
	// Revision is the VCS commit the build was made from, Time its
	// commit time, Modified whether the work tree had uncommitted changes.
	Revision string `json:"revision,omitempty"`
	Time     string `json:"time,omitempty"`
	Modified bool   `json:"modified,omitempty"`
	// GoVersion built it.
	GoVersion string `json:"go_version"`
}

// Get reads the running binary's build information.
func Get() Info {
	var in Info
	bi, ok := debug.ReadBuildInfo()
	if ok {
		in.Version, in.GoVersion = bi.Main.Version, bi.GoVersion
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				in.Revision = s.Value
			case "vcs.time":
				in.Time = s.Value
			case "vcs.modified":
				in.Modified = s.Value == "true"
			}
		}
	}
	if Version != "" {
		in.Version = Version
	}
	if in.Version == "" {
		in.Version = "unknown"
	}
	return in
}

// String is one line: "v1.2.3 (revision 0123abc, modified, 2026-11-28T10:00:00Z, go1.26.8)".
func (in Info) String() string {
	var parts []string
	if in.Revision != "" {
		rev := in.Revision
		if len(rev) > 12 {
			rev = rev[:12]
		}
		parts = append(parts, "revision "+rev)
	}
	if in.Modified {
		parts = append(parts, "modified")
	}
	if in.Time != "" {
		parts = append(parts, in.Time)
	}
	if in.GoVersion != "" {
		parts = append(parts, in.GoVersion)
	}
	if len(parts) == 0 {
		return in.Version
	}
	return fmt.Sprintf("%s (%s)", in.Version, strings.Join(parts, ", "))
}
