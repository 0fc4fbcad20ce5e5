package gpu_test

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/gpu"
)

func gpus(n int) []gpu.GPU {
	out := make([]gpu.GPU, n)
	for i := range out {
		out[i] = gpu.GPU{Index: i, UUID: fmt.Sprintf("GPU-%d", i)}
	}
	return out
}

func indexes(gs []gpu.GPU) []int {
	out := make([]int, len(gs))
	for i, g := range gs {
		out[i] = g.Index
	}
	return out
}

func TestSetExclusive(t *testing.T) {
	s := gpu.NewSet(gpus(4), false)
	a, err := s.Allocate("a", 2)
	if err != nil || !slices.Equal(indexes(a), []int{0, 1}) {
		t.Fatalf("a: %v %v", indexes(a), err)
	}
	if _, err := s.Allocate("a", 1); !errors.Is(err, errdefs.ErrExists) {
		t.Fatalf("second allocation for a: %v", err)
	}
	b, err := s.Allocate("b", 1)
	if err != nil || !slices.Equal(indexes(b), []int{2}) {
		t.Fatalf("b: %v %v", indexes(b), err)
	}
	_, err = s.Allocate("c", 2)
	if !errors.Is(err, gpu.ErrExhausted) || !errors.Is(err, errdefs.ErrConflict) || errdefs.CodeOf(err) != "gpus_exhausted" {
		t.Fatalf("c: %v", err)
	}
	if s.Free() != 1 {
		t.Fatalf("free %d", s.Free())
	}
	if !s.Release("a") || s.Release("a") {
		t.Fatal("release a twice")
	}
	c, err := s.Allocate("c", 3)
	if err != nil || !slices.Equal(indexes(c), []int{0, 1, 3}) {
		t.Fatalf("c after a's release: %v %v", indexes(c), err)
	}
	if got := indexes(s.Held("c")); !slices.Equal(got, []int{0, 1, 3}) {
		t.Fatalf("held %v", got)
	}
	for i, u := range s.Usage() {
		want := map[int]string{0: "c", 1: "c", 2: "b", 3: "c"}[i]
		if len(u.Holders) != 1 || u.Holders[0] != want {
			t.Errorf("GPU %d held by %v, want %s", i, u.Holders, want)
		}
	}
}

func TestSetCheck(t *testing.T) {
	s := gpu.NewSet(gpus(2), false)
	for _, tc := range []struct {
		n    int
		kind error
		code string
	}{{-1, errdefs.ErrInvalid, ""}, {3, errdefs.ErrInvalid, ""}} {
		if _, err := s.Allocate("x", tc.n); !errors.Is(err, tc.kind) || errdefs.CodeOf(err) != tc.code {
			t.Errorf("%d: %v", tc.n, err)
		}
	}
	if got, err := s.Allocate("x", 0); err != nil || got != nil {
		t.Errorf("0 GPUs: %v %v", got, err)
	}
	none := gpu.NewSet(nil, false)
	if err := none.Check(1); !errors.Is(err, gpu.ErrNone) || errdefs.CodeOf(err) != "no_gpus" {
		t.Errorf("no GPUs: %v", err)
	}
	if err := none.Check(0); err != nil {
		t.Errorf("0 of none: %v", err)
	}
}

func TestSetShared(t *testing.T) {
	s := gpu.NewSet(gpus(2), true)
	for i, want := range [][]int{{0}, {1}, {0}, {1}} {
		got, err := s.Allocate(fmt.Sprint("h", i), 1)
		if err != nil || !slices.Equal(indexes(got), want) {
			t.Fatalf("holder %d: %v %v, want %v", i, indexes(got), err, want)
		}
	}
	both, err := s.Allocate("both", 2)
	if err != nil || !slices.Equal(indexes(both), []int{0, 1}) {
		t.Fatalf("both: %v %v", indexes(both), err)
	}
	if s.Free() != 0 || len(s.Usage()[0].Holders) != 3 {
		t.Fatalf("usage %+v", s.Usage())
	}
}

func TestSetRestoreAndPrune(t *testing.T) {
	s := gpu.NewSet(gpus(3), false)
	if err := s.Restore("a", []int{2, 2}); err != nil {
		t.Fatal(err)
	}
	if err := s.Restore("b", []int{0, 9}); err == nil {
		t.Fatal("restore of a GPU the set lacks: no error")
	}
	if err := s.Restore("c", []int{0}); err == nil {
		t.Fatal("restore of a GPU held by another: no error")
	}
	if got := indexes(s.Held("b")); !slices.Equal(got, []int{0}) {
		t.Fatalf("b holds %v", got)
	}
	mark := s.Mark()
	if _, err := s.Allocate("d", 1); err != nil { // after the mark: spared
		t.Fatal(err)
	}
	gone := s.Prune(mark, func(h string) bool { return h == "a" })
	if !slices.Equal(gone, []string{"b", "c"}) {
		t.Fatalf("pruned %v", gone)
	}
	if len(s.Held("d")) != 1 || len(s.Held("a")) != 1 || s.Free() != 1 {
		t.Fatalf("after prune: %+v", s.Usage())
	}
}

// TestSetConcurrent hands GPUs out from many goroutines at once (run with
// -race): no GPU ever has two holders, and everything comes back.
func TestSetConcurrent(t *testing.T) {
	const total, workers, rounds = 8, 32, 200
	s := gpu.NewSet(gpus(total), false)
	var mu sync.Mutex
	owner := map[int]string{} // what the test believes, checked against every grant
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for r := range rounds {
				holder := fmt.Sprintf("w%d-%d", w, r)
				got, err := s.Allocate(holder, 1+(w+r)%3)
				if errors.Is(err, gpu.ErrExhausted) {
					continue
				}
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				for _, g := range got {
					if o, taken := owner[g.Index]; taken {
						mu.Unlock()
						errs <- fmt.Errorf("GPU %d handed to %s while %s held it", g.Index, holder, o)
						return
					}
					owner[g.Index] = holder
				}
				mu.Unlock()
				mu.Lock()
				for _, g := range got {
					delete(owner, g.Index)
				}
				mu.Unlock()
				if !s.Release(holder) {
					errs <- fmt.Errorf("%s held nothing at release", holder)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if s.Free() != total {
		t.Fatalf("%d of %d free after every release", s.Free(), total)
	}
}
