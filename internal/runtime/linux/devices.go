package linux

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/sandpool/sandpool/internal/pattern"

	"golang.org/x/sys/unix"

	"github.com/sandpool/sandpool/internal/agent"
	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/runtime"
)

// How a sandbox is given host devices (Spec.Devices, a GPU's):
//
//   - its nodes are bound, one by one, into its /dev (a tmpfs of its own)
//     by PID 1 while it builds the root, so spares need nothing ahead;
//   - before PID 1 is told to build anything, the host puts it under a
//     device cgroup that allows those nodes and the standard ones only
//     (devcgroup.go);
//   - the driver's files are bound read-only into a small tmpfs at
//     runtime.DriverDir (libraries in lib64, first on LD_LIBRARY_PATH;
//     programs in bin, on PATH), except for templates that show the
//     host's own /usr (base), which see the driver where the host has it;
//   - it gets a read-only /sys (CUDA, NVML and NCCL read the hardware's
//     topology there);
//   - Devices.Env goes into its processes' environment, over the
//     template's.
//
// The mount points (/usr/local/nvidia, /sys) come from a layer of empty
// directories (<data>/devices/layer) laid over the template's, so an
// image that lacks them needs no writes to its sandbox's writable layer.

var (
	deviceName = pattern.New(`^[A-Za-z0-9][A-Za-z0-9._-]*$`, 1, 64)
	driverFile = pattern.New(`^(lib64|bin)/[A-Za-z0-9][A-Za-z0-9._+-]*$`, 5, 207)
	envKey     = pattern.New(`^[A-Za-z_][A-Za-z0-9_]*$`, 1, 128)
)

// validateDevices checks what a caller gives as Spec.Devices.
func validateDevices(d runtime.Devices) error {
	seen := map[string]bool{}
	for _, n := range d.Nodes {
		_, std := devEntries[n.Name]
		if !deviceName.MatchString(n.Name) || std || seen[n.Name] {
			return errdefs.Userf(errdefs.ErrInvalid, "device name %q: want a plain name, not one of /dev's own, once", n.Name)
		}
		seen[n.Name] = true
		if !filepath.IsAbs(n.Path) || filepath.Clean(n.Path) != n.Path {
			return errdefs.Userf(errdefs.ErrInvalid, "device %s: path %q must be clean and absolute", n.Name, n.Path)
		}
	}
	for _, f := range d.Files {
		if !driverFile.MatchString(f.Dst) || !filepath.IsAbs(f.Src) || filepath.Clean(f.Src) != f.Src {
			return errdefs.Userf(errdefs.ErrInvalid, "driver file %q -> %q: want an absolute source and lib64/NAME or bin/NAME", f.Src, f.Dst)
		}
	}
	for _, kv := range d.Env {
		k, _, ok := strings.Cut(kv, "=")
		if !ok || !envKey.MatchString(k) || strings.ContainsRune(kv, 0) {
			return errdefs.Userf(errdefs.ErrInvalid, "device environment %q: want KEY=VALUE", kv)
		}
	}
	return nil
}

// devEntries are /dev's own names (those the agent's reset expects).
var devEntries = map[string]bool{"null": true, "zero": true, "full": true, "random": true, "urandom": true, "tty": true,
	"pts": true, "shm": true, "mqueue": true, "fd": true, "stdin": true, "stdout": true, "stderr": true, "ptmx": true}

// SetDevices gives a stopped sandbox other devices, from its next Start
// (the lifecycle service does so when it resumes an archived sandbox:
// its GPUs went back when it was archived).
func (r *Runtime) SetDevices(ctx context.Context, id string, d runtime.Devices) error {
	if err := validateDevices(d); err != nil {
		return err
	}
	sb, err := r.lookup(id)
	if err != nil {
		return err
	}
	sb.life.Lock()
	defer sb.life.Unlock()
	if s := sb.getStatus(); s != runtime.StatusStopped && s != runtime.StatusBroken {
		return errdefs.Userf(errdefs.ErrConflict, "sandbox %s is %s: its devices change only while it is stopped", id, s)
	}
	sb.mu.Lock()
	sb.st.Devices = d
	st := sb.st
	sb.mu.Unlock()
	return r.saveState(st)
}

// Devices reports what a sandbox is given of the host's devices.
func (r *Runtime) Devices(id string) (runtime.Devices, error) {
	sb, err := r.lookup(id)
	if err != nil {
		return runtime.Devices{}, err
	}
	sb.mu.Lock()
	defer sb.mu.Unlock()
	return sb.st.Devices, nil
}

func (r *Runtime) deviceLayer() string { return filepath.Join(r.cfg.DataDir, "devices", "layer") }

// ensureDeviceLayer makes the layer of mount points laid over the layers
// of a sandbox given devices: empty directories, owned by the sandbox's
// root like an image's. It never changes once made.
func (r *Runtime) ensureDeviceLayer() error {
	root := r.deviceLayer()
	uid := int(r.cfg.UIDBase)
	dirs := []string{"", "sys"}
	for d := runtime.DriverDir; d != "/"; d = filepath.Dir(d) {
		dirs = append(dirs, d) // /usr/local/nvidia, /usr/local, /usr
	}
	for _, d := range dirs {
		p := filepath.Join(root, d)
		mode := os.FileMode(0o755)
		if d == "sys" {
			mode = 0o555
		}
		if err := os.MkdirAll(p, 0o755); err != nil {
			return err
		}
		if err := os.Chmod(p, mode); err != nil {
			return err
		}
		if err := os.Chown(p, uid, uid); err != nil {
			return err
		}
	}
	return nil
}

// bootDevices is what boot adds for a sandbox's devices: a layer to lay
// over its lower layers ("" for none), and what PID 1 is told.
func (r *Runtime) bootDevices(d runtime.Devices, tpl templateInfo, cfg *initConfig) (layer string) {
	if d.Empty() {
		return ""
	}
	hostView := len(tpl.binds) > 0 // base: the host's /usr, /lib*, loader cache
	for _, n := range d.Nodes {
		cfg.Devices = append(cfg.Devices, devNode{Path: n.Path, Name: n.Name})
	}
	if !hostView {
		cfg.Driver = d.Files
	}
	cfg.Sysfs = len(d.Nodes) > 0
	cfg.Defaults.Env = deviceEnv(tpl, d, !hostView)
	if !hostView && (len(d.Files) > 0 || len(d.Nodes) > 0) {
		return r.deviceLayer()
	}
	return ""
}

// deviceEnv is the environment of a sandbox given d: its template's, then
// d.Env, and the driver's directories on LD_LIBRARY_PATH and PATH (or,
// on a host view, the host directories of the driver's programs on PATH).
func deviceEnv(tpl templateInfo, d runtime.Devices, driverDir bool) []string {
	env := slices.Clone(tpl.defaults.Env)
	for _, kv := range d.Env {
		k, v, _ := strings.Cut(kv, "=")
		env = setEnv(env, k, v)
	}
	path, ok := getEnv(env, "PATH")
	if !ok {
		path = agent.DefaultPath
	}
	pathDirs := strings.Split(path, ":")
	var addPath []string
	hasLibs := false
	for _, f := range d.Files {
		switch {
		case strings.HasPrefix(f.Dst, "lib64/"):
			hasLibs = true
		case driverDir:
			addPath = append(addPath, runtime.DriverDir+"/bin")
		case visible(tpl.binds, f.Src):
			addPath = append(addPath, filepath.Dir(f.Src))
		}
	}
	for _, dir := range addPath {
		if !slices.Contains(pathDirs, dir) {
			pathDirs = append(pathDirs, dir)
		}
	}
	if len(addPath) > 0 {
		env = setEnv(env, "PATH", strings.Join(pathDirs, ":"))
	}
	if driverDir && hasLibs {
		lib := runtime.DriverDir + "/lib64"
		if old, ok := getEnv(env, "LD_LIBRARY_PATH"); ok && old != "" {
			if !slices.Contains(strings.Split(old, ":"), lib) {
				lib += ":" + old
			} else {
				lib = old
			}
		}
		env = setEnv(env, "LD_LIBRARY_PATH", lib)
	}
	return env
}

// visible reports whether host path p is seen at the same path through
// one of a template's binds.
func visible(binds []bindMount, p string) bool {
	for _, b := range binds {
		if b.Src == b.Dst && !b.File && (p == b.Src || strings.HasPrefix(p, b.Src+"/")) {
			return true
		}
	}
	return false
}

func getEnv(env []string, k string) (string, bool) {
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, k+"="); ok {
			return v, true
		}
	}
	return "", false
}

// setEnv sets k in env, in place of an earlier value.
func setEnv(env []string, k, v string) []string {
	for i, kv := range env {
		if strings.HasPrefix(kv, k+"=") {
			env[i] = k + "=" + v
			return env
		}
	}
	return append(env, k+"="+v)
}

// devNode is a host device node PID 1 binds into /dev.
type devNode struct {
	Path string `json:"path"`
	Name string `json:"name"`
}

// The rest runs in the sandbox's PID 1, building its root.

// deviceSources are the host paths of a sandbox's devices and driver
// files, opened (O_PATH) by PID 1 before its root hides them: what is
// bound is what was opened, by /proc/self/fd paths.
type deviceSources struct {
	fds           []int
	nodes, driver []string // /proc/self/fd/N of each, in the config's order
}

func openDeviceSources(cfg initConfig) (s deviceSources, err error) {
	open := func(p string) (string, error) {
		dir, name := unix.AT_FDCWD, p
		if rest, ok := strings.CutPrefix(p, stage+"/"); ok && hostTmp >= 0 {
			dir, name = hostTmp, rest // stage covers the host's /tmp
		}
		fd, err := unix.Openat(dir, name, unix.O_PATH|unix.O_CLOEXEC, 0)
		if err != nil {
			return "", fmt.Errorf("open %s: %w", p, err)
		}
		s.fds = append(s.fds, fd)
		return fdPath(fd), nil
	}
	for _, n := range cfg.Devices {
		p, err := open(n.Path)
		if err != nil {
			s.close()
			return deviceSources{}, fmt.Errorf("device %s: %w", n.Name, err)
		}
		s.nodes = append(s.nodes, p)
	}
	for _, f := range cfg.Driver {
		p, err := open(f.Src)
		if err != nil {
			s.close()
			return deviceSources{}, fmt.Errorf("driver file: %w", err)
		}
		s.driver = append(s.driver, p)
	}
	return s, nil
}

func (s deviceSources) close() {
	for _, fd := range s.fds {
		unix.Close(fd)
	}
}

// bindDevices binds each node (opened at sources[i]) into the sandbox's
// /dev (the tmpfs at p).
func bindDevices(p string, nodes []devNode, sources []string) error {
	for i, n := range nodes {
		dst := filepath.Join(p, n.Name)
		f, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o666)
		if err != nil {
			return fmt.Errorf("device %s: %w", n.Name, err)
		}
		f.Close()
		// The node itself, not a copy: nothing can be made in a /dev of
		// a user namespace's tmpfs that opens a device.
		if err := unix.Mount(sources[i], dst, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind device %s: %w", n.Path, err)
		}
		attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NOEXEC}
		if err := unix.MountSetattr(unix.AT_FDCWD, dst, 0, &attr); err != nil {
			return fmt.Errorf("device %s: %w", n.Name, err)
		}
	}
	return nil
}

// mountDriver makes a tmpfs at dir with the driver's files (opened at
// sources) bound into it read-only, then makes the tmpfs read-only too.
func mountDriver(dir string, files []runtime.DeviceFile, sources []string) error {
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=755,size=64k"); err != nil {
		return fmt.Errorf("mount %s: %w", runtime.DriverDir, err)
	}
	for i, f := range files {
		dst := filepath.Join(dir, f.Dst)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		w, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		w.Close()
		if err := bindReadOnly(sources[i], dst); err != nil {
			return fmt.Errorf("driver file %s: %w", f.Src, err)
		}
	}
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY}
	if err := unix.MountSetattr(unix.AT_FDCWD, dir, 0, &attr); err != nil {
		return fmt.Errorf("make %s read-only: %w", runtime.DriverDir, err)
	}
	return nil
}

// mountSys mounts a read-only sysfs at p.
func mountSys(p string) error {
	if err := unix.Mount("sysfs", p, "sysfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount /sys: %w", err)
	}
	return nil
}
