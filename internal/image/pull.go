package image

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Pull fetches the image src names for opts.Platform and unpacks the
// layers the store does not have yet, holding every layer of it in lease.
// It checks the image's user against its /etc/passwd and /etc/group.
// Record the result with Commit before releasing the lease.
//
// On error, layers this pull stored that nothing else uses are removed:
// a refused image leaves nothing behind.
func (s *Store) Pull(ctx context.Context, lease *Lease, src Source, opts Options) (Image, error) {
	r, err := Fetch(ctx, src, opts)
	if err != nil {
		return Image{}, err
	}
	return s.Unpack(ctx, lease, r, opts)
}

// Unpack is Pull's second half: it stores the layers of an image Fetch
// resolved.
func (s *Store) Unpack(ctx context.Context, lease *Lease, r *Remote, opts Options) (_ Image, retErr error) {
	mine := s.Lease() // what this pull holds; moved to lease on success
	var created []string
	defer func() {
		if retErr != nil {
			s.discard(mine, created)
			return
		}
		for _, l := range mine.Held() {
			lease.pin(l)
		}
		mine.Release()
	}()
	b := newBudget(maxBytes(opts))
	img := Image{Source: r.Source, Digest: r.Digest, Platform: r.Platform, Config: r.Config, CreatedAt: time.Now().UTC()}
	for i, li := range r.Layers {
		report := func(p Progress) {
			if opts.Progress != nil {
				p.Layer, p.Layers, p.Digest, p.Total = i+1, len(r.Layers), li.Digest, li.Size
				opts.Progress(p)
			}
		}
		layer, fresh, err := s.pullLayer(ctx, mine, r, i, b, report)
		if err != nil {
			return Image{}, fmt.Errorf("pull %s: layer %d of %d (%s): %w", r.Source, i+1, len(r.Layers), li.Digest, err)
		}
		if fresh {
			created = append(created, layer.DiffID)
		}
		img.Layers = append(img.Layers, layer)
		img.Size += layer.Size
	}
	uid, gid, err := ResolveUser(Stack(img.Dirs()), img.Config.User)
	if err != nil {
		return Image{}, fmt.Errorf("image %s: %w", r.Source, err)
	}
	img.Config.UID, img.Config.GID = uid, gid
	return img, nil
}

// pullLayer stores layer i of r unless the store has it. fresh says this
// call unpacked it.
func (s *Store) pullLayer(ctx context.Context, lease *Lease, r *Remote, i int, b *budget, report func(Progress)) (Layer, bool, error) {
	li := r.Layers[i]
	lease.pin(li.DiffID) // before looking, so a GC cannot take it after
	if l, ok := s.lookup(li.DiffID); ok {
		report(Progress{Cached: true, Done: true})
		return l, false, b.take(l.Size + int64(l.Entries)*entryCost)
	}
	type result struct {
		layer Layer
		fresh bool
	}
	for try := 0; ; try++ {
		v, err, _ := s.flight.Do(li.DiffID, func() (any, error) {
			if l, ok := s.lookup(li.DiffID); ok {
				return result{l, false}, nil
			}
			report(Progress{})
			rc, check, err := r.open(i, func(n int64) { report(Progress{Bytes: n}) })
			if err != nil {
				return nil, err
			}
			defer rc.Close()
			// Held by this lease while it is being stored; a caller
			// sharing this flight pins it on its own.
			l, err := s.ingest(ctx, lease, rc, li.DiffID, b, check)
			if err != nil {
				return nil, err
			}
			return result{l, true}, nil
		})
		if err != nil {
			// Another caller's pull we shared may have been cancelled;
			// ours goes on with a try of its own.
			if try == 0 && ctx.Err() == nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
				continue
			}
			return Layer{}, false, err
		}
		res := v.(result)
		report(Progress{Bytes: li.Size, Done: true})
		return res.layer, res.fresh, nil
	}
}

// Held lists the layers the lease holds.
func (l *Lease) Held() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]string, 0, len(l.held))
	for d := range l.held {
		out = append(out, d)
	}
	return out
}
