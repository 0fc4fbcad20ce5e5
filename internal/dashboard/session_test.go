package dashboard

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/keys"
)

// fakeKeys is a key list whose revocations a test controls, and which
// can fail (a store that cannot be reached).
type fakeKeys struct {
	mu      sync.Mutex
	revoked map[string]bool
	fail    bool
}

func (f *fakeKeys) List(context.Context) ([]keys.Key, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail {
		return nil, errors.New("store unreachable")
	}
	var out []keys.Key
	for _, id := range []string{"k1", "k2"} {
		k := keys.Key{ID: id}
		if f.revoked[id] {
			now := time.Now()
			k.RevokedAt = &now
		}
		out = append(out, k)
	}
	return out, nil
}

func (f *fakeKeys) set(revoked string, fail bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.revoked = map[string]bool{revoked: true}
	f.fail = fail
}

func ended(s *session) bool {
	select {
	case <-s.Done():
		return true
	default:
		return false
	}
}

func TestSessionExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ss := newSessions(&fakeKeys{}, time.Hour, 10*time.Minute, 100)
		id, s := ss.create(keys.Key{ID: "k1", Tenant: "acme"})
		if got, ok := ss.get(id, true); !ok || got != s || got.tenant != "acme" {
			t.Fatal("a new session is not found")
		}
		if _, ok := ss.get("x"+id, true); ok {
			t.Fatal("a wrong id finds a session")
		}
		// Requests keep it alive past the idle timeout...
		for range 5 {
			time.Sleep(9 * time.Minute)
			if _, ok := ss.get(id, true); !ok {
				t.Fatal("a session in use ended")
			}
		}
		// ...streams do not count as use...
		time.Sleep(9 * time.Minute)
		if _, ok := ss.get(id, false); !ok {
			t.Fatal("ended before its idle timeout")
		}
		time.Sleep(2 * time.Minute)
		if _, ok := ss.get(id, false); ok || !ended(s) {
			t.Fatal("a session idle for 11 minutes lives on")
		}
		// ...and nothing outlives the TTL.
		id, s = ss.create(keys.Key{ID: "k1"})
		for range 7 {
			time.Sleep(9 * time.Minute)
			ss.get(id, true)
		}
		if _, ok := ss.get(id, true); ok || !ended(s) {
			t.Fatal("a session in use outlived its TTL")
		}
	})
}

func TestSessionSweep(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fk := &fakeKeys{}
		ss := newSessions(fk, time.Hour, 10*time.Minute, 100)
		id1, s1 := ss.create(keys.Key{ID: "k1"})
		_, s2 := ss.create(keys.Key{ID: "k2"})
		time.Sleep(time.Second)
		fk.set("k1", true) // k1 revoked, but the store cannot be read
		if err := ss.sweep(context.Background()); err == nil || ended(s1) {
			t.Fatalf("a failed sweep: %v, ended %v (want an error, sessions kept)", err, ended(s1))
		}
		fk.set("k1", false)
		if err := ss.sweep(context.Background()); err != nil {
			t.Fatal(err)
		}
		if !ended(s1) || ended(s2) {
			t.Fatalf("after k1's revocation: k1's session ended %v, k2's %v", ended(s1), ended(s2))
		}
		if _, ok := ss.get(id1, true); ok {
			t.Fatal("a revoked key's session is still found")
		}
		// Idle sessions go at the sweep too, without a request.
		time.Sleep(11 * time.Minute)
		if err := ss.sweep(context.Background()); err != nil || !ended(s2) || ss.count() != 0 {
			t.Fatalf("idle sessions after a sweep: %d (%v)", ss.count(), err)
		}
	})
}

func TestSessionBound(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ss := newSessions(&fakeKeys{}, time.Hour, 10*time.Minute, 3)
		var first *session
		for i := range 5 {
			_, s := ss.create(keys.Key{ID: "k1"})
			if i == 0 {
				first = s
			}
			time.Sleep(time.Second)
		}
		if ss.count() != 3 || !ended(first) {
			t.Fatalf("%d sessions kept, the oldest ended %v; want 3 and true", ss.count(), ended(first))
		}
		ss.endKey("k1")
		if ss.count() != 0 {
			t.Fatal("endKey left sessions")
		}
	})
}

func TestLocalPath(t *testing.T) {
	for in, want := range map[string]string{
		"/ui/sandboxes?status=running": "/ui/sandboxes?status=running",
		"/ui/":                         "/ui/",
		"":                             "/def",
		"https://evil.example/ui/":     "/def",
		"//evil.example/ui/":           "/def",
		"/ui/\\evil":                   "/def",
		"/v1/sandboxes":                "/def",
		"/ui/x\r\nSet-Cookie: a=b":     "/def",
		"javascript:alert(1)":          "/def",
		"/ui/../v1/keys":               "/def",
		"/ui/%2e%2e/x":                 "/def",
	} {
		if got := localPath(in, "/def"); got != want {
			t.Errorf("localPath(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestStatusFor(t *testing.T) {
	for _, tc := range []struct {
		err    error
		status int
	}{
		{errSignedOut, http.StatusUnauthorized},
		{fmt.Errorf("x: %w", errCSRF), http.StatusForbidden},
		{errdefs.Userf(errdefs.ErrNotFound, "no sandbox"), http.StatusNotFound},
		{errdefs.Userf(errdefs.ErrInvalid, "bad"), http.StatusUnprocessableEntity},
		{&errdefs.StateError{Sandbox: "sb", Err: errdefs.ErrNotFound}, http.StatusConflict},
		{&http.MaxBytesError{Limit: 1}, http.StatusRequestEntityTooLarge},
		{context.DeadlineExceeded, http.StatusGatewayTimeout},
		{errors.New("disk on fire"), http.StatusInternalServerError},
	} {
		if got, _ := statusFor(tc.err); got != tc.status {
			t.Errorf("statusFor(%v) = %d, want %d", tc.err, got, tc.status)
		}
	}
}

func TestHumanSeconds(t *testing.T) {
	for in, want := range map[float64]string{-3: "0s", 0: "0s", 59.4: "59s", 200: "3m 20s", 7500: "2h 5m", 90000: "1d 1h"} {
		if got := humanSeconds(in); got != want {
			t.Errorf("humanSeconds(%g) = %q, want %q", in, got, want)
		}
	}
}
