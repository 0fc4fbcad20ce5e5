package image

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/sandpool/sandpool/internal/pattern"

	"golang.org/x/sync/singleflight"
)

// Store is a content-addressed store of unpacked layers, shared by every
// image and build that uses them. On disk, under its directory:
//
//	layers/sha256/<hex>/rootfs      one layer, an overlayfs lower dir
//	layers/sha256/<hex>/layer.json  its size and when it was stored
//	owners/<name>.json              what one owner (a template) uses: an Image
//	cache/<hex>.json                build cache entries (see CacheEntry)
//	tmp/                            work in progress, emptied at Open
//
// A layer is keyed by its diffID, the sha256 of its uncompressed tar, so
// ten images on one base store the base once. Layers are written to tmp/
// and renamed into place whole: a crash leaves either the whole layer or
// nothing, and Open sweeps what it left in tmp/.
//
// A layer is kept while an owner record names it or a Lease holds it; GC
// removes the rest. All methods are safe for concurrent use, also with GC.
type Store struct {
	dir  string
	base int

	mu      sync.Mutex
	pins    map[string]int  // diffID -> leases holding it
	touched map[string]bool // pinned or unpinned since the running GC began; nil when none runs
	gcSem   chan struct{}   // one GC at a time

	flight singleflight.Group // one unpack per diffID at a time
}

// StoreConfig configures a Store.
type StoreConfig struct {
	// Dir holds the store; it is created if missing.
	Dir string
	// UIDBase is added to every uid and gid in a layer: the host id that
	// is root in a sandbox. Default 100000, as the runtime's.
	UIDBase int
}

// DefaultUIDBase is the UIDBase of a zero StoreConfig.
const DefaultUIDBase = 100000

// Validate names the first bad setting.
func (c StoreConfig) Validate() error {
	if c.Dir == "" || !filepath.IsAbs(c.Dir) {
		return fmt.Errorf("image store: Dir %q must be an absolute path", c.Dir)
	}
	if c.UIDBase < 0 || c.UIDBase > 1<<31-maxID {
		return fmt.Errorf("image store: UIDBase %d out of range", c.UIDBase)
	}
	return nil
}

// Open opens (creating if needed) the store in cfg.Dir and removes what an
// interrupted pull, build or GC left behind.
func Open(cfg StoreConfig) (*Store, error) {
	if cfg.UIDBase == 0 {
		cfg.UIDBase = DefaultUIDBase
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Store{dir: cfg.Dir, base: cfg.UIDBase, pins: map[string]int{}, gcSem: make(chan struct{}, 1)}
	for _, d := range []string{"layers/sha256", "owners", "cache", "tmp"} {
		if err := os.MkdirAll(filepath.Join(s.dir, d), 0o700); err != nil {
			return nil, err
		}
	}
	// The layers must be traversable by the sandboxes' ids, which see
	// them through overlayfs.
	for _, d := range []string{".", "layers", "layers/sha256"} {
		if err := os.Chmod(filepath.Join(s.dir, d), 0o711); err != nil {
			return nil, err
		}
	}
	if err := s.sweep(); err != nil {
		return nil, fmt.Errorf("image store: sweep: %w", err)
	}
	return s, nil
}

// sweep removes temporary leftovers: whole entries of tmp/, half-written
// JSON files, and layer directories without their layer.json (which is
// written before the rename, so none should exist).
func (s *Store) sweep() error {
	ents, err := os.ReadDir(filepath.Join(s.dir, "tmp"))
	if err != nil {
		return err
	}
	for _, e := range ents {
		if err := os.RemoveAll(filepath.Join(s.dir, "tmp", e.Name())); err != nil {
			return err
		}
	}
	for _, d := range []string{"owners", "cache"} {
		ents, err := os.ReadDir(filepath.Join(s.dir, d))
		if err != nil {
			return err
		}
		for _, e := range ents {
			if strings.HasSuffix(e.Name(), ".tmp") {
				_ = os.Remove(filepath.Join(s.dir, d, e.Name())) // best effort: a later sweep retries
			}
		}
	}
	ents, err = os.ReadDir(filepath.Join(s.dir, "layers/sha256"))
	if err != nil {
		return err
	}
	for _, e := range ents {
		if _, err := os.Stat(filepath.Join(s.dir, "layers/sha256", e.Name(), "layer.json")); errors.Is(err, fs.ErrNotExist) {
			if err := os.RemoveAll(filepath.Join(s.dir, "layers/sha256", e.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}

// Dir is the store's directory.
func (s *Store) Dir() string { return s.dir }

// UIDBase is the id shift applied to layers.
func (s *Store) UIDBase() int { return s.base }

// Layer is one stored layer.
type Layer struct {
	// DiffID is "sha256:<hex>" of the layer's uncompressed tar.
	DiffID string `json:"diff_id"`
	// Size is the bytes of file content in the layer.
	Size int64 `json:"size"`
	// Entries is the number of entries in its tar.
	Entries int `json:"entries"`
	// Dir is the unpacked layer, an overlayfs lower dir.
	Dir string `json:"-"`
}

type layerMeta struct {
	Layer
	CreatedAt time.Time `json:"created_at"`
}

var digestRE = pattern.New(`^sha256:[0-9a-f]+$`, 71, 71)

func (s *Store) layerDir(diffID string) string {
	return filepath.Join(s.dir, "layers", "sha256", strings.TrimPrefix(diffID, "sha256:"))
}

// lookup returns the stored layer diffID, if it is there.
func (s *Store) lookup(diffID string) (Layer, bool) {
	if !digestRE.MatchString(diffID) {
		return Layer{}, false
	}
	var m layerMeta
	if err := readJSON(filepath.Join(s.layerDir(diffID), "layer.json"), &m); err != nil {
		return Layer{}, false
	}
	m.Layer.Dir = filepath.Join(s.layerDir(diffID), "rootfs")
	return m.Layer, true
}

// Layers lists every stored layer, in no particular order.
func (s *Store) Layers() ([]Layer, error) {
	ents, err := os.ReadDir(filepath.Join(s.dir, "layers", "sha256"))
	if err != nil {
		return nil, err
	}
	var out []Layer
	for _, e := range ents {
		if l, ok := s.lookup("sha256:" + e.Name()); ok {
			out = append(out, l)
		}
	}
	return out, nil
}

// Lease keeps layers from GC until Release. Take one before pulling or
// building and release it once an owner record (Commit) names what you
// keep. The zero Lease is not usable; get one from Store.Lease.
type Lease struct {
	s    *Store
	mu   sync.Mutex
	held map[string]int
}

// Lease returns a new, empty lease.
func (s *Store) Lease() *Lease { return &Lease{s: s, held: map[string]int{}} }

func (l *Lease) pin(diffID string) {
	l.mu.Lock()
	l.held[diffID]++
	l.mu.Unlock()
	l.s.mu.Lock()
	l.s.pins[diffID]++
	if l.s.touched != nil {
		l.s.touched[diffID] = true
	}
	l.s.mu.Unlock()
}

// Release lets GC have the layers held. Calling it again does nothing.
func (l *Lease) Release() {
	l.mu.Lock()
	held := l.held
	l.held = map[string]int{}
	l.mu.Unlock()
	l.s.unpin(held)
}

func (s *Store) unpin(held map[string]int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for d, n := range held {
		if s.pins[d] -= n; s.pins[d] <= 0 {
			delete(s.pins, d)
		}
		if s.touched != nil {
			s.touched[d] = true
		}
	}
}

// Hold pins a stored layer into the lease and returns it; ErrNotFound if
// the store does not have it.
func (s *Store) Hold(l *Lease, diffID string) (Layer, error) {
	l.pin(diffID)
	layer, ok := s.lookup(diffID)
	if !ok {
		return Layer{}, notFoundf("no layer %s in the store", diffID)
	}
	return layer, nil
}

var ownerName = pattern.New(`^[A-Za-z0-9][A-Za-z0-9._-]*$`, 1, 128)

func (s *Store) ownerPath(owner string) string {
	return filepath.Join(s.dir, "owners", owner+".json")
}

// Commit records img under owner (a template name), replacing what owner
// had: from then on GC keeps img's layers until Forget(owner) or a GC whose
// keep set lacks owner. Every layer must be in the store; hold them in a
// lease until Commit returns.
func (s *Store) Commit(owner string, img Image) error {
	if !ownerName.MatchString(owner) {
		return invalidf("invalid owner name %q", owner)
	}
	// Held until the record is written, so a GC running meanwhile
	// keeps them.
	hold := s.Lease()
	defer hold.Release()
	for _, l := range img.Layers {
		if _, err := s.Hold(hold, l.DiffID); err != nil {
			return err
		}
	}
	img.Owner = owner
	img.Layers = append([]Layer(nil), img.Layers...)
	for i := range img.Layers {
		img.Layers[i].Dir = ""
	}
	return writeJSON(s.ownerPath(owner), img)
}

// Get returns the image recorded under owner, with each layer's Dir set;
// ErrNotFound if there is none or a layer of it is missing.
func (s *Store) Get(owner string) (Image, error) {
	if !ownerName.MatchString(owner) {
		return Image{}, invalidf("invalid owner name %q", owner)
	}
	var img Image
	if err := readJSON(s.ownerPath(owner), &img); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return Image{}, notFoundf("no image recorded for %q", owner)
		}
		return Image{}, err
	}
	for i, l := range img.Layers {
		got, ok := s.lookup(l.DiffID)
		if !ok {
			return Image{}, notFoundf("image of %q: layer %s is missing from the store", owner, l.DiffID)
		}
		img.Layers[i] = got
	}
	return img, nil
}

// Owners lists the owners that have a record, sorted.
func (s *Store) Owners() ([]string, error) {
	ents, err := os.ReadDir(filepath.Join(s.dir, "owners"))
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if name, ok := strings.CutSuffix(e.Name(), ".json"); ok && ownerName.MatchString(name) {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out, nil
}

// Forget removes owner's record; its layers go at the next GC unless
// another owner or a lease keeps them. Forgetting an unknown owner is not
// an error.
func (s *Store) Forget(owner string) error {
	if !ownerName.MatchString(owner) {
		return invalidf("invalid owner name %q", owner)
	}
	if err := os.Remove(s.ownerPath(owner)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// writeJSON replaces path atomically. Each writer has its own temporary
// file, so concurrent writers of one path do not trip over each other:
// the last rename wins.
func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		_ = os.Remove(f.Name()) // best effort; swept at the next Open
		return err
	}
	return nil
}
