package linux

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/sandpool/sandpool/internal/runtime"
)

// A sandbox given device nodes (a GPU's) gets a device cgroup: it may
// read and write the devices every sandbox has and its own nodes, and
// nothing else, mknod included. On cgroup v1 that is a group in the
// devices hierarchy (devices.deny "a", then devices.allow per device); on
// v2, which has no devices controller, a BPF_PROG_TYPE_CGROUP_DEVICE
// program attached to the sandbox's group (what runc and systemd do; the
// program is built here, a few instructions per rule, and attached with
// BPF_PROG_ATTACH, so it stays attached while the group exists, after
// this process is gone). Sandboxes without nodes get neither: they cannot
// reach a device node anyway (mounts nodev, no mknod in a user namespace).

// deviceRule allows access to one character device, or to every minor of
// a major (Minor < 0).
type deviceRule struct {
	Major, Minor int64
	// Mknod: the rule allows mknod too (none does today).
	Mknod bool
}

// standardDevices are what every sandbox's /dev holds: null, zero, full,
// random, urandom, tty, ptmx and the pseudo-terminals of its devpts.
var standardDevices = []deviceRule{
	{Major: 1, Minor: 3}, {Major: 1, Minor: 5}, {Major: 1, Minor: 7}, {Major: 1, Minor: 8}, {Major: 1, Minor: 9},
	{Major: 5, Minor: 0}, {Major: 5, Minor: 2}, {Major: 136, Minor: -1},
}

// deviceRules are the rules for a sandbox given nodes.
func deviceRules(nodes []runtime.DeviceNode) []deviceRule {
	rules := append([]deviceRule(nil), standardDevices...)
	for _, n := range nodes {
		rules = append(rules, deviceRule{Major: int64(n.Major), Minor: int64(n.Minor)})
	}
	return rules
}

// v1 writes the rule as devices.allow takes it.
func (r deviceRule) v1() string {
	minor := "*"
	if r.Minor >= 0 {
		minor = strconv.FormatInt(r.Minor, 10)
	}
	access := "rw"
	if r.Mknod {
		access = "rwm"
	}
	return fmt.Sprintf("c %d:%s %s", r.Major, minor, access)
}

// limitDevices puts process pid (PID 1, before it runs anything of the
// sandbox's) under rules. On error nothing of it is left; teardown
// removes it with the group.
func (g *cgroup) limitDevices(pid int, rules []deviceRule) error {
	if g.d.version == 2 {
		return attachDeviceFilter(g.dir(""), rules)
	}
	dir := g.devicesDir()
	if dir == "" {
		return errors.New("cgroups: the devices controller is not mounted (cgroup v1): sandboxes with devices need it")
	}
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("cgroups: %w", err)
	}
	err := writeFile(filepath.Join(dir, "devices.deny"), "a")
	for _, r := range rules {
		if err == nil {
			err = writeFile(filepath.Join(dir, "devices.allow"), r.v1())
		}
	}
	if err == nil {
		err = writeFile(filepath.Join(dir, "cgroup.procs"), strconv.Itoa(pid))
	}
	if err != nil {
		_ = unix.Rmdir(dir) // best effort; empty unless the move was what failed
	}
	return err
}

// devicesDir is the group's directory in the v1 devices hierarchy, or ""
// where there is none.
func (g *cgroup) devicesDir() string {
	if g.d.version != 1 || g.d.devices == "" {
		return ""
	}
	return filepath.Join(g.d.devices, g.id)
}

// BPF instruction encoding (include/uapi/linux/bpf.h, bpf_common.h).
const (
	bpfLdxMemW  = 0x61 // BPF_LDX | BPF_MEM | BPF_W
	bpfAlu32And = 0x54 // BPF_ALU | BPF_AND | BPF_K
	bpfAlu32Rsh = 0x74 // BPF_ALU | BPF_RSH | BPF_K
	bpfAlu32Mov = 0xbc // BPF_ALU | BPF_MOV | BPF_X
	bpfMov64Imm = 0xb7 // BPF_ALU64 | BPF_MOV | BPF_K
	bpfJneImm   = 0x55 // BPF_JMP | BPF_JNE | BPF_K
	bpfJneReg   = 0x5d // BPF_JMP | BPF_JNE | BPF_X
	bpfExit     = 0x95 // BPF_JMP | BPF_EXIT
)

type bpfInsn struct {
	code     uint8
	dst, src uint8
	off      int16
	imm      int32
}

// deviceFilter is a program for BPF_PROG_TYPE_CGROUP_DEVICE that answers
// 1 (allow) for a character device access matching a rule, 0 (EPERM) for
// anything else. Its context is struct bpf_cgroup_dev_ctx: access_type
// (access << 16 | device type), major, minor, each a u32.
func deviceFilter(rules []deviceRule) []bpfInsn {
	prog := []bpfInsn{
		{code: bpfLdxMemW, dst: 2, src: 1, off: 0}, // r2 = access_type
		{code: bpfAlu32Mov, dst: 3, src: 2},        // r3 = r2
		{code: bpfAlu32And, dst: 2, imm: 0xffff},   // r2 = device type
		{code: bpfAlu32Rsh, dst: 3, imm: 16},       // r3 = access asked
		{code: bpfLdxMemW, dst: 4, src: 1, off: 4}, // r4 = major
		{code: bpfLdxMemW, dst: 5, src: 1, off: 8}, // r5 = minor
	}
	for _, r := range rules {
		access := int32(unix.BPF_DEVCG_ACC_READ | unix.BPF_DEVCG_ACC_WRITE)
		if r.Mknod {
			access |= unix.BPF_DEVCG_ACC_MKNOD
		}
		// Each test jumps past the rest of the block when it fails.
		block := []bpfInsn{
			{code: bpfJneImm, dst: 2, imm: unix.BPF_DEVCG_DEV_CHAR},
			{code: bpfAlu32Mov, dst: 1, src: 3},      // r1 = access asked
			{code: bpfAlu32And, dst: 1, imm: access}, // ... that the rule allows
			{code: bpfJneReg, dst: 1, src: 3},        // all of it, or next
			{code: bpfJneImm, dst: 4, imm: int32(r.Major)},
		}
		if r.Minor >= 0 {
			block = append(block, bpfInsn{code: bpfJneImm, dst: 5, imm: int32(r.Minor)})
		}
		block = append(block, bpfInsn{code: bpfMov64Imm, dst: 0, imm: 1}, bpfInsn{code: bpfExit})
		for i := range block {
			if block[i].code == bpfJneImm || block[i].code == bpfJneReg {
				block[i].off = int16(len(block) - i - 1)
			}
		}
		prog = append(prog, block...)
	}
	return append(prog, bpfInsn{code: bpfMov64Imm, dst: 0, imm: 0}, bpfInsn{code: bpfExit})
}

func encodeBPF(prog []bpfInsn) []byte {
	b := make([]byte, 8*len(prog))
	for i, in := range prog {
		b[8*i] = in.code
		b[8*i+1] = in.dst&0xf | in.src<<4
		binary.LittleEndian.PutUint16(b[8*i+2:], uint16(in.off))
		binary.LittleEndian.PutUint32(b[8*i+4:], uint32(in.imm))
	}
	return b
}

// bpfProgLoadAttr is union bpf_attr as BPF_PROG_LOAD reads it (the
// fields up to expected_attach_type; the kernel zero-fills the rest).
// Pointers are unsafe.Pointer so the collector sees them (64-bit only,
// which is all this package builds for).
type bpfProgLoadAttr struct {
	progType           uint32
	insnCnt            uint32
	insns              unsafe.Pointer
	license            unsafe.Pointer
	logLevel           uint32
	logSize            uint32
	logBuf             unsafe.Pointer
	kernVersion        uint32
	progFlags          uint32
	progName           [16]byte
	progIfindex        uint32
	expectedAttachType uint32
}

// bpfProgAttachAttr is union bpf_attr as BPF_PROG_ATTACH reads it.
type bpfProgAttachAttr struct {
	targetFd     uint32
	attachBpfFd  uint32
	attachType   uint32
	attachFlags  uint32
	replaceBpfFd uint32
}

func bpfSyscall(cmd int, attr unsafe.Pointer, size uintptr) (uintptr, error) {
	r, _, errno := unix.Syscall(unix.SYS_BPF, uintptr(cmd), uintptr(attr), size)
	if errno != 0 {
		return 0, errno
	}
	return r, nil
}

// loadDeviceFilter loads the program for rules and returns its descriptor.
func loadDeviceFilter(rules []deviceRule) (int, error) {
	code := encodeBPF(deviceFilter(rules))
	license := []byte("GPL\x00")
	load := func(log []byte) (uintptr, error) {
		attr := bpfProgLoadAttr{progType: unix.BPF_PROG_TYPE_CGROUP_DEVICE, insnCnt: uint32(len(code) / 8),
			insns: unsafe.Pointer(&code[0]), license: unsafe.Pointer(&license[0]), expectedAttachType: unix.BPF_CGROUP_DEVICE}
		copy(attr.progName[:], "sandpool_dev")
		if len(log) > 0 {
			attr.logLevel, attr.logSize, attr.logBuf = 1, uint32(len(log)), unsafe.Pointer(&log[0])
		}
		fd, err := bpfSyscall(unix.BPF_PROG_LOAD, unsafe.Pointer(&attr), unsafe.Sizeof(attr))
		goruntime.KeepAlive(code)
		goruntime.KeepAlive(license)
		goruntime.KeepAlive(log)
		return fd, err
	}
	fd, err := load(nil)
	if err == nil {
		return int(fd), nil
	}
	if errors.Is(err, unix.EACCES) || errors.Is(err, unix.EINVAL) { // the verifier says why
		log := make([]byte, 64<<10)
		if _, lerr := load(log); lerr != nil {
			if n := bytes.IndexByte(log, 0); n > 0 {
				return -1, fmt.Errorf("load device filter: %w: %s", err, log[:n])
			}
		}
	}
	return -1, fmt.Errorf("load device filter: %w", err)
}

// attachDeviceFilter attaches a device filter for rules to the cgroup v2
// directory dir. The attachment lives as long as the group.
func attachDeviceFilter(dir string, rules []deviceRule) error {
	prog, err := loadDeviceFilter(rules)
	if err != nil {
		return fmt.Errorf("cgroups: %w", err)
	}
	defer unix.Close(prog) // the attachment holds the program
	cg, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("cgroups: %w", err)
	}
	defer unix.Close(cg)
	// Several programs may hold along a path (systemd's above ours): all
	// must allow.
	attr := bpfProgAttachAttr{targetFd: uint32(cg), attachBpfFd: uint32(prog), attachType: unix.BPF_CGROUP_DEVICE,
		attachFlags: unix.BPF_F_ALLOW_MULTI}
	if _, err := bpfSyscall(unix.BPF_PROG_ATTACH, unsafe.Pointer(&attr), unsafe.Sizeof(attr)); err != nil {
		return fmt.Errorf("cgroups: attach device filter to %s: %w", dir, err)
	}
	return nil
}
