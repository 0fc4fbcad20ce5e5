package sandbox

import (
	"context"
	"fmt"
	"slices"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/gpu"
	"github.com/sandpool/sandpool/internal/runtime"
	"github.com/sandpool/sandpool/internal/store"
)

// GPUs: the service hands the node's GPUs to sandboxes that ask for them
// (limits.gpus) and is the one owner of who holds what.
//
//   - A create takes its GPUs and writes them with the sandbox's row, in
//     one step under admitMu: fewer free than asked is ErrGPUsExhausted
//     (409 gpus_exhausted) and nothing is written.
//   - A sandbox holds them while it is active, frozen included; an
//     archive gives them back (the row's gpus are cleared) and a resume
//     takes GPUs again (possibly others) before it starts, or fails
//     clearly and stays archived.
//   - Every way out of the active statuses gives them back (destroy,
//     retirement, a failed create, the reconciler's fixes); and each
//     reconciler pass releases what no active row holds any more, so a
//     path that forgot cannot leak a GPU.
//   - At Start, who holds what is rebuilt from the rows (a restart, or a
//     crash of the server).

// ErrGPUsExhausted: fewer GPUs are free on this node than a create or a
// resume asks for (409 gpus_exhausted). A pool whose policy is wait waits
// for one instead.
var ErrGPUsExhausted = gpu.ErrExhausted

// deviceRuntime is what the service needs of a runtime for GPUs beyond
// runtime.Runtime: to give a stopped sandbox other devices before it
// starts again (a resume from archive).
type deviceRuntime interface {
	SetDevices(ctx context.Context, id string, d runtime.Devices) error
}

// holdsGPUs reports whether row's GPUs are its own now: those of an
// active sandbox. (Every archive clears them; an archived row that has
// some is being resumed, or was when the server stopped, and keeps them
// for its resume.)
func holdsGPUs(row store.Sandbox) bool {
	return row.GPUs != "" && slices.Contains(Active, Status(row.Status))
}

// checkGPUs says whether a request for n GPUs can ever be met here.
func (s *Service) checkGPUs(n int) error { return s.gpus.Check(n) }

// takeGPUs gives sandbox id n GPUs; the caller holds admitMu and writes
// them with the row before letting go.
func (s *Service) takeGPUs(id string, n int) ([]gpu.GPU, error) {
	if n == 0 {
		return nil, nil
	}
	return s.gpus.Allocate(id, n)
}

// releaseGPUs gives back what sandbox id holds.
func (s *Service) releaseGPUs(id string) {
	if s.gpus.Release(id) {
		s.cfg.Log.Debug("GPUs given back", "sandbox", id)
	}
}

// devicesFor is what the runtime is given for a sandbox holding gpus:
// their nodes and the driver's shared ones, the driver's libraries and
// programs, and the environment that names them.
func (s *Service) devicesFor(gpus []gpu.GPU) runtime.Devices {
	if len(gpus) == 0 {
		return runtime.Devices{}
	}
	var d runtime.Devices
	for _, g := range gpus {
		d.Nodes = append(d.Nodes, runtime.DeviceNode{Path: g.Device.Path, Name: g.Device.Name, Major: g.Device.Major, Minor: g.Device.Minor})
	}
	for _, c := range s.cfg.GPUHost.Control {
		d.Nodes = append(d.Nodes, runtime.DeviceNode{Path: c.Path, Name: c.Name, Major: c.Major, Minor: c.Minor})
	}
	for _, f := range s.cfg.GPUHost.Libraries {
		d.Files = append(d.Files, runtime.DeviceFile{Src: f.Src, Dst: "lib64/" + f.Name})
	}
	for _, f := range s.cfg.GPUHost.Tools {
		d.Files = append(d.Files, runtime.DeviceFile{Src: f.Src, Dst: "bin/" + f.Name})
	}
	d.Env = gpu.Env(gpus)
	return d
}

func indexesOf(gpus []gpu.GPU) string {
	idx := make([]int, len(gpus))
	for i, g := range gpus {
		idx[i] = g.Index
	}
	return gpu.FormatIndexes(idx)
}

// restoreGPUs rebuilds who holds what from this node's rows (at Start).
func (s *Service) restoreGPUs(ctx context.Context) error {
	rows, err := s.st.ListSandboxes(ctx, store.Filter{Node: s.cfg.Node, Statuses: statusStrings(Active)})
	if err != nil {
		return err
	}
	for _, row := range rows {
		if !holdsGPUs(row) {
			continue
		}
		idx, err := gpu.ParseIndexes(row.GPUs)
		if err == nil {
			err = s.gpus.Restore(row.ID, idx)
		}
		if err != nil {
			s.cfg.Log.Warn("restore a sandbox's GPUs", "sandbox", row.ID, "gpus", row.GPUs, "err", err)
		}
	}
	return nil
}

// syncGPUs releases the GPUs of sandboxes no active row says hold them
// (any path out of the active statuses that did not give them back).
// Allocations made after the rows were read are left alone: creates and
// resumes take GPUs and write them under admitMu, and the mark is read
// under it.
func (s *Service) syncGPUs(ctx context.Context) error {
	if s.gpus.Total() == 0 {
		return nil
	}
	s.admitMu.Lock()
	mark := s.gpus.Mark()
	s.admitMu.Unlock()
	rows, err := s.st.ListSandboxes(ctx, store.Filter{Node: s.cfg.Node, Statuses: statusStrings(Active)})
	if err != nil {
		return err
	}
	holds := map[string]bool{}
	for _, row := range rows {
		holds[row.ID] = holdsGPUs(row)
	}
	for _, id := range s.gpus.Prune(mark, func(id string) bool { return holds[id] }) {
		s.m.fixes.WithLabelValues("release_gpus").Inc()
		s.cfg.Log.Warn("reconciler: gave back the GPUs of a sandbox that no longer holds them", "sandbox", id)
	}
	return nil
}

// regainGPUs gives an archived sandbox being resumed GPUs again (it gave
// its own back when archived) and tells the runtime, before it starts.
// The caller holds the sandbox's lock.
func (s *Service) regainGPUs(ctx context.Context, row store.Sandbox) error {
	n := specOf(row).Limits.GPUs
	if n == 0 {
		return nil
	}
	held := s.gpus.Held(row.ID)
	if len(held) != n { // none (archived), or a change of --gpus since
		s.releaseGPUs(row.ID)
		s.admitMu.Lock()
		got, err := s.takeGPUs(row.ID, n)
		if err == nil {
			idx := indexesOf(got)
			if err = s.st.UpdateSandbox(ctx, row.ID, []string{string(StatusPaused)}, store.Update{GPUs: &idx}); err != nil {
				s.releaseGPUs(row.ID)
			}
		}
		s.admitMu.Unlock()
		if err != nil {
			return fmt.Errorf("resume sandbox %s: it needs %d GPUs again: %w", row.ID, n, s.storeErr(err))
		}
		held = got
	}
	dr, ok := s.rt.(deviceRuntime)
	if !ok {
		s.releaseGPUs(row.ID)
		return errdefs.Userf(errdefs.ErrNotSupported, "this runtime cannot give a sandbox devices again")
	}
	if err := dr.SetDevices(ctx, row.ID, s.devicesFor(held)); err != nil {
		s.releaseGPUs(row.ID)
		return fmt.Errorf("resume sandbox %s: %w", row.ID, err)
	}
	return nil
}

// GPUInfo is one of the node's GPUs as GET /v1/node reports it.
type GPUInfo struct {
	gpu.GPU
	// Sandboxes are those holding it.
	Sandboxes []string `json:"sandboxes,omitempty"`
}

// gpuInfos lists the node's GPUs with their holders.
func (s *Service) gpuInfos() []GPUInfo {
	out := []GPUInfo{}
	for _, u := range s.gpus.Usage() {
		out = append(out, GPUInfo{GPU: u.GPU, Sandboxes: u.Holders})
	}
	return out
}
