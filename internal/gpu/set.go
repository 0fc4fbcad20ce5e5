package gpu

import (
	"fmt"
	"slices"
	"sync"

	"github.com/sandpool/sandpool/internal/errdefs"
)

// Set hands a node's GPUs out to holders (sandbox ids). Without sharing a
// GPU has at most one holder; with it, a holder gets the GPUs with the
// fewest holders. A holder's GPUs are distinct. Safe for concurrent use.
type Set struct {
	gpus   []GPU // by Index
	shared bool

	mu      sync.Mutex
	users   map[int]map[string]bool // GPU index -> its holders
	held    map[string]holding
	counter uint64 // raised by each Allocate and Restore
}

type holding struct {
	idx []int
	seq uint64
}

// NewSet makes a set of gpus; shared lets several holders have one GPU.
func NewSet(gpus []GPU, shared bool) *Set {
	gpus = slices.Clone(gpus)
	slices.SortFunc(gpus, func(a, b GPU) int { return a.Index - b.Index })
	s := &Set{gpus: gpus, shared: shared, users: map[int]map[string]bool{}, held: map[string]holding{}}
	for _, g := range gpus {
		s.users[g.Index] = map[string]bool{}
	}
	return s
}

// Total is how many GPUs the set hands out.
func (s *Set) Total() int { return len(s.gpus) }

// Shared reports whether GPUs may have several holders.
func (s *Set) Shared() bool { return s.shared }

// GPUs lists the set's GPUs, by index.
func (s *Set) GPUs() []GPU { return slices.Clone(s.gpus) }

// Check says whether a request for n GPUs can ever be met here: n must
// not be negative nor more than the set has.
func (s *Set) Check(n int) error {
	switch {
	case n < 0:
		return errdefs.Userf(errdefs.ErrInvalid, "gpus %d must not be negative", n)
	case n == 0:
		return nil
	case len(s.gpus) == 0:
		return fmt.Errorf("%w (asked for %d: none were found, or serve was started with --gpus none)", ErrNone, n)
	case n > len(s.gpus):
		return errdefs.Userf(errdefs.ErrInvalid, "gpus %d: this node hands out %d", n, len(s.gpus))
	}
	return nil
}

// Allocate gives holder n GPUs (n > 0) and returns them, by index.
// ErrExhausted if fewer are free; an error of kind ErrExists if holder
// holds GPUs already.
func (s *Set) Allocate(holder string, n int) ([]GPU, error) {
	if err := s.Check(n); err != nil || n == 0 {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.held[holder]; ok {
		return nil, errdefs.Userf(errdefs.ErrExists, "%s holds GPUs already", holder)
	}
	cand := make([]GPU, 0, len(s.gpus))
	for _, g := range s.gpus {
		if s.shared || len(s.users[g.Index]) == 0 {
			cand = append(cand, g)
		}
	}
	if len(cand) < n {
		return nil, fmt.Errorf("%w: asked for %d, %d of %d free", ErrExhausted, n, len(cand), len(s.gpus))
	}
	if s.shared {
		// The least used first; by index among equals (stable sort).
		slices.SortStableFunc(cand, func(a, b GPU) int { return len(s.users[a.Index]) - len(s.users[b.Index]) })
	}
	got := cand[:n]
	slices.SortFunc(got, func(a, b GPU) int { return a.Index - b.Index })
	idx := make([]int, n)
	for i, g := range got {
		idx[i] = g.Index
		s.users[g.Index][holder] = true
	}
	s.counter++
	s.held[holder] = holding{idx: idx, seq: s.counter}
	return slices.Clone(got), nil
}

// Restore records that holder holds the GPUs idx (as the store says,
// after a restart). Indexes the set does not have are skipped and named
// in the error; a GPU another holder has is recorded all the same (the
// store is the truth) and reported.
func (s *Set) Restore(holder string, idx []int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.held[holder]; ok {
		s.drop(holder, old)
	}
	var kept, unknown []int
	var clash []string
	for _, n := range idx {
		users, ok := s.users[n]
		switch {
		case !ok:
			unknown = append(unknown, n)
			continue
		case slices.Contains(kept, n):
			continue
		case !s.shared && len(users) > 0:
			for h := range users {
				clash = append(clash, fmt.Sprintf("GPU %d is also held by %s", n, h))
			}
		}
		users[holder] = true
		kept = append(kept, n)
	}
	if len(kept) > 0 {
		s.counter++
		s.held[holder] = holding{idx: kept, seq: s.counter}
	}
	switch {
	case len(unknown) > 0:
		return fmt.Errorf("gpus: %s holds GPUs %v this node does not hand out", holder, unknown)
	case len(clash) > 0:
		return fmt.Errorf("gpus: %s: %v", holder, clash)
	}
	return nil
}

// Release gives back what holder holds; false if it held nothing.
func (s *Set) Release(holder string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	h, ok := s.held[holder]
	if ok {
		s.drop(holder, h)
	}
	return ok
}

func (s *Set) drop(holder string, h holding) {
	for _, n := range h.idx {
		delete(s.users[n], holder)
	}
	delete(s.held, holder)
}

// Held returns the GPUs holder holds, by index.
func (s *Set) Held(holder string) []GPU {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []GPU
	for _, n := range s.held[holder].idx {
		if i := slices.IndexFunc(s.gpus, func(g GPU) bool { return g.Index == n }); i >= 0 {
			out = append(out, s.gpus[i])
		}
	}
	return out
}

// Mark is a point in the set's history: Prune(mark, ...) leaves alone
// every allocation made after it.
func (s *Set) Mark() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counter
}

// Prune releases the holders that got their GPUs before mark and that
// keep says hold none any more, and returns them. A caller reads mark,
// then the truth (the store), then prunes: what was allocated meanwhile
// is not in its reading, and is spared.
func (s *Set) Prune(mark uint64, keep func(holder string) bool) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var gone []string
	for holder, h := range s.held {
		if h.seq <= mark && !keep(holder) {
			s.drop(holder, h)
			gone = append(gone, holder)
		}
	}
	slices.Sort(gone)
	return gone
}

// Usage is one GPU and who holds it.
type Usage struct {
	GPU
	Holders []string `json:"holders,omitempty"`
}

// Usage lists every GPU with its holders.
func (s *Set) Usage() []Usage {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Usage, len(s.gpus))
	for i, g := range s.gpus {
		out[i].GPU = g
		for h := range s.users[g.Index] {
			out[i].Holders = append(out[i].Holders, h)
		}
		slices.Sort(out[i].Holders)
	}
	return out
}

// Free is how many GPUs have no holder.
func (s *Set) Free() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, g := range s.gpus {
		if len(s.users[g.Index]) == 0 {
			n++
		}
	}
	return n
}
