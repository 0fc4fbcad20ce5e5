// Package cluster lets several sandpool nodes share one database: each
// node registers itself and beats its heart; a node whose heart stops is
// marked down by one of the others, which marks its sandboxes lost; and
// nodes reach each other (to forward requests, to check or retire a pool's
// sandbox that lives elsewhere) with a secret they share through the store.
package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/events"
	"github.com/sandpool/sandpool/internal/loop"
	"github.com/sandpool/sandpool/internal/store"
)

// Node is a node as the store records it.
type Node = store.Node

// Store is what the cluster needs of the store.
type Store interface {
	Heartbeat(ctx context.Context, n store.Node, staleBefore time.Time) (store.Node, error)
	ListNodes(ctx context.Context) ([]store.Node, error)
	ClusterSecret(ctx context.Context, candidate string) (string, error)
}

// Sandboxes is what the cluster needs of the lifecycle service: when a
// node is found silent, its sandboxes are lost (in one step with the node
// being marked down; the service publishes their events).
type Sandboxes interface {
	NodeLost(ctx context.Context, node string, silentSince time.Time, why string) (lost int, won bool, err error)
}

// Options configure a Cluster.
type Options struct {
	Node string
	// Address is where other nodes reach this node's API (http://host:port).
	Address  string
	Capacity int
	// Heartbeat is how often the node says it is up (default 1s);
	// NodeTimeout how long a silent node is given before it is marked down
	// (default 10s).
	Heartbeat   time.Duration
	NodeTimeout time.Duration
	// Exclusive says the store has one process at a time (SQLite, locked
	// to its data directory): a name is never held by another process, so
	// a restart after a crash takes it over at once.
	Exclusive bool
	Log       *slog.Logger
}

// Cluster is this node's view of the others.
type Cluster struct {
	st     Store
	sbs    Sandboxes
	events *events.Broker
	opts   Options
	hc     *http.Client
	secret string
	self   store.Node // this process's record, with its incarnation

	mu    sync.Mutex
	nodes map[string]store.Node

	stop context.CancelFunc
	bg   sync.WaitGroup
}

// Header names used between nodes.
const (
	// HeaderTenant says on whose behalf a node calls another.
	HeaderTenant = "X-Sandpool-Tenant"
	// HeaderForwarded marks a request one node forwarded to another; its
	// value is the cluster secret, so a client cannot claim it.
	HeaderForwarded = "X-Sandpool-Forwarded"
)

// New makes the cluster view; Start registers the node.
func New(st Store, sbs Sandboxes, ev *events.Broker, opts Options) *Cluster {
	if opts.Heartbeat == 0 {
		opts.Heartbeat = time.Second
	}
	if opts.NodeTimeout == 0 {
		opts.NodeTimeout = 10 * time.Second
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	var inc [12]byte
	_, _ = rand.Read(inc[:]) // crypto/rand does not fail on Linux
	return &Cluster{st: st, sbs: sbs, events: ev, opts: opts, nodes: map[string]store.Node{},
		self: store.Node{ID: opts.Node, Address: opts.Address, Capacity: opts.Capacity, Incarnation: hex.EncodeToString(inc[:])},
		hc:   &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: 90 * time.Second}}}
}

// Start registers this node and starts its heartbeat and its watch over
// the others.
func (c *Cluster) Start(ctx context.Context) error {
	var b [24]byte
	_, _ = rand.Read(b[:]) // crypto/rand does not fail on Linux
	secret, err := c.st.ClusterSecret(ctx, "spc_"+hex.EncodeToString(b[:]))
	if err != nil {
		return fmt.Errorf("cluster secret: %w", err)
	}
	c.secret = secret
	if err := c.claim(ctx); err != nil {
		return err
	}
	if err := c.beat(ctx); err != nil {
		return err
	}
	lctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	c.stop = cancel
	c.bg.Go(func() {
		loop.Run(lctx, loop.Options{Name: "heartbeat", Every: c.opts.Heartbeat, Timeout: c.opts.NodeTimeout, Log: c.opts.Log},
			func(ctx context.Context) error {
				err := c.beat(ctx)
				c.watch(ctx)
				return err
			})
	})
	return nil
}

// Close stops the heartbeat. The node's record stays; others mark it down
// when its heart has been silent for NodeTimeout.
func (c *Cluster) Close() {
	if c.stop != nil {
		c.stop()
	}
	c.bg.Wait()
}

// ErrNameTaken: another live process runs under this node's name.
var ErrNameTaken = errors.New("node name taken")

// claim takes this node's name in the store. A record held by another
// process whose heart still beats means a second `sandpool serve` under
// the same name: refused, since its reconciler would destroy the first's
// sandboxes as unknown. A record whose heart has stopped (a crash) is
// taken over; a fresh one is watched for two heartbeats first, to tell a
// crashed holder from a live one.
func (c *Cluster) claim(ctx context.Context) error {
	stale := time.Now().Add(-c.opts.NodeTimeout)
	if c.opts.Exclusive {
		stale = time.Now().Add(time.Hour) // nobody else can hold it
	}
	holder, err := c.st.Heartbeat(ctx, c.self, stale)
	if !errors.Is(err, errdefs.ErrConflict) {
		return err
	}
	watch := 2*c.opts.Heartbeat + c.opts.Heartbeat/2
	t := time.NewTimer(watch)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
	}
	// Taken over only if its heart did not beat meanwhile.
	now, err := c.st.Heartbeat(ctx, c.self, holder.HeartbeatAt.Add(time.Nanosecond))
	if errors.Is(err, errdefs.ErrConflict) {
		return fmt.Errorf("%w: node name %q is held by a live sandpool at %s (its last heartbeat %s ago); "+
			"stop that one, or give this one another name with --node (or SANDPOOL_NODE)",
			ErrNameTaken, c.opts.Node, now.Address, time.Since(now.HeartbeatAt).Round(time.Millisecond))
	}
	return err
}

func (c *Cluster) beat(ctx context.Context) error {
	if holder, err := c.st.Heartbeat(ctx, c.self, time.Time{}); err != nil {
		if errors.Is(err, errdefs.ErrConflict) {
			c.opts.Log.Error("another sandpool took this node's name while this one was silent; stop one of them",
				"node", c.opts.Node, "holder", holder.Address)
		}
		return err
	}
	nodes, err := c.st.ListNodes(ctx)
	if err != nil {
		return err
	}
	m := make(map[string]store.Node, len(nodes))
	for _, n := range nodes {
		m[n.ID] = n
	}
	c.mu.Lock()
	c.nodes = m
	c.mu.Unlock()
	return nil
}

// watch marks silent nodes down and their sandboxes lost. Several nodes
// may watch; the store lets one of them do it.
func (c *Cluster) watch(ctx context.Context) {
	before := time.Now().Add(-c.opts.NodeTimeout)
	for _, n := range c.Nodes() {
		if n.ID == c.opts.Node || n.Status != "up" || n.HeartbeatAt.After(before) {
			continue
		}
		// One transaction: the node down and its sandboxes lost, or neither.
		lost, won, err := c.sbs.NodeLost(ctx, n.ID, before, "node "+n.ID+" stopped answering")
		if err != nil {
			c.opts.Log.Error("mark a silent node down", "node", n.ID, "err", err)
			continue
		}
		if !won {
			continue
		}
		c.opts.Log.Warn("node down: its heart stopped", "node", n.ID, "last_heartbeat", n.HeartbeatAt, "sandboxes_lost", lost)
		c.events.Publish(events.Event{Type: "node", Status: "down", Reason: fmt.Sprintf("%s: %d sandboxes lost", n.ID, lost)})
	}
}

// Self is this node's name.
func (c *Cluster) Self() string { return c.opts.Node }

// Secret is the secret nodes authenticate to each other with.
func (c *Cluster) Secret() string { return c.secret }

// Nodes lists the nodes as last seen.
func (c *Cluster) Nodes() []store.Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]store.Node, 0, len(c.nodes))
	for _, n := range c.nodes {
		out = append(out, n)
	}
	return out
}

// live reports whether n has beaten its heart recently.
func (c *Cluster) live(n store.Node) bool {
	return n.Status == "up" && time.Since(n.HeartbeatAt) < c.opts.NodeTimeout
}

// Multi reports whether other nodes are up: then requests may have to go
// elsewhere.
func (c *Cluster) Multi() bool {
	for _, n := range c.Nodes() {
		if n.ID != c.opts.Node && c.live(n) {
			return true
		}
	}
	return false
}

// ErrNodeDown: the node a request must go to is not up.
var ErrNodeDown = errors.New("node unavailable")

// Address is where node's API is, if it is up.
func (c *Cluster) Address(node string) (*url.URL, error) {
	c.mu.Lock()
	n, ok := c.nodes[node]
	c.mu.Unlock()
	if !ok || !c.live(n) {
		return nil, fmt.Errorf("%w: node %s is not up", ErrNodeDown, node)
	}
	u, err := url.Parse(n.Address)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("%w: node %s has no usable address %q", ErrNodeDown, node, n.Address)
	}
	return u, nil
}

// Others lists the live nodes other than this one.
func (c *Cluster) Others() []store.Node {
	var out []store.Node
	for _, n := range c.Nodes() {
		if n.ID != c.opts.Node && c.live(n) {
			out = append(out, n)
		}
	}
	return out
}

// Call makes a request to another node's API on behalf of tenant.
func (c *Cluster) Call(ctx context.Context, node, tenant, method, path string) error {
	u, err := c.Address(node)
	if err != nil {
		return err
	}
	p, query, _ := strings.Cut(path, "?")
	target := u.JoinPath(p)
	target.RawQuery = query
	req, err := http.NewRequestWithContext(ctx, method, target.String(), nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.secret)
	req.Header.Set(HeaderTenant, tenant)
	req.Header.Set(HeaderForwarded, c.secret)
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrNodeDown, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096)) // enough to report
	if resp.StatusCode >= 300 {
		return fmt.Errorf("node %s: %s %s: %d %s", node, method, path, resp.StatusCode, body)
	}
	return nil
}
