package e2b

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sandpool/sandpool/internal/agent"
	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/fsys"
	"github.com/sandpool/sandpool/internal/sandbox"
)

// accounts is what a sandbox's /etc/passwd and /etc/group say, read
// through its files (as root) and kept a while: envd resolves paths
// against a user's home, names owners in file entries, and refuses
// unknown users.
type accounts struct {
	read   time.Time
	homes  map[string]string // user name -> home
	users  map[int]string    // uid -> name
	groups map[int]string    // gid -> name
}

// accountsTTL is how long a sandbox's accounts are trusted.
const accountsTTL = 30 * time.Second

// accountCache keeps accounts by sandbox.
type accountCache struct {
	mu sync.Mutex
	m  map[string]*accounts
}

func (s *Server) accounts(ctx context.Context, sb sandbox.Sandbox) (*accounts, error) {
	s.acc.mu.Lock()
	a := s.acc.m[sb.ID]
	s.acc.mu.Unlock()
	if a != nil && time.Since(a.read) < accountsTTL {
		return a, nil
	}
	fs, err := s.svc.Files(ctx, sb.Tenant, sb.ID)
	if err != nil {
		return nil, err
	}
	a = &accounts{read: time.Now(), homes: map[string]string{}, users: map[int]string{}, groups: map[int]string{}}
	if err := scanFile(ctx, fs, "/etc/passwd", 7, func(f []string) {
		if uid, err := strconv.Atoi(f[2]); err == nil {
			a.homes[f[0]] = f[5]
			if _, seen := a.users[uid]; !seen {
				a.users[uid] = f[0]
			}
		}
	}); err != nil {
		return nil, err
	}
	_ = scanFile(ctx, fs, "/etc/group", 3, func(f []string) { // best effort: numeric group names without it
		if gid, err := strconv.Atoi(f[2]); err == nil {
			if _, seen := a.groups[gid]; !seen {
				a.groups[gid] = f[0]
			}
		}
	})
	s.acc.mu.Lock()
	if s.acc.m == nil || len(s.acc.m) > 10000 {
		s.acc.m = map[string]*accounts{} // bounded: start over rather than grow
	}
	s.acc.m[sb.ID] = a
	s.acc.mu.Unlock()
	return a, nil
}

// scanFile calls fn with the fields of each line of a colon-separated file
// in the sandbox that has at least n of them. A missing file holds none.
func scanFile(ctx context.Context, fs fsys.Files, p string, n int, fn func([]string)) error {
	rc, _, err := fs.Read(ctx, p, fsys.Options{User: "root"})
	if errors.Is(err, errdefs.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	defer rc.Close()
	sc := bufio.NewScanner(io.LimitReader(rc, 16<<20))
	for sc.Scan() {
		if f := strings.Split(sc.Text(), ":"); len(f) >= n && !strings.HasPrefix(f[0], "#") {
			fn(f)
		}
	}
	return sc.Err()
}

// user is who an envd request acts as, and where its home is.
type user struct {
	name string // "" for the sandbox's default user
	home string
}

// basicUser is the user an RPC names: Authorization: Basic base64("name:").
func basicUser(h http.Header) (string, error) {
	v, ok := strings.CutPrefix(h.Get("Authorization"), "Basic ")
	if !ok {
		return "", nil
	}
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(v))
	if err != nil {
		return "", fmt.Errorf("%w: Authorization: %v", errUnauthorized, err)
	}
	name, _, _ := strings.Cut(string(b), ":")
	return name, nil
}

// userFor resolves who a request acts as. With no name the sandbox's
// default user acts; its home is looked up only when needHome. A user the
// sandbox does not know is refused as unauthenticated, as envd does.
func (s *Server) userFor(ctx context.Context, sb sandbox.Sandbox, name string, needHome bool) (user, error) {
	if name == "" && !needHome {
		return user{}, nil
	}
	a, err := s.accounts(ctx, sb)
	if err != nil {
		return user{}, err
	}
	lookup := name
	if lookup == "" {
		lookup = agent.DefaultUser
	}
	home, ok := a.homes[lookup]
	if !ok {
		if _, err := strconv.Atoi(lookup); err == nil {
			return user{name: name, home: "/"}, nil // a uid without an entry, as the agent allows
		}
		return user{}, fmt.Errorf("%w: no user %q in the sandbox", errUnauthorized, lookup)
	}
	return user{name: name, home: home}, nil
}

// resolvePath makes a path as envd does: empty is the user's home, "~" and
// "~/x" are in it, a relative path is joined to it, an absolute one is as
// it is. The result is checked (no NUL, nothing above the root) and clean.
func resolvePath(p string, u user) (string, error) {
	switch {
	case p == "" || p == "~":
		p = u.home
	case strings.HasPrefix(p, "~/"):
		p = path.Join(u.home, p[2:])
	case strings.HasPrefix(p, "~"):
		return "", errdefs.Userf(errdefs.ErrInvalid, "path %q: ~user is not supported", p)
	case !strings.HasPrefix(p, "/"):
		p = u.home + "/" + p
	}
	return fsys.CleanPath(p)
}

// needsHome reports whether resolving p needs the user's home.
func needsHome(p string) bool { return !strings.HasPrefix(p, "/") }
