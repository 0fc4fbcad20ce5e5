package image

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// GCStats says what a GC removed.
type GCStats struct {
	Owners       int   // owner records dropped (not in the keep set)
	Layers       int   // layers removed
	Bytes        int64 // their file content
	CacheEntries int   // build cache entries whose layer was gone
}

// GC drops the record of every owner not in keep (nil keeps them all),
// then removes every layer that no remaining owner names and no lease
// holds, and build cache entries whose layer is gone. Pass the names of
// the templates that exist: records of templates deleted while the server
// was down go too. One GC runs at a time; pulls and builds go on meanwhile.
func (s *Store) GC(ctx context.Context, keep map[string]bool) (GCStats, error) {
	var st GCStats
	select {
	case s.gcSem <- struct{}{}:
	case <-ctx.Done():
		return st, ctx.Err()
	}
	defer func() { <-s.gcSem }()
	if keep != nil {
		owners, err := s.Owners()
		if err != nil {
			return st, err
		}
		for _, o := range owners {
			if !keep[o] {
				if err := s.Forget(o); err != nil {
					return st, err
				}
				st.Owners++
			}
		}
	}
	n, b, err := s.collect(ctx, nil)
	st.Layers, st.Bytes = n, b
	if err != nil {
		return st, err
	}
	st.CacheEntries, err = s.pruneCache()
	return st, err
}

// collect removes stored layers that no owner names and no lease holds;
// candidates, when non-nil, limits it to those. The caller holds gcSem.
//
// A layer pinned or unpinned while collect runs is skipped: its holder may
// have written an owner record after collect read them (writers hold a
// lease on what they record, so the record is on disk before the unpin).
func (s *Store) collect(ctx context.Context, candidates map[string]bool) (int, int64, error) {
	s.mu.Lock()
	s.touched = map[string]bool{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.touched = nil
		s.mu.Unlock()
	}()
	referenced := map[string]bool{}
	owners, err := s.Owners()
	if err != nil {
		return 0, 0, err
	}
	for _, o := range owners {
		var img Image
		if err := readJSON(s.ownerPath(o), &img); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue // forgotten meanwhile
			}
			// An unreadable record might name anything: remove nothing.
			return 0, 0, fmt.Errorf("owner %s: %w", o, err)
		}
		for _, l := range img.Layers {
			referenced[l.DiffID] = true
		}
	}
	layers, err := s.Layers()
	if err != nil {
		return 0, 0, err
	}
	var n int
	var bytes int64
	for _, l := range layers {
		if referenced[l.DiffID] || (candidates != nil && !candidates[l.DiffID]) {
			continue
		}
		if err := ctx.Err(); err != nil {
			return n, bytes, err
		}
		gone := filepath.Join(s.dir, "tmp", "gc-"+strings.TrimPrefix(l.DiffID, "sha256:"))
		// The rename happens under the lock so that a lease taken on this
		// layer either comes first (and the layer stays) or finds it gone.
		s.mu.Lock()
		if s.pins[l.DiffID] > 0 || s.touched[l.DiffID] {
			s.mu.Unlock()
			continue
		}
		err := os.Rename(s.layerDir(l.DiffID), gone)
		s.mu.Unlock()
		if err != nil {
			return n, bytes, err
		}
		if err := os.RemoveAll(gone); err != nil {
			return n, bytes, err
		}
		n++
		bytes += l.Size
	}
	return n, bytes, nil
}

// discard releases lease and removes the layers in created that nothing
// else uses: what a failed pull or build made is not left behind.
func (s *Store) discard(lease *Lease, created []string) {
	lease.Release()
	if len(created) == 0 {
		return
	}
	cand := map[string]bool{}
	for _, d := range created {
		cand[d] = true
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	select {
	case s.gcSem <- struct{}{}:
	case <-ctx.Done():
		return // the next GC removes them
	}
	defer func() { <-s.gcSem }()
	_, _, _ = s.collect(ctx, cand) // best effort: the next GC retries
}

// CacheEntry is what the Dockerfile builder records for one step: the
// layer it made (if any) and data of its own. The store keeps no layer
// alive for the cache; GC drops entries whose layer is gone.
type CacheEntry struct {
	Layer string          `json:"layer,omitempty"`
	Data  json.RawMessage `json:"data,omitempty"`
}

func (s *Store) cachePath(key string) (string, error) {
	if !digestRE.MatchString(key) {
		return "", fmt.Errorf("cache key %q is not a sha256 digest", key)
	}
	return filepath.Join(s.dir, "cache", strings.TrimPrefix(key, "sha256:")+".json"), nil
}

// CacheGet returns the entry under key ("sha256:<hex>") if there is one
// and its layer is still stored; a hit holds the layer in lease.
func (s *Store) CacheGet(lease *Lease, key string) (CacheEntry, bool) {
	p, err := s.cachePath(key)
	if err != nil {
		return CacheEntry{}, false
	}
	var e CacheEntry
	if err := readJSON(p, &e); err != nil {
		return CacheEntry{}, false
	}
	if e.Layer != "" {
		if _, err := s.Hold(lease, e.Layer); err != nil {
			return CacheEntry{}, false
		}
	}
	return e, true
}

// CachePut records e under key.
func (s *Store) CachePut(key string, e CacheEntry) error {
	p, err := s.cachePath(key)
	if err != nil {
		return err
	}
	return writeJSON(p, e)
}

func (s *Store) pruneCache() (int, error) {
	ents, err := os.ReadDir(filepath.Join(s.dir, "cache"))
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range ents {
		p := filepath.Join(s.dir, "cache", e.Name())
		var ce CacheEntry
		if err := readJSON(p, &ce); err != nil {
			continue
		}
		if ce.Layer == "" {
			continue
		}
		if _, ok := s.lookup(ce.Layer); !ok {
			if err := os.Remove(p); err == nil {
				n++
			}
		}
	}
	return n, nil
}
