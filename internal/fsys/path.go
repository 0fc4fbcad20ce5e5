package fsys

import (
	"strings"

	"github.com/sandpool/sandpool/internal/errdefs"
)

// CleanPath checks a path given for a file inside a sandbox and returns it
// in clean form. It must be absolute, free of NUL bytes, and must not climb
// above the root with "..": such a request is refused rather than quietly
// clamped, so a caller learns that the path was wrong.
func CleanPath(p string) (string, error) {
	if p == "" {
		return "", errdefs.Userf(errdefs.ErrInvalid, "path is empty")
	}
	if strings.IndexByte(p, 0) >= 0 {
		return "", errdefs.Userf(errdefs.ErrInvalid, "path %q contains a NUL byte", p)
	}
	if p[0] != '/' {
		return "", errdefs.Userf(errdefs.ErrInvalid, "path %q is not absolute", p)
	}
	if len(p) > 4096 {
		return "", errdefs.Userf(errdefs.ErrInvalid, "path is longer than 4096 bytes")
	}
	var parts []string
	for _, el := range strings.Split(p, "/") {
		switch el {
		case "", ".":
		case "..":
			if len(parts) == 0 {
				return "", errdefs.Userf(errdefs.ErrInvalid, "path %q escapes the sandbox root", p)
			}
			parts = parts[:len(parts)-1]
		default:
			parts = append(parts, el)
		}
	}
	return "/" + strings.Join(parts, "/"), nil
}
