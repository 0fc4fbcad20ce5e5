// Package leader runs work that one node at a time may do, under a lease in
// the store: a name, a holder, a term and a deadline, renewed well before
// the deadline. The work's context ends the moment the lease can no longer
// be trusted: a renewal failed and the deadline (less a safety margin) is
// near, or another node holds it.
package leader

import (
	"context"
	"log/slog"
	"time"

	"github.com/sandpool/sandpool/internal/store"
)

// Leases is what leadership needs of the store.
type Leases interface {
	AcquireLease(ctx context.Context, name, holder string, ttl time.Duration) (store.Lease, error)
	ReleaseLease(ctx context.Context, name, holder string, term int64) error
}

// Options configure Run.
type Options struct {
	// TTL is how long a lease lasts without renewal (default 10s); it is
	// renewed every TTL/3 and given up TTL/5 before its deadline.
	TTL time.Duration
	Log *slog.Logger
}

// Run competes for the lease name as holder until ctx ends. While it holds
// the lease it runs work with a context that is cancelled as soon as the
// lease may have lapsed, and the fence writes must carry. When work
// returns (or its context ends), Run competes again.
func Run(ctx context.Context, st Leases, name, holder string, opts Options, work func(ctx context.Context, fence store.Fence)) {
	if opts.TTL == 0 {
		opts.TTL = 10 * time.Second
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	every := opts.TTL / 3
	margin := opts.TTL / 5
	for ctx.Err() == nil {
		l, err := acquire(ctx, st, name, holder, opts.TTL)
		if err != nil || l.Holder != holder {
			if err != nil && ctx.Err() == nil {
				opts.Log.Warn("lease: acquire failed", "lease", name, "err", err)
			}
			sleep(ctx, every)
			continue
		}
		lead(ctx, st, l, holder, opts, every, margin, work)
	}
}

// lead runs work while the lease l is held, renewing it. work's context
// is cancelled by a timer set to the trusted deadline (the lease's, less a
// margin for clock drift and write time); each renewal moves the timer.
func lead(ctx context.Context, st Leases, l store.Lease, holder string, opts Options, every, margin time.Duration,
	work func(ctx context.Context, fence store.Fence)) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	timer := time.AfterFunc(time.Until(l.ExpiresAt.Add(-margin)), cancel)
	defer timer.Stop()
	done := make(chan struct{})
	go func() {
		defer close(done)
		work(wctx, store.Fence{Lease: l.Name, Holder: holder, Term: l.Term})
	}()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-done:
			if wctx.Err() == nil {
				// Work ended by itself: give the lease up for whoever is
				// next.
				rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), every)
				_ = st.ReleaseLease(rctx, l.Name, holder, l.Term) // best effort: it expires anyway
				rcancel()
			}
			return
		case <-wctx.Done():
			<-done
			return
		case <-t.C:
			nl, err := acquire(wctx, st, l.Name, holder, opts.TTL)
			switch {
			case err != nil:
				// Work goes on until the trusted deadline; the next tick
				// tries again.
				opts.Log.Warn("lease: renewal failed", "lease", l.Name, "err", err)
			case nl.Holder != holder || nl.Term != l.Term:
				opts.Log.Warn("lease: lost", "lease", l.Name, "holder", nl.Holder)
				cancel()
			default:
				if !timer.Reset(time.Until(nl.ExpiresAt.Add(-margin))) {
					// The deadline passed before the renewal came back:
					// work has been stopped; compete again.
					<-done
					return
				}
			}
		}
	}
}

func acquire(ctx context.Context, st Leases, name, holder string, ttl time.Duration) (store.Lease, error) {
	actx, cancel := context.WithTimeout(ctx, ttl/3)
	defer cancel()
	return st.AcquireLease(actx, name, holder, ttl)
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
