package resolver

import (
	"net/netip"
	"sync"
	"time"
)

// Hold bounds: an answer is remembered for its TTL, but at least MinHold
// (clients cache answers longer than their TTL, and a connection made a
// little later must still match) and at most MaxHold.
const (
	MinHold = 5 * time.Minute
	MaxHold = 24 * time.Hour
)

// DefaultMaxNames bounds a Cache; see NewCache.
const DefaultMaxNames = 4096

// maxAddrsPerName bounds the addresses remembered for one name.
const maxAddrsPerName = 64

// Cache remembers, for one sandbox, the addresses its resolver answered
// for each name, and the reverse. It is safe for concurrent use.
type Cache struct {
	max int
	now func() time.Time

	mu     sync.Mutex
	byName map[string]map[netip.Addr]time.Time
	byAddr map[netip.Addr]map[string]time.Time
}

// NewCache returns a cache holding at most maxNames names (0 means
// DefaultMaxNames). When full, expired entries go first, then arbitrary
// ones: a forgotten answer only makes a later connection fail closed.
func NewCache(maxNames int) *Cache {
	if maxNames <= 0 {
		maxNames = DefaultMaxNames
	}
	return &Cache{max: maxNames, now: time.Now,
		byName: map[string]map[netip.Addr]time.Time{},
		byAddr: map[netip.Addr]map[string]time.Time{}}
}

// Add records that name resolved to addrs with the given TTL.
func (c *Cache) Add(name string, addrs []netip.Addr, ttl time.Duration) {
	if len(addrs) == 0 {
		return
	}
	hold := min(max(ttl, MinHold), MaxHold)
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	exp := now.Add(hold)
	set := c.byName[name]
	if set == nil {
		if len(c.byName) >= c.max {
			c.evictLocked(now)
		}
		set = map[netip.Addr]time.Time{}
		c.byName[name] = set
	}
	for _, a := range addrs {
		a = a.Unmap()
		if _, ok := set[a]; !ok && len(set) >= maxAddrsPerName {
			continue
		}
		set[a] = exp
		names := c.byAddr[a]
		if names == nil {
			names = map[string]time.Time{}
			c.byAddr[a] = names
		}
		names[name] = exp
	}
}

// Has reports whether name resolved to ip and the answer is still held.
func (c *Cache) Has(name string, ip netip.Addr) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	exp, ok := c.byName[name][ip.Unmap()]
	return ok && c.now().Before(exp)
}

// Names returns the names that resolved to ip and are still held.
func (c *Cache) Names(ip netip.Addr) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	var out []string
	for n, exp := range c.byAddr[ip.Unmap()] {
		if now.Before(exp) {
			out = append(out, n)
		}
	}
	return out
}

// Len returns how many names are held (expired ones included until they
// are swept).
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.byName)
}

// evictLocked drops expired names, and if none had expired, some others
// (up to an eighth of the cache), so Add stays cheap on a full cache.
func (c *Cache) evictLocked(now time.Time) {
	for n, set := range c.byName {
		live := false
		for _, exp := range set {
			if now.Before(exp) {
				live = true
				break
			}
		}
		if !live {
			c.removeLocked(n)
		}
	}
	if len(c.byName) < c.max {
		return
	}
	for n := range c.byName {
		if len(c.byName) < c.max-c.max/8 {
			break
		}
		c.removeLocked(n)
	}
}

func (c *Cache) removeLocked(name string) {
	for a := range c.byName[name] {
		delete(c.byAddr[a], name)
		if len(c.byAddr[a]) == 0 {
			delete(c.byAddr, a)
		}
	}
	delete(c.byName, name)
}
