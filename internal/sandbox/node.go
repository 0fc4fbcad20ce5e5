package sandbox

import (
	"bufio"
	"context"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/sandpool/sandpool/internal/buildinfo"
	"github.com/sandpool/sandpool/internal/events"
)

// NodeInfo is what a node reports of itself and its host.
type NodeInfo struct {
	Node      string `json:"node"`
	Sandboxes int    `json:"sandboxes"`
	// SandboxMemoryBytes is the memory this node's sandboxes' processes
	// use themselves (anonymous memory).
	SandboxMemoryBytes int64 `json:"sandbox_memory_bytes"`
	MemTotalBytes      int64 `json:"mem_total_bytes"`
	MemAvailableBytes  int64 `json:"mem_available_bytes"`
	// ServerRSSBytes is this sandpool process's resident memory.
	ServerRSSBytes int64 `json:"server_rss_bytes"`
	// Build is which build of sandpool runs here.
	Build buildinfo.Info `json:"build"`
	// GPUs are the GPUs this node hands out (--gpus), each with the
	// sandboxes holding it; GPUSharing says whether several may
	// (--gpu-sharing); GPUDriver is the kernel driver's version, and
	// GPUNotes what discovery missed (no UVM node, no libcuda).
	GPUs       []GPUInfo `json:"gpus"`
	GPUSharing bool      `json:"gpu_sharing,omitempty"`
	GPUDriver  string    `json:"gpu_driver,omitempty"`
	GPUNotes   []string  `json:"gpu_notes,omitempty"`
}

// Node reports this node and its host's memory.
func (s *Service) Node(ctx context.Context) (NodeInfo, error) {
	in := NodeInfo{Node: s.cfg.Node, Build: buildinfo.Get(), GPUs: s.gpuInfos(), GPUSharing: s.gpus.Shared(),
		GPUDriver: s.cfg.GPUHost.Driver, GPUNotes: s.cfg.GPUHost.Notes}
	infos, err := s.rt.List(ctx)
	if err != nil {
		return in, err
	}
	in.Sandboxes = len(infos)
	for _, i := range infos {
		n, err := s.rt.MemoryUsage(ctx, i.ID)
		if err == nil {
			in.SandboxMemoryBytes += n
		}
	}
	mem := readKB("/proc/meminfo", "MemTotal:", "MemAvailable:")
	in.MemTotalBytes, in.MemAvailableBytes = mem[0]*1024, mem[1]*1024
	in.ServerRSSBytes = readKB("/proc/self/status", "VmRSS:")[0] * 1024
	return in, nil
}

// readKB reads "Key: N kB" lines of a /proc file.
func readKB(path string, keys ...string) []int64 {
	out := make([]int64, len(keys))
	f, err := os.Open(path)
	if err != nil {
		return out
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		for i, k := range keys {
			if v, ok := strings.CutPrefix(sc.Text(), k); ok {
				out[i], _ = strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			}
		}
	}
	return out
}

// NodeLost marks node down, if its heart has been silent since
// silentSince, and its sandboxes lost, in one step of the store; one
// caller of several wins. It publishes an event for each sandbox lost and
// returns how many were.
func (s *Service) NodeLost(ctx context.Context, node string, silentSince time.Time, why string) (int, bool, error) {
	lost, won, err := s.st.MarkNodeLost(ctx, node, silentSince, statusStrings(Active), string(StatusLost), why)
	if err != nil || !won {
		return 0, won, err
	}
	for _, row := range lost {
		s.events.Publish(events.Event{Type: "sandbox", Sandbox: row.ID, Tenant: row.Tenant, Pool: row.Pool,
			Status: string(StatusLost), Reason: "node_lost", Error: row.Error})
	}
	return len(lost), true, nil
}
