package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/runtime"
	"github.com/sandpool/sandpool/internal/store"
)

// A sandbox's egress policy is decided at create (the request's, or the
// pool's, or Config.DefaultNetwork), kept in its row's spec (what callers
// see) and in the runtime (what is enforced), and can be changed while it
// runs. A template's setup runs under the template's own policy, if it
// has one; the sandbox gets its own before it is handed out.

// normal returns n with its mode spelled out and empty lists dropped, as
// it is stored and shown.
func normal(n Network) Network {
	out := Network{Egress: n.Mode()}
	if len(n.Allow) > 0 {
		out.Allow = slices.Clone(n.Allow)
	}
	if len(n.Deny) > 0 {
		out.Deny = slices.Clone(n.Deny)
	}
	return out
}

// networkFor is the policy of a sandbox asked for with n (nil: the
// default).
func (s *Service) networkFor(n *Network) Network {
	if n == nil {
		return normal(s.cfg.DefaultNetwork)
	}
	return normal(*n)
}

// network is the policy a row's spec records (egress none for rows made
// before sandboxes had networks).
func (sp spec) network() Network {
	if sp.Network == nil {
		return normal(Network{})
	}
	return normal(*sp.Network)
}

// SandboxNetwork is a sandbox's egress policy and its traffic counters.
type SandboxNetwork struct {
	Network
	// Stats count what the sandbox's links relayed and refused since its
	// node (re)started; zero when it is not running.
	Stats NetworkStats `json:"stats"`
}

// Network returns a sandbox's egress policy and counters. It is not
// activity: watching a sandbox must not keep it alive.
func (s *Service) Network(ctx context.Context, tenant, id string) (SandboxNetwork, error) {
	row, err := s.row(ctx, tenant, id)
	if err != nil {
		return SandboxNetwork{}, err
	}
	var sp spec
	_ = json.Unmarshal([]byte(row.Spec), &sp) // written by us
	out := SandboxNetwork{Network: sp.network()}
	if row.Node != s.cfg.Node {
		return out, fmt.Errorf("%w: sandbox %s lives on node %s", ErrElsewhere, id, row.Node)
	}
	st, err := s.rt.NetworkStats(ctx, id)
	switch {
	case errors.Is(err, errdefs.ErrNotFound):
		// Stopped, failed or lost: nothing counts any more.
	case err != nil:
		return out, err
	default:
		out.Stats = st
	}
	return out, nil
}

// SetNetwork changes a sandbox's egress policy. A running (or paused)
// sandbox applies it to the connections and DNS queries it makes from
// then on; those already open are left alone. A bad entry is ErrInvalid,
// naming it; a mode the node does not offer is refused.
func (s *Service) SetNetwork(ctx context.Context, tenant, id string, n Network) (SandboxNetwork, error) {
	n = normal(n)
	row, err := s.row(ctx, tenant, id)
	if err != nil {
		return SandboxNetwork{}, err
	}
	if row.Node != s.cfg.Node {
		return SandboxNetwork{}, fmt.Errorf("%w: sandbox %s lives on node %s", ErrElsewhere, id, row.Node)
	}
	unlock := s.locks.lock(id) // not while it is paused, resumed, reset or reconciled
	defer unlock()
	if row, err = s.st.GetSandbox(ctx, id); err != nil {
		return SandboxNetwork{}, err
	}
	var sp spec
	_ = json.Unmarshal([]byte(row.Spec), &sp) // written by us
	// Check before anything is written: bad input changes nothing.
	if err := s.rt.Validate(runtime.Spec{ID: id, Template: sp.rootfs(row), Network: n}); err != nil {
		return SandboxNetwork{}, err
	}
	// A pool's idle sandboxes keep the pool's policy.
	live := []string{string(StatusRunning), string(StatusPaused)}
	if !slices.Contains(live, row.Status) {
		return SandboxNetwork{}, errdefs.Userf(errdefs.ErrConflict, "sandbox %s is %s", id, row.Status)
	}
	// The store first: if what follows is cut short, the reconciler
	// makes the runtime agree with it.
	sp.Network = &n
	b, err := json.Marshal(sp)
	if err != nil {
		return SandboxNetwork{}, err
	}
	if err := s.st.UpdateSandbox(ctx, id, live, store.Update{Spec: new(string(b))}); err != nil {
		return SandboxNetwork{}, s.storeErr(err)
	}
	if err := s.rt.SetNetwork(ctx, id, n); err != nil {
		return SandboxNetwork{}, s.check(row, err)
	}
	s.touch(id)
	return s.Network(ctx, tenant, id)
}

// rootfs is the runtime template of a row's files.
func (sp spec) rootfs(row store.Sandbox) string {
	if sp.Rootfs != "" {
		return sp.Rootfs
	}
	return row.Template
}

// CheckNetwork checks that sandboxes of template may have policy n (nil:
// the default), without making one.
func (s *Service) CheckNetwork(ctx context.Context, template string, n *Network) error {
	rootfs, _, err := s.resolveTemplate(ctx, template)
	if err != nil {
		return err
	}
	return s.rt.Validate(runtime.Spec{ID: "sb_check", Template: rootfs, Network: s.networkFor(n)})
}

// restoreNetwork gives a pool's sandbox back the policy of its pool, if a
// session changed it.
func (s *Service) restoreNetwork(ctx context.Context, row store.Sandbox) error {
	var sp spec
	_ = json.Unmarshal([]byte(row.Spec), &sp) // written by us
	if sp.PoolNetwork == nil || sp.network().Equal(*sp.PoolNetwork) {
		return nil
	}
	n := normal(*sp.PoolNetwork)
	sp.Network = &n
	b, err := json.Marshal(sp)
	if err != nil {
		return err
	}
	if err := s.st.UpdateSandbox(ctx, row.ID, []string{string(StatusResetting)}, store.Update{Spec: new(string(b))}); err != nil {
		return err
	}
	return s.rt.SetNetwork(ctx, row.ID, n)
}
