package keys_test

import (
	"context"
	"errors"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/keys"
	"github.com/sandpool/sandpool/internal/store/storetest"
)

func TestKeys(t *testing.T) {
	ctx := context.Background()
	ks := keys.New(storetest.SQLite(t))

	native, err := ks.Create(ctx, "team", false, keys.Native)
	if err != nil || !regexp.MustCompile(`^spk_[a-z2-7]{32}$`).MatchString(native.Secret) {
		t.Fatalf("native key %+v %v", native, err)
	}
	e2b, err := ks.Create(ctx, "team", true, keys.E2B)
	if err != nil || !regexp.MustCompile(`^e2b_[0-9a-f]{40}$`).MatchString(e2b.Secret) {
		t.Fatalf("e2b key %+v %v", e2b, err)
	}
	for _, k := range []keys.Key{native, e2b} {
		got, err := ks.Authenticate(ctx, k.Secret)
		if err != nil || got.ID != k.ID || got.Tenant != "team" || got.Admin != k.Admin || got.Secret != "" {
			t.Fatalf("authenticate %s: %+v %v", k.ID, got, err)
		}
	}
	if _, err := ks.Authenticate(ctx, "spk_nope"); !errors.Is(err, keys.ErrUnknown) {
		t.Fatalf("unknown key: %v", err)
	}
	if _, err := ks.Create(ctx, "Bad Tenant", false, keys.Native); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("bad tenant: %v", err)
	}
	if err := ks.Revoke(ctx, native.ID, native.ID); !errors.Is(err, errdefs.ErrConflict) {
		t.Fatalf("self revoke: %v", err)
	}
	// Revoked: refused at once on this node, though it was cached.
	if err := ks.Revoke(ctx, native.ID, e2b.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := ks.Authenticate(ctx, native.Secret); !errors.Is(err, keys.ErrUnknown) {
		t.Fatalf("revoked key: %v", err)
	}
	if err := ks.Revoke(ctx, native.ID, e2b.ID); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("revoke twice: %v", err)
	}
	list, err := ks.List(ctx)
	if err != nil || len(list) != 2 {
		t.Fatalf("list %+v %v", list, err)
	}
	for _, k := range list {
		if k.Secret != "" {
			t.Fatal("a listed key shows its secret")
		}
		if (k.ID == native.ID) != (k.RevokedAt != nil) {
			t.Fatalf("revoked_at of %s: %v", k.ID, k.RevokedAt)
		}
	}
}

// Many callers authenticating while keys are made and revoked: every
// answer is right for the key asked about (run with -race).
func TestKeysConcurrent(t *testing.T) {
	ctx := context.Background()
	ks := keys.New(storetest.SQLite(t))
	admin, err := ks.Create(ctx, "admin", true, keys.Native)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := range 8 {
		wg.Go(func() {
			for range 20 {
				k, err := ks.Create(ctx, "t"+strings.Repeat("x", i), false, keys.Native)
				if err != nil {
					errs <- err
					return
				}
				if got, err := ks.Authenticate(ctx, k.Secret); err != nil || got.ID != k.ID {
					errs <- errors.Join(err, errors.New("authenticated as "+got.ID+", want "+k.ID))
					return
				}
				if err := ks.Revoke(ctx, k.ID, admin.ID); err != nil {
					errs <- err
					return
				}
				if _, err := ks.Authenticate(ctx, k.Secret); !errors.Is(err, keys.ErrUnknown) {
					errs <- errors.New("a revoked key still works")
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
