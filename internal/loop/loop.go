// Package loop runs the rounds sandpool repeats in the background: the
// idle reaper, the reconciler, pool replenishment and pool syncing, node
// heartbeats. Every round has a deadline of its own; a round that fails
// is logged and one that panics is recovered and logged; the loop goes on
// until its context ends.
package loop

import (
	"context"
	"log/slog"
	"time"
)

// Options configure a loop.
type Options struct {
	// Name says which loop it is in the log.
	Name string
	// Every is the time between rounds.
	Every time.Duration
	// Timeout bounds each round (default: Every).
	Timeout time.Duration
	// Now runs a first round at once, before waiting.
	Now bool
	// Wake, if set, starts a round at once whenever it receives.
	Wake <-chan struct{}
	// Detached rounds run on a context the loop's context does not
	// cancel: work such as a pause or a destroy is finished, not cut in
	// half by a shutdown. The loop still stops between rounds.
	Detached bool
	Log      *slog.Logger
}

// Run runs round until ctx ends, as opts say.
func Run(ctx context.Context, opts Options, round func(context.Context) error) {
	if opts.Timeout <= 0 {
		opts.Timeout = opts.Every
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	t := time.NewTicker(opts.Every)
	defer t.Stop()
	if opts.Now {
		once(ctx, opts, round)
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-opts.Wake:
		}
		once(ctx, opts, round)
	}
}

func once(ctx context.Context, opts Options, round func(context.Context) error) {
	defer func() {
		if r := recover(); r != nil {
			opts.Log.Error("background round panicked; the loop goes on", "loop", opts.Name, "panic", r)
		}
	}()
	parent := ctx
	if opts.Detached {
		parent = context.WithoutCancel(ctx)
	}
	rctx, cancel := context.WithTimeout(parent, opts.Timeout)
	defer cancel()
	if err := round(rctx); err != nil && ctx.Err() == nil {
		opts.Log.Warn("background round failed", "loop", opts.Name, "err", err)
	}
}
