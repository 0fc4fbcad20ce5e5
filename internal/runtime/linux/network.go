package linux

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/sandpool/sandpool/internal/egress"
	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/runtime"
)

// A sandbox's way out is an egress link (package egress): a TUN interface
// in its network namespace whose other end is a user-space TCP/IP stack in
// this process, which judges every connection by the sandbox's policy.
// Mode none needs no link: the sandbox keeps only its loopback. A link is
// made on every boot (a new PID 1 has a new namespace) and whenever a
// running sandbox's policy first lets it out, and is closed by teardown.
// After a restart of this process, Open makes the links of running
// sandboxes again: the old ones died with the old process's descriptors.

// ErrEgressDisabled: the runtime has no egress engine (the operator runs
// sandpool without egress), so only mode none is possible.
var ErrEgressDisabled = errdefs.New(errdefs.ErrPermission, "egress_disabled",
	"egress is disabled on this server: only network egress \"none\" is allowed")

// defaultGateway is the sandbox's nameserver when the runtime has no
// engine to ask (egress.Engine.Gateway otherwise; both are the default).
const defaultGateway = "100.64.253.1"

// gateway is the address of the sandbox's gateway and DNS server.
func (r *Runtime) gateway() string {
	if r.cfg.Egress == nil {
		return defaultGateway
	}
	return r.cfg.Egress.Gateway().String()
}

// checkNetwork validates a policy (a bad entry is ErrInvalid, naming it)
// and returns it parsed.
func (r *Runtime) checkNetwork(n runtime.Network) (*egress.Policy, error) {
	pol, err := egress.ParsePolicy(n.Egress, n.Allow, n.Deny)
	if err != nil {
		return nil, errdefs.Userf(errdefs.ErrInvalid, "network: %v", err)
	}
	if r.cfg.Egress == nil && n.Mode() != runtime.EgressNone {
		return nil, ErrEgressDisabled
	}
	return pol, nil
}

// wantsLink says whether a sandbox with policy n needs a link.
func (r *Runtime) wantsLink(n runtime.Network) bool {
	return r.cfg.Egress != nil && n.Mode() != runtime.EgressNone
}

// attachNetwork gives a sandbox whose PID 1 is pid its link, if its
// policy lets it out. boot calls it once PID 1 exists, while PID 1 waits
// for its configuration: the sandbox never runs code without its policy
// in force. The caller holds sb.life; teardown closes the link.
func (r *Runtime) attachNetwork(ctx context.Context, sb *sandbox, pid int) error {
	sb.mu.Lock()
	n, id := sb.st.Network, sb.st.ID
	sb.mu.Unlock()
	if !r.wantsLink(n) {
		return nil
	}
	pol, err := egress.ParsePolicy(n.Egress, n.Allow, n.Deny)
	if err != nil { // checked at create; a state file edited since
		return fmt.Errorf("network policy of sandbox %s: %w", id, err)
	}
	link, err := r.cfg.Egress.Attach(ctx, egress.Sandbox{ID: id, NetNS: "/proc/" + strconv.Itoa(pid) + "/ns/net"}, pol)
	if err != nil {
		return fmt.Errorf("attach network: %w", err)
	}
	sb.mu.Lock()
	old := sb.link
	sb.link, sb.detached = link, false
	sb.mu.Unlock()
	if old != nil { // a boot without a teardown before it; never expected
		r.closeLink(sb, old)
	}
	return nil
}

// detachNetwork takes the sandbox's link away and closes it in the
// background: closing waits for the kernel to unregister the interface
// (an RCU grace period, tens of milliseconds), which a destroy need not
// wait for. Runtime.Close waits for links still closing.
func (r *Runtime) detachNetwork(sb *sandbox) {
	sb.mu.Lock()
	link := sb.link
	sb.link = nil
	sb.mu.Unlock()
	if link != nil {
		r.closeLink(sb, link)
	}
}

// closeLink closes link in the background. Its counters are added to the
// sandbox's at once, and what it counted while closing once it is closed,
// so the sandbox's never go back.
func (r *Runtime) closeLink(sb *sandbox, link *egress.Link) {
	sb.mu.Lock()
	id, before := sb.st.ID, statsOf(link.Stats())
	sb.netBase = sb.netBase.Add(before)
	sb.netBase.Active = 0
	sb.mu.Unlock()
	r.closing.Go(func() {
		if err := link.Close(); err != nil {
			r.cfg.Log.Warn("close egress link", "sandbox", id, "err", err)
		}
		after := statsOf(link.Stats())
		sb.mu.Lock()
		sb.netBase = sb.netBase.Add(sub(after, before))
		sb.netBase.Active = 0
		sb.mu.Unlock()
	})
}

// reattach makes the link of a running sandbox found by Open again. A
// failure leaves the sandbox running without a way out (reported by
// Info.NetworkDetached); SetNetwork tries again.
func (r *Runtime) reattach(sb *sandbox) {
	if !r.wantsLink(sb.st.Network) {
		return
	}
	if err := r.attachNetwork(context.Background(), sb, sb.st.Pid); err != nil {
		sb.detached = true
		r.cfg.Log.Error("re-attach network of a running sandbox", "sandbox", sb.st.ID, "err", err)
	}
}

// SetNetwork changes a sandbox's egress policy. A running or frozen
// sandbox applies it to what it starts from now on: the link is told, or
// made if the sandbox had none (or lost it), and one that may no longer
// go out keeps its link under mode none. The policy is recorded, so a
// restart of this process or of the sandbox keeps it.
func (r *Runtime) SetNetwork(ctx context.Context, id string, n runtime.Network) error {
	pol, err := r.checkNetwork(n)
	if err != nil {
		return err
	}
	sb, err := r.lookup(id)
	if err != nil {
		return err
	}
	sb.life.Lock()
	defer sb.life.Unlock()
	sb.mu.Lock()
	if sb.gone {
		sb.mu.Unlock()
		return errdefs.Userf(errdefs.ErrNotFound, "no sandbox %q", id)
	}
	sb.st.Network = n
	st, link, status := sb.st, sb.link, sb.status
	sb.mu.Unlock()
	if err := r.saveState(st); err != nil {
		return fmt.Errorf("set network of sandbox %s: %w", id, err)
	}
	switch {
	case link != nil:
		link.SetPolicy(pol)
	case (status == runtime.StatusRunning || status == runtime.StatusFrozen) && r.wantsLink(n):
		if !processAlive(st.Pid, st.PidStart) {
			return &errdefs.StateError{Sandbox: id, Err: errors.New("its PID 1 is gone")}
		}
		if err := r.attachNetwork(ctx, sb, st.Pid); err != nil {
			sb.mu.Lock()
			sb.detached = true
			sb.mu.Unlock()
			return fmt.Errorf("set network of sandbox %s: %w", id, err)
		}
	}
	return nil
}

// NetworkStats reports a sandbox's traffic out: the counters of the links
// it had since this process found or made it.
func (r *Runtime) NetworkStats(ctx context.Context, id string) (runtime.NetworkStats, error) {
	sb, err := r.lookup(id)
	if err != nil {
		return runtime.NetworkStats{}, err
	}
	sb.mu.Lock()
	defer sb.mu.Unlock()
	out := sb.netBase
	if sb.link != nil {
		out = out.Add(statsOf(sb.link.Stats()))
	}
	return out, nil
}

// sub is s - o for the counters (Active is s's).
func sub(s, o runtime.NetworkStats) runtime.NetworkStats {
	return runtime.NetworkStats{BytesOut: s.BytesOut - o.BytesOut, BytesIn: s.BytesIn - o.BytesIn,
		Connections: s.Connections - o.Connections, Refused: s.Refused - o.Refused, Failed: s.Failed - o.Failed,
		Active: s.Active, DNSQueries: s.DNSQueries - o.DNSQueries, DNSRefused: s.DNSRefused - o.DNSRefused}
}

func statsOf(s egress.Stats) runtime.NetworkStats {
	return runtime.NetworkStats{BytesOut: s.BytesOut, BytesIn: s.BytesIn, Connections: s.Connections,
		Refused: s.Refused, Failed: s.Failed, Active: s.Active, DNSQueries: s.DNSQueries, DNSRefused: s.DNSRefused}
}
