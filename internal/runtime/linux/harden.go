package linux

import (
	"fmt"
	"os"
	"syscall"
	"unsafe"

	seccomp "github.com/elastic/go-seccomp-bpf"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// Everything here runs inside the sandbox, on the agent's spawner thread:
// children inherit the thread's capability bounding set, no_new_privs bit
// and seccomp filters, so each sandboxed process starts with no capability
// and cannot make the syscalls below.

// deniedSyscalls fail with EPERM: what sandboxed code never needs and what
// escapes and kernel exploits are made of.
var deniedSyscalls = []string{
	// mounts and roots
	"mount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree",
	"fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr",
	// namespaces: no nested user namespace, no joining another
	"unshare", "setns",
	// other processes' memory
	"ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd",
	// the kernel itself
	"kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
	"bpf", "perf_event_open", "reboot", "swapon", "swapoff", "syslog", "acct",
	"quotactl", "quotactl_fd", "iopl", "ioperm", "uselib", "vhangup",
	"settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
	// keyrings
	"add_key", "request_key", "keyctl",
	// large attack surfaces
	"userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register",
	"open_by_handle_at", "name_to_handle_at", "fanotify_init", "lookup_dcookie",
}

// nsFlags are the clone flags that make a namespace.
const nsFlags = unix.CLONE_NEWNS | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC | unix.CLONE_NEWUSER |
	unix.CLONE_NEWPID | unix.CLONE_NEWNET | unix.CLONE_NEWCGROUP | unix.CLONE_NEWTIME

func errnoAction(e syscall.Errno) seccomp.Action {
	return seccomp.Action(uint32(seccomp.ActionErrno) | uint32(e))
}

// sandboxFilter is the seccomp policy for sandboxed processes.
func sandboxFilter() seccomp.Filter {
	return seccomp.Filter{
		NoNewPrivs: true,
		Policy: seccomp.Policy{
			DefaultAction: seccomp.ActionAllow,
			Syscalls: []seccomp.SyscallGroup{
				{Action: errnoAction(unix.EPERM), Names: deniedSyscalls},
				{
					// clone with a namespace flag is unshare by another name.
					Action: errnoAction(unix.EPERM),
					NamesWithCondtions: []seccomp.NameWithConditions{{
						Name:       "clone",
						Conditions: seccomp.ArgumentConditions{{Argument: 0, Operation: seccomp.BitsSet, Value: nsFlags}},
					}},
				},
				// clone3 passes its flags in memory, out of a filter's
				// reach: refuse it as unknown, and libc falls back to clone.
				{Action: errnoAction(unix.ENOSYS), Names: []string{"clone3"}},
			},
		},
	}
}

// archFilter refuses every syscall not made through the native x86-64 ABI:
// the policy above lists x86-64 numbers only, so 32-bit entry points
// (int 0x80) would otherwise bypass it.
func archFilter() ([]bpf.RawInstruction, error) {
	const archOffset = 4 // offsetof(struct seccomp_data, arch)
	return bpf.Assemble([]bpf.Instruction{
		bpf.LoadAbsolute{Off: archOffset, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: nativeAuditArch, SkipTrue: 1},
		bpf.RetConstant{Val: uint32(seccomp.ActionErrno) | uint32(unix.ENOSYS)},
		bpf.RetConstant{Val: uint32(seccomp.ActionAllow)},
	})
}

// hardenThread runs on the spawner thread: it empties the capability
// bounding set (so even uid 0 gains nothing at exec), then sets
// no_new_privs and loads both seccomp filters.
func hardenThread() error {
	last, err := lastCap()
	if err != nil {
		return err
	}
	for c := 0; c <= last; c++ {
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil && err != unix.EINVAL {
			return fmt.Errorf("drop capability %d from the bounding set: %w", c, err)
		}
	}
	// Inheritable and ambient sets are empty already; clear them anyway.
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
		return fmt.Errorf("clear ambient capabilities: %w", err)
	}
	raw, err := archFilter()
	if err != nil {
		return err
	}
	if err := seccomp.SetNoNewPrivs(); err != nil {
		return fmt.Errorf("no_new_privs: %w", err)
	}
	if err := loadRaw(raw); err != nil {
		return fmt.Errorf("load arch filter: %w", err)
	}
	if err := seccomp.LoadFilter(sandboxFilter()); err != nil {
		return fmt.Errorf("load seccomp filter: %w", err)
	}
	return nil
}

func loadRaw(raw []bpf.RawInstruction) error {
	f := make([]unix.SockFilter, len(raw))
	for i, in := range raw {
		f[i] = unix.SockFilter{Code: in.Op, Jt: in.Jt, Jf: in.Jf, K: in.K}
	}
	prog := unix.SockFprog{Len: uint16(len(f)), Filter: &f[0]}
	_, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, 0, uintptr(unsafe.Pointer(&prog)))
	if errno != 0 {
		return errno
	}
	return nil
}

// lastCap is the highest capability number the kernel knows.
func lastCap() (int, error) {
	var n int
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err != nil {
		return 40, nil // older kernels lack the file; 40 covers every cap they know
	}
	if _, err := fmt.Sscan(string(b), &n); err != nil {
		return 0, fmt.Errorf("parse cap_last_cap: %w", err)
	}
	return n, nil
}
