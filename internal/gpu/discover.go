package gpu

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	goruntime "runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Options say where Discover looks.
type Options struct {
	// Root is the directory the host's /dev, /proc and driver files are
	// read under: "/" (the default) on a real host, a directory of
	// stand-in device nodes in tests.
	Root string
	// Ldconfig, if set, gives the loader cache's listing (what `ldconfig
	// -p` prints) instead of running ldconfig; paths in it are taken as
	// they are. Without it Discover runs `ldconfig -p` (on Root's
	// ld.so.cache when Root is not "/", its paths then read under Root).
	Ldconfig func(ctx context.Context) ([]byte, error)
	// SMI is nvidia-smi's path on the host, to ask each GPU's memory and
	// to give sandboxes; empty means look for it (on PATH and in the
	// usual places, under Root).
	SMI string
}

// libraryNames are the driver's user-space libraries a CUDA program or
// NVML needs (nvidia-container-toolkit's "compute" and "utility" sets),
// by the name before ".so".
var libraryNames = []string{
	"libcuda", "libcudadebugger", "libnvidia-ptxjitcompiler", "libnvidia-nvvm", "libnvidia-gpucomp",
	"libnvidia-opencl", "libnvidia-allocator", "libnvidia-fatbinaryloader", "libnvidia-compiler",
	"libnvidia-ml", "libnvidia-cfg", "libnvidia-pkcs11", "libnvidia-pkcs11-openssl3",
}

// controlNodes are what every GPU sandbox gets besides its GPUs' nodes.
var controlNodes = []string{"nvidiactl", "nvidia-uvm", "nvidia-uvm-tools"}

var gpuNode = regexp.MustCompile(`^nvidia([0-9]+)$`)

// Discover finds the GPUs under opts.Root. A host without NVIDIA devices
// is no error: Host.GPUs is empty. What it looked for and did not find
// (no UVM node, no libcuda) is in Host.Notes.
func Discover(ctx context.Context, opts Options) (Host, error) {
	root := opts.Root
	if root == "" {
		root = "/"
	}
	var h Host
	devDir := filepath.Join(root, "dev")
	ents, err := os.ReadDir(devDir)
	if err != nil {
		return h, fmt.Errorf("gpus: %w", err)
	}
	for _, e := range ents {
		m := gpuNode.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		dev, err := charDevice(filepath.Join(devDir, e.Name()))
		if err != nil {
			h.Notes = append(h.Notes, err.Error())
			continue
		}
		n, _ := strconv.Atoi(m[1]) // digits, matched above
		h.GPUs = append(h.GPUs, GPU{Index: n, Device: dev})
	}
	slices.SortFunc(h.GPUs, func(a, b GPU) int { return a.Index - b.Index })
	if len(h.GPUs) == 0 {
		return h, nil
	}
	for _, name := range controlNodes {
		dev, err := charDevice(filepath.Join(devDir, name))
		if err != nil {
			h.Notes = append(h.Notes, err.Error())
			continue
		}
		h.Control = append(h.Control, dev)
	}
	h.Driver = driverVersion(root)
	if err := readInformation(root, &h); err != nil {
		h.Notes = append(h.Notes, err.Error())
	}
	h.Libraries, err = libraries(ctx, root, opts.Ldconfig)
	if err != nil {
		h.Notes = append(h.Notes, err.Error())
	} else if !slices.ContainsFunc(h.Libraries, func(f File) bool { return strings.HasPrefix(f.Name, "libcuda.so") }) {
		h.Notes = append(h.Notes, "the loader cache lists no libcuda.so: CUDA programs will not find the driver")
	}
	smi := opts.SMI
	if smi == "" {
		smi = findSMI(root)
	}
	if smi != "" {
		h.Tools = append(h.Tools, File{Src: smi, Name: "nvidia-smi"})
		if err := readMemory(ctx, smi, h.GPUs); err != nil {
			h.Notes = append(h.Notes, err.Error())
		}
	}
	return h, nil
}

// charDevice reads a character device node.
func charDevice(path string) (Device, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return Device{}, fmt.Errorf("gpus: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFCHR {
		return Device{}, fmt.Errorf("gpus: %s is not a character device", path)
	}
	return Device{Path: path, Name: filepath.Base(path), Major: unix.Major(st.Rdev), Minor: unix.Minor(st.Rdev)}, nil
}

var versionRe = regexp.MustCompile(`\b[0-9]+\.[0-9]+(\.[0-9]+)?\b`)

// driverVersion reads the kernel module's version from
// /proc/driver/nvidia/version.
func driverVersion(root string) string {
	b, err := os.ReadFile(filepath.Join(root, "proc/driver/nvidia/version"))
	if err != nil {
		return ""
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return versionRe.FindString(line)
}

// readInformation fills model, UUID and bus address from
// /proc/driver/nvidia/gpus/<bus>/information, matched by device minor.
func readInformation(root string, h *Host) error {
	dirs, err := filepath.Glob(filepath.Join(root, "proc/driver/nvidia/gpus/*/information"))
	if err != nil || len(dirs) == 0 {
		return errors.New("gpus: no /proc/driver/nvidia/gpus/*/information: GPU UUIDs and models unknown")
	}
	for _, path := range dirs {
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		info := map[string]string{}
		for _, line := range strings.Split(string(b), "\n") {
			k, v, ok := strings.Cut(line, ":")
			if ok {
				info[strings.TrimSpace(k)] = strings.TrimSpace(v)
			}
		}
		minor, err := strconv.Atoi(info["Device Minor"])
		if err != nil {
			continue
		}
		for i := range h.GPUs {
			if h.GPUs[i].Index == minor {
				h.GPUs[i].UUID, h.GPUs[i].Model, h.GPUs[i].BusID = info["GPU UUID"], info["Model"], info["Bus Location"]
			}
		}
	}
	return nil
}

// archTag is how the loader cache marks libraries of this process's
// architecture.
func archTag() string {
	switch goruntime.GOARCH {
	case "amd64":
		return "x86-64"
	case "arm64":
		return "AArch64"
	}
	return ""
}

// libraries lists the driver's libraries the loader cache knows.
func libraries(ctx context.Context, root string, list func(context.Context) ([]byte, error)) ([]File, error) {
	prefix := ""
	if list == nil {
		ldconfig := findLdconfig()
		if ldconfig == "" {
			return nil, errors.New("gpus: no ldconfig: the driver's libraries cannot be found")
		}
		args := []string{"-p"}
		if root != "/" {
			cache := filepath.Join(root, "etc/ld.so.cache")
			if _, err := os.Stat(cache); err != nil {
				return nil, nil // a stand-in root without a loader cache: no libraries
			}
			args = append(args, "-C", cache)
			prefix = root
		}
		list = func(ctx context.Context) ([]byte, error) {
			ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			return exec.CommandContext(ctx, ldconfig, args...).Output()
		}
	}
	out, err := list(ctx)
	if err != nil {
		return nil, fmt.Errorf("gpus: ldconfig -p: %w", err)
	}
	files := ParseLdconfig(out, archTag())
	for i := range files {
		files[i].Src = filepath.Join(prefix, files[i].Src)
	}
	return files, nil
}

func findLdconfig() string {
	for _, p := range []string{"/sbin/ldconfig", "/usr/sbin/ldconfig"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	p, _ := exec.LookPath("ldconfig") // absent: ""
	return p
}

// ParseLdconfig picks the driver's libraries out of `ldconfig -p`
// output: lines "\tlibcuda.so.1 (libc6,x86-64) => /usr/lib/.../libcuda.so.1".
// Only entries marked with arch (when not empty) count; the first entry
// of a name wins, as it does for the loader.
func ParseLdconfig(out []byte, arch string) []File {
	var files []File
	seen := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		left, path, ok := strings.Cut(strings.TrimSpace(sc.Text()), " => ")
		if !ok {
			continue
		}
		name, flags, ok := strings.Cut(left, " (")
		if !ok || (arch != "" && !slices.Contains(strings.Split(strings.TrimSuffix(flags, ")"), ","), arch)) {
			continue
		}
		base, _, ok := strings.Cut(name, ".so")
		if !ok || !slices.Contains(libraryNames, base) || seen[name] || !filepath.IsAbs(path) {
			continue
		}
		seen[name] = true
		files = append(files, File{Src: strings.TrimSpace(path), Name: name})
	}
	return files
}

// findSMI looks for nvidia-smi: on PATH (on a real host) and in the
// places drivers put it.
func findSMI(root string) string {
	if root == "/" {
		if p, err := exec.LookPath("nvidia-smi"); err == nil {
			if abs, err := filepath.Abs(p); err == nil {
				return abs
			}
		}
	}
	for _, d := range []string{"usr/bin", "usr/local/nvidia/bin", "usr/local/bin", "bin"} {
		p := filepath.Join(root, d, "nvidia-smi")
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p
		}
	}
	return ""
}

// readMemory asks nvidia-smi for each GPU's memory (by UUID).
func readMemory(ctx context.Context, smi string, gpus []GPU) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, smi, "--query-gpu=uuid,memory.total", "--format=csv,noheader,nounits").Output()
	if err != nil {
		return fmt.Errorf("gpus: %s --query-gpu: %w (GPU memory unknown)", smi, err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		uuid, mib, ok := strings.Cut(line, ",")
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(mib), 10, 64)
		if err != nil {
			continue
		}
		for i := range gpus {
			if gpus[i].UUID != "" && strings.EqualFold(gpus[i].UUID, strings.TrimSpace(uuid)) {
				gpus[i].MemoryBytes = n << 20
			}
		}
	}
	return nil
}
