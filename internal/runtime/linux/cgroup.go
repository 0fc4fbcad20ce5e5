package linux

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sandpool/sandpool/internal/runtime"
)

// cgroupDriver makes and controls one cgroup per sandbox, on cgroup v1 (one
// directory per controller) or v2 (one directory).
type cgroupDriver struct {
	version int
	// v1: controller name -> directory of the sandpool parent group.
	// v2: "" -> directory of the sandpool parent group.
	parents map[string]string
	// v1 lists the v1 hierarchies a sandbox gets a group in: those of
	// v1Controllers, and cpuacct's where it is mounted on its own.
	v1 []string
	// devices, on v1, is the parent group's directory in the devices
	// hierarchy ("" where it is not mounted): only sandboxes given device
	// nodes get a group there (devcgroup.go).
	devices string
}

// v1Controllers are the controllers sandpool uses on cgroup v1.
var v1Controllers = []string{"cpu", "memory", "pids", "freezer"}

// newCgroupDriver finds the cgroup hierarchy under root (normally
// /sys/fs/cgroup) and prepares the parent group named parent.
func newCgroupDriver(root, parent string) (*cgroupDriver, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(root, &st); err != nil {
		return nil, fmt.Errorf("cgroups: %s: %w", root, err)
	}
	d := &cgroupDriver{parents: map[string]string{}}
	if st.Type == unix.CGROUP2_SUPER_MAGIC {
		d.version = 2
		p := filepath.Join(root, parent)
		if err := os.MkdirAll(p, 0o755); err != nil {
			return nil, fmt.Errorf("cgroups: %w", err)
		}
		for _, dir := range []string{root, p} {
			// Enable what exists; a controller the host lacks shows up
			// when its limit is written.
			for _, c := range []string{"cpu", "memory", "pids"} {
				_ = os.WriteFile(filepath.Join(dir, "cgroup.subtree_control"), []byte("+"+c), 0)
			}
		}
		d.parents[""] = p
		return d, nil
	}
	d.version = 1
	mounts, err := v1Mounts()
	if err != nil {
		return nil, err
	}
	for _, c := range v1Controllers {
		m, ok := mounts[c]
		if !ok {
			return nil, fmt.Errorf("cgroups: controller %q is not mounted (cgroup v1)", c)
		}
		p := filepath.Join(m, parent)
		if err := os.MkdirAll(p, 0o755); err != nil {
			return nil, fmt.Errorf("cgroups: %w", err)
		}
		d.parents[c] = p
		d.v1 = append(d.v1, c)
	}
	// CPU time is accounted by cpuacct, usually mounted with cpu; where it
	// has a hierarchy of its own, sandboxes get a group there too. Without
	// it, CPU use reads as zero.
	if m, ok := mounts["cpuacct"]; ok && m != mounts["cpu"] {
		p := filepath.Join(m, parent)
		if err := os.MkdirAll(p, 0o755); err == nil {
			d.parents["cpuacct"] = p
			d.v1 = append(d.v1, "cpuacct")
		}
	}
	if m, ok := mounts["devices"]; ok {
		p := filepath.Join(m, parent)
		if err := os.MkdirAll(p, 0o755); err == nil {
			d.devices = p
		}
	}
	return d, nil
}

// v1Mounts maps each v1 controller to its mount point.
func v1Mounts() (map[string]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent major:minor root mountpoint opts ... - fstype source superopts
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, f := range fields {
			if f == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || sep+3 >= len(fields) || fields[sep+1] != "cgroup" {
			continue
		}
		for _, opt := range strings.Split(fields[sep+3], ",") {
			if _, seen := out[opt]; !seen {
				out[opt] = fields[4]
			}
		}
	}
	return out, sc.Err()
}

// cgroup is one sandbox's group.
type cgroup struct {
	d  *cgroupDriver
	id string
}

func (d *cgroupDriver) group(id string) *cgroup { return &cgroup{d: d, id: id} }

func (g *cgroup) dir(controller string) string {
	if g.d.version == 2 {
		controller = ""
	}
	return filepath.Join(g.d.parents[controller], g.id)
}

// dirs lists the group's directories (one per controller on v1).
func (g *cgroup) dirs() []string {
	if g.d.version == 2 {
		return []string{g.dir("")}
	}
	out := make([]string, 0, len(g.d.v1))
	for _, c := range g.d.v1 {
		out = append(out, g.dir(c))
	}
	return out
}

func writeFile(path, value string) error {
	if err := os.WriteFile(path, []byte(value), 0); err != nil {
		return fmt.Errorf("cgroups: write %s: %w", path, err)
	}
	return nil
}

const cpuPeriod = 100000 // microseconds

// create makes the group and applies limits. On error nothing is left.
func (g *cgroup) create(l runtime.Limits) (retErr error) {
	if err := g.make(); err != nil {
		return err
	}
	defer func() {
		if retErr != nil {
			_ = g.remove(context.Background()) // best effort; the original error wins
		}
	}()
	return g.limit(l)
}

// make makes the group's directories (no limits yet). On error nothing
// is left.
func (g *cgroup) make() error {
	for _, dir := range g.dirs() {
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			_ = g.remove(context.Background()) // best effort; the original error wins
			return fmt.Errorf("cgroups: %w", err)
		}
	}
	return nil
}

// renameTo gives the group another name under the same parent, with
// whatever it holds (cgroup v1 only: v2 cannot rename).
func (g *cgroup) renameTo(id string) error {
	if g.d.version != 1 {
		return errors.New("cgroups: rename needs cgroup v1")
	}
	to := g.d.group(id)
	for i, c := range g.d.v1 {
		if err := os.Rename(g.dir(c), to.dir(c)); err != nil {
			for _, done := range g.d.v1[:i] { // back, best effort: the error is returned
				_ = os.Rename(to.dir(done), g.dir(done))
			}
			return fmt.Errorf("cgroups: rename %s to %s: %w", g.id, id, err)
		}
	}
	g.id = id
	return nil
}

// limit applies l to the group.
func (g *cgroup) limit(l runtime.Limits) error {
	quota := int64(l.CPUs * cpuPeriod)
	if g.d.version == 2 {
		dir := g.dir("")
		if quota > 0 {
			if err := writeFile(filepath.Join(dir, "cpu.max"), fmt.Sprintf("%d %d", quota, cpuPeriod)); err != nil {
				return err
			}
		}
		if l.MemoryBytes > 0 {
			if err := writeFile(filepath.Join(dir, "memory.max"), strconv.FormatInt(l.MemoryBytes, 10)); err != nil {
				return err
			}
			_ = writeFile(filepath.Join(dir, "memory.swap.max"), "0") // absent without swap accounting
		}
		if l.Pids > 0 {
			return writeFile(filepath.Join(dir, "pids.max"), strconv.FormatInt(l.Pids, 10))
		}
		return nil
	}
	if quota > 0 {
		if err := writeFile(filepath.Join(g.dir("cpu"), "cpu.cfs_period_us"), strconv.Itoa(cpuPeriod)); err != nil {
			return err
		}
		if err := writeFile(filepath.Join(g.dir("cpu"), "cpu.cfs_quota_us"), strconv.FormatInt(quota, 10)); err != nil {
			return err
		}
	}
	if l.MemoryBytes > 0 {
		mem := g.dir("memory")
		if err := writeFile(filepath.Join(mem, "memory.limit_in_bytes"), strconv.FormatInt(l.MemoryBytes, 10)); err != nil {
			return err
		}
		if _, err := os.Stat(filepath.Join(mem, "memory.memsw.limit_in_bytes")); err == nil {
			if err := writeFile(filepath.Join(mem, "memory.memsw.limit_in_bytes"), strconv.FormatInt(l.MemoryBytes, 10)); err != nil {
				return err
			}
		}
		_ = writeFile(filepath.Join(mem, "memory.swappiness"), "0") // refused on some kernels; harmless
	}
	if l.Pids > 0 {
		return writeFile(filepath.Join(g.dir("pids"), "pids.max"), strconv.FormatInt(l.Pids, 10))
	}
	return nil
}

// add moves a process (all its threads) into the group.
func (g *cgroup) add(pid int) error {
	for _, dir := range g.dirs() {
		if err := writeFile(filepath.Join(dir, "cgroup.procs"), strconv.Itoa(pid)); err != nil {
			return err
		}
	}
	return nil
}

// procs lists the pids in the group.
func (g *cgroup) procs() ([]int, error) {
	dir := g.dir("pids")
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return nil, err
	}
	var out []int
	for _, f := range strings.Fields(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil {
			out = append(out, pid)
		}
	}
	return out, nil
}

// exists reports whether the group's directory is there.
func (g *cgroup) exists() bool {
	_, err := os.Stat(g.dir("pids"))
	return err == nil
}

// freeze stops every process in the group and waits until they are.
func (g *cgroup) freeze(ctx context.Context) error {
	if g.d.version == 2 {
		if err := writeFile(filepath.Join(g.dir(""), "cgroup.freeze"), "1"); err != nil {
			return err
		}
		return g.waitFile(ctx, filepath.Join(g.dir(""), "cgroup.events"), "frozen 1")
	}
	state := filepath.Join(g.dir("freezer"), "freezer.state")
	for {
		// Writing FROZEN again nudges tasks that were forking.
		if err := writeFile(state, "FROZEN"); err != nil {
			return err
		}
		b, err := os.ReadFile(state)
		if err != nil {
			return err
		}
		if strings.TrimSpace(string(b)) == "FROZEN" {
			return nil
		}
		if err := sleepCtx(ctx, 200*time.Microsecond); err != nil {
			_ = g.thaw() // leave it running rather than half frozen
			return fmt.Errorf("freeze: %w", err)
		}
	}
}

func (g *cgroup) thaw() error {
	if g.d.version == 2 {
		return writeFile(filepath.Join(g.dir(""), "cgroup.freeze"), "0")
	}
	return writeFile(filepath.Join(g.dir("freezer"), "freezer.state"), "THAWED")
}

// frozen reports whether the group is frozen.
func (g *cgroup) frozen() bool {
	if g.d.version == 2 {
		b, _ := os.ReadFile(filepath.Join(g.dir(""), "cgroup.freeze")) // missing: not frozen
		return strings.TrimSpace(string(b)) == "1"
	}
	b, _ := os.ReadFile(filepath.Join(g.dir("freezer"), "freezer.state")) // missing: not frozen
	return strings.TrimSpace(string(b)) != "THAWED" && len(b) > 0
}

// memoryUsage is the anonymous memory of the group's processes (their
// heaps and stacks), in bytes: what they use themselves, without page
// cache shared with the host.
func (g *cgroup) memoryUsage() (int64, error) {
	file, key := filepath.Join(g.dir("memory"), "memory.stat"), "total_rss"
	if g.d.version == 2 {
		file, key = filepath.Join(g.dir(""), "memory.stat"), "anon"
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key+" "); ok {
			return strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, fmt.Errorf("cgroups: no %s in %s", key, file)
}

// oomKills is how many processes the kernel has OOM-killed in the group.
func (g *cgroup) oomKills() int64 {
	var file, key string
	if g.d.version == 2 {
		file, key = filepath.Join(g.dir(""), "memory.events"), "oom_kill"
	} else {
		file, key = filepath.Join(g.dir("memory"), "memory.oom_control"), "oom_kill"
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == key {
			n, _ := strconv.ParseInt(f[1], 10, 64)
			return n
		}
	}
	return 0
}

// remove deletes the group's directories, waiting briefly while the kernel
// finishes with exiting tasks.
func (g *cgroup) remove(ctx context.Context) error {
	var last error
	dirs := g.dirs()
	if dev := g.devicesDir(); dev != "" {
		dirs = append(dirs, dev) // there only for a sandbox given devices
	}
	for _, dir := range dirs {
		for attempt := 0; ; attempt++ {
			err := unix.Rmdir(dir)
			if err == nil || errors.Is(err, syscall.ENOENT) {
				break
			}
			if !errors.Is(err, syscall.EBUSY) || attempt > 2000 {
				last = fmt.Errorf("cgroups: remove %s: %w", dir, err)
				break
			}
			if sleepCtx(ctx, time.Millisecond) != nil {
				return fmt.Errorf("cgroups: remove %s: %w", dir, ctx.Err())
			}
		}
	}
	return last
}

func (g *cgroup) waitFile(ctx context.Context, path, line string) error {
	for {
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, l := range strings.Split(string(b), "\n") {
			if l == line {
				return nil
			}
		}
		if err := sleepCtx(ctx, 200*time.Microsecond); err != nil {
			return err
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
