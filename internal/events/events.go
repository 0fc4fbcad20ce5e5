// Package events carries sandbox and pool transitions to whoever listens
// (the SSE endpoint, tests). Publishing never blocks: a subscriber that
// falls behind loses events and is told how many.
package events

import (
	"sync"
	"time"
)

// Event is one transition.
type Event struct {
	Type    string    `json:"type"` // "sandbox" or "pool"
	Sandbox string    `json:"sandbox,omitempty"`
	Pool    string    `json:"pool,omitempty"`
	Tenant  string    `json:"-"`
	Status  string    `json:"status,omitempty"`
	Reason  string    `json:"reason,omitempty"`
	Error   string    `json:"error,omitempty"`
	Time    time.Time `json:"time"`
	// Count is how many events a slow subscriber lost (type "dropped").
	Count int `json:"count,omitempty"`
}

// Broker fans events out to subscribers.
type Broker struct {
	mu   sync.Mutex
	subs map[*Subscription]struct{}
}

// NewBroker returns an empty broker.
func NewBroker() *Broker { return &Broker{subs: map[*Subscription]struct{}{}} }

// Subscription receives events matching its filter on C.
type Subscription struct {
	C      chan Event
	filter func(Event) bool
	b      *Broker

	mu      sync.Mutex
	dropped int
}

// Dropped returns how many events were lost because C was full, and resets
// the count.
func (s *Subscription) Dropped() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.dropped
	s.dropped = 0
	return n
}

// Close stops the subscription.
func (s *Subscription) Close() {
	s.b.mu.Lock()
	delete(s.b.subs, s)
	s.b.mu.Unlock()
}

// Subscribe returns a subscription to events for which filter is true (all
// if nil), buffered by size.
func (b *Broker) Subscribe(size int, filter func(Event) bool) *Subscription {
	s := &Subscription{C: make(chan Event, size), filter: filter, b: b}
	b.mu.Lock()
	b.subs[s] = struct{}{}
	b.mu.Unlock()
	return s
}

// Publish sends e to every matching subscriber without waiting.
func (b *Broker) Publish(e Event) {
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for s := range b.subs {
		if s.filter != nil && !s.filter(e) {
			continue
		}
		select {
		case s.C <- e:
		default:
			s.mu.Lock()
			s.dropped++
			s.mu.Unlock()
		}
	}
}
