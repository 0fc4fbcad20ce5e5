package dashboard

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"sync"
	"time"

	"github.com/sandpool/sandpool/internal/ids"
	"github.com/sandpool/sandpool/internal/keys"
)

// cookieName is the session cookie. Its value is the session id, never the
// API key.
const cookieName = "sandpool_session"

// session is one signed-in browser. It holds who signed in (the key's id,
// tenant and admin flag), not the key: the secret is dropped once checked.
type session struct {
	keyID   string
	tenant  string
	admin   bool
	csrf    string // the token every change must carry
	created time.Time
	done    chan struct{} // closed when the session ends (streams end with it)

	lastSeen time.Time // guarded by sessions.mu
}

// Done is closed when the session has ended: signed out, expired, or its
// key revoked.
func (s *session) Done() <-chan struct{} { return s.done }

// checkCSRF reports whether token is this session's CSRF token.
func (s *session) checkCSRF(token string) bool {
	return token != "" && subtle.ConstantTimeCompare([]byte(token), []byte(s.csrf)) == 1
}

// keyLister is what sessions need of the keys: the list, to notice revoked
// ones.
type keyLister interface {
	List(ctx context.Context) ([]keys.Key, error)
}

// sessions keeps the signed-in browsers of this node in memory, by the
// SHA-256 of their id (a lookup compares no secret).
type sessions struct {
	keys keyLister
	ttl  time.Duration // absolute lifetime
	idle time.Duration // without a request
	max  int

	mu sync.Mutex
	m  map[[32]byte]*session
}

func newSessions(k keyLister, ttl, idle time.Duration, max int) *sessions {
	return &sessions{keys: k, ttl: ttl, idle: idle, max: max, m: map[[32]byte]*session{}}
}

func sessionKey(id string) [32]byte { return sha256.Sum256([]byte(id)) }

// create starts a session for k and returns its id (for the cookie).
func (ss *sessions) create(k keys.Key) (string, *session) {
	id := ids.Random(32)
	now := time.Now()
	s := &session{keyID: k.ID, tenant: k.Tenant, admin: k.Admin, csrf: ids.Random(32),
		created: now, lastSeen: now, done: make(chan struct{})}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if len(ss.m) >= ss.max {
		ss.evictOldestLocked()
	}
	ss.m[sessionKey(id)] = s
	return id, s
}

// evictOldestLocked ends the oldest session, so sign-ins cannot grow the
// table without bound.
func (ss *sessions) evictOldestLocked() {
	var oldest [32]byte
	var found *session
	for k, s := range ss.m {
		if found == nil || s.created.Before(found.created) {
			oldest, found = k, s
		}
	}
	if found != nil {
		delete(ss.m, oldest)
		close(found.done)
	}
}

// get returns the live session with this id; touch counts the request as
// activity (a page or an action does; a live stream does not).
func (ss *sessions) get(id string, touch bool) (*session, bool) {
	if id == "" {
		return nil, false
	}
	k := sessionKey(id)
	now := time.Now()
	ss.mu.Lock()
	defer ss.mu.Unlock()
	s, ok := ss.m[k]
	if !ok {
		return nil, false
	}
	if ss.expiredLocked(s, now) {
		delete(ss.m, k)
		close(s.done)
		return nil, false
	}
	if touch {
		s.lastSeen = now
	}
	return s, true
}

func (ss *sessions) expiredLocked(s *session, now time.Time) bool {
	return now.Sub(s.created) >= ss.ttl || now.Sub(s.lastSeen) >= ss.idle
}

// end ends the session with this id, if there is one.
func (ss *sessions) end(id string) {
	k := sessionKey(id)
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if s, ok := ss.m[k]; ok {
		delete(ss.m, k)
		close(s.done)
	}
}

// count is how many sessions there are.
func (ss *sessions) count() int {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return len(ss.m)
}

// sweep ends expired sessions and those whose key is revoked (or gone).
// The keys are read from the store, not a cache, so a key revoked on any
// node ends its sessions here at the next sweep.
func (ss *sessions) sweep(ctx context.Context) error {
	now := time.Now()
	ss.mu.Lock()
	for k, s := range ss.m {
		if ss.expiredLocked(s, now) {
			delete(ss.m, k)
			close(s.done)
		}
	}
	n := len(ss.m)
	ss.mu.Unlock()
	if n == 0 {
		return nil // nobody signed in: nothing to ask the store
	}
	list, err := ss.keys.List(ctx)
	if err != nil {
		return err // the sessions stay until a sweep can check them
	}
	valid := make(map[string]bool, len(list))
	for _, k := range list {
		if k.RevokedAt == nil {
			valid[k.ID] = true
		}
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	for k, s := range ss.m {
		// A session made after the list was read may have a key the list
		// lacks (a key made just now): it is checked at the next sweep.
		if !valid[s.keyID] && s.created.Before(now) {
			delete(ss.m, k)
			close(s.done)
		}
	}
	return nil
}

// closeAll ends every session (the server is stopping).
func (ss *sessions) closeAll() {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	for k, s := range ss.m {
		delete(ss.m, k)
		close(s.done)
	}
}

// setCookie gives the browser the session id: HttpOnly (no script reads
// it), SameSite=Strict (no other site's page sends it), Secure when the
// browser came over TLS (directly or through a proxy that says so), and
// scoped to /ui/.
func setCookie(w http.ResponseWriter, r *http.Request, id string, ttl time.Duration) {
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: id, Path: "/ui/", MaxAge: int(ttl.Seconds()),
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: overTLS(r)})
}

// clearCookie removes the session cookie.
func clearCookie(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: "", Path: "/ui/", MaxAge: -1,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: overTLS(r)})
}

// overTLS reports whether the browser reached us over TLS. The forwarded
// header is trusted only to ask for more (a Secure cookie), never less.
func overTLS(r *http.Request) bool {
	return r.TLS != nil || r.Header.Get("X-Forwarded-Proto") == "https"
}

func cookieValue(r *http.Request) string {
	c, err := r.Cookie(cookieName)
	if err != nil {
		return ""
	}
	return c.Value
}

// endKey ends every session of a key (revoked here: no need to wait for
// the sweep).
func (ss *sessions) endKey(keyID string) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	for k, s := range ss.m {
		if s.keyID == keyID {
			delete(ss.m, k)
			close(s.done)
		}
	}
}
