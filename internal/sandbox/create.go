package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/gpu"
	"github.com/sandpool/sandpool/internal/ids"
	"github.com/sandpool/sandpool/internal/runtime"
	"github.com/sandpool/sandpool/internal/store"
)

// Create makes a sandbox for tenant. id may be given (idempotent creates
// pick it in advance) or empty.
func (s *Service) Create(ctx context.Context, tenant, id string, req CreateRequest) (Sandbox, error) {
	row, err := s.create(ctx, newSandbox{tenant: tenant, id: id, req: req, final: StatusRunning})
	if err != nil {
		return Sandbox{}, err
	}
	return s.fromRow(row), nil
}

// newSandbox is one sandbox to make.
type newSandbox struct {
	tenant, id string
	req        CreateRequest
	pool       string
	uses       int
	// final is the status once made: running for a caller, ready for a
	// pool's idle buffer.
	final Status
	// fence, if set, makes the row's creation and its final status depend
	// on a pool leader's lease.
	fence *store.Fence
	// progress, if set, gets the template's setup output as it comes.
	progress io.Writer
	// poolNetwork, for a pool's sandbox, is the policy each reset
	// returns it to.
	poolNetwork *Network
	// commit, if set, runs the write of the final status (see
	// PoolSandbox.Commit).
	commit func(write func() error) error
}

// create makes a sandbox: checks, writes the row, has the runtime make
// it, runs the template's setup (then seals it, so a reset returns here)
// and session setup, and records the final status. On failure nothing of
// the sandbox is left running and its row says why.
func (s *Service) create(ctx context.Context, n newSandbox) (_ store.Sandbox, retErr error) {
	start, template := time.Now(), ""
	defer func() { s.m.created(template, start, retErr) }()
	req := n.req
	if err := req.Validate(); err != nil {
		return store.Sandbox{}, err
	}
	id := n.id
	if id == "" {
		id = ids.Sandbox()
	}
	tpl, err := s.lookupTemplate(ctx, req.Template)
	if err != nil {
		return store.Sandbox{}, err
	}
	rootfs, hooks := tpl.rootfs, tpl.hooks
	req.Limits = req.Limits.WithDefaults(tpl.limits)
	net := s.networkFor(req.Network)
	// The template's setup runs under the template's policy, if it has
	// one; the sandbox gets its own before it is handed out.
	bootNet := net
	if hooks.Setup != "" && hooks.Network != nil {
		bootNet = normal(*hooks.Network)
	}
	// Bad input changes nothing: check before anything is written.
	if err := s.rt.Validate(runtime.Spec{ID: id, Template: rootfs, Limits: req.Limits, Network: net}); err != nil {
		return store.Sandbox{}, err
	}
	if !bootNet.Equal(net) {
		if err := s.rt.Validate(runtime.Spec{ID: id, Template: rootfs, Network: bootNet}); err != nil {
			return store.Sandbox{}, fmt.Errorf("template %s: %w", req.Template, err)
		}
	}
	if err := s.checkGPUs(req.Limits.GPUs); err != nil {
		return store.Sandbox{}, err
	}
	// Record the limits the sandbox will really have.
	req.Limits = req.Limits.WithDefaults(s.rt.Capabilities().Defaults)
	b, err := json.Marshal(spec{Limits: req.Limits, Env: req.Env, Rootfs: rootfs, NoAutoResume: req.AutoResume != nil && !*req.AutoResume,
		Network: &net, PoolNetwork: n.poolNetwork})
	if err != nil {
		return store.Sandbox{}, err
	}
	if req.OnTimeout == "" {
		req.OnTimeout = OnTimeoutPause
	}
	row := store.Sandbox{ID: id, Tenant: n.tenant, Template: req.Template, Status: string(StatusCreating),
		Spec: string(b), Metadata: req.Metadata, Node: s.cfg.Node, Pool: n.pool, Uses: n.uses,
		Timeout: req.Timeout, OnTimeout: req.OnTimeout, ArchiveAfter: req.ArchiveAfter, Fence: n.fence, CreatedAt: time.Now().UTC()}
	gpus, err := s.admit(ctx, &row, req.Limits.GPUs)
	if err != nil {
		return store.Sandbox{}, s.storeErr(err)
	}
	// Admitted: from here a failure is the create's, not the request's,
	// and the template exists (a label with few values).
	template = req.Template
	s.publish(row, StatusCreating, "", "")
	// The sandbox must not be half made if the caller goes away.
	cctx := context.WithoutCancel(ctx)
	fail := func(err error) (store.Sandbox, error) {
		_ = s.rt.Destroy(cctx, id) // best effort; the reconciler catches the rest
		s.releaseGPUs(id)
		if terr := s.transition(cctx, row, []Status{StatusCreating}, StatusFailed, "create", err.Error()); terr != nil {
			s.cfg.Log.Error("record failed create", "sandbox", id, "err", terr)
		}
		return store.Sandbox{}, fmt.Errorf("create sandbox: %w", err)
	}
	if _, err := s.rt.Create(cctx, runtime.Spec{ID: id, Template: rootfs, Limits: req.Limits, Network: bootNet, Devices: s.devicesFor(gpus)}); err != nil {
		return fail(err)
	}
	if hooks.Setup != "" {
		if err := s.runHook(cctx, row, "setup", hooks.Setup, hooks.setupTimeout(), n.progress); err != nil {
			return fail(err)
		}
		// The sandbox's own policy before the seal's boot, which makes
		// its link (or none) anew.
		if !bootNet.Equal(net) {
			if err := s.rt.SetNetwork(cctx, id, net); err != nil {
				return fail(err)
			}
		}
		if err := s.rt.Seal(cctx, id); err != nil {
			return fail(err)
		}
	}
	if hooks.SessionSetup != "" {
		if err := s.runHook(cctx, row, "session_setup", hooks.SessionSetup, hooks.setupTimeout(), n.progress); err != nil {
			return fail(err)
		}
	}
	final := string(n.final)
	record := func() error {
		return s.st.UpdateSandbox(cctx, id, []string{string(StatusCreating)}, store.Update{Status: &final, Fence: n.fence})
	}
	if n.commit != nil {
		err = n.commit(record)
	} else {
		err = record()
	}
	if err != nil {
		// Not recorded (deleted meanwhile, the store failed, or the pool
		// leader's lease lapsed): a sandbox nobody may hand out must not
		// run on.
		_ = s.rt.Destroy(cctx, id) // best effort; the reconciler catches the rest
		s.releaseGPUs(id)
		failed := string(StatusFailed)
		_ = s.st.UpdateSandbox(cctx, id, []string{string(StatusCreating)}, store.Update{Status: &failed, Error: new(err.Error())}) // best effort
		return store.Sandbox{}, s.storeErr(err)
	}
	s.publish(row, n.final, "created", "")
	row.Status = string(n.final)
	if n.final == StatusRunning {
		s.track(row, time.Now())
	}
	return s.st.GetSandbox(ctx, id)
}

// HasRoom reports whether this node may start another sandbox.
func (s *Service) HasRoom(ctx context.Context) bool {
	n, err := s.ActiveOn(ctx, s.cfg.Node)
	return err == nil && n < s.cfg.MaxSandboxes
}

// ActiveOn counts the sandboxes that exist on node.
func (s *Service) ActiveOn(ctx context.Context, node string) (int, error) {
	return s.st.CountSandboxes(ctx, store.Filter{Node: node, Statuses: statusStrings(Active)})
}

// admit checks capacity, takes the sandbox's GPUs and writes its row
// (with them), before the runtime acts: a crash from then on is found by
// the next start and cleaned. The check, the GPUs and the write are one
// step (admitMu), so concurrent creates cannot overshoot MaxSandboxes
// nor take one GPU twice.
func (s *Service) admit(ctx context.Context, row *store.Sandbox, gpus int) (_ []gpu.GPU, retErr error) {
	s.mu.Lock()
	closing := s.closing
	s.mu.Unlock()
	if closing {
		return nil, ErrShuttingDown
	}
	s.admitMu.Lock()
	defer s.admitMu.Unlock()
	active, err := s.ActiveOn(ctx, s.cfg.Node)
	if err != nil {
		return nil, err
	}
	if active >= s.cfg.MaxSandboxes {
		return nil, fmt.Errorf("%w: %d sandboxes on this node", ErrCapacity, active)
	}
	held, err := s.takeGPUs(row.ID, gpus)
	if err != nil {
		return nil, err
	}
	defer func() {
		if retErr != nil {
			s.releaseGPUs(row.ID)
		}
	}()
	row.GPUs = indexesOf(held)
	if err := s.st.CreateSandbox(ctx, *row); err != nil {
		if errors.Is(err, errdefs.ErrExists) {
			return nil, errdefs.Userf(errdefs.ErrExists, "sandbox %s already exists", row.ID)
		}
		return nil, err
	}
	return held, nil
}
