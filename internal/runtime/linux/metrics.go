package linux

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sandpool/sandpool/internal/runtime"
)

// clockTicks is the kernel's USER_HZ, the unit of /proc/<pid>/stat times
// (100 on every architecture Linux builds Go for).
const clockTicks = 100

// cpuSample is a sandbox's CPU time at one moment, kept between
// measurements to tell how busy it was in between.
type cpuSample struct {
	usage time.Duration
	at    time.Time
}

// Metrics measures what a sandbox uses: CPU and memory from its cgroup,
// disk from its writable layers. A stopped sandbox uses no CPU or memory.
func (r *Runtime) Metrics(ctx context.Context, id string) (runtime.Metrics, error) {
	sb, err := r.lookup(id)
	if err != nil {
		return runtime.Metrics{}, err
	}
	sb.mu.Lock()
	st, status := sb.st, sb.status
	sb.mu.Unlock()
	now := time.Now()
	m := runtime.Metrics{Timestamp: now.UTC(), CPUCount: max(int(math.Ceil(st.Limits.CPUs)), 1), MemTotalBytes: st.Limits.MemoryBytes}
	g := r.cg.group(id)
	if status == runtime.StatusRunning || status == runtime.StatusFrozen {
		if usage, err := g.cpuUsage(); err == nil {
			m.CPUUsedPct = sb.cpuBusy(usage, now, st) * 100 / max(st.Limits.CPUs, 0.01)
		}
		m.MemUsedBytes, m.MemCacheBytes = g.memory()
	}
	dir := r.sandboxDir(id)
	layers := append([]string{"upper"}, st.Layers...)
	for _, l := range layers {
		n, err := diskUsage(ctx, filepath.Join(dir, l))
		if err != nil {
			return runtime.Metrics{}, err
		}
		m.DiskUsedBytes += n
	}
	m.DiskTotalBytes = st.Limits.DiskBytes
	if m.DiskTotalBytes == 0 {
		var sfs unix.Statfs_t
		if err := unix.Statfs(dir, &sfs); err == nil {
			m.DiskTotalBytes = int64(sfs.Blocks) * sfs.Bsize
		}
	}
	return m, nil
}

// cpuBusy returns the share of one CPU the sandbox used since the last
// sample (or since its PID 1 started), and keeps usage as the new sample.
func (sb *sandbox) cpuBusy(usage time.Duration, now time.Time, st state) float64 {
	sb.mu.Lock()
	prev := sb.cpu
	sb.cpu = cpuSample{usage: usage, at: now}
	sb.mu.Unlock()
	if prev.at.IsZero() || usage < prev.usage {
		// No earlier sample (or a new boot since): since PID 1 started.
		prev = cpuSample{at: bootedAt(st.Pid, st.PidStart, now)}
	}
	elapsed := now.Sub(prev.at)
	if elapsed <= 0 {
		return 0
	}
	return min(float64(usage-prev.usage)/float64(elapsed), math.Max(st.Limits.CPUs, 1))
}

// bootedAt is when the process pid, started at start clock ticks after the
// host booted, began; now if that cannot be told.
func bootedAt(pid int, start uint64, now time.Time) time.Time {
	if pid == 0 || start == 0 {
		return now
	}
	var info unix.Sysinfo_t
	if err := unix.Sysinfo(&info); err != nil {
		return now
	}
	up := time.Duration(info.Uptime) * time.Second
	return now.Add(-up + time.Duration(start)*time.Second/clockTicks)
}

// cpuUsage is the CPU time the group's processes have used.
func (g *cgroup) cpuUsage() (time.Duration, error) {
	if g.d.version == 2 {
		v, err := statValue(filepath.Join(g.dir(""), "cpu.stat"), "usage_usec")
		return time.Duration(v) * time.Microsecond, err
	}
	dir := g.dir("cpu") // cpuacct mounted with cpu
	if _, ok := g.d.parents["cpuacct"]; ok {
		dir = g.dir("cpuacct")
	}
	b, err := os.ReadFile(filepath.Join(dir, "cpuacct.usage"))
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return time.Duration(n), err
}

// memory is the group's memory without page cache, and its page cache.
func (g *cgroup) memory() (used, cache int64) {
	current, stat, key := filepath.Join(g.dir("memory"), "memory.usage_in_bytes"), filepath.Join(g.dir("memory"), "memory.stat"), "total_cache"
	if g.d.version == 2 {
		current, stat, key = filepath.Join(g.dir(""), "memory.current"), filepath.Join(g.dir(""), "memory.stat"), "file"
	}
	b, err := os.ReadFile(current)
	if err != nil {
		return 0, 0
	}
	total, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64) // unreadable: 0
	cache, _ = statValue(stat, key)                                    // likewise
	return max(total-cache, 0), cache
}

// statValue reads "key value" from a cgroup's stat file.
func statValue(file, key string) (int64, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key+" "); ok {
			return strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, errors.New("cgroups: no " + key + " in " + file)
}

// diskUsage adds up the disk blocks of everything under dir (a missing
// dir holds nothing). Files removed while it counts are skipped.
func diskUsage(ctx context.Context, dir string) (int64, error) {
	var total int64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return nil // removed meanwhile
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			total += st.Blocks * 512
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("measure disk use of %s: %w", dir, err)
	}
	return total, nil
}
