package pool

import (
	"sync"
	"time"
)

// tracker counts work in progress and lets one wait, with a bound, until
// none is left. Unlike a sync.WaitGroup it may be added to while someone
// waits (a release can start while its pool drains).
type tracker struct {
	mu   sync.Mutex
	n    int
	zero chan struct{} // closed while n == 0
}

func (t *tracker) add() {
	t.mu.Lock()
	if t.zero == nil {
		t.zero = make(chan struct{})
	}
	if t.n == 0 {
		t.zero = make(chan struct{})
	}
	t.n++
	t.mu.Unlock()
}

func (t *tracker) done() {
	t.mu.Lock()
	t.n--
	if t.n == 0 {
		close(t.zero)
	}
	t.mu.Unlock()
}

// wait returns true once nothing is in progress, false after d.
func (t *tracker) wait(d time.Duration) bool {
	t.mu.Lock()
	if t.n == 0 {
		t.mu.Unlock()
		return true
	}
	zero := t.zero
	t.mu.Unlock()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-zero:
		return true
	case <-timer.C:
		return false
	}
}
