package image

import (
	"errors"
	"io/fs"
	"strconv"
	"strings"
)

// ResolveUser resolves a user as an image config or USER writes it
// ("name", "uid", "name:group", "uid:gid"; empty is root) against the
// image's /etc/passwd and /etc/group across its stacked layers. A name the
// image lacks is an error; a numeric id needs no entry (as with Docker),
// and then its group is 0.
func ResolveUser(s Stack, spec string) (uid, gid int, err error) {
	if spec == "" {
		return 0, 0, nil
	}
	user, group, hasGroup := strings.Cut(spec, ":")
	if user == "" || (hasGroup && group == "") {
		return 0, 0, invalidf("invalid user %q", spec)
	}
	if n, ok := parseID(user); ok {
		uid = n
		if e, ok, err := lookup(s, "/etc/passwd", func(f []string) bool { return f[2] == user }); err != nil {
			return 0, 0, err
		} else if ok {
			gid, _ = parseID(e[3])
		}
	} else {
		e, ok, err := lookup(s, "/etc/passwd", func(f []string) bool { return f[0] == user })
		if err != nil {
			return 0, 0, err
		}
		if !ok {
			return 0, 0, invalidf("user %q is not in the image's /etc/passwd", user)
		}
		var ok1, ok2 bool
		uid, ok1 = parseID(e[2])
		gid, ok2 = parseID(e[3])
		if !ok1 || !ok2 {
			return 0, 0, invalidf("user %q: bad /etc/passwd entry", user)
		}
	}
	if !hasGroup {
		return uid, gid, nil
	}
	if n, ok := parseID(group); ok {
		return uid, n, nil
	}
	e, ok, err := lookup(s, "/etc/group", func(f []string) bool { return f[0] == group })
	if err != nil {
		return 0, 0, err
	}
	if !ok {
		return 0, 0, invalidf("group %q is not in the image's /etc/group", group)
	}
	gid, ok = parseID(e[2])
	if !ok {
		return 0, 0, invalidf("group %q: bad /etc/group entry", group)
	}
	return uid, gid, nil
}

// parseID parses an id a sandbox can have.
func parseID(s string) (int, bool) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n >= maxID {
		return 0, false
	}
	return n, true
}

// lookup finds the first line of file (passwd or group format) whose
// fields match; a missing file matches nothing.
func lookup(s Stack, file string, match func([]string) bool) ([]string, bool, error) {
	b, err := s.ReadFile(file, 4<<20)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, false, nil
		}
		return nil, false, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Split(line, ":")
		if len(f) < 4 {
			continue
		}
		if match(f) {
			return f, true, nil
		}
	}
	return nil, false, nil
}
