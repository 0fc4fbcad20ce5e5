package pool

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// pool is one pool's live state on this node.
type pool struct {
	name   string
	tenant string

	mu       sync.Mutex
	cfg      Config
	status   string
	lastErr  string
	failures int       // consecutive failed creates
	retryAt  time.Time // no creates before (backoff)
	reserved int       // creates under way (counted against max_total)
	readyCh  chan struct{}

	// decide serialises the decisions that add idle sandboxes (replenish
	// creates, releases that recycle), so that together they never pass
	// max_idle. It is held across one count in the store; claims (under
	// decide) are idle sandboxes being created and not yet counted there.
	decide sync.Mutex
	claims int

	createdAt time.Time     // of the pool's record: tells a re-made pool of the same name
	updateMu  sync.Mutex    // one Update at a time
	wake      chan struct{} // nudges the replenish loop
	leading   atomic.Bool   // this node holds the pool's lease
	inflight  tracker       // acquires and releases under way
	stop      context.CancelFunc
	done      chan struct{}
}

// currentStatus is the pool's status (p.mu guards it).
func (p *pool) currentStatus() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.status
}

func (p *pool) config() Config {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cfg
}

// nudge wakes the replenish loop without blocking.
func (p *pool) nudge() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// readied tells waiting acquires that a sandbox may be idle now.
func (p *pool) readied() {
	p.mu.Lock()
	close(p.readyCh)
	p.readyCh = make(chan struct{})
	p.mu.Unlock()
}

func (p *pool) readyChan() chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.readyCh
}
