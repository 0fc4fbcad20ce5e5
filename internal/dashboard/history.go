package dashboard

import (
	"context"
	"sync"
	"time"

	"github.com/sandpool/sandpool/internal/events"
)

// Bounds of what history keeps in memory.
const (
	historyPerSandbox = 50    // transitions kept per sandbox
	historySandboxes  = 20000 // sandboxes with a history (the oldest forgotten first)
	historyRecent     = 500   // latest events of every tenant, for the events page
)

// history remembers the recent transitions this node published, since it
// started: the status history on a sandbox's page and the first rows of
// the events page. The events themselves are not stored anywhere, so a
// sandbox made before this start (or on another node) shows only what
// happened since.
type history struct {
	sub *events.Subscription

	mu        sync.Mutex
	bySandbox map[string][]events.Event
	order     []string // sandbox ids in the order first seen, to forget the oldest
	recent    []events.Event
}

func newHistory(b *events.Broker) *history {
	return &history{sub: b.Subscribe(4096, nil), bySandbox: map[string][]events.Event{}}
}

// run records events until ctx ends.
func (h *history) run(ctx context.Context) {
	defer h.sub.Close()
	for {
		select {
		case <-ctx.Done():
			return
		case e := <-h.sub.C:
			h.record(e)
		}
	}
}

func (h *history) record(e events.Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.recent = append(h.recent, e)
	if len(h.recent) > historyRecent {
		h.recent = append(h.recent[:0:0], h.recent[len(h.recent)-historyRecent:]...)
	}
	if e.Sandbox == "" {
		return
	}
	list, seen := h.bySandbox[e.Sandbox]
	if !seen {
		h.order = append(h.order, e.Sandbox)
		if len(h.order) > historySandboxes {
			delete(h.bySandbox, h.order[0])
			h.order = h.order[1:]
		}
	}
	list = append(list, e)
	if len(list) > historyPerSandbox {
		list = list[len(list)-historyPerSandbox:]
	}
	h.bySandbox[e.Sandbox] = list
}

// sandbox returns a sandbox's transitions, newest first.
func (h *history) sandbox(id string) []events.Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	return reversed(h.bySandbox[id])
}

// latest returns up to n recent events that keep says to, newest first.
func (h *history) latest(n int, keep func(events.Event) bool) []events.Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []events.Event
	for i := len(h.recent) - 1; i >= 0 && len(out) < n; i-- {
		if keep(h.recent[i]) {
			out = append(out, h.recent[i])
		}
	}
	return out
}

// since returns the recent events after t that keep says to, oldest
// first; complete is false if older ones after t were already forgotten.
func (h *history) since(t time.Time, keep func(events.Event) bool) (out []events.Event, complete bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	complete = len(h.recent) < historyRecent || !h.recent[0].Time.After(t)
	for _, e := range h.recent {
		if e.Time.After(t) && keep(e) {
			out = append(out, e)
		}
	}
	return out, complete
}

func reversed(in []events.Event) []events.Event {
	out := make([]events.Event, len(in))
	for i, e := range in {
		out[len(in)-1-i] = e
	}
	return out
}
